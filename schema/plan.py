"""The plan (plan.json, format `tunespec-plan/v1`) as a typed model: what the compiler hands the runtime.

The compiler builds the plan as plain data (compiler/plan.py); this model is its contract, published as
schema/tunespec-plan-v1.schema.json. Sections are of two kinds:

- execution sections (model, method, devices, precision, parallel, data, batch, trainer, launch,
  tracking, outputs, inference, secrets, backend): what `apply` runs, read by the backends and the trainer;
- review-only sections (warnings, estimates, tuning), and review-only fields inside execution sections
  (what the estimate was made from: data statistics, parameter counts, device datasheet numbers),
  marked `x-review-only` in the schema: what a reviewer reads. Nothing in them may influence what
  `apply` does, as in Terraform's plan.

The layout (devices, precision, parallel, batch) is computed once, by compiler/layout.py, and every fact
is written once: the trainer section holds only the trainer's own settings, and the trainer's arguments
join it with the layout's batch and precision and the data's packing (schema/trainer_arguments.py).

tests/test_plan_fields_honoured.py fails for an execution field that nothing which runs the plan reads.

Sub-dicts that mirror a spec section reuse the spec's model (tracking, outputs, secrets, data format,
distribution settings); AWS request bodies are typed by the AWS API they are sent to and
kept as JSON objects here.
"""
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from .data import DataFormat
from .distribution import Distribution
from .common import Dtype
from .run import OutputsSpec, SecretsSpec, TrackingSpec
from .contract import VERSION
from .sagemaker_api import problems

PLAN_FORMAT = "tunespec-plan/v1"
# The JSON Schema key that marks a review-only field; tests/test_plan_schema.py checks the runtime never reads them.
REVIEW_ONLY_KEY = "x-review-only"
REVIEW_ONLY = {REVIEW_ONLY_KEY: True}


class PlanModel(BaseModel):
    """Base of every plan section: unknown keys are errors and a loaded plan cannot be changed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ReviewModel(PlanModel):
    """Base of the estimator's review sections: the named fields are stable, the estimator may add detail."""

    model_config = ConfigDict(extra="allow", frozen=True)


def _doc(description: str, **kwargs: Any) -> Any:
    return Field(description=description, **kwargs)


# ---- spec identity ---------------------------------------------------------------------------------

class PlanSpecInfo(PlanModel):
    name: str = _doc("The spec's `name`: names job names, run folders and the default plan folder.")
    description: Optional[str] = _doc("The spec's `description`, as written.")
    hash: str = _doc("sha256 of the spec as run (budget and accept_risks excluded): names jobs and run folders.",
                     pattern=r"^[0-9a-f]{64}$")


# ---- model -------------------------------------------------------------------------------------------

class Architecture(PlanModel):
    """The model's shape, from the catalog (compiler/catalog/models.yaml) or a config.json."""

    name: str = _doc("Catalog name, or the config's `_name_or_path`.")
    model_type: str = _doc("transformers' `model_type` (llama, mistral, mixtral, qwen2, falcon).")
    source: Optional[str] = _doc("Where the numbers come from: the config.json page or path.", default=None)
    num_hidden_layers: int = _doc("Decoder layers.", gt=0)
    hidden_size: int = _doc("Model width.", gt=0)
    intermediate_size: int = _doc("MLP (or each expert's) inner width.", gt=0)
    num_attention_heads: int = _doc("Query heads.", gt=0)
    num_key_value_heads: int = _doc("Key/value heads (grouped-query attention).", gt=0)
    head_dim: int = _doc("Width of one attention head.", gt=0)
    vocab_size: int = _doc("Vocabulary size (embedding and lm_head rows).", gt=0)
    max_position_embeddings: int = _doc("Longest sequence the model's positions cover.", gt=0)
    tie_word_embeddings: bool = _doc("lm_head shares the embedding's weights.")
    norm: Literal["rmsnorm", "layernorm"] = _doc("Norm kind: RMSNorm has a weight, LayerNorm a weight and a bias.")
    norms_per_layer: int = _doc("Norm modules per decoder layer.", ge=1)
    mlp: Literal["gated", "plain"] = _doc("gated: gate/up/down (SwiGLU); plain: Falcon's h_to_4h/4h_to_h.")
    qkv_bias: bool = _doc("q, k and v projections carry a bias.")
    o_bias: bool = _doc("The attention output projection carries a bias.")
    mlp_bias: bool = _doc("The MLP projections carry a bias.")
    linear_modules: List[str] = _doc("nn.Linear modules inside a decoder layer, as PEFT names them.")
    num_local_experts: Optional[int] = _doc("MoE experts per layer; null for dense models.")
    num_experts_per_tok: Optional[int] = _doc("Experts each token is routed to; null for dense models.")
    expert_parameters: List[str] = _doc("Fused 3-D expert parameters (transformers 5), as PEFT's "
                                        "target_parameters names them; empty for dense models.")
    router: Optional[str] = _doc("The MoE router parameter (a bare 2-D parameter, not an nn.Linear).")
    sliding_window: Optional[int] = _doc("Sliding attention window, where the model has one.", default=None)
    new_decoder_architecture: Optional[bool] = _doc("Falcon: the 40B/180B layer layout.", default=None)
    multi_query: Optional[bool] = _doc("Falcon: one key/value head.", default=None)
    parallel_attn: Optional[bool] = _doc("Falcon: attention and MLP run in parallel.", default=None)
    bias: Optional[bool] = _doc("Falcon: every linear layer carries a bias.", default=None)


