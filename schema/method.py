"""How the weights are adapted: full fine-tuning, LoRA, DoRA, QLoRA."""
from typing import Annotated, List, Literal, Optional, Union

from pydantic import Field

from .common import Dtype, PositiveInt, SpecModel


class LoraSpec(SpecModel):
    r: PositiveInt = 16
    alpha: PositiveInt = 32
    # Dropout 1.0 zeroes every adapter input: nothing would train.
    dropout: Optional[Annotated[float, Field(ge=0.0, lt=1.0)]] = Field(
        None,
        description="Dropout on the adapters' input. Default 0.05, or 0 when MoE experts are adapted (PEFT "
                    "adapts fused expert parameters without dropout).",
    )
    target_modules: Union[Literal["all-linear"], List[str]] = Field(
        "all-linear",
        description="`all-linear` (on an MoE model: attention and experts, not the router), or module names "
                    "such as `q_proj`, `query_key_value`; `experts` names an MoE model's fused experts.",
    )
    include_experts: Optional[bool] = Field(
        None,
        description="Adapt the MoE experts (fused 3-D expert parameters in transformers 5, through PEFT's "
                    "target_parameters). Default: when `target_modules` is `all-linear` or names `experts`.",
    )
    bias: Literal["none", "all", "lora_only"] = "none"


class QuantizationSpec(SpecModel):
    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Dtype = "bf16"
    storage_dtype: Literal["uint8", "bf16", "fp16", "fp32"] = Field(
        "uint8", description="Storage dtype of the packed 4-bit weights; FSDP needs it equal to compute_dtype."
    )
    kbit_preparation: Literal["minimal", "full"] = Field(
        "minimal",
        description="`minimal`: the weights that stay unquantized keep the training dtype (norms and the loss "
                    "compute in fp32 inside the model). `full`: PEFT's prepare_model_for_kbit_training, the QLoRA "
                    "paper's recipe: every unquantized weight, embeddings and lm_head in fp32 (more memory, "
                    "slower; not with FSDP or SMP, whose shards need one dtype).",
    )


class MethodSpec(SpecModel):
    type: Literal["full", "lora", "dora", "qlora"]
    lora: Optional[LoraSpec] = None
    quantization: Optional[QuantizationSpec] = None
