"""What a run may cost: limits checked against the plan's estimates at plan time."""
from typing import Annotated, Optional

from pydantic import Field, model_validator

from .common import SpecModel

PositiveNumber = Annotated[float, Field(gt=0)]


class BudgetSpec(SpecModel):
    """Planning fails (at the limit's line) when an estimate exceeds a limit; `diff` shows each beside its use."""

    max_cost_usd: Optional[PositiveNumber] = Field(None, description="Most the run may cost on demand, in US dollars.")
    max_hours: Optional[PositiveNumber] = Field(None, description="Most wall-clock hours the run may take.")
    max_gpu_hours: Optional[PositiveNumber] = Field(
        None, description="Most accelerator-hours (hours × GPUs or Trainium chips, over every node) the run may use."
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> "BudgetSpec":
        if self.max_cost_usd is None and self.max_hours is None and self.max_gpu_hours is None:
            raise ValueError("give at least one of `max_cost_usd`, `max_hours`, `max_gpu_hours`")
        return self