class TrainableByGroup(PlanModel):
    all: Optional[int] = _doc("Full fine-tuning: every parameter.", default=None, ge=0)
    attention: Optional[int] = _doc("Trainable parameters in attention modules.", default=None, ge=0)
    mlp: Optional[int] = _doc("Trainable parameters in dense MLP modules.", default=None, ge=0)
    experts: Optional[int] = _doc("Trainable parameters in MoE experts.", default=None, ge=0)
    lm_head: Optional[int] = _doc("Trainable parameters in the output head.", default=None, ge=0)
    biases: Optional[int] = _doc("Trainable biases (LoRA bias `all` / `lora_only`).", default=None, ge=0)


class Parameters(PlanModel):
    total: int = _doc("Parameters of the whole model.", ge=0)
    embedding: int = _doc("Parameters of the input embedding.", ge=0)
    lm_head: int = _doc("Parameters of the output head (0 when tied).", ge=0)
    active_per_token: int = _doc("Parameters one token passes through (MoE: routed experts only).", ge=0)
    trainable: int = _doc("Parameters the optimizer updates.", ge=0)
    trainable_by_group: Optional[TrainableByGroup] = _doc(
        "Trainable parameters per module group; absent in probe plans cut to fewer layers.", default=None)


class ModelSection(PlanModel):
    source: str = _doc("Hub id, `s3://` URI, `pkg://` file, GGUF file or local folder (relative to where the "
                       "plan was made).")
    source_kind: Literal["hub", "s3", "package", "gguf", "local"] = _doc("How `source` is loaded.")
    revision: Optional[str] = _doc("Hub revision (branch, tag or commit).")
    init: Literal["pretrained", "random"] = _doc("The source's weights, or its config with weights initialised from "
                                                 "trainer.seed (pre-training from scratch).")
    trust_remote_code: bool = _doc("Passed to from_pretrained: run the repository's own model code.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flex_attention"] = _doc(
        "The attention kernel the trainer runs, passed to from_pretrained as is (`auto` resolved by the compiler).")
    attn_reason: str = _doc("Why this kernel: the spec's choice, or what `auto` found (summary line).",
                            json_schema_extra=REVIEW_ONLY)
    offline: bool = _doc("Load from the local Hugging Face cache only (HF_HUB_OFFLINE).")
    architecture: Architecture = _doc("The model's shape: the estimator reads it, and `tunespec probe` builds its "
                                      "model from every key (runtime/probe.py).")
    parameters: Parameters = _doc("Parameter counts of the model and of what trains.", json_schema_extra=REVIEW_ONLY)


# ---- method ----------------------------------------------------------------------------------------

class LoraSection(PlanModel):
    r: int = _doc("Adapter rank.", gt=0)
    alpha: int = _doc("LoRA alpha (scaling alpha / r).", gt=0)
    dropout: float = _doc("Dropout on the adapters' input (resolved: 0 when MoE experts are adapted).", ge=0, lt=1)
    target_modules: List[str] = _doc("nn.Linear modules that get adapters (resolved from `all-linear`).")
    target_parameters: List[str] = _doc("Fused expert parameters that get adapters (PEFT target_parameters).")
    include_experts: bool = _doc("MoE experts are adapted (target_parameters is not empty).",
                                 json_schema_extra=REVIEW_ONLY)
    bias: Literal["none", "all", "lora_only"] = _doc("PEFT's `bias`.")
    use_dora: bool = _doc("DoRA (weight-decomposed LoRA).")
    cast_input_to_adapter_dtype: bool = _doc(
        "PEFT casts each adapted module's input to the adapters' fp32 before dropout and lora_A (PEFT's default). "
        "False under bf16/fp16 mixed precision: autocast computes lora_A in the 16-bit dtype anyway, so the input "
        "stays 16-bit and the fp32 copy and the cast back are not made (compiler/trainer_speed.py); the adapters "
        "and their optimizer state stay fp32.")


