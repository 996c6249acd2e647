"""Concrete changes to a plan that make it fit or go faster, found by re-running the estimator on
modified copies of the plan. Each suggestion names the spec fields to change and what they buy; a change
of the layout (batch, distribution, instance) is the plan's own layout choices with that change, laid out
by compiler/layout.py as the plan was.
"""
from __future__ import annotations

import copy

from ..schema.distribution import FsdpDistribution
from . import catalog, instances, lora_targets, parameter_counts
from .layout import LayoutChoices, devices_of_hardware, lay_out
from .calibration import Suggestions
from .estimate_memory import estimate_memory
from .estimate_speed import estimate_throughput

FITS = ("fits",)


def suggest(plan: dict, memory: dict, throughput: dict) -> list:
    if memory["verdict"] == "unknown":
        return []
    if memory["verdict"] in ("does-not-fit", "tight"):
        return _make_it_fit(plan, memory)
    return _make_it_faster(plan, throughput)


def _evaluate(plan: dict) -> tuple:
    return estimate_memory(plan), estimate_throughput(plan)


def _entry(change: dict, reason: str, memory: dict, throughput: dict) -> dict:
    rate = throughput.get("tokens_per_s_total")
    settings = ", ".join(f"{key}: {value}" for key, value in change.items())
    message = (f"{settings} -- {reason}: {memory['total_gib']} GiB per device, {memory['verdict']}"
               + (f", ~{rate:,.0f} tokens/s" if rate else ""))
    return {"change": change, "reason": reason, "total_gib": memory["total_gib"], "verdict": memory["verdict"],
            "tokens_per_s": rate, "message": message}


def _relaid(plan: dict, devices: dict | None = None, **changes) -> dict:
    """The plan laid out again with its layout choices changed (and on other `devices`)."""
    variant = copy.deepcopy(plan)
    choices = LayoutChoices.of_plan(plan).with_changes(**changes)
    variant.update(lay_out(devices or variant["devices"], choices, variant["data"]))
    return variant


