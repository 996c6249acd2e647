"""Issue 16's device_map proof: `tunespec apply` of seed 002's placement (distribution: device_map) on the
GPU machine, a few steps, and the placement the run reports. On the device, from the repository root,
after `source benchmarks/gpu/device_setup.sh` (which builds the Llama-3-8B-shaped model it loads):

    python3 benchmarks/gpu/device_map_apply.py --out $OUT --deadline-s 420

Rehearsal here (the tunespec cases' plans only): python3 benchmarks/gpu/device_map_apply.py --out /tmp/dm --dry-cpu

Cases (default: all, in this order; a case that succeeded in an earlier call is skipped):
  device-map-lora     specs/llama3-8b-device-map.yaml: LoRA, each GPU's share 0.9, backend.gpus = the
                      GPUs here (one H200: the whole model on cuda:0; two: the layers split over both)
  device-map-qlora    the same with NF4 weights (seed 002's method)
  device-map-gpu-cpu  a share of 0.06 (8 GiB of an H200) for the 15 GiB of weights: refused at plan time,
                      since the rest would be offloaded to host memory (exit 2 expected)
  offload-training    the same split outside tunespec (offload_training.py: from_pretrained with
                      max_memory GPU 8GiB + cpu, PEFT LoRA, 3 Trainer steps): whether the refusal holds here

Per case: the plan's and the apply's exit codes, whether the output holds a traceback, the error line, and
from metrics.json the placement (modules per device), the losses (and whether all are finite), tokens/s
and peak memory. Results to OUT/device-map-results.json after every case, logs to OUT/device-map-logs.tar.gz.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from probe_all import error_line, kill_group
from run_all import LOGS, WORK, run_cases, versions

HERE = Path(__file__).resolve().parent
BASE_SPEC = HERE / "specs" / "llama3-8b-device-map.yaml"
MODEL = WORK / "llama3-8b"
STATE = WORK / "device-map-state.json"
DRY_STATE = WORK / "device-map-dry-state.json"
NF4 = {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bf16"}
GPU_CPU_SHARE = 0.06  # of an H200's 139.8 GiB: 8.4 GiB, about half the Llama-3-8B's bf16 weights

CASES = {
    # name: (spec changes over the base spec, expected seconds for the deadline)
    "device-map-lora": ({}, 90),
    "device-map-qlora": ({"method": {"type": "qlora", "quantization": NF4}}, 120),
    "device-map-gpu-cpu": ({"distribution": {"strategy": "device_map", "max_memory_fraction": GPU_CPU_SHARE}}, 20),
    "offload-training": (None, 150),
}


def run_in_group(command: list, log: Path, timeout: float):
    """The command's exit code (None when it ran past `timeout`); its process group is killed either way."""
    print("$ " + " ".join(command), flush=True)
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=dict(os.environ, COLUMNS="160"))
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            kill_group(process)


def visible_gpus() -> int:
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
    return len([line for line in listed.splitlines() if line.startswith("GPU ")])


def outcome(code, log: Path) -> dict:
    text = log.read_text()
    traceback = "Traceback (most recent call last)" in text
    found = {"exit_code": code, "traceback": traceback}
    if code != 0 or traceback:
        found["error"] = "timed out" if code is None else error_line(text, "", traceback)
    return found


