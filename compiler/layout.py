"""The plan's layout: the devices a run trains on, its precision (with the k-bit upcast decision), how its
processes divide the model (parallel degrees) and the batch. `lay_out` computes it once, into the plan's
devices, precision, parallel and batch sections; the estimator, the backends and the runtime read those.

Its inputs are the devices (the spec's backend: `devices_of_backend`; or a catalog hardware name:
`devices_of_hardware`) and the spec's layout choices (`LayoutChoices`). A plan records every choice, so
the estimator's suggestions lay out the plan's own choices with one change (`LayoutChoices.of_plan`), and
the estimator's replay (benchmarks/estimate_errors.py) lays out each measured case the same way.
"""
import dataclasses
import math
from typing import Optional

from pydantic import TypeAdapter

from ..schema import Spec
from ..schema.distribution import Distribution
from ..schema.host import Host
from . import instances, rules
from .errors import SpecError
from .neuron import compiler_flags
from .precision import resolve_precision

DISTRIBUTION = TypeAdapter(Distribution)
# The plan sections lay_out writes.
LAYOUT_SECTIONS = ("devices", "precision", "parallel", "batch")


@dataclasses.dataclass(frozen=True)
class LayoutChoices:
    """What the spec chooses of the layout: the distribution, the batch, the precision, the k-bit preparation."""

    distribution: Distribution
    micro_batch_size: int
    gradient_accumulation: int
    precision: str  # training.precision as written (`auto` resolved for the devices)
    allow_emulated_bf16: bool
    epochs: Optional[float]
    max_steps: Optional[int]
    kbit_preparation: Optional[str]  # QLoRA's method.quantization.kbit_preparation; None without k-bit weights

    @classmethod
    def of_spec(cls, spec: Spec) -> "LayoutChoices":
        training, method = spec.training, spec.method
        quantized = method.type == "qlora"
        return cls(distribution=spec.distribution, micro_batch_size=training.micro_batch_size,
                   gradient_accumulation=training.gradient_accumulation, precision=training.precision,
                   allow_emulated_bf16=training.allow_emulated_bf16, epochs=training.epochs,
                   max_steps=training.max_steps,
                   kbit_preparation=(method.quantization.kbit_preparation if method.quantization else "minimal")
                   if quantized else None)

    @classmethod
    def of_plan(cls, plan: dict) -> "LayoutChoices":
        """The choices a plan was laid out with, as it records them."""
        parallel, batch, precision, trainer = plan["parallel"], plan["batch"], plan["precision"], plan["trainer"]
        quantization = plan["method"]["quantization"]
        return cls(distribution=DISTRIBUTION.validate_python({"strategy": parallel["strategy"],
                                                              **parallel["settings"]}),
                   micro_batch_size=batch["micro_batch_size"], gradient_accumulation=batch["gradient_accumulation"],
                   precision=precision["requested"], allow_emulated_bf16=precision["allow_emulated_bf16"],
                   epochs=trainer["num_train_epochs"] if trainer["max_steps"] == -1 else None,
                   max_steps=trainer["max_steps"] if trainer["max_steps"] > 0 else None,
                   kbit_preparation=quantization["kbit_preparation"] if quantization else None)

    def with_changes(self, **changes) -> "LayoutChoices":
        return dataclasses.replace(self, **changes)


def lay_out(devices: dict, choices: LayoutChoices, data: dict) -> dict:
    """The layout sections of `choices` on `devices`, for the plan's data section."""
    placed = place(devices, choices)
    return {"devices": devices, **placed, "batch": batch(choices, placed["parallel"], data)}


def place(devices: dict, choices: LayoutChoices) -> dict:
    """The precision and parallel sections of `choices` on `devices`: the layout but its batch, which
    also needs the data (a plan builds them apart, so that a refused data section leaves them built)."""
    return {"precision": dict(resolve_precision(choices.precision, choices.allow_emulated_bf16, devices),
                              kbit_upcast=choices.kbit_preparation == "full"),
            "parallel": _parallel(choices.distribution, devices)}


def devices_of_backend(spec: Spec, host: Host) -> dict:
    """The devices the spec's backend trains on (a local CPU plan is made for `host`)."""
    backend = spec.backend
    if backend.type == "local":
        if backend.device == "cpu" or (backend.device == "auto" and not backend.hardware):
            # This machine's CPU: the plan is made for it (precision, memory capacity, speed).
            return {"kind": "cpu", "accelerator": "cpu", "memory_gib": host.memory_gib, "per_node": 1, "nodes": 1,
                    "world_size": 1, "instance_type": None, "peak_tflops": None,
                    "cpu": {"model": host.cpu_model, "cores": host.cores, "capability": host.capability,
                            "native_bf16": host.native_bf16}}
        if not backend.hardware:
            raise SpecError("a CUDA run needs the hardware it plans for", ("backend", "hardware"),
                            hint="name this machine's instance type (e.g. ml.g5.12xlarge) or GPU (e.g. h100-80gb)")
        hardware = instances.lookup_instance(backend.hardware, ("backend", "hardware"))
        return _devices(hardware, backend.hardware, backend.gpus, 1)
    hardware = instances.lookup_instance(backend.instance_type, ("backend", "instance_type"))
    if backend.type == "sagemaker":
        return _devices(hardware, backend.instance_type, None, backend.instance_count)
    if backend.accelerator == "cpu":
        per_node = backend.processes_per_node or 1
        return {"kind": "cpu", "accelerator": "cpu", "memory_gib": None, "per_node": per_node,
                "nodes": backend.nodes, "world_size": per_node * backend.nodes,
                "instance_type": backend.instance_type, "peak_tflops": None}
    rules.check_accelerator_matches(backend.accelerator, hardware, backend.instance_type)
    return _devices(hardware, backend.instance_type, None, backend.nodes)


