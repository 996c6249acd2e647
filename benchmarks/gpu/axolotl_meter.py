"""An Axolotl plugin for packed_apply.py's `axolotl` case, loaded from the config's `plugins:` list (Axolotl's own
extension point): it writes to <output_dir>/meter.jsonl, per optimizer step, the wall time and the real
(non-padding) tokens trained so far, each logged loss, and the peak memory at the end, counted as tunespec's runs
count them (non-padding tokens, torch.cuda.max_memory_allocated read after every step), so the two sides compare.
Axolotl's own throughput logs count either labelled tokens only or whole padded rows."""
import json
import time
from pathlib import Path

import torch
from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

IGNORED_LABEL = -100


def real_tokens(inputs: dict, pad_token_id) -> torch.Tensor:
    """Tokens in a collated batch less the padding Axolotl's multipack collator appends to each packed row (a
    trailing run of pad tokens with ignored labels); stays on the batch's device, read once per optimizer step."""
    ids, labels = inputs["input_ids"], inputs["labels"]
    if pad_token_id is None:
        return torch.tensor(ids.numel(), device=ids.device)
    trailing = ((ids == pad_token_id) & (labels == IGNORED_LABEL)).flip(-1).int().cumprod(-1).sum()
    return ids.numel() - trailing


class StepMeter(TrainerCallback):
    def __init__(self, path: Path, pad_token_id):
        self.path, self.pad_token_id = path, pad_token_id
        self.tokens = 0
        self.peaks = (0, 0)
        path.write_text("")

    def count(self, inputs: dict) -> None:
        self.tokens = self.tokens + real_tokens(inputs, self.pad_token_id)

    def write(self, event: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(event) + "\n")

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            # read per step: at train end the first run read 15.5 GiB, the weights alone, where Axolotl's own
            # log said 52 GiB (the peak counters are reset before on_train_end)
            self.peaks = (max(self.peaks[0], torch.cuda.max_memory_allocated()),
                          max(self.peaks[1], torch.cuda.max_memory_reserved()))
        self.write({"event": "step", "step": state.global_step, "time": time.perf_counter(),
                    "tokens": int(self.tokens)})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.write({"event": "log", "step": state.global_step, "loss": float(logs["loss"])})

    def on_train_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            self.write({"event": "end", "peak_memory_gib": round(self.peaks[0] / 2**30, 2),
                        "peak_reserved_gib": round(self.peaks[1] / 2**30, 2)})


class MeterPlugin(BasePlugin):
    def post_trainer_create(self, cfg, trainer):
        meter = StepMeter(Path(cfg.output_dir) / "meter.jsonl", trainer.processing_class.pad_token_id)
        training_step = trainer.training_step

        def counted(model, inputs, *args, **kwargs):
            meter.count(inputs)
            return training_step(model, inputs, *args, **kwargs)

        trainer.training_step = counted
        trainer.add_callback(meter)
