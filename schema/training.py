"""The optimisation loop: steps, batch, schedule, precision, checkpoints."""
from typing import Annotated, Literal, Optional

from pydantic import Field, model_validator

from .common import Fraction, PositiveInt, SpecModel


class TrainingSpec(SpecModel):
    epochs: Optional[float] = Field(None, gt=0, le=10000, description="Passes over the train data (or use max_steps).")
    max_steps: Optional[PositiveInt] = None
    micro_batch_size: PositiveInt = Field(1, description="Sequences per device per forward pass.")
    gradient_accumulation: PositiveInt = 1
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    warmup_ratio: Fraction = 0.0
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    optimizer: Literal[
        "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "adafactor", "sgd"
    ] = "adamw_torch"
    adam_beta1: float = Field(0.9, gt=0, lt=1)
    adam_beta2: float = Field(0.999, gt=0, lt=1)
    precision: Literal["auto", "bf16", "fp16", "fp32", "fp8"] = Field(
        "auto", description="`auto`: bf16 where the device computes it natively and fast (CUDA GPUs with bf16, "
                            "Trainium, CPUs with AMX), fp16 on older GPUs, fp32 on other CPUs.")
    allow_emulated_bf16: bool = Field(
        False, description="Keep `precision: bf16` on a CPU that only emulates it (many times slower than fp32); "
                           "without it `tunespec apply` refuses such a plan.")
    tf32: bool = False
    gradient_checkpointing: bool = False
    liger_kernels: bool = Field(False, description="Use Liger's fused Triton kernels (CUDA only).")
    torch_compile: bool = Field(
        False, description="Compile the model with torch.compile, one decoder layer at a time (the layers share one "
                           "compiled graph, made during the first steps). CUDA GPUs under the torch trainer only.")
    # numpy's and torch's generators take seeds below 2**32.
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42
    checkpoint_every_steps: Optional[PositiveInt] = Field(None, description="Save a checkpoint every N steps.")
    checkpoints_to_keep: PositiveInt = 2
    eval_every_steps: Optional[PositiveInt] = None
    logging_every_steps: PositiveInt = 10

    @model_validator(mode="after")
    def _length(self) -> "TrainingSpec":
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError("give exactly one of `epochs` or `max_steps`")
        return self
