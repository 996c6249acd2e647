"""What a SageMaker job's instances and strategy allow: the processor kind and the SDK's `distribution` argument."""
from .errors import SpecError
from .sagemaker_image import images, instance_family


def _processor(plan: dict, backend: dict) -> str:
    family = instance_family(backend["instance_type"])
    path = ("backend", "instance_type")
    if family is None:
        raise SpecError(f"{backend['instance_type']!r} is not a SageMaker instance type", path,
                        hint="SageMaker training instance types look like `ml.p4d.24xlarge`")
    if family.startswith(("trn", "inf")) or plan["devices"]["kind"] == "trainium":
        raise SpecError("tunespec runs Trainium only on HyperPod/Slurm, not as SageMaker training jobs", path,
                        hint="use `backend.type: hyperpod-slurm` with `strategy: neuron`")
    return "gpu" if family[0] in ("g", "p") else "cpu"


def distribution(plan: dict, backend: dict) -> dict:
    """The SDK's `distribution` argument for the plan's strategy on the backend's instances."""
    processor = _processor(plan, backend)
    strategy = plan["parallel"]["strategy"]
    path = ("distribution", "strategy")
    if strategy == "neuron":
        raise SpecError("`strategy: neuron` needs Trainium, which tunespec runs on HyperPod/Slurm", path,
                        hint="use `backend.type: hyperpod-slurm`")
    if strategy in ("none", "device_map"):
        if backend["instance_count"] > 1:
            raise SpecError(f"`strategy: {strategy}` runs one process on one instance, but instance_count is "
                            f"{backend['instance_count']}", ("backend", "instance_count"),
                            hint="set instance_count: 1, or use `strategy: ddp`/`fsdp` to train across instances")
        return {}
    if processor != "gpu":
        raise SpecError(f"`strategy: {strategy}` needs GPU instances; {backend['instance_type']} has none", path,
                        hint="use a GPU instance type (ml.g5.*, ml.p4d.*, ml.p5.*) or `strategy: none`")
    version = backend["framework_version"]
    if version not in images()["torch_distributed_gpu_versions"]:
        raise SpecError(f"PyTorch {version} images do not support torch_distributed (torchrun)",
                        ("backend", "framework_version"),
                        hint="supported: " + ", ".join(images()["torch_distributed_gpu_versions"]))
    distribution: dict = {"torch_distributed": {"enabled": True}}
    if strategy == "smp":
        distribution["smdistributed"] = {"modelparallel": {"enabled": True,
                                                           "parameters": smp_parameters(plan["parallel"]["settings"])}}
    return distribution


def smp_parameters(settings: dict) -> dict:
    """SMP v2 `mp_parameters`; MoE, delayed init and checkpointing are set by the trainer from the plan."""
    parameters = {
        "activation_loading_horizon": settings["activation_loading_horizon"],
        "expert_parallel_degree": settings["expert_parallel_degree"],
        "hybrid_shard_degree": settings["hybrid_shard_degree"],
        "sm_activation_offloading": settings["activation_offloading"],
    }
    if settings["tensor_parallel_degree"] > 1:
        parameters["tensor_parallel_degree"] = settings["tensor_parallel_degree"]
    return dict(sorted(parameters.items()))
