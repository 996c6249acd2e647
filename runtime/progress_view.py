"""Progress in the terminal: one row per phase (a spinner, or a bar where the amount of work is known)
with its elapsed time; for training also the loss, the speed and the time left, each labelled.

`tunespec apply` shows a run's state (runtime/progress_state.py); `eval` and `generate` name their own
phases. Light: rich only.
"""
import time
from typing import Dict, Optional

from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn
from rich.text import Text

from .progress import EVALUATING, TRAINING
from .progress_state import RunState, clock, number


class _TimeColumn(ProgressColumn):
    """The row's own text when it has one (training), else how long the phase has taken so far."""

    def render(self, task) -> Text:
        if task.fields.get("info"):
            return Text(task.fields["info"])
        if task.finished and task.finished_time is not None:
            return Text(f"took {clock(task.finished_time)}")
        return Text(f"elapsed {clock(task.elapsed)}" if task.elapsed is not None else "")


class _CountColumn(ProgressColumn):
    """Done of total, for the rows that count something (steps, batches, prompts)."""

    def render(self, task) -> Text:
        if not task.fields.get("counted") or task.total is None:
            return Text("")
        return Text(f"{int(task.completed)}/{int(task.total)}")


class ProgressView:
    def __init__(self, console):
        self.progress = Progress(SpinnerColumn(finished_text="[green]✓[/]"), TextColumn("{task.description}"),
                                 BarColumn(), _CountColumn(), _TimeColumn(), console=console)
        self.rows: Dict[str, int] = {}
        self.current: Optional[str] = None
        self.finished: set = set()

    def __enter__(self) -> "ProgressView":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def print(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)

    # ---- phases ---------------------------------------------------------------------------------

    def begin(self, name: str, total: Optional[int] = None, label: Optional[str] = None) -> None:
        """Make `name` the current phase (a new row, or its row again), finishing the one before
        (training only pauses for an evaluation)."""
        if name == self.current:
            return
        if self.current and not (self.current == TRAINING and name == EVALUATING):
            self.finish(self.current)
        if name not in self.rows:
            self.rows[name] = self.progress.add_task(label or name, total=total, info="", counted=False)
        elif name in self.finished:
            self.progress.reset(self.rows[name], total=total, description=label or name, info="")
        self.finished.discard(name)
        self.current = name

    def advance(self, name: str, done: int, total: Optional[int], info: str = "") -> None:
        self.progress.update(self.rows[name], completed=done, total=total, info=info, counted=True)

    def finish(self, name: str) -> None:
        row = self.rows[name]
        task = next(task for task in self.progress.tasks if task.id == row)
        total = task.total or max(task.completed, 1)
        self.progress.update(row, total=total, completed=total, info="")
        self.finished.add(name)
        if self.current == name:
            self.current = None

    def finish_all(self) -> None:
        for name in list(self.rows):
            if name not in self.finished:
                self.finish(name)

    # ---- a training run -------------------------------------------------------------------------

    def show_run(self, state: RunState, planned_step_seconds: Optional[float]) -> None:
        phase = state.phase
        if phase is None:
            return
        if phase == EVALUATING:
            self.begin(EVALUATING, state.eval_total, label=f"evaluating (step {state.step})")
            self.advance(EVALUATING, state.eval_done, state.eval_total)
        else:
            self.begin(phase)
        if TRAINING in self.rows and TRAINING not in self.finished:
            if phase not in (TRAINING, EVALUATING):
                self.finish(TRAINING)  # past the steps and their last evaluation
                return
            seconds, source = state.eta(planned_step_seconds)
            eta = f"ETA {clock(seconds)}" + (" (plan estimate)" if source == "plan estimate" else "")
            elapsed = clock(time.time() - state.training_started) if state.training_started else "?"
            self.advance(TRAINING, state.step, state.total_steps,
                         f"loss {number(state.loss)} · {number(state.tokens_per_s, 4)} tok/s · elapsed {elapsed} · {eta}")