class QuantizationSection(PlanModel):
    """The spec's method.quantization with defaults."""

    bits: Literal[4, 8] = _doc("Bits per quantized weight (bitsandbytes 4-bit or 8-bit).")
    quant_type: Literal["nf4", "fp4"] = _doc("4-bit data type.")
    double_quant: bool = _doc("Quantize the block scales too (bitsandbytes' double quantization).")
    compute_dtype: Dtype = _doc("The dtype the quantized layers compute in.")
    storage_dtype: Literal["uint8", "bf16", "fp16", "fp32"] = _doc(
        "Storage dtype of the packed 4-bit weights; FSDP needs it equal to compute_dtype.")
    kbit_preparation: Literal["minimal", "full"] = _doc(
        "As the spec wrote it; the run follows precision.kbit_upcast, decided from it.", json_schema_extra=REVIEW_ONLY)


class MethodSection(PlanModel):
    type: Literal["full", "lora", "dora", "qlora"] = _doc("How the weights are adapted.")
    lora: Optional[LoraSection] = _doc("Adapter settings; null for full fine-tuning.")
    quantization: Optional[QuantizationSection] = _doc("The spec's method.quantization with defaults; QLoRA only.")


# ---- the layout: devices, precision, parallel, batch (compiler/layout.py) ---------------------------

class HostCpu(PlanModel):
    model: str = _doc("CPU model name of the machine the local plan was made on.")
    cores: int = _doc("CPU cores the trainer may use.", gt=0)
    capability: str = _doc("Widest vector extension (avx2, avx512, avx512_bf16, amx).")
    native_bf16: bool = _doc("The CPU computes bf16 natively.")


class DevicesSection(PlanModel):
    kind: Literal["cpu", "cuda", "trainium"] = _doc("Device family the run uses.")
    accelerator: str = _doc("Accelerator name (GPU model, Trainium, or `cpu`).")
    memory_gib: Optional[float] = _doc("Memory per device (per NeuronCore on Trainium); null when unknown.",
                                       json_schema_extra=REVIEW_ONLY)
    per_node: int = _doc("Devices per node (NeuronCores on Trainium); launch.processes_per_node is what starts.",
                         gt=0, json_schema_extra=REVIEW_ONLY)
    nodes: int = _doc("Nodes (instances).", gt=0)
    world_size: int = _doc("Devices in all: per_node x nodes.", gt=0)
    instance_type: Optional[str] = _doc("The `ml.*` instance type, when the hardware is one.")
    peak_tflops: Optional[float] = _doc("Datasheet dense bf16 TFLOPS per device.", json_schema_extra=REVIEW_ONLY)
    hardware: Optional[str] = _doc("The hardware name the catalog looked up.", default=None,
                                   json_schema_extra=REVIEW_ONLY)
    cpu: Optional[HostCpu] = _doc("The CPU a local CPU plan was made for (local apply checks this machine again).",
                                  default=None, json_schema_extra=REVIEW_ONLY)


class PrecisionSection(PlanModel):
    requested: Literal["auto", "bf16", "fp16", "fp32", "fp8"] = _doc("training.precision as written.",
                                                                     json_schema_extra=REVIEW_ONLY)
    resolved: Literal["bf16", "fp16", "fp32", "fp8"] = _doc(
        "The precision the run uses on these devices: the weights' dtype and the trainer's bf16 / fp16 "
        "mixed precision; a precision the backend cannot train is refused (compiler/supports.py).")
    reason: Optional[str] = _doc("Why `auto` resolved as it did.")
    allow_emulated_bf16: bool = _doc("training.allow_emulated_bf16: bf16 on a CPU that emulates it.")
    kbit_upcast: bool = _doc(
        "After loading, PEFT's prepare_model_for_kbit_training casts every weight left unquantized (embeddings, "
        "lm_head, norms, router) to fp32: QLoRA with `kbit_preparation: full`. False keeps them in `resolved`.")


_DISTRIBUTION = TypeAdapter(Distribution)


class ParallelSection(PlanModel):
    strategy: Literal["none", "ddp", "fsdp", "device_map", "smp", "neuron"] = _doc("distribution.strategy.")
    processes_per_node: int = _doc("Trainer processes per node.", gt=0)
    world_size: int = _doc("Trainer processes in all.", gt=0)
    data_parallel: int = _doc("Data-parallel replicas (the global batch's multiplier).", gt=0)
    tensor_parallel: int = _doc("Tensor-parallel degree.", gt=0)
    expert_parallel: int = _doc("Expert-parallel degree (SMP) the estimate assumes; SMP reads settings.",
                                gt=0, json_schema_extra=REVIEW_ONLY)
    shard_degree: int = _doc("Processes one parameter is sharded over (FSDP / SMP hybrid shard), as estimated; the "
                             "trainer reads trainer.fsdp or settings.", gt=0, json_schema_extra=REVIEW_ONLY)
    pipeline_stages: int = _doc("Pipeline stages (device_map: GPUs the layers are placed over).", gt=0)
    settings: Dict[str, Any] = _doc("The spec's distribution settings with defaults, `strategy` left out; "
                                    "checked against the spec's distribution model of `strategy`.")

    @model_validator(mode="after")
    def _settings_match_strategy(self) -> "ParallelSection":
        _DISTRIBUTION.validate_python({"strategy": self.strategy, **self.settings})
        return self


