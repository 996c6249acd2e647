"""Issue 16's GPU proof: `tunespec probe` of every catalog architecture, LoRA and QLoRA (NF4), several
probes at a time on one GPU. On the device, from the repository root, after
`source benchmarks/gpu/device_setup.sh`:

    python3 benchmarks/gpu/probe_all.py --out $OUT --deadline-s 450

Rehearsal on a CPU machine (two small architectures at 1 layer, sequence 64; QLoRA there shows how a
probe without a GPU ends):

    python3 benchmarks/gpu/probe_all.py --out /tmp/probe-dry --dry-cpu

Each case extends specs/probe-base.yaml with the architecture's catalog entry (the probe builds random
weights of its shape; nothing is downloaded) and the method, and runs `tunespec probe --layers N` in its
own process group, killed with its group whatever the outcome. Recorded per case: exit code, whether
the output holds a Python traceback, the tokens/s and peak memory the probe measured and estimated,
the error's last line. Cases start largest first, as many at a time as --concurrency, the GPU memory
and (for QLoRA, whose probe saves the random bf16 weights to load them quantized) the free disk allow.
Results go to OUT/probe-results.json and OUT/probe-table.md after every case, the logs to
OUT/probe-logs.tar.gz; a case that succeeded in an earlier call (state in /tmp) is not run again.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from run_all import versions
from tunespec.compiler.catalog import load_models
from tunespec.compiler.parameter_counts import count_parameters

SPECS = Path(__file__).resolve().parent / "specs"
BASE_SPEC = SPECS / "probe-base.yaml"
WORK = Path("/tmp/tunespec-gpu")
STATE = WORK / "probe-state.json"
DRY_STATE = WORK / "probe-dry-state.json"
LOGS = WORK / "probe-logs"
CASE_SPECS = WORK / "probe-specs"
GIB = 2**30
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
NF4 = {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bf16"}
METHODS = {"lora": {"type": "lora", "lora": LORA}, "qlora": {"type": "qlora", "lora": LORA, "quantization": NF4}}
DRY_ARCHITECTURES = ("smollm2-135m", "qwen2.5-0.5b")
# Every probe process: interpreter, torch and CUDA start (~15-20 s), then the model build and steps.
START_S = 25
# Seconds per GiB of bf16 weights: building them (QLoRA: also saving and loading them quantized).
BUILD_S_PER_GIB = {"lora": 2, "qlora": 6}
# A case still running this long after the deadline is killed, so the call ends inside the device's limit.
DEADLINE_GRACE_S = 30


@dataclass
class Case:
    architecture: str
    method: str
    layers: int
    weights_bytes: int  # the bf16 weights of the layers built

    @property
    def name(self) -> str:
        return f"{self.architecture}-{self.method}"

    @property
    def gpu_bytes(self) -> int:
        # Weights, LoRA states, activations and the full-vocabulary logits of a short sequence,
        # with room to spare: the estimator's number is what the probe checks, not what this guards.
        return 2 * self.weights_bytes + 4 * GIB

    @property
    def disk_bytes(self) -> int:
        return self.weights_bytes if self.method == "qlora" else 0

    @property
    def expected_s(self) -> float:
        return START_S + BUILD_S_PER_GIB[self.method] * self.weights_bytes / GIB


@dataclass
class Running:
    case: Case
    process: subprocess.Popen
    started: float
    stdout: Path
    stderr: Path
    handles: list = field(default_factory=list)


def cases(architectures, layers: int) -> list:
    models = load_models()
    found = []
    for name in architectures:
        weights = 2 * count_parameters(dict(models[name], num_hidden_layers=layers))["total"]
        found.extend(Case(name, method, layers, weights) for method in METHODS)
    return sorted(found, key=lambda case: -case.expected_s)


def write_spec(case: Case, dry: bool) -> Path:
    """The case's spec: the base spec with the architecture's catalog entry and the method (JSON is YAML)."""
    entry = load_models()[case.architecture]
    spec = {"extends": str(BASE_SPEC), "name": f"probe-{case.name}".replace(".", "-"),
            "model": {"source": entry["hub_ids"][0], "architecture": case.architecture, "offline": True},
            "method": METHODS[case.method]}
    if entry.get("num_local_experts"):
        # PEFT adapts fused MoE experts without dropout (the compiler refuses 0.05 there, located)
        spec["method"] = {**spec["method"], "lora": {**LORA, "dropout": 0.0}}
    if dry:
        spec.update(data={"max_seq_length": 64}, training={"micro_batch_size": 1})
    CASE_SPECS.mkdir(parents=True, exist_ok=True)
    path = CASE_SPECS / f"{case.name}.yaml"
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path


def start(case: Case, steps: int, threads: int, dry: bool) -> Running:
    spec = write_spec(case, dry)
    stdout, stderr = LOGS / f"{case.name}.out", LOGS / f"{case.name}.err"
    handles = [stdout.open("w"), stderr.open("w")]
    command = [sys.executable, "-m", "tunespec", "probe", str(spec), "--layers", str(case.layers),
               "--steps", str(steps)]
    # A wide terminal keeps rich's result table on one line per row, for table_rows below.
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    process = subprocess.Popen(command, stdout=handles[0], stderr=handles[1], env=env, start_new_session=True)
    print(f"start {case.name} ({case.layers} layers, {case.weights_bytes / GIB:.1f} GiB bf16)", flush=True)
    return Running(case, process, time.time(), stdout, stderr, handles)


def kill_group(process: subprocess.Popen) -> None:
    """The process's whole group (its trainer, compile or loader workers included), whether or not it ended."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def stop(running: Running) -> None:
    kill_group(running.process)
    for handle in running.handles:
        handle.close()


