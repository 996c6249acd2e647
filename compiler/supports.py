"""What each backend executes, as it declares it (`SUPPORTS` in compiler/backend_*.py), and the refusal
of a plan that asks for more: what `plan` shows is what `apply` runs, so a setting no backend's runtime
honours is refused at plan time, located at the spec field that asks for it.

compiler/checks.py runs the rule after the specific rules (compiler/rules.py), which say more about the
common cases; it is the backstop that keeps the declaration and the refusals one table.
"""
from dataclasses import dataclass
from typing import List, Tuple

from ..schema.spec import Spec
from .errors import SpecError


@dataclass(frozen=True)
class BackendSupport:
    strategies: Tuple[str, ...]  # distribution.strategy values the backend's runtime runs
    devices: Tuple[str, ...]  # plan.devices.kind values it runs on
    precisions: Tuple[str, ...]  # plan.precision.resolved values its trainer trains in


def backend_support(backend_type: str) -> BackendSupport:
    if backend_type == "sagemaker":
        from .backend_sagemaker import SUPPORTS
    elif backend_type == "hyperpod-slurm":
        from .backend_slurm import SUPPORTS
    else:
        from .backend_local import SUPPORTS
    return SUPPORTS


def _device_field(spec: Spec) -> tuple:
    backend = spec.backend
    if backend.type == "local":
        return ("backend", "hardware") if backend.hardware else ("backend", "device")
    return ("backend", "instance_type")


def backend_runs_plan(spec: Spec, plan: dict) -> List[dict]:
    """Refuse what the plan's backend cannot execute (no warnings: a refusal or nothing)."""
    backend = spec.backend.type
    support = backend_support(backend)
    strategy, kind = plan["parallel"]["strategy"], plan["devices"]["kind"]
    precision = plan["precision"]["resolved"]
    if strategy not in support.strategies:
        raise SpecError(f"the {backend} backend does not run `strategy: {strategy}`", ("distribution", "strategy"),
                        hint=f"it runs: {', '.join(support.strategies)}")
    if kind not in support.devices:
        raise SpecError(f"the {backend} backend does not run on {plan['devices']['accelerator']} ({kind})",
                        _device_field(spec), hint=f"it runs on: {', '.join(support.devices)}")
    if precision not in support.precisions:
        raise SpecError(f"the {backend} backend's trainer does not train in {precision}: the plan would say "
                        f"{precision} and the run would not", ("training", "precision"),
                        hint=f"use one of: {', '.join(support.precisions)}")
    return []
