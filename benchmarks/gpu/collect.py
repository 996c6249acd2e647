"""Merge what the device calls brought back into benchmarks/gpu/results-h100-2026-11-24.json.

    python3 benchmarks/gpu/collect.py RESULTS.json LOGS_DIR OUT.json

Adds, per training case, the trainer's own per-step log (cumulative non-padding tokens and
train_runtime, from the run's console.log) and a steady-state rate over the steps after
STEADY_FROM (the first steps carry Triton/Liger compilation and allocator warm-up).
"""
import ast
import json
import sys
from pathlib import Path

STEADY_FROM = 8


def step_log(console: Path) -> list:
    rows = []
    for line in console.read_text(errors="replace").splitlines():
        if line.startswith("{'loss'"):
            entry = ast.literal_eval(line)
            rows.append({"tokens_seen": int(entry["num_input_tokens_seen"]),
                         "train_runtime_s": float(entry["train_runtime"]), "loss": float(entry["loss"])})
    for index, row in enumerate(rows, 1):
        row["step"] = index
    return rows


def main(results: Path, logs: Path, out: Path) -> None:
    state = json.loads(results.read_text())
    for name, case in state["cases"].items():
        if case["kind"] == "probe":
            case["output"] = "\n".join(line for line in case["output"].splitlines()
                                       if "it/s]" not in line and "Backend impl" not in line)
            continue
        rows = step_log(logs / f"{name}-console.log")
        case["steps"] = rows
        first, last = rows[STEADY_FROM - 1], rows[-1]
        case["measured"]["steady_tokens_per_s"] = round(
            (last["tokens_seen"] - first["tokens_seen"]) / (last["train_runtime_s"] - first["train_runtime_s"]), 1)
        case["measured"]["steady_window_steps"] = [STEADY_FROM + 1, last["step"]]
    out.write_text(json.dumps(state, indent=2) + "\n")


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:4]))
