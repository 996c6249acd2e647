"""The trainer's arguments of a plan, as transformers' TrainingArguments / TRL's SFTConfig name them.

The plan writes each fact once: the trainer section holds the trainer's own settings, the layout holds
the batch and the precision, the data section the packing. Here they join under the trainer's names:
runtime/train.py hands this to SFTConfig (runtime/train_neuron.py to NeuronSFTConfig), and the plan
folder's trainer_args.json shows it to the reviewer.
"""

# precision.resolved as TrainingArguments' mixed-precision flags (fp32: neither; fp8 is refused at plan
# time, compiler/supports.py: no trainer trains in it).
MIXED_PRECISION_FLAGS = {"bf16": {"bf16": True, "fp16": False}, "fp16": {"bf16": False, "fp16": True},
                         "fp32": {"bf16": False, "fp16": False}}


def trainer_arguments(plan: dict) -> dict:
    batch, data = plan["batch"], plan["data"]
    # A packed row holds the micro batch's documents (data.packed_row_tokens): one row per micro batch.
    row = data["packed_row_tokens"]
    return {
        **plan["trainer"],
        "per_device_train_batch_size": 1 if row else batch["micro_batch_size"],
        "per_device_eval_batch_size": 1 if row else batch["micro_batch_size"],
        "gradient_accumulation_steps": batch["gradient_accumulation"],
        "max_length": row or batch["sequence_length"],
        **MIXED_PRECISION_FLAGS[plan["precision"]["resolved"]],
        "packing": data["packing"],
        "completion_only_loss": data["completion_only_loss"],
    }