# ---- data and batch --------------------------------------------------------------------------------

class SourceStats(PlanModel):
    rows: Optional[int] = _doc("Rows read (null when only a sample was read).", default=None)
    mean_chars: float = _doc("Mean characters per templated row.", ge=0)
    min_chars: int = _doc("Shortest templated row, in characters.", ge=0)


class DataSourceSection(PlanModel):
    path: str = _doc("Local file (relative to where the plan was made), `s3://` URI, `pkg://` file or `hub:` name.")
    kind: Literal["local", "s3", "hub", "package"] = _doc("How `path` is read.")
    format: Optional[Literal["json", "jsonl", "csv", "tsv", "parquet"]] = _doc("File format (null for hub).")
    config: Optional[str] = _doc("Hub dataset configuration (subset), datasets.load_dataset's second argument.")
    split: Optional[str] = _doc("Hub dataset split.")
    limit: Optional[int] = _doc("Use only the first N rows.", gt=0)
    stats: Optional[SourceStats] = _doc("What planning read from a local file.", default=None,
                                        json_schema_extra=REVIEW_ONLY)


class DataSection(PlanModel):
    train: DataSourceSection = _doc("Training rows.")
    eval: Optional[DataSourceSection] = _doc("Evaluation rows, when given separately.")
    eval_fraction: Optional[float] = _doc("Share of train held out for evaluation.", gt=0, lt=1)
    format: DataFormat = _doc("How rows become text: the spec's data.format with defaults.")
    max_seq_length: int = _doc("Longest sequence in tokens, as the spec wrote it; the run reads "
                               "batch.sequence_length.", gt=0, json_schema_extra=REVIEW_ONLY)
    packing: bool = _doc("Pack rows into full sequences.")
    packed_row_tokens: Optional[int] = _doc(
        "Packed documents under a kernel that keeps them apart in one padding-free row (flex, flash): the micro "
        "batch is one row of this many tokens (batch.micro_batch_size x batch.sequence_length), the documents "
        "packed into it directly after each is truncated at max_seq_length; the trainer gets "
        "per_device_train_batch_size 1 and max_length this. Null: micro_batch_size sequences of max_seq_length "
        "(compiler/attention.py).", gt=0)
    completion_only_loss: bool = _doc("Loss on completions only (resolved: false for text data).")
    num_examples: Optional[int] = _doc("Rows in train (given, or counted from a local file).", gt=0,
                                       json_schema_extra=REVIEW_ONLY)
    tokens_per_example: Optional[float] = _doc("Mean tokens per row (given, or estimated from characters).", gt=0,
                                               json_schema_extra=REVIEW_ONLY)


class BatchSection(PlanModel):
    micro_batch_size: int = _doc("Sequences per device per forward pass.", gt=0)
    gradient_accumulation: int = _doc("Micro batches per optimizer step.", gt=0)
    data_parallel: int = _doc("Data-parallel replicas.", gt=0)
    global_batch_size: int = _doc("Sequences per optimizer step: micro x accumulation x data_parallel.", gt=0)
    sequence_length: int = _doc("Tokens per sequence (data.max_seq_length): the trainer's max_length and "
                                "the block size of grouped text.", gt=0)
    tokens_per_step: int = _doc("Tokens per optimizer step.", gt=0, json_schema_extra=REVIEW_ONLY)
    steps_per_epoch: Optional[int] = _doc("Optimizer steps per epoch, when the data size is known.", gt=0,
                                          json_schema_extra=REVIEW_ONLY)
    total_steps: Optional[int] = _doc("Optimizer steps of the run, when known.", gt=0)


# ---- trainer ---------------------------------------------------------------------------------------

class FsdpConfig(PlanModel):
    backward_prefetch: Optional[Literal["backward_pre", "backward_post"]] = _doc("FSDP backward prefetch.")
    forward_prefetch: bool = _doc("FSDP forward prefetch.")
    use_orig_params: bool = _doc("FSDP use_orig_params.")
    cpu_ram_efficient_loading: bool = _doc("Load weights on rank 0 only and broadcast them.")
    activation_checkpointing: bool = _doc("FSDP's own activation checkpointing (the trainer's is used instead).")


