"""Training data: where it is, how rows become text, how text becomes sequences."""
from typing import Annotated, Literal, Optional, Union

from pydantic import Field

from .common import PositiveInt, SpecModel


class DataSource(SpecModel):
    path: str = Field(
        description="Local file (json, jsonl, csv, tsv, parquet), `s3://` URI, or `hub:NAME` dataset.", min_length=1
    )
    format: Optional[Literal["json", "jsonl", "csv", "tsv", "parquet"]] = Field(
        None, description="File format; inferred from the extension when left out."
    )
    config: Optional[str] = Field(
        None, description="Configuration (subset) of a hub dataset, as datasets.load_dataset's second argument: "
                          "`{path: \"hub:nyu-mll/glue\", config: sst2}` loads GLUE's SST-2."
    )
    split: Optional[str] = Field(None, description="Split name, for hub datasets.")
    limit: Optional[PositiveInt] = Field(None, description="Use only the first N rows (quick runs).")


class TemplateFormat(SpecModel):
    type: Literal["template"]
    prompt: str = Field(description="Python format string over the row's columns, e.g. `... {ref} ...`.")
    completion: str = Field(description="Format string of the part the model learns to produce.")


class InstructionFormat(SpecModel):
    type: Literal["instruction"]
    instruction: str = "instruction"
    context: Optional[str] = "context"
    response: str = "response"


class ChatFormat(SpecModel):
    type: Literal["chat"]
    messages: str = Field("messages", description="Column holding a list of {role, content} messages.")


class TextFormat(SpecModel):
    type: Literal["text"]
    column: str = "text"
    group_into_blocks: bool = Field(
        True, description="Concatenate all rows and cut them into max_seq_length blocks (pre-training)."
    )


DataFormat = Annotated[
    Union[TemplateFormat, InstructionFormat, ChatFormat, TextFormat], Field(discriminator="type")
]


class DataSpec(SpecModel):
    train: DataSource
    eval: Optional[DataSource] = None
    eval_fraction: Optional[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        None, description="Hold out this fraction of train for evaluation when `eval` is not given."
    )
    format: DataFormat
    max_seq_length: PositiveInt = 2048
    packing: bool = True
    completion_only_loss: bool = Field(
        True, description="Compute the loss on completions only, where the format has one."
    )
    tokens_per_example: Optional[PositiveInt] = Field(
        None,
        description="Mean tokens per row after templating, for the estimate of steps when the data is not local.",
    )
    num_examples: Optional[PositiveInt] = Field(
        None, description="Rows in the train source, for estimates when the data is not local."
    )