def _number(cell: str):
    text = cell.split()[0].replace(",", "") if cell.strip() else ""
    try:
        return float(text)
    except ValueError:
        return None  # "—": nothing estimated


def table_rows(output: str) -> dict:
    """The probe's result table: row name -> (measured, estimated)."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if line.startswith("│") and len(cells) == 4:
            rows[cells[0]] = (_number(cells[1]), _number(cells[2]))
    return rows


def error_line(stdout: str, stderr: str, traceback: bool) -> str:
    """A traceback's last line (the exception), else the first line that says `error`, else the last line."""
    for text in (stderr, stdout):
        # bitsandbytes' notice about its optional CPU kernels is no error of the probe.
        lines = [line.strip() for line in text.splitlines() if line.strip() and "gemm_4bit_forward" not in line]
        said = [line for line in lines if "error" in line.lower()]
        if lines:
            return (lines[-1] if traceback or not said else said[0])[:300]
    return ""


def result_of(running: Running, timed_out: bool) -> dict:
    stdout, stderr = running.stdout.read_text(), running.stderr.read_text()
    rows = table_rows(stdout)
    tokens = rows.get("tokens/s", (None, None))
    allocated = rows.get("peak memory allocated", (None, None))
    code = None if timed_out else running.process.returncode
    traceback = "Traceback (most recent call last)" in stderr + stdout
    result = {"case": running.case.name, "architecture": running.case.architecture, "method": running.case.method,
              "layers": running.case.layers, "exit_code": code, "timed_out": timed_out, "traceback": traceback,
              "wall_s": round(time.time() - running.started, 1), "tokens_per_s": tokens[0],
              "estimated_tokens_per_s": tokens[1], "peak_allocated_gib": allocated[0],
              "estimated_peak_allocated_gib": allocated[1],
              "peak_rss_gib": rows.get("peak process memory (RSS)", (None, None))[0]}
    if code != 0 or traceback:
        result["error"] = "timed out" if timed_out else error_line(stdout, stderr, traceback)
    return result


def markdown(state: dict) -> str:
    lines = ["| architecture | method | layers | exit | traceback | tokens/s | est. tokens/s | peak alloc GiB | "
             "est. GiB | wall s | error |", "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for result in sorted(state["cases"].values(), key=lambda r: (r["architecture"], r["method"])):
        def shown(key, digits=1):
            value = result.get(key)
            return "" if value is None else f"{value:,.{digits}f}"
        rss = shown("peak_rss_gib", 2)
        peak = shown("peak_allocated_gib", 2) or (rss + " RSS" if rss else "")
        lines.append(f"| {result['architecture']} | {result['method']} | {result['layers']} | {result['exit_code']} | "
                     f"{'yes' if result['traceback'] else 'no'} | {shown('tokens_per_s')} | "
                     f"{shown('estimated_tokens_per_s')} | {peak} | {shown('estimated_peak_allocated_gib', 2)} | "
                     f"{result['wall_s']} | {result.get('error', '').replace('|', '/')} |")
    return "\n".join(lines)


def save(state: dict, state_file: Path, out: Path) -> None:
    state_file.write_text(json.dumps(state, indent=2) + "\n")
    shutil.copy(state_file, out / "probe-results.json")
    (out / "probe-table.md").write_text(markdown(state) + "\n")
    subprocess.run(["tar", "czf", str(out / "probe-logs.tar.gz"), "-C", str(WORK), LOGS.name], check=False)


def gpu_memory_bytes() -> int:
    answer = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", "0"],
                            capture_output=True, text=True, check=True)
    return int(answer.stdout.split()[0]) * 2**20


