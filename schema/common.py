"""Building blocks shared by every section of the spec."""
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

Dtype = Literal["bf16", "fp16", "fp32"]
# Keys whose value selects which model a spec mapping is (the spec's unions are discriminated by them):
# a child spec that changes one replaces the inherited mapping, and error messages name members by them.
DISCRIMINATORS = ("type", "strategy")


class SpecModel(BaseModel):
    """Base of every spec section: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SecretRef(SpecModel):
    """A secret given by reference: the value is read at run time, never written into a plan."""

    env: Optional[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = Field(
        None, description="Name of an environment variable that holds the secret."
    )
    secrets_manager_arn: Optional[
        Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$")]
    ] = Field(None, description="ARN of an AWS Secrets Manager secret that holds the value.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "SecretRef":
        if (self.env is None) == (self.secrets_manager_arn is None):
            raise ValueError("give exactly one of `env` or `secrets_manager_arn`")
        return self


PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
