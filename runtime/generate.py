"""Answers of the base and the fine-tuned model of a run, side by side (as the seed recipes compare them)."""
import json
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch

from . import model_loading
from .data import generation_prompt
from .run_layout import ADAPTER, FULL_MODEL, PLAN


class BaseAndTuned:
    """A run's base and tuned model, placed over the devices as the plan's `inference` section says.
    With an adapter they share the base weights (adapter on/off); a fully fine-tuned model takes its
    turn on the devices after the base model has answered and left them."""

    def __init__(self, plan: dict, run_dir: Path):
        self.plan = plan
        self.placement = model_loading.inference_placement(plan, run_dir)
        self.base_path = model_loading.model_path(plan["model"])
        adapter = run_dir / ADAPTER
        if (adapter / "adapter_config.json").is_file():
            from peft import PeftModel

            base = model_loading.load_for_inference(plan, self.base_path, self.placement)
            self.model = PeftModel.from_pretrained(base, str(adapter), **self.placement).eval()
            self.full_path = None
            tokenizer_path = adapter
        else:
            full = run_dir / FULL_MODEL
            if not (full / "config.json").is_file():
                raise FileNotFoundError(f"{run_dir} holds neither {ADAPTER}/ nor {FULL_MODEL}/: has it finished?")
            self.model = None
            self.full_path = full
            tokenizer_path = full
        self.tokenizer = model_loading.load_tokenizer(str(tokenizer_path), plan["model"])
        self.tokenizer.padding_side = "left"  # generation continues each row from its own last token

    def __enter__(self) -> "BaseAndTuned":
        return self

    def __exit__(self, *exc_info) -> None:
        self.model = None
        model_loading.free_accelerator_memory()
        model_loading.remove_offloaded(self.placement)

    @torch.no_grad()
    def _generate(self, model, prompts: List[str], max_new_tokens: int) -> List[str]:
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(model_loading.input_device(model))
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=self.tokenizer.pad_token_id)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def _one_model_answers(self, path: str, prompts: List[str], max_new_tokens: int, batch_size: int,
                           on_batch: Callable[[int], None]) -> List[str]:
        """The answers of the model at `path`, loaded for them and released after."""
        model = model_loading.load_for_inference(self.plan, path, self.placement)
        answers = []
        for start in range(0, len(prompts), batch_size):
            on_batch(start)
            answers += self._generate(model, prompts[start:start + batch_size], max_new_tokens)
        del model
        model_loading.free_accelerator_memory()
        return answers

    def answers(self, prompts: List[str], max_new_tokens: int, batch_size: int = 8,
                on_batch: Optional[Callable[[int, int], None]] = None) -> Tuple[List[str], List[str]]:
        """(base answers, tuned answers) to prompts already in the model's input shape. `on_batch(done,
        total)` hears of each batch of prompts answered: by both models at once with an adapter, else
        counted over the base model's pass and then the tuned model's (total twice the prompts)."""
        report = on_batch or (lambda done, total: None)
        count = len(prompts)
        if self.full_path is not None:
            base = self._one_model_answers(self.base_path, prompts, max_new_tokens, batch_size,
                                           lambda done: report(done, 2 * count))
            tuned = self._one_model_answers(str(self.full_path), prompts, max_new_tokens, batch_size,
                                            lambda done: report(count + done, 2 * count))
            report(2 * count, 2 * count)
            return base, tuned
        base, tuned = [], []
        for start in range(0, count, batch_size):
            report(start, count)
            chunk = prompts[start:start + batch_size]
            with self.model.disable_adapter():
                base += self._generate(self.model, chunk, max_new_tokens)
            tuned += self._generate(self.model, chunk, max_new_tokens)
        report(count, count)
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
    with BaseAndTuned(plan, run_dir) as models:
        return compare(models, prompts, max_new_tokens, lambda done, total: report(GENERATING, done, total))
