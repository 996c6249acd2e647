"""A Trainer callback that turns training into progress events (runtime/progress.py) and keeps
the numbers metrics.json reports: pure step time (no eval or save), tokens, losses."""
import time

from transformers import TrainerCallback

from .progress import ProgressWriter


class ProgressCallback(TrainerCallback):
    def __init__(self, writer: ProgressWriter):
        self.writer = writer
        self.step_seconds = 0.0  # this session's time inside optimizer steps
        self.step_tokens = 0     # tokens those steps consumed
        self.resumed_from_step = 0
        self._step_started = 0.0
        self._tokens_before = 0
        self._recent = []        # (seconds, tokens) of the last steps, for a steady tokens/s
        self._eval_batches = 0   # batches of the evaluation under way
        self._started = time.time()

    def on_train_begin(self, args, state, control, **kwargs):
        self.resumed_from_step = state.global_step
        self.writer.emit("start", total_steps=state.max_steps, resumed_from_step=state.global_step)
        if args.eval_on_start:
            # The evaluation before the first step reports its batches only as they finish.
            self.writer.emit("eval_progress", step=state.global_step, done=0, total=None)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        self._eval_batches += 1
        total = len(eval_dataloader) if eval_dataloader is not None and hasattr(eval_dataloader, "__len__") else None
        self.writer.emit("eval_progress", step=state.global_step, done=self._eval_batches, total=total)

    def on_evaluate(self, args, state, control, **kwargs):
        self._eval_batches = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.time()
        self._tokens_before = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        seconds = time.time() - self._step_started
        tokens = state.num_input_tokens_seen - self._tokens_before
        self.step_seconds += seconds
        self.step_tokens += tokens
        self._recent = (self._recent + [(seconds, tokens)])[-10:]
        recent_seconds = sum(s for s, _ in self._recent)
        self.writer.emit("step", step=state.global_step, total_steps=state.max_steps,
                         tokens_per_s=round(sum(t for _, t in self._recent) / recent_seconds, 1)
                         if recent_seconds else None,
                         step_s=round(recent_seconds / len(self._recent), 3),
                         elapsed_s=round(time.time() - self._started, 1))

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The Trainer logs a step's loss after on_step_end: it comes as its own event.
        logs = logs or {}
        if "loss" in logs:
            self.writer.emit("loss", step=state.global_step, loss=round(float(logs["loss"]), 4))
        if "eval_loss" in logs:
            self.writer.emit("eval", step=state.global_step, eval_loss=round(float(logs["eval_loss"]), 4))

    def tokens_per_second(self):
        return round(self.step_tokens / self.step_seconds, 1) if self.step_seconds else None
