"""Recording double of optimum-neuron's trainer API (NeuronSFTConfig, NeuronSFTTrainer): TRL's own
SFTConfig with the two parallelism fields optimum-neuron adds, and the names of optimum-neuron 0.1.0
(trl 0.11.4, transformers 4.48) that the TRL underneath spells otherwise; the trainer records what it was
given into $NEURON_DOUBLE_LOG instead of compiling for Trainium."""
import dataclasses
import json
import os
from typing import Optional

from trl import SFTConfig


@dataclasses.dataclass
class NeuronSFTConfig(SFTConfig):
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    max_seq_length: Optional[int] = None  # TRL 1.x: max_length
    warmup_ratio: float = 0.0  # transformers 5: a warmup_steps below 1

    def __post_init__(self):
        self.use_cpu = True  # the double trains nothing, on the CPU; bf16 is XLA's business on Trainium
        self.max_length = self.max_seq_length or self.max_length
        self.warmup_steps = self.warmup_ratio or self.warmup_steps
        super().__post_init__()


class NeuronSFTTrainer:
    def __init__(self, model, args, peft_config=None, tokenizer=None, train_dataset=None, eval_dataset=None):
        self.record = {
            "model": type(model).__name__, "use_cache": model.config.use_cache, "dtype": str(model.dtype),
            "lora_targets": sorted(peft_config.target_modules) if peft_config else None,
            "lora_r": peft_config.r if peft_config else None,
            "tensor_parallel_size": args.tensor_parallel_size, "pipeline_parallel_size": args.pipeline_parallel_size,
            "learning_rate": args.learning_rate, "pad_token": tokenizer.pad_token,
            "max_seq_length": args.max_seq_length, "warmup_ratio": args.warmup_ratio,
            "train_rows": len(train_dataset), "eval_rows": len(eval_dataset) if eval_dataset is not None else 0,
            "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
        }

    def train(self, resume_from_checkpoint=None):
        with open(os.environ["NEURON_DOUBLE_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps(dict(self.record, call="NeuronSFTTrainer.train",
                                      resume_from_checkpoint=resume_from_checkpoint)) + "\n")

    def save_model(self, output_dir):
        os.makedirs(output_dir, exist_ok=True)
