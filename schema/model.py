"""Which pretrained model to start from."""
from typing import Literal, Optional

from pydantic import Field

from .common import SpecModel


class ModelSpec(SpecModel):
    source: str = Field(
        description=(
            "Where the weights come from: a hub id (`org/name`), a local folder or file (`./...`, `/...`), "
            "an S3 prefix (`s3://bucket/prefix`), a GGUF file (`*.gguf`), or a file shipped by an installed "
            "Python package (`pkg://DISTRIBUTION/PATH/IN/PACKAGE.gguf`)."
        ),
        min_length=1,
    )
    architecture: Optional[str] = Field(
        None,
        description=(
            "Catalog name of the model's shape (e.g. `llama-3-8b`), used to plan without downloading. "
            "Defaults to the catalog entry of `source`, or the `config.json` beside a local source."
        ),
    )
    revision: Optional[str] = Field(None, description="Hub revision (branch, tag or commit).")
    init: Literal["pretrained", "random"] = Field(
        "pretrained",
        description=(
            "`pretrained`: start from the source's weights. `random`: pre-train from scratch, the source's "
            "config with freshly initialised weights (transformers' `from_config`, seeded by `training.seed`); "
            "full fine-tuning only."
        ),
    )
    trust_remote_code: bool = False
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2", "flex_attention"] = Field(
        "auto",
        description=(
            "The attention kernel. `auto`: the compiler chooses from what the trainer's environment has "
            "(varlen flash attention where flash-attn is installed, else torch's flex attention with a "
            "document mask for packed batches on a GPU, else sdpa); the plan says which and why."
        ),
    )
    offline: bool = Field(False, description="Never contact a model hub at run time.")
