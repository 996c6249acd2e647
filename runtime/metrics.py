"""metrics.json and loss.png of a finished run, from the Trainer's log history (which a resumed run
carries over from its checkpoint, so the curves cover the whole run)."""
import json
import resource
from collections import Counter
from pathlib import Path
from typing import Optional

from .run_layout import LOSS_PLOT, METRICS


def loss_histories(log_history: list):
    train = [{"step": e["step"], "loss": round(e["loss"], 4)} for e in log_history if "loss" in e]
    evaluation = [{"step": e["step"], "eval_loss": round(e["eval_loss"], 4)} for e in log_history
                  if "eval_loss" in e]
    return train, evaluation


def cuda_peak_bytes() -> Optional[int]:
    """This process's peak allocated GPU memory so far, or None off the GPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated()
    return None


def peak_memory() -> dict:
    peak = cuda_peak_bytes()
    if peak is not None:
        return {"peak_memory_bytes": peak, "peak_memory_gib": round(peak / 2**30, 2),
                "peak_memory_kind": "cuda allocated (this process's GPU)"}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"peak_memory_bytes": peak, "peak_memory_gib": round(peak / 2**30, 2),
            "peak_memory_kind": "cpu resident set (this process)"}


def memory_phases_callback():
    """A Trainer callback noting this process's peak allocated GPU memory so far at the phases where a
    run's peak can be set: after the Trainer wrapped the model (FSDP sharding), after the first
    optimizer step, and at the end."""
    from transformers import TrainerCallback

    class MemoryPhases(TrainerCallback):
        def __init__(self):
            self.peaks = {}

        def _note(self, phase: str) -> None:
            self.peaks.setdefault(phase, cuda_peak_bytes())

        def on_train_begin(self, args, state, control, **kwargs):
            self._note("wrapped")

        def on_step_end(self, args, state, control, **kwargs):
            self._note("first_step")

        def on_train_end(self, args, state, control, **kwargs):
            self.peaks["end"] = cuda_peak_bytes()

    return MemoryPhases()


def peaks_per_rank(peaks: dict) -> dict:
    """Every rank's peak allocated GPU memory so far at each phase ({"loaded": bytes, "wrapped": ...,
    "end": ...}), gathered on all ranks: a sharded run's devices differ, and the load-time peak (whole
    weights before sharding) can be the largest. Collective: every rank calls it while the process
    group is up."""
    import torch

    mine = dict(peaks, run=cuda_peak_bytes())
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        every = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(every, mine)
    else:
        every = [mine]
    if any(rank["run"] is None for rank in every):
        return {}

    def gib(value):
        return None if value is None else round(value / 2**30, 2)

    return {"peak_memory_gib_per_rank": [gib(rank["run"]) for rank in every],
            "peak_memory_gib_by_phase_per_rank": {phase: [gib(rank.get(phase)) for rank in every]
                                                  for phase in ("loaded", "wrapped", "first_step", "end")}}


def placement(model) -> Optional[dict]:
    """Where from_pretrained's device_map put the model: modules of accelerate's map per device
    (`cuda:0`, `cpu`, `disk`; `{"cuda:0": 1}` is the whole model on one GPU), or None when it was
    loaded without a device_map."""
    device_map = getattr(model, "hf_device_map", None)
    if not device_map:
        return None
    devices = (f"cuda:{device}" if isinstance(device, int) else str(device) for device in device_map.values())
    return dict(Counter(devices))


def build_metrics(log_history: list, *, global_step: int, max_steps: int, resumed_from_step: int,
                  tokens_per_s: Optional[float], train_tokens: int, duration_s: float,
                  outputs: dict, rank_peaks: Optional[dict] = None, placement: Optional[dict] = None) -> dict:
    train, evaluation = loss_histories(log_history)
    eval_losses = [e["eval_loss"] for e in evaluation]
    return {
        "completed": True,
        "global_step": global_step,
        "max_steps": max_steps,
        "resumed_from_step": resumed_from_step,
        "train_loss_history": train,
        "eval_loss_history": evaluation,
        "final_train_loss": train[-1]["loss"] if train else None,
        "initial_eval_loss": eval_losses[0] if eval_losses else None,
        "final_eval_loss": eval_losses[-1] if eval_losses else None,
        "best_eval_loss": min(eval_losses) if eval_losses else None,
        "tokens_per_s": tokens_per_s,
        "train_tokens": train_tokens,
        "duration_s": round(duration_s, 1),
        **peak_memory(),
        **(rank_peaks or {}),
        **({"placement": placement} if placement else {}),
        "outputs": outputs,
    }


def write_metrics(run_dir: Path, metrics: dict) -> None:
    # Written last and atomically: its presence marks a finished run (run_layout.finished_metrics).
    partial = run_dir / (METRICS + ".partial")
    partial.write_text(json.dumps(metrics, indent=2) + "\n")
    partial.replace(run_dir / METRICS)


def plot_losses(run_dir: Path, metrics: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4))
    train, evaluation = metrics["train_loss_history"], metrics["eval_loss_history"]
    if train:
        axes.plot([e["step"] for e in train], [e["loss"] for e in train], label="train loss")
    if evaluation:
        axes.plot([e["step"] for e in evaluation], [e["eval_loss"] for e in evaluation], "o-", label="eval loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(run_dir / LOSS_PLOT, dpi=100)
    pyplot.close(figure)