def run_apply(name: str, changes: dict, timeout: float, dry: bool) -> dict:
    spec = dict(changes, extends=str(BASE_SPEC), name=f"llama3-8b-{name}",
                backend={"gpus": 1 if dry else visible_gpus()})
    spec_file, plan_dir, run_dir = WORK / f"{name}.yaml", WORK / "plans" / name, WORK / "runs" / name
    spec_file.write_text(json.dumps(spec, indent=2) + "\n")
    shutil.rmtree(plan_dir, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    tunespec = [sys.executable, "-m", "tunespec"]
    planned = run_in_group([*tunespec, "plan", str(spec_file), "-o", str(plan_dir)], LOGS / f"{name}-plan.log", 120)
    result = {"case": name, "spec": spec, "plan": outcome(planned, LOGS / f"{name}-plan.log")}
    if planned != 0 or dry:
        return dict(result, exit_code=planned, **({} if planned == 0 else {"failed": "plan"}))
    started = time.time()
    applied = run_in_group([*tunespec, "apply", str(plan_dir), "--run-dir", str(run_dir)],
                           LOGS / f"{name}-apply.log", timeout)
    result.update(apply=outcome(applied, LOGS / f"{name}-apply.log"), exit_code=applied,
                  apply_wall_s=round(time.time() - started, 1))
    for name_in_run in ("console.log", "train.log"):
        if (run_dir / name_in_run).is_file():
            shutil.copy(run_dir / name_in_run, LOGS / f"{name}-{name_in_run}")
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        return dict(result, failed="apply")
    metrics = json.loads(metrics_file.read_text())
    losses = [entry["loss"] for entry in metrics["train_loss_history"]]
    result["measured"] = {"placement": metrics.get("placement"), "losses": losses,
                          "losses_finite": bool(losses) and all(math.isfinite(loss) for loss in losses),
                          "global_step": metrics["global_step"], "tokens_per_s": metrics["tokens_per_s"],
                          "peak_memory_gib": metrics["peak_memory_gib"],
                          "peak_memory_gib_per_rank": metrics.get("peak_memory_gib_per_rank")}
    return result


def run_offload_training(timeout: float) -> dict:
    log = LOGS / "offload-training.log"
    gpu_cap = f"{int(GPU_CPU_SHARE * 139.8)}GiB"
    code = run_in_group([sys.executable, str(HERE / "offload_training.py"), str(MODEL), gpu_cap], log, timeout)
    printed = {}
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            printed.update(json.loads(line))
    return {"case": "offload-training", **outcome(code, log), "measured": printed}


def summary(state: dict) -> str:
    lines = ["| case | plan exit | apply exit | traceback | placement (modules per device) | losses | error |",
             "|---|---:|---:|---|---|---|---|"]
    for name, result in state["cases"].items():
        measured = result.get("measured") or {}
        plan = result.get("plan") or {}
        ran = result.get("apply") or (result if name == "offload-training" else {})
        error = ran.get("error") or plan.get("error") or result.get("failed") or ""
        losses = ", ".join(f"{loss:.3f}" for loss in measured.get("losses") or [])
        lines.append(f"| {name} | {plan.get('exit_code', '')} | {ran.get('exit_code', '')} | "
                     f"{'yes' if ran.get('traceback') or plan.get('traceback') else 'no'} | "
                     f"{json.dumps(measured.get('placement'))} | {losses} | {error.replace('|', '/')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", default=list(CASES))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--deadline-s", type=float, default=420, help="start no case that would end after this")
    parser.add_argument("--redo", action="store_true", help="run cases that succeeded in an earlier call again")
    parser.add_argument("--dry-cpu", action="store_true", help="rehearse on a CPU: plan the tunespec cases only")
    args = parser.parse_args()
    if args.dry_cpu:
        args.cases = [name for name in args.cases if CASES[name][0] is not None]
    began = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    state_file = DRY_STATE if args.dry_cpu else STATE
    state = (json.loads(state_file.read_text()) if state_file.is_file()
             else {"date": time.strftime("%Y-%m-%d"), **versions(), "cases": {}})

    def run_case(name: str, left: float) -> dict:
        changes = CASES[name][0]
        return run_offload_training(left) if changes is None else run_apply(name, changes, left, args.dry_cpu)

    run_cases(args.cases, {name: case[1] for name, case in CASES.items()}, run_case, state, state_file, args.out,
              args.deadline_s, began, skip_done=not args.redo, results_name="device-map-results.json",
              logs_name="device-map-logs.tar.gz")
    print(summary(state), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
