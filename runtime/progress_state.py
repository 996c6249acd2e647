"""What a run is doing, folded from its progress events (runtime/progress.py): the phase, the step, the
loss, and the time left. `tunespec apply` draws its bars from it and `tunespec status` prints it.

The time left comes from the steps this session measured; before the first one, from the plan's
estimate of a step. Light: stdlib only.
"""
import time
from dataclasses import dataclass, field
from typing import Optional, Tuple

from .progress import EVALUATING, TRAINING


@dataclass
class RunState:
    phase: Optional[str] = None
    phase_started: Optional[float] = None
    step: int = 0
    total_steps: Optional[int] = None
    resumed_from_step: int = 0
    training_started: Optional[float] = None  # this session's first "start" event
    eval_done: int = 0
    eval_total: Optional[int] = None
    loss: Optional[float] = None
    eval_loss: Optional[float] = None
    eval_loss_step: Optional[int] = None
    tokens_per_s: Optional[float] = None
    step_seconds: Optional[float] = None      # measured: the mean of the recent steps
    last_event: Optional[float] = None
    ended: bool = False
    error: Optional[dict] = None
    phases_seen: list = field(default_factory=list)

    def _enter(self, phase: str, when: float) -> None:
        if phase != self.phase:
            self.phase, self.phase_started = phase, when
            self.phases_seen.append(phase)

    def update(self, event: dict) -> None:
        kind, when = event["event"], event.get("time", time.time())
        self.last_event = when
        if kind == "phase":
            self._enter(event["name"], when)
        elif kind == "start":
            self.total_steps, self.resumed_from_step = event["total_steps"], event["resumed_from_step"]
            self.step = event["resumed_from_step"]
            self.training_started = self.training_started or when
            self._enter(TRAINING, when)
        elif kind == "eval_progress":
            if self.phase != EVALUATING:
                self.eval_done, self.eval_total = 0, None
            self._enter(EVALUATING, when)
            self.eval_done, self.eval_total = event["done"], event["total"] or self.eval_total
        elif kind == "step":
            self.step, self.total_steps = event["step"], event["total_steps"]
            self.tokens_per_s, self.step_seconds = event.get("tokens_per_s"), event.get("step_s")
            self._enter(TRAINING, when)
        elif kind == "loss":
            self.loss = event["loss"]
        elif kind == "eval":
            self.eval_loss, self.eval_loss_step = event["eval_loss"], event["step"]
        elif kind == "end":
            self.ended = True
        elif kind == "error":
            self.error = event

    def eta(self, planned_step_seconds: Optional[float]) -> Tuple[Optional[float], str]:
        """(seconds of training left, "measured" | "plan estimate"), or (None, "") when unknown."""
        if self.total_steps is None or self.ended:
            return None, ""
        left = max(0, self.total_steps - self.step)
        if self.step_seconds:
            return left * self.step_seconds, "measured"
        if planned_step_seconds:
            return left * planned_step_seconds, "plan estimate"
        return None, ""


def planned_step_seconds(plan: dict) -> Optional[float]:
    """The plan's estimate of one optimizer step (micro batches times accumulation), if it has one."""
    throughput = (plan.get("estimates") or {}).get("throughput") or {}
    micro = throughput.get("micro_step_time_s")
    if not micro:
        return None
    return micro * (plan.get("batch") or {}).get("gradient_accumulation", 1)


def clock(seconds: Optional[float]) -> str:
    """H:MM:SS or M:SS; "?" when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def number(value, digits: int = 4) -> str:
    """A float to `digits` significant digits, anything else as it is; "-" when unknown."""
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)