class TrainerSection(PlanModel):
    """The trainer's own settings, named as transformers' TrainingArguments / TRL's SFTConfig name them. The
    batch, precision and packing are the layout's and the data's: schema/trainer_arguments.py adds them under
    the trainer's names (per_device_train_batch_size, gradient_accumulation_steps, bf16, fp16, max_length,
    packing, completion_only_loss)."""

    num_train_epochs: float = _doc("Epochs (1 when max_steps bounds the run).", gt=0)
    max_steps: int = _doc("Optimizer steps, or -1 to run num_train_epochs.", ge=-1)
    learning_rate: float = _doc("Peak learning rate.", gt=0)
    lr_scheduler_type: str = _doc("transformers' scheduler name.")
    warmup_ratio: float = _doc("Share of steps spent warming up.", ge=0, le=1)
    weight_decay: float = _doc("AdamW weight decay.", ge=0)
    max_grad_norm: float = _doc("Gradient clipping norm.", ge=0)
    optim: str = _doc("transformers' optimizer name.")
    adam_beta1: float = _doc("Adam beta1.", ge=0, lt=1)
    adam_beta2: float = _doc("Adam beta2.", ge=0, lt=1)
    tf32: bool = _doc("Allow TF32 matmuls (Ampere and newer).")
    gradient_checkpointing: bool = _doc("Recompute activations in the backward pass.")
    use_liger_kernel: bool = _doc("Liger fused kernels.")
    torch_compile: bool = _doc(
        "torch.compile the model, per decoder layer: the runtime turns on accelerate's regional compilation "
        "(ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION) with it, so that the identical layers compile once.")
    seed: int = _doc("Random seed.", ge=0)
    save_strategy: Literal["steps", "epoch"] = _doc("When checkpoints are saved.")
    save_steps: Optional[int] = _doc("Steps between checkpoints (save_strategy steps).", gt=0)
    save_total_limit: Optional[int] = _doc("Checkpoints kept.", gt=0)
    eval_strategy: Literal["steps", "epoch", "no"] = _doc("When evaluation runs.")
    eval_steps: Optional[int] = _doc("Steps between evaluations (eval_strategy steps).", gt=0)
    logging_steps: int = _doc("Steps between logged metrics.", gt=0)
    report_to: List[Literal["tensorboard", "wandb", "mlflow"]] = _doc("Experiment trackers the trainer reports to.")
    pad_to_multiple_of: Optional[int] = _doc("SFTConfig pad_to_multiple_of: flex attention pads packed rows to a "
                                             "multiple of the sequence length (few static shapes to compile).",
                                             gt=0)
    dataloader_num_workers: int = _doc("Worker processes collating batches beside each trainer process (0 on a "
                                       "CPU, whose cores train; else up to 2, within the node's CPUs).", ge=0)
    dataloader_persistent_workers: bool = _doc("Keep the dataloader workers between epochs and evaluations.")
    dataloader_pin_memory: bool = _doc("Page-locked host batches, copied to the GPU asynchronously (CUDA only).")
    logging_nan_inf_filter: bool = _doc("Check each micro batch's loss for NaN/inf on the host: a device sync per "
                                        "micro batch, so off on GPUs (a NaN loss is logged as NaN).")
    fsdp: str = _doc("TrainingArguments `fsdp` words (empty without FSDP).")
    fsdp_config: Optional[FsdpConfig] = _doc("TrainingArguments `fsdp_config` (null without FSDP).")


class LaunchSection(PlanModel):
    launcher: Literal["python", "torchrun", "neuron"] = _doc("How the trainer processes are started.")
    nnodes: int = _doc("Nodes the launcher spans.", gt=0)
    processes_per_node: int = _doc("Processes the launcher starts per node.", gt=0)
    module: str = _doc("The Python module each process runs (`python -m`).")


class InferenceSection(PlanModel):
    """Where the merge and the answers to prompts (sample prompts, `tunespec generate`, `tunespec eval`)
    place the model: passed to from_pretrained (and to PEFT's adapter loading) as is."""

    device_map: Literal["auto"] = _doc("accelerate places the layers over the devices of max_memory, in order.")
    max_memory: Optional[Dict[str, str]] = _doc(
        "Memory cap per device: GPU index (`\"0\"`, `\"1\"`, ...) or `cpu`, e.g. `\"35GiB\"`; what does not "
        "fit goes to offload_folder. Null: what the devices have free at run time (host memory unknown "
        "when planned).")
    offload_folder: str = _doc("Folder, inside the run folder, for the weights that fit in no device's cap.")
    dtype: Literal["bf16", "fp16", "fp32"] = _doc("The dtype answers are generated in (the merge keeps the "
                                                  "training precision).")


