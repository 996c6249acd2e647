"""Answers of the base and the fine-tuned model of a run, side by side (as the seed recipes compare them)."""
import json
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch

from . import model_loading
from .data import generation_prompt
from .run_layout import ADAPTER, FULL_MODEL, PLAN


class BaseAndTuned:
    """A run's base and tuned model; with an adapter they share the base weights (adapter on/off)."""

    def __init__(self, plan: dict, run_dir: Path, device: Optional[str] = None):
        self.plan = plan
        base_path = model_loading.model_path(plan["model"])
        self.model = model_loading.load_for_inference(plan, base_path, device)
        adapter = run_dir / ADAPTER
        if (adapter / "adapter_config.json").is_file():
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter)).eval()
            self.tuned_full = None
            tokenizer_path = adapter
        else:
            full = run_dir / FULL_MODEL
            if not (full / "config.json").is_file():
                raise FileNotFoundError(f"{run_dir} holds neither {ADAPTER}/ nor {FULL_MODEL}/: has it finished?")
            self.tuned_full = model_loading.load_for_inference(plan, str(full), str(self.model.device))
            tokenizer_path = full
        self.tokenizer = model_loading.load_tokenizer(str(tokenizer_path), plan["model"])
        self.tokenizer.padding_side = "left"  # generation continues each row from its own last token

    @torch.no_grad()
    def _generate(self, model, prompts: List[str], max_new_tokens: int) -> List[str]:
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(model.device)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=self.tokenizer.pad_token_id)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def answers(self, prompts: List[str], max_new_tokens: int, batch_size: int = 8,
                on_batch: Optional[Callable[[int, int], None]] = None) -> Tuple[List[str], List[str]]:
        """(base answers, tuned answers) to prompts already in the model's input shape; `on_batch(done,
        total)` hears of each batch of prompts answered by both models."""
        base, tuned = [], []
        for start in range(0, len(prompts), batch_size):
            if on_batch:
                on_batch(start, len(prompts))
            chunk = prompts[start:start + batch_size]
            if self.tuned_full is None:
                with self.model.disable_adapter():
                    base += self._generate(self.model, chunk, max_new_tokens)
                tuned += self._generate(self.model, chunk, max_new_tokens)
            else:
                base += self._generate(self.model, chunk, max_new_tokens)
                tuned += self._generate(self.tuned_full, chunk, max_new_tokens)
        if on_batch:
            on_batch(len(prompts), len(prompts))
        return base, tuned


def read_run_plan(run_dir: Path) -> dict:
    return json.loads((run_dir / PLAN).read_text())


def compare(models: BaseAndTuned, prompts: List[str], max_new_tokens: int,
            on_batch: Optional[Callable[[int, int], None]] = None) -> List[Tuple[str, str, str]]:
    inputs = [generation_prompt(models.plan, prompt, models.tokenizer) for prompt in prompts]
    base, tuned = models.answers(inputs, max_new_tokens, on_batch=on_batch)
    return list(zip(prompts, base, tuned))


# What eval and generate tell their caller they are doing: report(phase, done, total).
Report = Callable[[str, int, Optional[int]], None]
LOADING_MODELS, GENERATING = "loading the base and the fine-tuned model", "generating answers"


def no_report(phase: str, done: int, total: Optional[int]) -> None:
    return None


def generate(run_dir: Path, prompts: List[str], max_new_tokens: int = 64,
             plan: Optional[dict] = None, report: Report = no_report) -> List[Tuple[str, str, str]]:
    """(prompt, base answer, tuned answer) for each prompt, put in the run's data format first."""
    run_dir = Path(run_dir)
    plan = plan or read_run_plan(run_dir)
    report(LOADING_MODELS, 0, None)
    models = BaseAndTuned(plan, run_dir)
    return compare(models, prompts, max_new_tokens, lambda done, total: report(GENERATING, done, total))
