"""Progress events: the trainer appends JSON lines to RUN/progress.jsonl, backends read them back.

Events (each a JSON object with "event" and "time"):
  phase          {name}           (what the trainer does before and after the steps: PHASES)
  start          {total_steps, resumed_from_step}
  eval_progress  {step, done, total}   (batches of an evaluation; total None until known)
  step           {step, total_steps, tokens_per_s, step_s (recent mean), elapsed_s}
  loss           {step, loss}
  eval           {step, eval_loss}
  end            {step, final_eval_loss}
  error          {kind: oom|data|model|config, message, ...}
runtime/progress_state.py folds them into what a run is doing now. Light: stdlib only, so the CLI can
follow a run without importing torch.
"""
import json
import time
from pathlib import Path
from typing import List, Tuple


# The phases outside the steps and evaluations, in the order a run goes through them.
LOADING, CONVERTING, READING_DATA = "loading the model", "converting the model (once)", "reading the data"
SAVING, MERGING, GENERATING_SAMPLES, WRITING = "saving the adapter", "merging the adapter", "generating samples", "writing the outputs"
# The phases the steps and evaluations put a run in.
TRAINING, EVALUATING = "training", "evaluating"


class ProgressWriter:
    """Appends events; one line per write so a reader never sees half an event after a crash."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def emit(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        line = json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)


def read_events(path: Path, offset: int = 0) -> Tuple[List[dict], int]:
    """Events written since byte `offset`, and the offset to read from next (a partial last line waits)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    complete = data[: data.rfind(b"\n") + 1]
    events = [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]
    return events, offset + len(complete)