def devices_of_hardware(name: str, per_node: Optional[int] = None, nodes: int = 1) -> dict:
    """The devices of `nodes` instances (or local machines) of the catalog's hardware `name`; `per_node`:
    the GPUs used of each (default: all)."""
    return _devices(instances.lookup_instance(name), name, per_node, nodes)


def _devices(hardware: dict, name: str, per_node: Optional[int], nodes: int) -> dict:
    kind = hardware["kind"]
    if kind == "trainium":
        # One process per NeuronCore: that is what torchrun starts on Trainium.
        # The catalog's `neuron_cores` and `memory_gib` are per chip; an instance has several chips.
        per_node = hardware["neuron_cores"] * hardware["accelerators_per_instance"]
        memory = hardware["memory_gib"] / hardware["neuron_cores"]
    else:
        per_node = per_node or hardware["accelerators_per_instance"]
        memory = hardware["memory_gib"]
    return {"kind": kind, "accelerator": hardware.get("accelerator_name") or hardware["accelerator"],
            "memory_gib": memory, "per_node": per_node, "nodes": nodes, "world_size": per_node * nodes,
            "instance_type": name if name.startswith("ml.") else None,
            "peak_tflops": hardware.get("peak_bf16_tflops"), "hardware": name}


def _parallel(dist, devices: dict) -> dict:
    world = devices["world_size"]
    settings = dist.model_dump(exclude={"strategy"})
    parallel = {"strategy": dist.strategy, "processes_per_node": devices["per_node"], "world_size": world,
                "data_parallel": world, "tensor_parallel": 1, "expert_parallel": 1, "shard_degree": 1,
                "pipeline_stages": 1, "settings": settings}
    if dist.strategy in ("none", "device_map"):
        parallel.update(processes_per_node=1, world_size=1, data_parallel=1)
        if dist.strategy == "device_map":
            parallel["pipeline_stages"] = devices["per_node"]
    elif dist.strategy == "fsdp":
        parallel["shard_degree"] = {"full_shard": world, "shard_grad_op": world, "no_shard": 1,
                                    "hybrid_shard": devices["per_node"]}[dist.sharding]
    elif dist.strategy == "smp":
        parallel["expert_parallel"] = dist.expert_parallel_degree
        parallel["tensor_parallel"] = dist.tensor_parallel_degree
        parallel["data_parallel"] = world // dist.tensor_parallel_degree
        parallel["shard_degree"] = dist.hybrid_shard_degree or world // dist.tensor_parallel_degree
    elif dist.strategy == "neuron":
        parallel["tensor_parallel"] = dist.tensor_parallel_degree
        parallel["pipeline_stages"] = dist.pipeline_parallel_degree
        parallel["data_parallel"] = world // (dist.tensor_parallel_degree * dist.pipeline_parallel_degree)
        settings["compiler_flags"] = compiler_flags(dist.compiler_flags, devices["hardware"])
    return parallel


def batch(choices: LayoutChoices, parallel: dict, data: dict) -> dict:
    """The batch section: the choices' batch over the parallel layout's data-parallel ranks and the data."""
    global_batch = choices.micro_batch_size * choices.gradient_accumulation * parallel["data_parallel"]
    seq = data["max_seq_length"]
    whole_sequences = data["packing"] or data["format"]["type"] == "text"
    if whole_sequences or not data["tokens_per_example"]:
        tokens_per_sequence = seq
    else:
        tokens_per_sequence = min(seq, data["tokens_per_example"])
    section = {
        "micro_batch_size": choices.micro_batch_size,
        "gradient_accumulation": choices.gradient_accumulation,
        "data_parallel": parallel["data_parallel"],
        "global_batch_size": global_batch,
        "sequence_length": seq,
        "tokens_per_step": int(global_batch * tokens_per_sequence),
        "steps_per_epoch": None,
        "total_steps": choices.max_steps,
    }
    rows, per_example = data["num_examples"], data["tokens_per_example"]
    if rows and per_example:
        train_rows = rows * (1 - (data["eval_fraction"] or 0))
        sequences = math.ceil(train_rows * per_example / seq) if whole_sequences else train_rows
        section["steps_per_epoch"] = max(1, math.ceil(sequences / global_batch))
        if choices.epochs:
            section["total_steps"] = math.ceil(section["steps_per_epoch"] * choices.epochs)
    return section
