"""Where the plan runs."""
from typing import Annotated, Dict, List, Literal, Optional, Union

from pydantic import Field, model_validator

from .common import PositiveInt, SpecModel

S3Uri = Annotated[str, Field(pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$")]


class LocalBackend(SpecModel):
    type: Literal["local"]
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpus: Optional[PositiveInt] = Field(None, description="GPUs to use; all visible ones when left out.")
    hardware: Optional[str] = Field(
        None,
        description=(
            "Hardware catalog name of this machine, for the estimates: an instance type (`ml.g5.12xlarge` "
            "for a notebook instance) or a GPU (`h100-80gb`). Left out: CPU, or the GPU found at run time."
        ),
    )
    run_dir: str = Field("runs/{name}", description="Folder of the run; `{name}` is the spec's name.")


class SpotSpec(SpecModel):
    enabled: bool = True
    max_wait_seconds: PositiveInt = Field(172800, description="Run time plus time spent waiting for capacity.")


class SageMakerBackend(SpecModel):
    type: Literal["sagemaker"]
    instance_type: str
    instance_count: PositiveInt = 1
    role: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")]
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")]
    output_s3: S3Uri
    checkpoint_s3: Optional[S3Uri] = None
    data_s3: Optional[S3Uri] = Field(None, description="Prefix local data files are uploaded to.")
    framework_version: str = "2.5.1"
    py_version: str = "py311"
    volume_size_gb: PositiveInt = 500
    max_run_seconds: Annotated[int, Field(gt=0, le=2419200, description="At most 28 days, SageMaker's limit.")] = 86400
    keep_alive_seconds: Annotated[int, Field(ge=0, le=21600)] = 0
    spot: Optional[SpotSpec] = None
    disable_output_compression: bool = True
    environment: Dict[str, str] = Field(default_factory=dict)
    tags: Dict[str, str] = Field(default_factory=dict)
    secrets_in_request: List[Literal["hf_token", "wandb_api_key"]] = Field(
        default_factory=list,
        description=(
            "Secrets given by `env:` whose values apply may send in the job's Environment, where anyone "
            "allowed DescribeTrainingJob can read them. Others must be `secrets_manager_arn` references."
        ),
    )


class VenvEnvironment(SpecModel):
    venv: str = Field(description="Path of a Python virtual environment on the shared filesystem.")


class ContainerEnvironment(SpecModel):
    container_image: str = Field(description="Enroot/pyxis image (HyperPod clusters only).")
    container_mounts: Optional[str] = None


class HyperPodSlurmBackend(SpecModel):
    type: Literal["hyperpod-slurm"]
    cluster_flavour: Literal["hyperpod", "plain"] = Field(
        "hyperpod", description="`plain` Slurm rejects HyperPod's `--auto-resume` and container options."
    )
    instance_type: str
    nodes: PositiveInt = 1
    partition: Optional[str] = None
    accelerator: Literal["gpu", "trainium", "cpu"] = "gpu"
    processes_per_node: Optional[PositiveInt] = Field(
        None, description="Defaults to the instance's GPUs (or 1 for CPU)."
    )
    shared_dir: str = Field("/fsx", description="Shared filesystem (FSx for Lustre) root for runs and models.")
    environment: Union[VenvEnvironment, ContainerEnvironment]
    time_limit: Optional[Annotated[str, Field(pattern=r"^(\d+-)?\d{1,2}:\d{2}(:\d{2})?$")]] = None
    auto_resume: bool = True

    @model_validator(mode="after")
    def _plain_cluster_options(self) -> "HyperPodSlurmBackend":
        if self.cluster_flavour == "plain" and isinstance(self.environment, ContainerEnvironment):
            raise ValueError("container images need HyperPod's pyxis/enroot; a `plain` Slurm cluster needs `venv`")
        return self


Backend = Annotated[Union[LocalBackend, SageMakerBackend, HyperPodSlurmBackend], Field(discriminator="type")]