# ---- backends --------------------------------------------------------------------------------------

RenderedFiles = Dict[str, str]
_FILES_DOC = "Rendered files, by path inside the plan folder, written beside plan.json."


class LocalBackendSection(PlanModel):
    type: Literal["local"] = _doc("This machine.")
    device: Literal["auto", "cpu", "cuda"] = _doc("backend.device as written.")
    run_dir: str = _doc("Run folder (checkpoints, logs, outputs), relative to where apply runs.")
    files: RenderedFiles = _doc(_FILES_DOC)


class SlurmStep(PlanModel):
    name: str = _doc("The sbatch script's job name suffix (train, merge, ...).")
    script: str = _doc("The sbatch script's path inside the plan folder.")
    depends_on: List[str] = _doc("Steps that must succeed first (afterok).")


class SlurmBackendSection(PlanModel):
    type: Literal["hyperpod-slurm"] = _doc("A HyperPod (or any) Slurm cluster.")
    cluster_flavour: str = _doc("backend.cluster_flavour as written; the scripts in `files` carry what it changes.",
                                json_schema_extra=REVIEW_ONLY)
    run_dir: str = _doc("Run folder on the cluster's shared file system.")
    chain: List[SlurmStep] = _doc("Jobs apply submits, in order, with their dependencies.")
    files: RenderedFiles = _doc(_FILES_DOC)


class SageMakerChannel(PlanModel):
    name: str = _doc("Input channel name (train, eval, model).")
    plan_field: List[str] = _doc("The plan field whose value the channel carries into the container.")
    s3_uri: str = _doc("Where the channel's data is in S3.", pattern=r"^s3://")
    container_path: str = _doc("Where the data lands in the container (under /opt/ml/input/data).")


class SageMakerUpload(PlanModel):
    source: str = _doc("Local file apply uploads.")
    s3_uri: str = _doc("Content-addressed key it is uploaded to.", pattern=r"^s3://")
    sha256: str = _doc("sha256 of the file when planned; apply refuses a changed file.", pattern=r"^[0-9a-f]{64}$")
    size: int = _doc("File size in bytes when planned.", ge=0)
    channel: str = _doc("The channel that carries it.", json_schema_extra=REVIEW_ONLY)


class SageMakerSourceDir(PlanModel):
    s3_uri: str = _doc("Where apply uploads the source archive.", pattern=r"^s3://")
    entry_point: str = _doc("The archive's entry script.")
    plan: str = _doc("plan.json's name inside the archive.")
    requirements: List[str] = _doc("Pinned packages installed in the container (requirements.txt).")


class SageMakerContainer(PlanModel):
    run_dir: str = _doc("The run folder inside the container (the checkpoint folder when checkpoints sync).")
    model_dir: str = _doc("SageMaker's model folder, uploaded when the job ends.")


class SageMakerFitArgs(PlanModel):
    inputs: Dict[str, str] = _doc("Channel name to S3 URI, as the SDK's fit() takes them.")
    job_name: str = _doc("Training job name.")
    wait: bool = _doc("fit() waits for the job.")


