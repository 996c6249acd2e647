"""Issue 17 on the lent nvidia-h200-x2 machine: FSDP over 1 and 2 processes through `tunespec apply`,
measured beside the plan's estimates, and the resume of an FSDP run after kill -9. On the device:

    source benchmarks/gpu/device_setup.sh
    python3 benchmarks/gpu/fsdp_2gpu.py --out $OUT --deadline-s 540 [CASE ...]

Cases (default: all, in this order; a case already in the state file is skipped):
  fsdp2-lora, fsdp2-qlora   benchmarks/gpu/specs/llama3-8b-fsdp-{lora,qlora}-2gpu.yaml (2 processes)
  fsdp1-lora, fsdp1-qlora   the same specs over one process (the scaling baseline)
  mixtral-fsdp2             seed 000's Mixtral-8x7B QLoRA + FSDP spec on the 2 GPUs (random weights built first
                            by build_random_model.py into /tmp/tunespec-gpu/mixtral-8x7b)
  fsdp2-resume              the 2-process QLoRA spec killed with SIGKILL (the whole process group) once
                            its step-6 checkpoint is complete, then applied again: it must resume from
                            step 6 and finish step 12
The training cases reuse run_all.py's driver (plan -o, apply the plan folder, metrics beside estimates);
per-rank peak memory (after loading, after the Trainer wrapped the model, after the first step, at the
end) comes from metrics.json; the steady tokens/s is the median per-step rate of the trainer's own log
(tokens seen between two logged steps over its runtime between them) without the first two steps and
the checkpoint-saving ones.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_all  # noqa: E402  (the sibling driver: one mechanism for every GPU case)

STATE = run_all.WORK / "fsdp-results.json"
CASES = {
    # name: (spec file, expected seconds, for the deadline)
    "fsdp2-lora": ("llama3-8b-fsdp-lora-2gpu.yaml", 90),
    "fsdp2-qlora": ("llama3-8b-fsdp-qlora-2gpu.yaml", 110),
    "fsdp1-lora": ("llama3-8b-fsdp-lora-1gpu.yaml", 90),
    "fsdp1-qlora": ("llama3-8b-fsdp-qlora-1gpu.yaml", 110),
    "fsdp2-resume": ("llama3-8b-fsdp-qlora-2gpu.yaml", 200),
    "mixtral-fsdp2": ("mixtral-8x7b-fsdp-qlora-2gpu.yaml", 300),
}
KILL_AT_STEP = 6
SAVE_EVERY = 6  # the specs' training.checkpoint_every_steps


def steady_rate(run_dir: Path) -> dict:
    history = run_all.final_log_history(run_dir)
    if history is None:
        return {}
    logged = [(e["step"], float(e["train_runtime"]), int(e["num_input_tokens_seen"])) for e in history
              if "loss" in e and "train_runtime" in e and "num_input_tokens_seen" in e]
    rates = {b[0]: (b[2] - a[2]) / (b[1] - a[1]) for a, b in zip(logged, logged[1:]) if b[1] > a[1]}
    # the interval after a checkpoint step holds the save
    steady = [rate for step, rate in rates.items() if step > 2 and (step - 1) % SAVE_EVERY]
    return {"per_step_tokens_per_s": {step: round(rate) for step, rate in rates.items()},
            "steady_tokens_per_s": round(statistics.median(steady)) if steady else None}


def topology() -> str:
    found = subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True)
    return found.stdout.strip()


def run_resume(name: str, spec: str, timeout: float) -> dict:
    """Apply, SIGKILL the whole trainer tree once checkpoint-6 is complete, apply again."""
    plan_dir, run_dir = run_all.WORK / "plans" / name, run_all.WORK / "runs" / name
    shutil.rmtree(plan_dir, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    result = {"case": name, "kind": "resume", "spec": f"benchmarks/gpu/specs/{spec}"}
    began = time.time()
    code = run_all.tunespec("plan", str(run_all.SPECS / spec), "-o", str(plan_dir),
                            log=run_all.LOGS / f"{name}-plan.log", timeout=120)
    if code != 0:
        return {**result, "exit_code": code, "failed": "plan"}
    checkpoint = run_dir / "checkpoints" / f"checkpoint-{KILL_AT_STEP}" / "trainer_state.json"
    with (run_all.LOGS / f"{name}-first.log").open("w") as log:
        first = subprocess.Popen([sys.executable, "-m", "tunespec.cli.main", "apply", str(plan_dir),
                                  "--run-dir", str(run_dir)], stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            while not checkpoint.is_file() and first.poll() is None and time.time() - began < timeout / 2:
                time.sleep(0.5)
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    if not checkpoint.is_file():
        return {**result, "exit_code": None, "failed": "no checkpoint before the kill"}
    # Survivors of the process group (ranks started by torchrun in their own group) would hold the GPUs.
    leftover = subprocess.run(["pgrep", "-f", "tunespec.runtime.train"], capture_output=True, text=True).stdout.split()
    result["killed_at_s"] = round(time.time() - began, 1)
    result["trainer_processes_left_after_kill"] = len(leftover)
    for pid in leftover:
        os.kill(int(pid), signal.SIGKILL)
    steps_before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    code = run_all.tunespec("apply", str(plan_dir), "--run-dir", str(run_dir), log=run_all.LOGS / f"{name}-second.log",
                            timeout=max(timeout - (time.time() - began), 30))
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    return {**result, "exit_code": code, "checkpoints_at_kill": steps_before,
            "resumed_from_step": metrics.get("resumed_from_step"), "global_step": metrics.get("global_step"),
            "final_train_loss": metrics.get("final_train_loss"),
            "train_loss_history": metrics.get("train_loss_history"),
            "peak_memory_gib_per_rank": metrics.get("peak_memory_gib_per_rank"),
            "wall_s": round(time.time() - began, 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("cases", nargs="*", default=list(CASES))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--deadline-s", type=float, default=540)
    args = parser.parse_args()
    began = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    run_all.LOGS.mkdir(parents=True, exist_ok=True)
    state = json.loads(STATE.read_text()) if STATE.is_file() else {
        "date": time.strftime("%Y-%m-%d"), **run_all.versions(), "topology": topology(), "cases": {}}

    def run_case(name: str, left: float) -> dict:
        spec = CASES[name][0]
        if name.endswith("-resume"):
            return run_resume(name, spec, timeout=left)
        result = run_all.run_train(name, spec, {}, args.out, timeout=left)
        run_dir = run_all.WORK / "runs" / name
        metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
        result.setdefault("measured", {}).update(
            {key: metrics.get(key) for key in ("peak_memory_gib_per_rank", "peak_memory_gib_by_phase_per_rank")},
            **steady_rate(run_dir))
        return result

    run_all.run_cases(args.cases, {name: case[1] for name, case in CASES.items()}, run_case, state, STATE, args.out,
                      args.deadline_s, began, results_name="fsdp-results.json", logs_name="fsdp-logs.tar.gz")
    print(json.dumps({n: {k: r.get(k) for k in ("exit_code", "failed", "measured", "resumed_from_step")}
                      for n, r in state["cases"].items()}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
