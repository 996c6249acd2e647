"""The spec's `budget:` against the plan's estimates: what the run uses of each limit, and the refusal.

Accelerator-hours count GPUs or Trainium chips (not NeuronCores): what an instance is billed for.
"""
from typing import List, Optional

from . import instances
from .errors import SpecError

# (limit key in the spec, usage key in the plan, how a value reads)
LIMITS = [("max_cost_usd", "cost_usd", "${:,.2f}"), ("max_hours", "hours", "{:,.2f} h"),
          ("max_gpu_hours", "gpu_hours", "{:,.2f} GPU-hours")]


def accelerators(devices: dict) -> int:
    if devices["kind"] == "cpu":
        return 0
    if devices["kind"] == "trainium":
        return instances.lookup_instance(devices["hardware"])["accelerators_per_instance"] * devices["nodes"]
    return devices["world_size"]


def usage(plan: dict, budget: dict) -> dict:
    """`plan["estimates"]["budget"]`: each limit set, what the estimates use of it, and what is exceeded."""
    total_s = plan["estimates"]["time"].get("total_s")
    hours = total_s / 3600 if total_s is not None else None
    used = {"cost_usd": plan["estimates"]["cost"].get("usd"),
            "hours": round(hours, 2) if hours is not None else None,
            "gpu_hours": round(hours * accelerators(plan["devices"]), 2) if hours is not None else None}
    status = {"exceeded": [], "unknown": []}
    for limit, key, _ in LIMITS:
        if budget.get(limit) is None:
            continue
        status[limit], status[key] = budget[limit], used[key]
        if used[key] is None:
            status["unknown"].append(limit)
        elif used[key] > budget[limit]:
            status["exceeded"].append(limit)
    return status


def describe(status: dict, limit: str) -> str:
    """`$4.31 of $10.00 (43%)`, or what is not known."""
    key, shape = next((k, s) for name, k, s in LIMITS if name == limit)
    if status.get(key) is None:
        return f"unknown of {shape.format(status[limit])}"
    share = status[key] / status[limit] * 100
    return f"{shape.format(status[key])} of {shape.format(status[limit])} ({share:.0f}%)"


def refusal(status: Optional[dict]) -> Optional[SpecError]:
    """The located error for a plan over its budget (or whose estimate cannot be checked), else None."""
    if not status:
        return None
    problems: List[str] = status["exceeded"] + status["unknown"]
    if not problems:
        return None
    limit = problems[0]
    if limit in status["exceeded"]:
        message = f"the plan's estimate exceeds the budget: {describe(status, limit)}"
        hint = "lower the run's size or time (see the plan's suggestions), or raise the limit in review"
    else:
        message = f"the budget cannot be checked: the plan has no estimate for `{limit}`"
        hint = ("give data.num_examples and data.tokens_per_example for a time estimate; a cost needs an "
                "instance type with a price on record")
    if problems[1:]:
        message += f" (also: {', '.join(problems[1:])})"
    return SpecError(message, ("budget", limit), hint=hint)