class SageMakerBackendSection(PlanModel):
    type: Literal["sagemaker"] = _doc("SageMaker training jobs.")
    region: str = _doc("AWS region the jobs run in.")
    job_name: str = _doc("Training job name (spec name and plan hash).")
    plan_hash: str = _doc("sha256 of the plan's execution content, tagged on the job.", pattern=r"^[0-9a-f]{64}$")
    create_training_job_request: Dict[str, Any] = _doc(
        "The CreateTrainingJob request apply sends, as boto3 takes it: checked against SageMaker's service "
        "model (schema/sagemaker_api.py: members, required keys, lengths, patterns, enums).")
    merge_job_request: Optional[Dict[str, Any]] = _doc(
        "The CreateTrainingJob request of the merge job, when outputs.merged_model is set (checked the same way).")
    estimator_args: Dict[str, Any] = _doc("The same job as SageMaker Python SDK Estimator arguments (for review "
                                          "and the SDK parity test; apply sends the request).",
                                          json_schema_extra=REVIEW_ONLY)
    fit_args: SageMakerFitArgs = _doc("The SDK's fit() arguments matching the request.", json_schema_extra=REVIEW_ONLY)
    uploads: List[SageMakerUpload] = _doc("Local files apply uploads before creating the job.")
    sourcedir: SageMakerSourceDir = _doc("The source archive the job runs.")
    channels: List[SageMakerChannel] = _doc("Input channels and where each lands in the container.")
    container: SageMakerContainer = _doc("Folders inside the container.")
    apply_environment: Dict[str, str] = _doc("Job environment variable to the local environment variable apply "
                                             "reads its value from (env-referenced secrets).")
    files: RenderedFiles = _doc(_FILES_DOC)

    @field_validator("create_training_job_request", "merge_job_request")
    @classmethod
    def _request_fits_the_api(cls, request: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        found = problems(request) if request is not None else []
        if found:
            raise ValueError("; ".join(f"{'.'.join(map(str, path))} {message}" for path, message in found))
        return request


BackendSection = Annotated[Union[LocalBackendSection, SlurmBackendSection, SageMakerBackendSection],
                           Field(discriminator="type")]


# ---- review-only sections --------------------------------------------------------------------------

class PlanWarning(PlanModel):
    code: str = _doc("Stable warning code (accept_risks names some).")
    message: str = _doc("What the reviewer should know.")
    field: Optional[str] = _doc("The spec field it is about.", default=None)
    location: Optional[str] = _doc("file:line:column of that field.", default=None)


class WeightGroup(PlanModel):
    params: int = _doc("Parameters in the group.", ge=0)
    dtype: str = _doc("How the group is stored (bf16, fp32, nf4+dq, int8, ...).")
    gib: float = _doc("GiB the group takes per device.", ge=0)


class MemoryEstimate(ReviewModel):
    verdict: Literal["fits", "tight", "does-not-fit", "unknown"] = _doc("The memory verdict per device.")
    total_gib: float = _doc("Estimated peak per device, GiB.")
    capacity_gib: Optional[float] = _doc("Memory per device, GiB.")
    total_bytes: Optional[int] = _doc("Estimated peak per device, bytes.", default=None)
    peak_allocated_bytes: Optional[int] = _doc("Peak allocated by tensors.", default=None)
    peak_reserved_bytes: Optional[int] = _doc("Peak reserved by the allocator.", default=None)
    tokens_per_micro_batch: Optional[int] = _doc("Tokens in one micro batch.", default=None)
    gradient_checkpointing: Optional[bool] = _doc("Checkpointing as estimated.", default=None)
    breakdown_bytes: Dict[str, int] = _doc("Peak by component, bytes.", default_factory=dict)
    breakdown_gib: Dict[str, float] = _doc("Peak by component, GiB.", default_factory=dict)
    weights_by_group: Dict[str, WeightGroup] = _doc("Weights by module group.", default_factory=dict)


class ThroughputEstimate(ReviewModel):
    tokens_per_s_total: Optional[float] = _doc("Tokens per second over all devices.", default=None)
    tokens_per_s_per_device: Optional[float] = _doc("Tokens per second per device.", default=None)
    micro_step_time_s: Optional[float] = _doc("Seconds per micro step.", default=None)
    bound_by: Optional[str] = _doc("What limits the step (gpu, memory, communication, cpu).", default=None)


class TimeEstimate(PlanModel):
    train_tokens: Optional[int] = _doc("Tokens the run processes.")
    steps: Optional[int] = _doc("Optimizer steps.", default=None)
    train_s: Optional[int] = _doc("Seconds of training.")
    load_s: Optional[int] = _doc("Seconds loading the weights.")
    total_s: Optional[int] = _doc("train_s + load_s.")
    hours: Optional[float] = _doc("total_s in hours.")


class CostEstimate(PlanModel):
    instance_type: Optional[str] = _doc("Billed instance type.")
    instances: Optional[int] = _doc("Instances billed.", default=None)
    instance_hours: Optional[float] = _doc("Instance-hours.")
    usd_per_instance_hour: Optional[float] = _doc("On-demand price per instance-hour.")
    usd: Optional[float] = _doc("Estimated cost in USD.")
    price_source: Optional[str] = _doc("Where the price comes from.", default=None)
    price_date: Optional[str] = _doc("When the price was recorded.", default=None)
    price_basis: Optional[str] = _doc("What the price is (list price, EC2 rate).", default=None)


class Suggestion(PlanModel):
    change: Dict[str, Any] = _doc("Spec fields (dotted) and the values to set.")
    reason: str = _doc("Why.")
    message: str = _doc("The suggestion as shown.")
    total_gib: Optional[float] = _doc("Estimated peak per device with the change.", default=None)
    verdict: Optional[str] = _doc("Memory verdict with the change.", default=None)
    tokens_per_s: Optional[float] = _doc("Estimated tokens/s with the change.", default=None)


class BudgetUsage(ReviewModel):
    exceeded: List[str] = _doc("Budget limits the estimate exceeds.")
    unknown: List[str] = _doc("Budget limits the estimate cannot check.")


class Estimates(PlanModel):
    memory: MemoryEstimate = _doc("Peak memory per device and its verdict.")
    throughput: ThroughputEstimate = _doc("Tokens per second and what bounds them.")
    time: TimeEstimate = _doc("Wall-clock time.")
    cost: CostEstimate = _doc("Cost at on-demand prices.")
    suggestions: List[Suggestion] = _doc("Spec changes that fit or run faster.")
    budget: Optional[BudgetUsage] = _doc("The spec's budget against the estimates (limits set, usage, "
                                         "exceeded).", default=None)


class Tuning(PlanModel):
    applied: Dict[str, Any] = _doc("Spec fields `plan --tune` changed, and their values.")
    reason: str = _doc("Why (or why nothing changed).")
    tokens_per_s_before: Optional[float] = _doc("Estimated tokens/s of the spec as written.", default=None)
    tokens_per_s_after: Optional[float] = _doc("Estimated tokens/s of the tuned plan.", default=None)
    verdict_before: Optional[str] = _doc("Memory verdict of the spec as written.", default=None)


# ---- the plan --------------------------------------------------------------------------------------

class Plan(PlanModel):
    """plan.json: everything `apply` runs, and (review-only) what a reviewer reads before it does."""

    format: Literal["tunespec-plan/v1"] = _doc("Plan format version.")
    tunespec_version: str = _doc("tunespec version that compiled the plan (the lock pins it).",
                                 json_schema_extra=REVIEW_ONLY)
    spec: PlanSpecInfo = _doc("The spec the plan was compiled from.")
    model: ModelSection = _doc("The base model and how it is loaded.")
    method: MethodSection = _doc("Full fine-tuning, LoRA, DoRA or QLoRA, resolved.")
    devices: DevicesSection = _doc("The devices the run uses.")
    precision: PrecisionSection = _doc("Training precision, resolved for these devices.")
    parallel: ParallelSection = _doc("How the work is spread over the devices.")
    data: DataSection = _doc("Training and evaluation data.")
    batch: BatchSection = _doc("Batch geometry and step counts.")
    trainer: TrainerSection = _doc("Trainer settings, named as TrainingArguments / SFTConfig name them.")
    launch: LaunchSection = _doc("How the trainer processes start.")
    tracking: TrackingSpec = _doc("The spec's tracking section (tensorboard, wandb, mlflow).")
    outputs: OutputsSpec = _doc("The spec's outputs section (adapter, merged model, sample prompts).")
    inference: InferenceSection = _doc("Where the merge and the answers to prompts place the model.")
    secrets: SecretsSpec = _doc("The spec's secrets section: references only, never values.")
    backend: BackendSection = _doc("Where the run executes, compiled for that backend.")
    warnings: List[PlanWarning] = _doc("Things a reviewer should know.", json_schema_extra=REVIEW_ONLY)
    estimates: Estimates = _doc("Memory, speed, time and cost estimates.", json_schema_extra=REVIEW_ONLY)
    tuning: Optional[Tuning] = _doc("What `plan --tune` changed.", default=None, json_schema_extra=REVIEW_ONLY)


def review_only_fields() -> Tuple[str, ...]:
    """The plan's top-level review-only sections."""
    return tuple(name for name, info in Plan.model_fields.items()
                 if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(REVIEW_ONLY_KEY))


def execution_fields() -> Tuple[str, ...]:
    """The plan's top-level sections `apply` runs."""
    review = review_only_fields()
    return tuple(name for name in Plan.model_fields if name not in review)


class PlanFormatError(ValueError):
    """A plan.json this tunespec cannot run: another version's, or one edited by hand."""


def read_plan(path: Path) -> dict:
    """plan.json as everything that runs a plan reads it, checked against the model first: a plan this
    tunespec did not write is refused before anything runs, naming the first field that differs."""
    text = path.read_text(encoding="utf-8")
    try:
        Plan.model_validate_json(text)
    except ValidationError as error:
        problems_found = error.errors(include_url=False, include_input=False)
        first = problems_found[0]
        more = f" (and {len(problems_found) - 1} more)" if len(problems_found) > 1 else ""
        raise PlanFormatError(f"{path} is not a {PLAN_FORMAT} plan tunespec {VERSION} can run: "
                              f"{'.'.join(map(str, first['loc']))}: {first['msg']}{more}") from None
    return json.loads(text)


def read_plan_to_run(path: Path, exit_code: int = 1) -> dict:
    """read_plan for the programs that run a plan (the trainer, the merge, the Trainium and SageMaker
    entries): a plan they cannot run stops them with one line on stderr and `exit_code`."""
    try:
        return read_plan(path)
    except PlanFormatError as error:
        print(f"tunespec: {error}; compile it again with `tunespec plan`", file=sys.stderr)
        raise SystemExit(exit_code) from None
