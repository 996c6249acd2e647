"""Around the training loop: experiment tracking, outputs, secrets."""
from typing import List, Optional

from pydantic import Field

from .common import SecretRef, SpecModel


class WandbSpec(SpecModel):
    project: str
    entity: Optional[str] = None
    api_key: SecretRef


class MlflowSpec(SpecModel):
    tracking_uri: str
    experiment: str


class TrackingSpec(SpecModel):
    tensorboard: bool = True
    wandb: Optional[WandbSpec] = None
    mlflow: Optional[MlflowSpec] = None


class OutputsSpec(SpecModel):
    adapter: bool = True
    merged_model: bool = False
    consolidate_neuron_checkpoint: bool = False
    sample_prompts: List[str] = Field(
        default_factory=list, description="Prompts answered by the base and the tuned model after training."
    )


class SecretsSpec(SpecModel):
    hf_token: Optional[SecretRef] = None
