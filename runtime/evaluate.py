"""Base model against fine-tuned on a data file: generate each row's completion from its prompt and
score it (exact match and ViGGO slot-level F1, runtime/evaluate_mr.py)."""
import json
from pathlib import Path
from typing import Optional

from . import data
from .evaluate_mr import score
from .generate import GENERATING, LOADING_MODELS, BaseAndTuned, Report, no_report, read_run_plan
from .run_layout import EVALUATION

EXAMPLES_KEPT = 5


def evaluate(run_dir: Path, data_path: Optional[str] = None, limit: Optional[int] = None,
             max_new_tokens: int = 128, batch_size: int = 8, report: Report = no_report) -> dict:
    """Scores of the base and the tuned model of a run on `data_path` (default: the plan's eval source)."""
    run_dir = Path(run_dir)
    plan = read_run_plan(run_dir)
    source = dict(plan["data"]["eval"] or plan["data"]["train"])
    if data_path:
        source = {"path": data_path, "format": None}
    source["limit"] = limit or source.get("limit")
    # Scoring needs each row split into the prompt and the part the model should produce.
    data_plan = dict(plan["data"], completion_only_loss=True)
    if data_plan["format"]["type"] == "text":
        raise ValueError("text data has no completions to score")
    report(LOADING_MODELS, 0, None)
    with BaseAndTuned(plan, run_dir) as models:
        rows = [data.prompt_and_reference(example, models.tokenizer) for example in data.examples(data_plan, source)]
        prompts = [prompt for prompt, _ in rows]
        references = [reference for _, reference in rows]
        base, tuned = models.answers(prompts, max_new_tokens, batch_size,
                                     on_batch=lambda done, total: report(GENERATING, done, total))
    return {
        "data": source["path"],
        "base": score(base, references),
        "tuned": score(tuned, references),
        "examples": [{"reference": r, "base": b, "tuned": t}
                     for r, b, t in list(zip(references, base, tuned))[:EXAMPLES_KEPT]],
    }


def write_evaluation(run_dir: Path, result: dict) -> Path:
    path = Path(run_dir) / EVALUATION
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return path
