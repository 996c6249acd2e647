"""The files of a run folder, shared by the trainer and the backends that follow it. Light: stdlib only."""
import json
import re
from pathlib import Path
from typing import Optional

from ..schema.contract import PLAN_FILE

PLAN = PLAN_FILE
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"          # LoRA/DoRA/QLoRA: adapter weights + config + tokenizer
FULL_MODEL = "model"         # full fine-tuning: the whole model + tokenizer
MERGED = "merged"            # outputs.merged_model: base + adapter folded together
METRICS = "metrics.json"
LOSS_PLOT = "loss.png"
TRAIN_LOG = "train.log"      # the trainer's own log
CONSOLE_LOG = "console.log"  # everything the trainer process printed (local backend)
PROGRESS = "progress.jsonl"  # events for progress bars (runtime/progress.py)
SAMPLES = "samples.json"     # outputs.sample_prompts answered by the base and the tuned model
TRAINER_PROCESS = "trainer.json"  # the local trainer's pid and process group, for status and cancel
EVALUATION = "evaluation.json"  # runtime/evaluate.py: base against tuned on a data file
TENSORBOARD = "tensorboard"

_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


def checkpoint_step(path: Path) -> Optional[int]:
    match = _CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match else None


def _is_complete(checkpoint: Path) -> bool:
    # The Trainer writes trainer_state.json after the weights, optimizer and RNG states, so a
    # readable one marks a checkpoint that a kill -9 did not cut short.
    try:
        json.loads((checkpoint / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest checkpoint of the run that was written to the end, or None."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return None
    steps = sorted(((checkpoint_step(p), p) for p in folder.iterdir() if p.is_dir() and checkpoint_step(p) is not None),
                   reverse=True)
    return next((path for _, path in steps if _is_complete(path)), None)


def read_metrics(run_dir: Path) -> Optional[dict]:
    path = run_dir / METRICS
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def finished_metrics(run_dir: Path) -> Optional[dict]:
    """metrics.json of a run that trained to the end (the trainer writes it last), or None."""
    metrics = read_metrics(run_dir)
    return metrics if metrics and metrics.get("completed") else None


def is_run_dir(folder: Path) -> bool:
    """A folder a run trained in (its plan.json beside the run's files), not a `tunespec plan` folder."""
    return (folder / PLAN).is_file() and any((folder / name).exists()
                                             for name in (CONSOLE_LOG, TRAIN_LOG, PROGRESS, CHECKPOINTS, METRICS))
