"""The whole fine-tune spec (`apiVersion: tunespec/v1`)."""
from typing import List, Literal, Optional

from pydantic import Field

from .backend import Backend
from .budget import BudgetSpec
from .common import SpecModel
from .data import DataSpec
from .distribution import Distribution, NoDistribution
from .method import MethodSpec
from .model import ModelSpec
from .run import OutputsSpec, SecretsSpec, TrackingSpec
from .training import TrainingSpec

API_VERSION = "tunespec/v1"


class Spec(SpecModel):
    apiVersion: Literal["tunespec/v1"] = Field(description="Version of the spec format.")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,47}$", description="Lower-case name of the fine-tune.")
    description: Optional[str] = None
    extends: Optional[str] = Field(
        None,
        description=(
            "Path of a base spec, relative to this file. Mappings merge key by key (this file wins); "
            "lists and scalars replace; `null` removes an inherited key."
        ),
    )
    model: ModelSpec
    method: MethodSpec
    data: DataSpec
    training: TrainingSpec
    distribution: Distribution = Field(default_factory=lambda: NoDistribution(strategy="none"))
    backend: Backend
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    outputs: OutputsSpec = Field(default_factory=OutputsSpec)
    secrets: SecretsSpec = Field(default_factory=SecretsSpec)
    budget: Optional[BudgetSpec] = Field(None, description="Limits on the run's estimated cost and time.")
    accept_risks: List[Literal["does-not-fit", "truncates-every-row"]] = Field(
        default_factory=list,
        description=(
            "Plan-time refusals this spec overrides knowingly: `does-not-fit` (the memory estimate exceeds "
            "the device), `truncates-every-row` (every local data row is longer than max_seq_length)."
        ),
    )
