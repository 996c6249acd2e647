"""The plan `tunespec probe` checks: the spec's per-device work on this one machine.

Same model, method, micro batch, sequence length, checkpointing and optimizer; one device, no
sharding, no accumulation (it does not change a step's memory or tokens/s). When the whole model does
not fit here, the probe builds fewer layers and the estimate is made for the same layer count.
"""
import copy
import dataclasses

from ..schema.backend import LocalBackend
from ..schema.contract import PROBE_MODULE
from ..schema.distribution import NoDistribution
from . import parameter_counts
from .estimate import estimate
from .plan import build_plan
from .spec_loader import LoadedSpec


def single_device_plan(loaded: LoadedSpec, hardware: str) -> dict:
    spec = loaded.spec
    on_cpu = hardware == "cpu"
    training = spec.training.model_copy(update={"gradient_accumulation": 1, **(
        {"precision": "fp32", "liger_kernels": False} if on_cpu else {})})
    backend = LocalBackend(type="local", device="cpu" if on_cpu else "cuda", hardware=None if on_cpu else hardware)
    variant = spec.model_copy(update={"backend": backend, "distribution": NoDistribution(strategy="none"),
                                      "training": training})
    # The whole model may not fit on this one device: the probe then builds fewer layers.
    plan = build_plan(dataclasses.replace(loaded, spec=variant), accept_risks=("does-not-fit",))
    # The probe runs its own plain loop (runtime/probe.py), not the trainer `apply` launches: estimated as such.
    plan["launch"] = dict(plan["launch"], module=PROBE_MODULE)
    return with_layers(plan, plan["model"]["architecture"]["num_hidden_layers"])


def with_layers(plan: dict, layers: int) -> dict:
    """The plan re-estimated for a model of `layers` transformer layers."""
    variant = copy.deepcopy(plan)
    arch = variant["model"]["architecture"]
    arch["num_hidden_layers"] = layers
    variant["model"]["parameters"] = {**parameter_counts.count_parameters(arch),
                                      "trainable": parameter_counts.count_trainable(arch, variant["method"])}
    estimates = estimate(variant)
    estimates.pop("warnings", None)
    variant["estimates"] = estimates
    return variant


def layers_that_fit(plan: dict) -> int:
    """Most layers whose estimate fits this device (all of them when the whole model fits)."""
    full = plan["model"]["architecture"]["num_hidden_layers"]
    if plan["devices"]["kind"] == "cpu" or plan["estimates"]["memory"]["verdict"] == "fits":
        return full
    low, high = 1, full
    while low < high:
        middle = (low + high + 1) // 2
        if with_layers(plan, middle)["estimates"]["memory"]["verdict"] == "fits":
            low = middle
        else:
            high = middle - 1
    return low