def run_all(pending: list, state: dict, args, began: float) -> None:
    """Start cases while a slot, the GPU memory and the disk allow and the deadline leaves them time;
    reap each when it ends or passes its timeout; save after every case."""
    gpu_budget = int(0.85 * (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if args.dry_cpu
                             else gpu_memory_bytes()))
    disk_budget = int(0.6 * shutil.disk_usage(tempfile.gettempdir()).free)
    threads = max(1, (os.cpu_count() or 1) // args.concurrency)
    running = []
    try:
        while pending or running:
            now = time.time()
            for job in [job for job in running if job.process.poll() is not None or now - job.started > args.timeout_s
                        or now - began > args.deadline_s + DEADLINE_GRACE_S]:
                timed_out = job.process.poll() is None
                stop(job)
                running.remove(job)
                result = result_of(job, timed_out)
                state["cases"][job.case.name] = result
                print(f"end   {job.case.name}: exit {result['exit_code']}, {result['wall_s']} s"
                      + (f", {result['error']}" if "error" in result else ""), flush=True)
                save(state, args.state, args.out)
            left = args.deadline_s - (time.time() - began)
            for case in [case for case in pending if case.expected_s > left]:
                print(f"skip  {case.name}: {left:.0f} s left of the deadline (expects ~{case.expected_s:.0f} s)")
                pending.remove(case)
            for case in list(pending):
                gpu_used = sum(job.case.gpu_bytes for job in running)
                disk_used = sum(job.case.disk_bytes for job in running)
                fits = gpu_used + case.gpu_bytes <= gpu_budget and disk_used + case.disk_bytes <= disk_budget
                if len(running) < args.concurrency and (fits or not running):
                    running.append(start(case, args.steps, threads, args.dry_cpu))
                    pending.remove(case)
            time.sleep(1)
    finally:
        for job in running:
            stop(job)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--deadline-s", type=float, default=450, help="start no case that would end after this")
    parser.add_argument("--timeout-s", type=float, default=240, help="a probe running longer is killed")
    parser.add_argument("--concurrency", type=int, default=8, help="probes at a time")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers each probe builds")
    parser.add_argument("--steps", type=int, default=8, help="steps each probe runs (3 are warm-up)")
    parser.add_argument("--architectures", nargs="*", help="catalog names (default: the whole catalog)")
    parser.add_argument("--redo", action="store_true", help="run cases that succeeded in an earlier call again")
    parser.add_argument("--dry-cpu", action="store_true", help="rehearse on a CPU: two small architectures, "
                        "1 layer, sequence 64, 4 steps, 2 at a time")
    args = parser.parse_args()
    if args.dry_cpu:
        args.architectures = args.architectures or list(DRY_ARCHITECTURES)
        args.layers, args.steps, args.concurrency = 1, 4, 2
    args.state = DRY_STATE if args.dry_cpu else STATE
    began = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    state = (json.loads(args.state.read_text()) if args.state.is_file()
             else {"date": time.strftime("%Y-%m-%d"), **versions(), "cases": {}})
    done = {name for name, result in state["cases"].items() if result["exit_code"] == 0 and not result["traceback"]}
    pending = [case for case in cases(args.architectures or list(load_models()), args.layers)
               if args.redo or case.name not in done]
    print(f"{len(pending)} probes, {len(done)} done in earlier calls; expected serial time "
          f"{sum(case.expected_s for case in pending):.0f} s, {args.concurrency} at a time", flush=True)
    run_all(pending, state, args, began)
    save(state, args.state, args.out)
    print(markdown(state))
    print(f"{time.time() - began:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