def _with_micro_batch(plan: dict, micro: int) -> dict:
    """The plan with another micro batch, gradient accumulation raised to keep the global batch."""
    batch = plan["batch"]
    global_batch = batch["micro_batch_size"] * batch["gradient_accumulation"]
    return _relaid(plan, micro_batch_size=micro, gradient_accumulation=max(1, global_batch // micro))


def _with_checkpointing(plan: dict, on: bool) -> dict:
    variant = copy.deepcopy(plan)
    variant["trainer"]["gradient_checkpointing"] = on
    return variant


def _largest_fitting_micro_batch(plan: dict, upper: int) -> tuple:
    """Largest micro batch <= upper that fits, with its estimates, or (None, None, None)."""
    micro = upper
    while micro >= 1:
        variant = _with_micro_batch(plan, micro)
        memory, throughput = _evaluate(variant)
        if memory["verdict"] in FITS:
            return micro, memory, throughput
        micro //= 2
    return None, None, None


def _make_it_fit(plan: dict, memory: dict) -> list:
    out = []
    micro = plan["batch"]["micro_batch_size"]
    accumulation = plan["batch"]["gradient_accumulation"]

    if not plan["trainer"].get("gradient_checkpointing"):
        variant = _with_checkpointing(plan, True)
        m, t = _evaluate(variant)
        out.append(_entry({"training.gradient_checkpointing": True},
                          "keep only each layer's input and recompute the rest in backward (~30% slower)", m, t))
    if micro > 1:
        fit_micro, m, t = _largest_fitting_micro_batch(plan, micro // 2)
        if fit_micro:
            out.append(_entry({"training.micro_batch_size": fit_micro,
                               "training.gradient_accumulation": max(1, micro * accumulation // fit_micro)},
                              f"largest micro batch that fits is {fit_micro}; accumulation keeps the global batch",
                              m, t))
    if not any(s["verdict"] in FITS for s in out):
        refined = _refined(plan, {}, "gradient checkpointing and a smaller micro batch")
        if refined and refined["change"]:
            out.append(refined)
    if plan["method"]["type"] in ("full", "lora", "dora"):
        refined = _refined(_as_qlora(plan), {"method.type": "qlora"}, "4-bit NF4 base weights (QLoRA)")
        if refined:
            out.append(refined)
    world = plan["devices"].get("per_node", 1) * plan["devices"].get("nodes", 1)
    if world > 1 and plan["parallel"]["strategy"] in ("none", "ddp", "device_map"):
        refined = _refined(_with_fsdp(plan),
                           {"distribution.strategy": "fsdp", "distribution.sharding": "full_shard"},
                           f"shard weights, gradients and optimizer states over the {world} devices")
        if refined:
            out.append(refined)
    bigger = _larger_instance(plan)
    if bigger:
        out.append(bigger)
    return out


def _refined(variant: dict, change: dict, reason: str) -> dict | None:
    """The variant as it is if it fits; else with checkpointing, then with the largest micro batch that
    fits (same global batch); else the variant as it is, to show how far it is."""
    memory, throughput = _evaluate(variant)
    if memory["verdict"] in FITS:
        return _entry(change, reason, memory, throughput)
    micro = variant["batch"]["micro_batch_size"]
    accumulation = variant["batch"]["gradient_accumulation"]
    checkpointed = variant
    if not variant["trainer"].get("gradient_checkpointing"):
        checkpointed = _with_checkpointing(variant, True)
        change = {**change, "training.gradient_checkpointing": True}
    fit_micro, m, t = _largest_fitting_micro_batch(checkpointed, micro)
    if fit_micro:
        if fit_micro != micro:
            change = {**change, "training.micro_batch_size": fit_micro,
                      "training.gradient_accumulation": max(1, micro * accumulation // fit_micro)}
        return _entry(change, reason, m, t)
    return _entry(change, reason, memory, throughput) if change else None


def _make_it_faster(plan: dict, throughput: dict) -> list:
    out = []
    base_rate = throughput.get("tokens_per_s_total") or 0
    micro = plan["batch"]["micro_batch_size"]
    if plan["trainer"].get("gradient_checkpointing"):
        variant = _with_checkpointing(plan, False)
        fit_micro, m, t = _largest_fitting_micro_batch(variant, micro)
        if fit_micro:
            out.append(_entry({"training.gradient_checkpointing": False, **_batch_change(plan, fit_micro)},
                              _speedup_reason("without gradient checkpointing", t, base_rate), m, t))
    upper = min(Suggestions.max_micro_batch.value, micro * Suggestions.micro_batch_search_factor.value)
    if upper > micro:
        fit_micro, m, t = _largest_fitting_micro_batch(plan, upper)
        if fit_micro and fit_micro > micro:
            out.append(_entry(_batch_change(plan, fit_micro),
                              _speedup_reason(f"micro batch {fit_micro} still fits", t, base_rate), m, t))
    return [s for s in out if (s["tokens_per_s"] or 0) > Suggestions.min_speedup.value * base_rate]


def _batch_change(plan: dict, micro: int) -> dict:
    """Spec fields for another micro batch, with the accumulation that keeps the global batch."""
    if micro == plan["batch"]["micro_batch_size"]:
        return {}
    accumulation = _with_micro_batch(plan, micro)["batch"]["gradient_accumulation"]
    change = {"training.micro_batch_size": micro}
    if accumulation != plan["batch"]["gradient_accumulation"]:
        change["training.gradient_accumulation"] = accumulation
    return change


def _speedup_reason(what: str, throughput: dict, base_rate: float) -> str:
    rate = throughput.get("tokens_per_s_total") or 0
    return f"{what}: about {rate / base_rate:.2f}x the tokens/s" if base_rate else what


def _as_qlora(plan: dict) -> dict:
    variant = copy.deepcopy(plan)
    arch = variant["model"]["architecture"]
    lora = variant["method"].get("lora") or {"r": 16, "alpha": 32, "dropout": 0.05, "bias": "none",
                                              "include_experts": False, "use_dora": False,
                                              "cast_input_to_adapter_dtype": False}
    lora["target_modules"] = lora_targets.resolve_target_modules(arch, lora.get("target_modules") or "all-linear")
    variant["method"] = {"type": "qlora", "lora": lora,
                         "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True,
                                          "compute_dtype": "bf16", "storage_dtype": "uint8",
                                          "kbit_preparation": "minimal"}}
    variant["model"]["parameters"]["trainable"] = parameter_counts.count_trainable(arch, variant["method"])
    return variant


def _with_fsdp(plan: dict) -> dict:
    return _relaid(plan, distribution=FsdpDistribution(strategy="fsdp", sharding="full_shard"))


def _larger_instance(plan: dict) -> dict | None:
    """The cheapest catalog instance of the same kind on which the plan fits."""
    devices = plan["devices"]
    current = devices.get("instance_type")
    if not current:
        return None
    current_hw = instances.lookup_instance(current)
    best = None
    for name in catalog.load_hardware()["instances"]:
        hardware = instances.lookup_instance(name)
        price = hardware.get("on_demand_usd_per_hour")
        if name == current or hardware["kind"] != current_hw["kind"] or price is None:
            continue
        if hardware["market"] != current_hw["market"]:
            continue  # EC2 rates and SageMaker list prices do not compare
        if hardware["memory_gib"] * hardware["accelerators_per_instance"] <= \
                current_hw["memory_gib"] * current_hw["accelerators_per_instance"]:
            continue
        if best is not None and price >= best[0]:
            continue
        on_instance = _relaid(plan, devices_of_hardware(name, nodes=plan["devices"]["nodes"]))
        refined = _refined(on_instance, {"backend.instance_type": name},
                           f"{hardware['accelerators_per_instance']}x {hardware['accelerator_name']} "
                           f"(${price}/h list price)")
        if refined["verdict"] in FITS:
            best = (price, refined)
    return best[1] if best else None

