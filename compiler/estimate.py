"""The plan's estimates: memory, throughput, wall-clock time, cost, suggestions and warnings.

`estimate(plan)` reads the plan sections of docs/design.md (model.architecture, model.parameters,
method, data, devices, parallel, trainer, batch) and returns plain data for `plan["estimates"]`.
"""
from __future__ import annotations

import math

from . import instances
from .calibration import RunTime, Verdicts
from .estimate_memory import estimate_memory
from .estimate_speed import estimate_throughput
from .suggest import suggest


def estimate(plan: dict) -> dict:
    memory = estimate_memory(plan)
    throughput = estimate_throughput(plan)
    time = estimate_time(plan, throughput)
    cost = estimate_cost(plan, time)
    return {
        "memory": memory,
        "throughput": throughput,
        "time": time,
        "cost": cost,
        "suggestions": suggest(plan, memory, throughput),
        "warnings": warnings(plan, memory, throughput, time, cost),
    }


def training_tokens(plan: dict) -> int | None:
    """Tokens processed by the whole run: steps times tokens per step."""
    batch = plan["batch"]
    steps = batch.get("total_steps")
    if not steps or steps < 0:
        return None
    return steps * batch["tokens_per_step"]


def estimate_time(plan: dict, throughput: dict) -> dict:
    tokens = training_tokens(plan)
    rate = throughput.get("tokens_per_s_total")
    if tokens is None or not rate:
        return {"train_tokens": tokens, "train_s": None, "load_s": None, "total_s": None, "hours": None}
    train_s = tokens / rate
    load_s = plan["model"]["parameters"]["total"] * 2 / RunTime.load_bytes_per_s.value
    total_s = train_s + load_s
    return {
        "train_tokens": tokens,
        "steps": plan["batch"]["total_steps"],
        "train_s": round(train_s),
        "load_s": round(load_s),
        "total_s": round(total_s),
        "hours": round(total_s / 3600, 2),
    }


def estimate_cost(plan: dict, time: dict) -> dict:
    devices = plan["devices"]
    instance = devices.get("instance_type")
    if not instance or time.get("total_s") is None:
        return {"instance_type": instance, "instance_hours": None, "usd_per_instance_hour": None, "usd": None}
    hardware = instances.lookup_instance(instance)
    hours = time["total_s"] / 3600 * devices.get("nodes", 1)
    price = hardware.get("on_demand_usd_per_hour")
    return {
        "instance_type": instance,
        "instances": devices.get("nodes", 1),
        "instance_hours": round(hours, 2),
        "usd_per_instance_hour": price,
        "usd": round(hours * price, 2) if price is not None else None,
        "price_source": hardware.get("price_source"),
        "price_date": hardware.get("price_date"),
        "price_basis": ("EC2 on-demand rate of the same machine (no SageMaker list price on record)"
                        if hardware.get("market") == "ec2-rate" else
                        "on-demand list price as of price_date; not re-checked, see price_source"),
    }


def warnings(plan: dict, memory: dict, throughput: dict, time: dict, cost: dict) -> list:
    arch, method, devices = plan["model"]["architecture"], plan["method"], plan["devices"]
    found = []

    def warn(code: str, message: str) -> None:
        found.append({"code": code, "message": message})

    experts = memory["weights_by_group"].get("experts", {})
    if method["type"] == "qlora" and experts and not experts["dtype"].startswith("nf4"):
        total = sum(g["params"] for g in memory["weights_by_group"].values())
        share = experts["params"] / total if total else 0
        warn("qlora-moe-experts-not-quantized",
             f"{arch['name']}: 8-bit QLoRA quantizes nn.Linear layers only, and transformers 5 stores the MoE "
             f"experts as fused 3-D parameters; {share:.0%} of the weights ({experts['gib']} GiB) stay "
             f"{experts['dtype']}"
             + (" (the full k-bit preparation upcasts them), so this 'QLoRA' needs about twice the memory of "
                "bf16 LoRA and runs its experts at fp32 speed" if experts["dtype"] == "fp32"
                else ", so this 'QLoRA' needs about as much memory as bf16 LoRA; 4-bit QLoRA quantizes them"))
    if memory["verdict"] == "does-not-fit":
        warn("does-not-fit", f"estimated peak {memory['total_gib']} GiB per device exceeds the "
                             f"{memory['capacity_gib']} GiB of {devices.get('accelerator')}")
    elif memory["verdict"] == "tight":
        margin = 1 - Verdicts.tight_fraction.value
        warn("memory-tight", f"estimated peak {memory['total_gib']} GiB is within {margin:.0%} of the "
                             f"{memory['capacity_gib']} GiB of {devices.get('accelerator')}")
    if devices.get("kind") == "cpu":
        warn("cpu-estimates", "CPU run: memory is what the trainer process holds in host RAM (RSS) and speed "
                              "is this CPU's measured rate, both calibrated on one 2-core machine with the embedded "
                              "default; CPU numbers say nothing about GPU runs")
    if devices.get("kind") == "trainium":
        warn("trainium-uncalibrated", "Trainium throughput is a first-principles guess (no measurement yet)")
    if time.get("total_s") is None and devices.get("kind") != "cpu":
        warn("no-data-size", "no time or cost estimate: give data.num_examples and data.tokens_per_example "
                             "(or a local data file) and epochs, or max_steps")
    if cost.get("instance_type") and cost.get("instance_hours") is not None and cost.get("usd") is None:
        warn("no-price", f"no on-demand price on record for {cost['instance_type']}")
    world = plan["parallel"].get("world_size", 1) or 1
    if throughput.get("communication_s") and throughput.get("micro_step_time_s"):
        share = throughput["communication_s"] / throughput["micro_step_time_s"]
        if world > 1 and share > Verdicts.communication_bound_share.value:
            warn("communication-bound", f"collectives take about {share:.0%} of each step: "
                                        "a larger micro batch or gradient accumulation amortises them")
    if memory.get("total_gib") and memory["capacity_gib"] and math.isfinite(memory["total_gib"]):
        underused = memory["total_gib"] < Verdicts.memory_underused_share.value * memory["capacity_gib"]
        if underused and plan["trainer"].get("gradient_checkpointing"):
            warn("memory-underused", f"the estimate uses {memory['total_gib']} of {memory['capacity_gib']} GiB "
                                     "with gradient checkpointing on: see the suggestions for a faster setting")
    return found
