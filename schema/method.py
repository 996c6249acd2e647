"""How the weights are adapted: full fine-tuning, LoRA, DoRA, QLoRA."""
from typing import List, Literal, Optional, Union

from pydantic import Field

from .common import Dtype, Fraction, PositiveInt, SpecModel


class LoraSpec(SpecModel):
    r: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: Fraction = 0.05
    target_modules: Union[Literal["all-linear"], List[str]] = Field(
        "all-linear", description="`all-linear`, or module names such as `q_proj`, `query_key_value`."
    )
    include_experts: bool = Field(
        False,
        description="Also adapt MoE expert weights (fused 3-D expert parameters in transformers 5).",
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


class MethodSpec(SpecModel):
    type: Literal["full", "lora", "dora", "qlora"]
    lora: Optional[LoraSpec] = None
    quantization: Optional[QuantizationSpec] = None
