"""NeuronSFTConfig, the Trainium trainer's config, as the optimum-neuron of seed 003's recipe takes it: the
compiler refuses the trainer arguments it has no field for (compiler/rules.py), the Trainium entry hands it
the others under its names (runtime/train_neuron.py). Nothing is dropped on the way.

The recipe (aws-samples/awsome-distributed-training, 3.test_cases/pytorch/optimum-neuron/llama3/slurm/
fine-tuning/submit_jobs/0_create_env.sh) pins optimum-neuron 0.1.0 with trl 0.11.4 and transformers 4.48;
its train.py is the API runtime/train_neuron.py calls (lazy_load_for_parallelism, NeuronSFTTrainer with a
tokenizer, optimum.neuron.distributed's consolidation), which later optimum-neuron releases replaced.
NeuronSFTConfig(NeuronTrainingArguments, trl.SFTConfig) there, NeuronTrainingArguments being
NeuronTrainingArgumentsMixin + transformers.TrainingArguments: the tables below are those dataclasses'
fields (optimum/neuron/training_args.py at optimum-neuron v0.1.0, trl/trainer/sft_config.py at trl v0.11.4,
src/transformers/training_args.py at transformers v4.48.1).
"""
OPTIMUM_NEURON_VERSION = "0.1.0"

NEURON_TRAINING_ARGUMENTS = frozenset("""
    skip_cache_push half_precision_backend zero_1 tensor_parallel_size disable_embedding_parallelization
    disable_sequence_parallel neuron_cc_optlevel pipeline_parallel_size
    pipeline_parallel_num_microbatches kv_size_multiplier num_local_ranks_per_step use_xser async_save
""".split())
SFT_CONFIG = frozenset("""
    dataset_text_field packing max_seq_length dataset_num_proc dataset_batch_size neftune_noise_alpha
    model_init_kwargs dataset_kwargs eval_packing num_of_sequences chars_per_token use_liger
""".split())
TRAINING_ARGUMENTS = frozenset("""
    output_dir overwrite_output_dir do_train do_eval do_predict eval_strategy prediction_loss_only
    per_device_train_batch_size per_device_eval_batch_size per_gpu_train_batch_size
    per_gpu_eval_batch_size gradient_accumulation_steps eval_accumulation_steps eval_delay
    torch_empty_cache_steps learning_rate weight_decay adam_beta1 adam_beta2 adam_epsilon max_grad_norm
    num_train_epochs max_steps lr_scheduler_type lr_scheduler_kwargs warmup_ratio warmup_steps log_level
    log_level_replica log_on_each_node logging_dir logging_strategy logging_first_step logging_steps
    logging_nan_inf_filter save_strategy save_steps save_total_limit save_safetensors save_on_each_node
    save_only_model restore_callback_states_from_checkpoint no_cuda use_cpu use_mps_device seed
    data_seed jit_mode_eval use_ipex bf16 fp16 fp16_opt_level half_precision_backend bf16_full_eval
    fp16_full_eval tf32 local_rank ddp_backend tpu_num_cores tpu_metrics_debug debug
    dataloader_drop_last eval_steps dataloader_num_workers dataloader_prefetch_factor past_index
    run_name disable_tqdm remove_unused_columns label_names load_best_model_at_end metric_for_best_model
    greater_is_better ignore_data_skip fsdp fsdp_min_num_params fsdp_config
    fsdp_transformer_layer_cls_to_wrap accelerator_config deepspeed label_smoothing_factor optim
    optim_args adafactor group_by_length length_column_name report_to ddp_find_unused_parameters
    ddp_bucket_cap_mb ddp_broadcast_buffers dataloader_pin_memory dataloader_persistent_workers
    skip_memory_metrics use_legacy_prediction_loop push_to_hub resume_from_checkpoint hub_model_id
    hub_strategy hub_token hub_private_repo hub_always_push gradient_checkpointing
    gradient_checkpointing_kwargs include_inputs_for_metrics include_for_metrics eval_do_concat_batches
    fp16_backend evaluation_strategy push_to_hub_model_id push_to_hub_organization push_to_hub_token
    mp_parameters auto_find_batch_size full_determinism torchdynamo ray_scope ddp_timeout torch_compile
    torch_compile_backend torch_compile_mode dispatch_batches split_batches include_tokens_per_second
    include_num_input_tokens_seen neftune_noise_alpha optim_target_modules batch_eval_metrics
    eval_on_start use_liger_kernel eval_use_gather_object average_tokens_across_devices
""".split())
NEURON_SFT_CONFIG_FIELDS = NEURON_TRAINING_ARGUMENTS | SFT_CONFIG | TRAINING_ARGUMENTS

# The plan's trainer arguments (TRL 1.x names) that trl 0.11.4 names otherwise.
RENAMED = {"max_length": "max_seq_length"}
# Arguments NeuronSFTConfig has no field for, at the value that is what it does without them: trl 0.11.4
# computes the loss on every token of the text.
WITHOUT_FIELD = {"completion_only_loss": False}


def neuron_sft_arguments(arguments: dict) -> dict:
    """Trainer arguments under NeuronSFTConfig's names; None is the library's default, as for SFTConfig."""
    return {RENAMED.get(key, key): value for key, value in arguments.items()
            if value is not None and not (key in WITHOUT_FIELD and value == WITHOUT_FIELD[key])}


def unaccepted(arguments: dict) -> list:
    """The trainer arguments (plan names) NeuronSFTConfig cannot take."""
    renamed = {RENAMED.get(key, key): key for key in arguments}
    return sorted(renamed[key] for key in neuron_sft_arguments(arguments) if key not in NEURON_SFT_CONFIG_FIELDS)
