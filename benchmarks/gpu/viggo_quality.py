"""ViGGO quality on the GPU (issue 4 "Quality"): fine-tune SmolLM2-135M-Instruct on the full ViGGO train
split through `tunespec apply`, then score base vs tuned on the valid split (runtime/evaluate.py:
greedy generation, exact match and slot-level F1 of the meaning representations).

On the device, after benchmarks/gpu/device_setup.sh, with the GGUF at the spec's model.source:
    python3 benchmarks/gpu/viggo_quality.py --out $OUT
Writes OUT/viggo_quality.json; benchmarks/viggo_quality.md reports it.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = Path(__file__).resolve().parent / "specs" / "smollm2-viggo-quality.yaml"
RUN = Path("/tmp/tunespec-gpu/runs/smollm2-viggo-quality")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    code = subprocess.run([sys.executable, "-m", "tunespec.cli.main", "apply", str(SPEC), "--run-dir", str(RUN)]).returncode
    if code != 0:
        console = RUN / "console.log"
        print(console.read_text()[-6000:] if console.is_file() else "no console.log")
        return code
    train_s = time.time() - started
    from tunespec.runtime.evaluate import evaluate

    started = time.time()
    result = evaluate(RUN, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    metrics = json.loads((RUN / "metrics.json").read_text())
    plan = json.loads((RUN / "plan.json").read_text())
    import torch

    report = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(0),
              "spec": "benchmarks/gpu/specs/smollm2-viggo-quality.yaml",
              "generation": {"greedy": True, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size},
              "train": {k: metrics[k] for k in ("global_step", "initial_eval_loss", "final_eval_loss", "best_eval_loss",
                                                "final_train_loss", "tokens_per_s", "train_tokens", "peak_memory_gib",
                                                "duration_s")},
              "train_rows": plan["data"]["num_examples"], "apply_wall_s": round(train_s, 1),
              "evaluate_wall_s": round(time.time() - started, 1), **result}
    (args.out / "viggo_quality.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: report[k] for k in ("train", "base", "tuned")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
