"""The local backend: run the plan's trainer on this machine, follow it with a progress bar, report.

apply_local(plan, run_dir, console) → exit code. The trainer runs in a child process (torchrun for
several GPUs) with its output in RUN/console.log; the bar reads RUN/progress.jsonl. Applying again
resumes an interrupted run from its last complete checkpoint, and only reports a finished one.
Light: no torch here, the CLI imports this module.
"""
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.markup import escape
from rich.table import Table

from ..compiler.plan import canonical_json
from .kernels import missing_kernels
from .progress import read_events
from .run_layout import (CONSOLE_LOG, PLAN, PROGRESS, SAMPLES, checkpoint_step, finished_metrics,
                         last_complete_checkpoint)

POLL_SECONDS = 0.5
LOG_TAIL_LINES = 25


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
    """The trainer process, its output into `log` (an open binary file)."""
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def _saved_plan_conflict(run_dir: Path, plan: dict) -> Optional[str]:
    saved = run_dir / PLAN
    if not saved.is_file():
        return None
    saved_hash = json.loads(saved.read_text())["spec"]["hash"]
    if saved_hash == plan["spec"]["hash"]:
        return None
    return (f"{run_dir} holds a run of another spec (hash {saved_hash[:12]}, this one {plan['spec']['hash'][:12]}): "
            "give another --run-dir, or delete the folder to start over")


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def print_report(console, run_dir: Path, metrics: dict) -> None:
    table = Table(title=f"Run {run_dir}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("eval loss", f"{_fmt(metrics['initial_eval_loss'])} → {_fmt(metrics['final_eval_loss'])} "
                               f"(best {_fmt(metrics['best_eval_loss'])})")
    table.add_row("train loss", f"final {_fmt(metrics['final_train_loss'])}")
    resumed = f" (resumed from step {metrics['resumed_from_step']})" if metrics["resumed_from_step"] else ""
    table.add_row("steps", f"{metrics['global_step']} of {metrics['max_steps']}{resumed}")
    table.add_row("tokens/s", _fmt(metrics["tokens_per_s"], 5))
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
    else:
        console.print(f"[red]The trainer failed (exit code {code})[/]; the end of {run_dir / CONSOLE_LOG}:\n"
                      f"{_log_tail(run_dir)}", highlight=False)
    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint:
        console.print(f"Apply again to resume from {checkpoint.name}.")


def _follow(process: subprocess.Popen, run_dir: Path, console) -> Optional[dict]:
    """Show the trainer's progress until it exits; returns its error event, if it wrote one."""
    offset, error = 0, None
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("starting the trainer", total=None, loss="-", speed="-")
        while True:
            exited = process.poll() is not None
            events, offset = read_events(run_dir / PROGRESS, offset)
            for event in events:
                kind = event["event"]
                if kind == "phase":
                    bar.update(task, description=event["name"])
                elif kind == "start":
                    bar.reset(task, total=event["total_steps"], completed=event["resumed_from_step"],
                              description="training")
                    if event["resumed_from_step"]:
                        bar.console.print(f"Resuming from step {event['resumed_from_step']}")
                elif kind == "step":
                    bar.update(task, completed=event["step"], description="training",
                               speed=_fmt(event["tokens_per_s"], 4))
                elif kind == "loss":
                    bar.update(task, loss=_fmt(event["loss"]))
                elif kind == "eval":
                    bar.console.print(f"step {event['step']}: eval loss {event['eval_loss']:.4f}")
                    bar.update(task, description="training")
                elif kind == "error":
                    error = event
            if exited:
                return error
            time.sleep(POLL_SECONDS)


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
        console.print(f"Resuming the interrupted run in {run_dir} from step {checkpoint_step(checkpoint)}")
    console.print(f"Training in {run_dir} (log: {run_dir / CONSOLE_LOG})")
    # The trainer's own events tell this session's story: older ones belong to earlier sessions.
    (run_dir / PROGRESS).unlink(missing_ok=True)
    with (run_dir / CONSOLE_LOG).open("ab") as log:
        process = start_trainer(command, log, _trainer_environment(plan))
        try:
            error = _follow(process, run_dir, console)
        except KeyboardInterrupt:
            # Ctrl-C reached the trainer too (same process group): let it stop, then say how to go on.
            process.wait()
            done = last_complete_checkpoint(run_dir)
            console.print("Interrupted." + (f" Apply again to resume from {done.name}." if done else ""))
            return 130
    code = process.returncode
    metrics = finished_metrics(run_dir)
    if code == 0 and metrics:
        print_report(console, run_dir, metrics)
        return 0
    _print_failure(console, plan, run_dir, code, error)
    return code if code > 0 else 1


def status_local(plan: dict, console, run_dir: Optional[Path] = None) -> int:
    """Report a local run: finished (with its metrics), in progress or interrupted, or not started."""
    run_dir = run_dir or Path(plan["backend"]["run_dir"])
    metrics = finished_metrics(run_dir)
    if metrics:
        print_report(console, run_dir, metrics)
        return 0
    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint:
        console.print(f"{run_dir}: not finished; last complete checkpoint {checkpoint.name} "
                      "(`tunespec apply` again resumes from it)")
        return 0
    console.print(f"{run_dir}: no run yet")
    return 0


def cancel_local(plan: dict, console, run_dir: Optional[Path] = None) -> int:
    console.print("A local run stops with Ctrl-C in the terminal that runs it (or by ending its process); "
                  "`tunespec apply` later resumes from the last checkpoint.")
    return 0
