"""After training: the merged model (`outputs.merged_model`) and the sample answers (`outputs.sample_prompts`).

The trainer calls finish_outputs itself; the SageMaker backend runs it as a second job:
    python -m tunespec.runtime.merge --plan PLAN.json --run-dir DIR   (DIR holds adapter/)
"""
import argparse
import json
import logging
from pathlib import Path
from typing import Optional

from . import model_loading
from .generate import BaseAndTuned, compare
from .progress import GENERATING_SAMPLES, MERGING, ProgressWriter
from .run_layout import ADAPTER, MERGED, SAMPLES
from ..schema.plan import read_plan_to_run

logger = logging.getLogger("tunespec.train")
SAMPLE_MAX_NEW_TOKENS = 128


def merge_adapter(plan: dict, run_dir: Path) -> Path:
    """Base weights (unquantized, in the training precision) + adapter → DIR/merged, the model placed over
    the devices as the plan's `inference` section says (layers left in the offload folder merge there)."""
    from peft import PeftModel

    placement = model_loading.inference_placement(plan, run_dir)
    base = model_loading.load_for_inference(plan, model_loading.model_path(plan["model"]), placement,
                                            dtype=model_loading.DTYPES[model_loading.precision(plan)])
    merged = PeftModel.from_pretrained(base, str(run_dir / ADAPTER), **placement).merge_and_unload()
    target = run_dir / MERGED
    merged.save_pretrained(target)
    model_loading.load_tokenizer(str(run_dir / ADAPTER), plan["model"]).save_pretrained(target)
    del base, merged
    model_loading.free_accelerator_memory()  # the sample answers load the model again
    model_loading.remove_offloaded(placement)
    return target


def answer_samples(plan: dict, run_dir: Path) -> list:
    with BaseAndTuned(plan, run_dir) as models:
        answers = compare(models, plan["outputs"]["sample_prompts"], SAMPLE_MAX_NEW_TOKENS)
    samples = [{"prompt": prompt, "base": base, "tuned": tuned} for prompt, base, tuned in answers]
    (run_dir / SAMPLES).write_text(json.dumps(samples, indent=2, ensure_ascii=False) + "\n")
    return samples


def finish_outputs(plan: dict, run_dir: Path, progress: Optional[ProgressWriter] = None) -> dict:
    """Write what `outputs` asks for beyond the adapter; returns {name: path relative to the run}."""
    progress = progress or ProgressWriter(run_dir, enabled=False)
    written = {}
    outputs = plan.get("outputs") or {}
    has_adapter = (run_dir / ADAPTER / "adapter_config.json").is_file()
    if outputs.get("merged_model") and has_adapter:
        logger.info("merging the adapter into the base model")
        progress.emit("phase", name=MERGING)
        written["merged"] = merge_adapter(plan, run_dir).name
    if outputs.get("sample_prompts"):
        logger.info("answering %d sample prompts with the base and the tuned model", len(outputs["sample_prompts"]))
        progress.emit("phase", name=GENERATING_SAMPLES)
        for sample in answer_samples(plan, run_dir):
            logger.info("prompt: %s\n  base:  %s\n  tuned: %s", sample["prompt"], sample["base"], sample["tuned"])
        written["samples"] = SAMPLES
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunespec.runtime.merge")
    parser.add_argument("--plan", required=True, type=Path)
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    finish_outputs(read_plan_to_run(args.plan), args.run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
