"""The GPU proof of issue 4 (and `tunespec probe` of issue 3) on one lent H100, in as few device calls as
the 10-minute limit allows. On the device, from the repository root:

    source benchmarks/gpu/device_setup.sh
    python3 benchmarks/gpu/run_all.py --out $OUT --deadline-s 540 [CASE ...]

Cases (default: all, in this order; a case already in the state file is skipped):
  probe-lora, probe-qlora   `tunespec probe` on the LoRA / QLoRA spec, output saved as text
  lora, qlora               `tunespec apply` of benchmarks/gpu/specs/llama3-8b-viggo-{lora,qlora}.yaml
                            (lora is also the compiled side of the speed benchmark)
  naive-padded              `tunespec apply` of ...-lora-naive.yaml with every row padded to 2048 tokens
  naive-dynamic             the same spec, rows padded only to the longest of their batch (TRL's default)

Each training case compiles its spec with `tunespec plan -o`, applies the plan folder, and records the
plan's estimates beside what the run measured: metrics.json (tokens/s over all optimizer steps, as
`tunespec apply` reports it; peak allocated memory), the last-10-steps tokens/s of progress.jsonl, and a
wall-clock tokens/s over the steps after warm-up from the final checkpoint's log history (non-padding
token counts, `include_num_input_tokens_seen="non_padding"`) and the step events' times.
Results go to OUT/results.json after every case (and to a state file in /tmp for the next call).
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPECS = Path(__file__).resolve().parent / "specs"
WORK = Path("/tmp/tunespec-gpu")
STATE = WORK / "results.json"
LOGS = WORK / "logs"  # OUT takes 8 files at most: the logs travel back as one archive
WARMUP_STEPS = 4
NAIVE_PAD = 2048

CASES = {
    # name: (kind, spec file, plan.trainer changes, expected seconds, for the deadline)
    "probe-lora": ("probe", "llama3-8b-viggo-lora.yaml", {}, 60),
    "lora": ("train", "llama3-8b-viggo-lora.yaml", {}, 100),
    "qlora": ("train", "llama3-8b-viggo-qlora.yaml", {}, 130),
    "naive-padded": ("train", "llama3-8b-viggo-lora-naive.yaml", {"pad_to_multiple_of": NAIVE_PAD}, 110),
    "naive-dynamic": ("train", "llama3-8b-viggo-lora-naive.yaml", {}, 80),
    "probe-qlora": ("probe", "llama3-8b-viggo-qlora.yaml", {}, 120),
}


def tunespec(*args, log: Path, timeout: float) -> int:
    command = [sys.executable, "-m", "tunespec.cli.main", *args]
    print("$ tunespec " + " ".join(args), flush=True)
    with log.open("w") as handle:
        process = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout,
                                 env=dict(os.environ, COLUMNS="120"))
    print(log.read_text()[-1500:], flush=True)
    return process.returncode


def versions() -> dict:
    import importlib.metadata as metadata

    import torch

    found = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("transformers", "accelerate", "trl", "peft", "datasets", "bitsandbytes", "liger-kernel"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    if not torch.cuda.is_available():
        return {"versions": found, "device": {"name": "cpu"}}
    device = {"name": torch.cuda.get_device_name(0), "memory_bytes": torch.cuda.get_device_properties(0).total_memory}
    try:
        device["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                          capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    return {"versions": found, "device": device}


def estimates_of(plan: dict) -> dict:
    memory, speed = plan["estimates"]["memory"], plan["estimates"]["throughput"]
    return {"total_gib": memory["total_gib"], "peak_allocated_gib": round(memory["peak_allocated_bytes"] / 2**30, 2),
            "peak_reserved_gib": round(memory["peak_reserved_bytes"] / 2**30, 2), "verdict": memory["verdict"],
            "tokens_per_s": speed.get("tokens_per_s_total"), "bound_by": speed.get("bound_by"),
            "micro_step_time_s": speed.get("micro_step_time_s"),
            "suggestions": [s["message"] for s in plan["estimates"].get("suggestions", [])]}


def final_log_history(run_dir: Path):
    """The Trainer's log history as the run's last checkpoint holds it, or None without a checkpoint."""
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if not checkpoints:
        return None
    return json.loads((checkpoints[-1] / "trainer_state.json").read_text())["log_history"]


def wall_clock_rate(run_dir: Path) -> dict:
    """Non-padding tokens/s over the steps after warm-up, from step-event times and logged token counts."""
    history = final_log_history(run_dir)
    if history is None:
        return {}
    seen = {e["step"]: e["num_input_tokens_seen"] for e in history if "num_input_tokens_seen" in e and "loss" in e}
    events = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines() if line.strip()]
    step_time = {e["step"]: e["time"] for e in events if e["event"] == "step"}
    rolling = [e["tokens_per_s"] for e in events if e["event"] == "step"]
    last = max(step_time)
    if WARMUP_STEPS not in step_time or WARMUP_STEPS not in seen or last not in seen:
        return {"last10_tokens_per_s": rolling[-1] if rolling else None}
    tokens = seen[last] - seen[WARMUP_STEPS]
    seconds = step_time[last] - step_time[WARMUP_STEPS]
    return {"wall_tokens_per_s_after_warmup": round(tokens / seconds, 1), "wall_window_steps": [WARMUP_STEPS + 1, last],
            "wall_window_tokens": tokens, "wall_window_s": round(seconds, 3),
            "tokens_per_step_after_warmup": round(tokens / (last - WARMUP_STEPS), 1),
            "last10_tokens_per_s": rolling[-1] if rolling else None}


def dry_spec(spec: str) -> str:
    """--dry-cpu: the spec for a CPU rehearsal of the driver (6 steps, no Liger: Triton needs a GPU)."""
    name = f"_dry-{spec}"
    (SPECS / name).write_text(f"extends: {spec}\ntraining: {{max_steps: 6, liger_kernels: false}}\n"
                             "backend: {type: local, device: cpu, hardware: null, run_dir: /tmp/dry}\n")
    return name


def run_train(name: str, spec: str, changes: dict, out: Path, timeout: float, dry: bool = False) -> dict:
    plan_dir, run_dir = WORK / "plans" / name, WORK / "runs" / name
    shutil.rmtree(plan_dir, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    result = {"case": name, "kind": "train", "spec": f"benchmarks/gpu/specs/{spec}", "plan_changes": changes}
    compiled = dry_spec(spec) if dry else spec
    code = tunespec("plan", str(SPECS / compiled), "-o", str(plan_dir), log=LOGS / f"{name}-plan.log", timeout=120)
    if dry:
        (SPECS / compiled).unlink()
    if code != 0:
        return {**result, "exit_code": code, "failed": "plan"}
    plan_file = plan_dir / "plan.json"
    plan = json.loads(plan_file.read_text())
    if changes:
        # Settings the spec has no field for (the naive setup's padding): patched into the plan folder.
        plan["trainer"].update(changes)
        plan_file.write_text(json.dumps(plan, indent=2, sort_keys=True) + "\n")
    result["estimate"] = estimates_of(plan)
    result["settings"] = {"method": plan["method"]["type"], "micro_batch_size": plan["batch"]["micro_batch_size"],
                          "gradient_accumulation": plan["batch"]["gradient_accumulation"],
                          "sequence_length": plan["batch"]["sequence_length"], "packing": plan["data"]["packing"],
                          "gradient_checkpointing": plan["trainer"]["gradient_checkpointing"],
                          "liger_kernels": plan["trainer"]["use_liger_kernel"],
                          "pad_to_multiple_of": plan["trainer"].get("pad_to_multiple_of"),
                          "max_steps": plan["trainer"]["max_steps"]}
    started = time.time()
    code = tunespec("apply", str(plan_dir), "--run-dir", str(run_dir), log=LOGS / f"{name}-apply.log", timeout=timeout)
    result["exit_code"] = code
    result["apply_wall_s"] = round(time.time() - started, 1)
    metrics_file = run_dir / "metrics.json"
    if code != 0 or not metrics_file.is_file():
        console = run_dir / "console.log"
        if console.is_file():
            shutil.copy(console, LOGS / f"{name}-console.log")
        return {**result, "failed": "apply"}
    shutil.copy(plan_file, LOGS / f"{name}-plan.json")
    shutil.copy(run_dir / "console.log", LOGS / f"{name}-console.log")
    metrics = json.loads(metrics_file.read_text())
    result["measured"] = {
        "tokens_per_s": metrics["tokens_per_s"], "train_tokens": metrics["train_tokens"],
        "global_step": metrics["global_step"], "peak_memory_gib": metrics["peak_memory_gib"],
        "peak_memory_kind": metrics["peak_memory_kind"], "final_train_loss": metrics["final_train_loss"],
        "first_train_loss": (metrics["train_loss_history"] or [{}])[0].get("loss"),
        "duration_s": metrics["duration_s"], **wall_clock_rate(run_dir)}
    return result


def run_probe(name: str, spec: str, out: Path, timeout: float) -> dict:
    log = LOGS / f"{name}.txt"
    started = time.time()
    code = tunespec("probe", str(SPECS / spec), "--steps", "8", log=log, timeout=timeout)
    return {"case": name, "kind": "probe", "spec": f"benchmarks/gpu/specs/{spec}", "exit_code": code,
            "wall_s": round(time.time() - started, 1), "output": log.read_text()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("cases", nargs="*", default=list(CASES))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--deadline-s", type=float, default=540, help="start no case that would end after this")
    parser.add_argument("--redo", action="store_true", help="run cases already in the state file again")
    parser.add_argument("--dry-cpu", action="store_true",
                        help="rehearse the training cases on a CPU machine with a tiny model in the model folder")
    args = parser.parse_args()
    began = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    state = json.loads(STATE.read_text()) if STATE.is_file() else {"date": time.strftime("%Y-%m-%d"), **versions(),
                                                                   "cases": {}}

    def run_case(name: str, left: float) -> dict:
        kind, spec, changes, _ = CASES[name]
        if kind == "probe":
            return run_probe(name, spec, args.out, timeout=left)
        return run_train(name, spec, changes, args.out, timeout=left, dry=args.dry_cpu)

    run_cases(args.cases, {name: case[3] for name, case in CASES.items()}, run_case, state, STATE, args.out,
              args.deadline_s, began, skip_done=not args.redo, kind_of=lambda name: CASES[name][0])
    print(summary(state), flush=True)
    return 0


def run_cases(names: list, expected_s: dict, run_case, state: dict, state_file: Path, out: Path, deadline_s: float,
              began: float, *, skip_done: bool = True, results_name: str = "results.json",
              logs_name: str = "logs.tar.gz", kind_of=lambda name: None) -> None:
    """Run each case (`run_case(name, seconds_left)` -> result) unless an earlier call finished it or it would
    end after the deadline; the state file, OUT/results_name and the logs archive are written after each
    case, so a call cut short keeps what it measured (OUT takes a few files: the logs travel as one archive)."""
    for name in names:
        if skip_done and state["cases"].get(name, {}).get("exit_code") == 0:
            print(f"== {name}: done in an earlier call", flush=True)
            continue
        left = deadline_s - (time.time() - began)
        if left < expected_s[name]:
            print(f"== {name}: skipped, {left:.0f} s left of the deadline (expects ~{expected_s[name]} s)", flush=True)
            continue
        print(f"== {name} ({left:.0f} s left)", flush=True)
        try:
            result = run_case(name, left)
        except subprocess.TimeoutExpired:
            kind = kind_of(name)
            result = {"case": name, **({"kind": kind} if kind else {}), "exit_code": None, "failed": "deadline"}
        state["cases"][name] = result
        state_file.write_text(json.dumps(state, indent=2) + "\n")
        shutil.copy(state_file, out / results_name)
        subprocess.run(["tar", "czf", str(out / logs_name), "-C", str(WORK), "logs"], check=False)


def summary(state: dict) -> str:
    lines = [f"{'case':<14} {'exit':>4} {'tok/s (apply)':>13} {'tok/s wall':>10} {'est tok/s':>9} "
             f"{'peak GiB':>8} {'est GiB':>7}"]
    for name, r in state["cases"].items():
        if r["kind"] != "train":
            lines.append(f"{name:<14} {str(r['exit_code']):>4} (probe, see {name}.txt)")
            continue
        m, e = r.get("measured") or {}, r.get("estimate") or {}
        lines.append(f"{name:<14} {str(r['exit_code']):>4} {str(m.get('tokens_per_s')):>13} "
                     f"{str(m.get('wall_tokens_per_s_after_warmup')):>10} {str(e.get('tokens_per_s')):>9} "
                     f"{str(m.get('peak_memory_gib')):>8} {str(e.get('peak_allocated_gib')):>7}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
