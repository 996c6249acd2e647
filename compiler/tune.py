"""`tunespec plan --tune`: take the estimator's fastest suggestion that fits, and say so in the plan.

Only settings change (training, method, distribution): the hardware the spec names stays, since a
larger instance is a cost decision the plan leaves to its reviewer.
"""
import dataclasses

from ..schema import Spec
from . import rules
from .errors import SpecError
from .plan import build_plan
from .spec_loader import LoadedSpec

FROZEN_PREFIXES = ("backend.", "model.", "data.")


def _set(tree: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _tokens_per_s(plan: dict) -> float:
    return plan["estimates"]["throughput"].get("tokens_per_s_total") or 0.0


def tuned_plan(loaded: LoadedSpec) -> dict:
    # A spec that does not fit is what tuning is for; the tuned plan is checked as any other.
    plan = build_plan(loaded, accept_risks=("does-not-fit",))
    fits = plan["estimates"]["memory"]["verdict"] == "fits"
    candidates = [s for s in plan["estimates"]["suggestions"]
                  if s.get("verdict") == "fits" and s.get("change")
                  and not any(path.startswith(FROZEN_PREFIXES) for path in s["change"])]
    best = max(candidates, key=lambda s: s.get("tokens_per_s") or 0.0, default=None)
    if best is None or (fits and (best.get("tokens_per_s") or 0.0) <= _tokens_per_s(plan)):
        try:  # nothing better fits: refused as `plan` refuses it
            rules.check_estimates(loaded.spec, plan, tuple(loaded.spec.accept_risks))
        except SpecError as error:
            raise loaded.locate(error) from None
        plan["tuning"] = {"applied": {}, "reason": "the spec's settings are already the fastest that fit"}
        return plan
    data = loaded.spec.model_dump(mode="json", exclude={"extends"})
    for path, value in sorted(best["change"].items()):
        _set(data, path, value)
    tuned = build_plan(dataclasses.replace(loaded, spec=Spec.model_validate(data)))
    tuned["tuning"] = {"applied": dict(sorted(best["change"].items())), "reason": best["reason"],
                       "tokens_per_s_before": _tokens_per_s(plan), "tokens_per_s_after": _tokens_per_s(tuned),
                       "verdict_before": plan["estimates"]["memory"]["verdict"]}
    return tuned
