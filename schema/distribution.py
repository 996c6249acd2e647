"""How the work is spread over devices."""
from typing import Annotated, List, Literal, Optional, Union

from pydantic import Field

from .common import NonNegativeInt, PositiveInt, SpecModel


class NoDistribution(SpecModel):
    strategy: Literal["none"]


class DdpDistribution(SpecModel):
    strategy: Literal["ddp"]


class FsdpDistribution(SpecModel):
    strategy: Literal["fsdp"]
    sharding: Literal["full_shard", "shard_grad_op", "hybrid_shard", "no_shard"] = "full_shard"
    auto_wrap: bool = True
    offload_params: bool = False
    backward_prefetch: Literal["backward_pre", "backward_post", "none"] = "backward_pre"
    forward_prefetch: bool = False
    use_orig_params: bool = False
    cpu_ram_efficient_loading: bool = True


class DeviceMapDistribution(SpecModel):
    """Naive pipeline: layers placed over the visible GPUs of one process (`device_map="auto"`)."""

    strategy: Literal["device_map"]
    max_memory_fraction: float = Field(0.9, gt=0, le=1, description="Share of each GPU the placement may use.")


class MoeSpec(SpecModel):
    load_balancing: Literal["sinkhorn", "aux_loss", "balanced", "none"] = "sinkhorn"
    all_to_all_dispatcher: bool = True
    global_token_shuffle: bool = False
    use_smp_implementation: bool = True


class SmpDistribution(SpecModel):
    """SageMaker model parallelism v2 (torch.sagemaker): hybrid sharding and expert parallelism."""

    strategy: Literal["smp"]
    hybrid_shard_degree: NonNegativeInt = Field(0, description="0 shards over the whole world (FULL_SHARD).")
    expert_parallel_degree: PositiveInt = 1
    tensor_parallel_degree: PositiveInt = 1
    activation_offloading: bool = False
    activation_loading_horizon: PositiveInt = 2
    delayed_param_init: bool = True
    moe: Optional[MoeSpec] = None
    smddp: bool = Field(True, description="Use the SageMaker distributed data parallel collectives.")


class NeuronDistribution(SpecModel):
    """Tensor parallelism on AWS Trainium through optimum-neuron."""

    strategy: Literal["neuron"]
    tensor_parallel_degree: PositiveInt = 8
    pipeline_parallel_degree: PositiveInt = 1
    compile_steps: PositiveInt = Field(10, description="Steps run by neuron_parallel_compile to extract graphs.")
    compiler_flags: Optional[List[str]] = Field(
        None, description="neuronx-cc flags (NEURON_CC_FLAGS) without --cache_dir, which the backend sets; "
                          "default: the flags of seed 003's upstream HyperPod recipe for the instance's Trainium.")
    lazy_load: bool = Field(
        True, description="Each process builds the model on the meta device and loads only its tensor/pipeline "
                          "parallel shard (optimum-neuron's lazy_load_for_parallelism), instead of every "
                          "process loading the whole model into host memory.")


Distribution = Annotated[
    Union[NoDistribution, DdpDistribution, FsdpDistribution, DeviceMapDistribution, SmpDistribution, NeuronDistribution],
    Field(discriminator="strategy"),
]
