"""`tunespec apply|status|cancel` for `hyperpod-slurm` plans, run on the cluster's head node.

apply copies the plan and its sbatch scripts into the run folder on the shared filesystem, submits the
chain (`sbatch --parsable`, each job `--dependency=afterok:` on the ones before it), records the job
ids in RUN/slurm_jobs.json and follows them. Job states come from `scontrol show job` (`sacct` needs
accounting, which many clusters lack) and, once Slurm has forgotten a job, from the marker each
script writes when it ends well (RUN/status/NAME.done holding the job id).
"""
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import List, Optional


from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..schema.contract import (PLAN_FILE, SLURM_RUN_SUBFOLDERS, canonical_json, slurm_done_marker,
                               slurm_log)
from .errors import BackendError

JOBS_FILE = "slurm_jobs.json"
LOG_TAIL_LINES = 20
LIVE_LOG_LINES = 8
DETACHED = 130  # the exit status of a Ctrl-C: nothing failed, nothing was cancelled
BACKEND_NAME = "slurm"  # the CLI calls status_slurm / cancel_slurm

# Slurm's final states; every other state (PENDING, RUNNING, COMPLETING, REQUEUED, ...) is still going.
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
                 "DEADLINE"}
COMPLETED = "COMPLETED"
# Slurm no longer knows the job and it left no done marker: it ended, not well.
UNKNOWN = "UNKNOWN"


class SlurmError(BackendError):
    """A Slurm command failed, or this is not a machine that can submit jobs."""


class _Job:
    """One job of the chain as it stands now: what the record says plus what Slurm says."""

    def __init__(self, name: str, job_id: Optional[str], info: Optional[dict], log: Optional[Path]):
        self.name, self.job_id, self.info, self.log = name, job_id, info or {}, log

    @property
    def state(self) -> Optional[str]:
        return self.info.get("JobState") if self.job_id else None

    @property
    def settled(self) -> bool:
        """Submitted and either still going or done well: nothing to submit again."""
        return self.state is not None and self.state not in FAILED_STATES | {UNKNOWN}

    @property
    def ended(self) -> bool:
        return self.state in FAILED_STATES | {COMPLETED, UNKNOWN}

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES | {UNKNOWN}


# ---- entry points --------------------------------------------------------------------------------


def apply_slurm(plan: dict, plan_dir, console: Console, follow: bool = True, poll_seconds: float = 2.0) -> int:
    """Submit what of the chain is not already queued, running or completed; then follow it."""
    _require("sbatch")
    run_dir = Path(plan["backend"]["run_dir"])
    chain = plan["backend"]["chain"]
    record = _load_record(run_dir) or {"spec": plan["spec"], "jobs": {}}
    jobs = _current_jobs(run_dir, chain, record)
    first = next((i for i, job in enumerate(jobs) if not job.settled), None)
    if first is None:
        console.print(f"[bold]{plan['spec']['name']}[/]: already submitted; not submitting again.")
    else:
        _prepare_run_dir(plan, Path(plan_dir), run_dir)
        ids = {job.name: job.job_id for job in jobs[:first]}
        done = {job.name for job in jobs[:first] if job.state == COMPLETED}
        for step in chain[first:]:
            # A completed job satisfies afterok already, and Slurm may have forgotten its id.
            after = [ids[name] for name in step["depends_on"] if name not in done]
            ids[step["name"]] = _submit(run_dir / step["script"], after)
            entry = record["jobs"].setdefault(step["name"], {"job_id": None, "earlier_job_ids": []})
            if entry["job_id"]:
                entry["earlier_job_ids"].append(entry["job_id"])
            entry["job_id"] = ids[step["name"]]
            _save_record(run_dir, record)
        submitted = ", ".join(f"{step['name']} {ids[step['name']]}" for step in chain[first:])
        console.print(f"[bold]{plan['spec']['name']}[/]: submitted {submitted}; run folder {run_dir}")
    if not follow:
        console.print(_table(_current_jobs(run_dir, chain, record)))
        return 0
    return _follow(run_dir, chain, record, console, poll_seconds)


def status_slurm(plan: dict, console: Optional[Console] = None) -> int:
    """Print the chain's jobs: 0 while nothing failed, 1 after a failure or when never submitted."""
    console = console or Console()
    run_dir = Path(plan["backend"]["run_dir"])
    record = _load_record(run_dir)
    if record is None:
        console.print(f"{plan['spec']['name']}: not submitted (no {run_dir / JOBS_FILE})")
        return 1
    jobs = _current_jobs(run_dir, plan["backend"]["chain"], record)
    console.print(_table(jobs))
    failed = next((job for job in jobs if job.failed), None)
    if failed:
        _report_failure(failed, console)
        return 1
    running = next((job for job in jobs if job.state == "RUNNING"), None)
    if running:
        console.print(_log_panel(running, LIVE_LOG_LINES))
    return 0


def cancel_slurm(plan: dict, console: Optional[Console] = None) -> int:
    """scancel the recorded jobs that are still queued or running."""
    console = console or Console()
    _require("scancel")
    run_dir = Path(plan["backend"]["run_dir"])
    record = _load_record(run_dir)
    jobs = _current_jobs(run_dir, plan["backend"]["chain"], record) if record else []
    active = [job for job in jobs if job.job_id and not job.ended]
    if not active:
        console.print(f"{plan['spec']['name']}: nothing queued or running")
        return 0
    _run(["scancel"] + [job.job_id for job in active])
    console.print(f"{plan['spec']['name']}: cancelled " + ", ".join(f"{job.name} {job.job_id}" for job in active))
    return 0


# ---- following -----------------------------------------------------------------------------------


def _follow(run_dir: Path, chain: List[dict], record: dict, console: Console, poll_seconds: float) -> int:
    jobs = _current_jobs(run_dir, chain, record)
    try:
        with Live(_live_view(jobs), console=console, refresh_per_second=4) as live:
            while not (all(job.ended for job in jobs) or any(job.failed for job in jobs)):
                time.sleep(poll_seconds)
                jobs = _current_jobs(run_dir, chain, record)
                live.update(_live_view(jobs))
    except KeyboardInterrupt:
        console.print("Detached; the jobs keep running. `tunespec status` follows them, `tunespec cancel` stops them.")
        return DETACHED
    failed = next((job for job in jobs if job.failed), None)
    if failed:
        _report_failure(failed, console)
        return 1
    console.print(f"[green]done[/]: every job completed; outputs in {run_dir}")
    return 0


def _live_view(jobs: List["_Job"]) -> Group:
    watched = next((job for job in jobs if job.state == "RUNNING"), None) or \
        next((job for job in reversed(jobs) if job.log and job.log.is_file()), None)
    parts = [_table(jobs)]
    if watched:
        parts.append(_log_panel(watched, LIVE_LOG_LINES))
    return Group(*parts)


def _table(jobs: List["_Job"]) -> Table:
    table = Table("job", "id", "state", "elapsed", "exit", "reason")
    for job in jobs:
        state = job.state or "not submitted"
        style = "red" if job.failed else "green" if state == COMPLETED else ""
        table.add_row(job.name, job.job_id or "-", Text(state, style=style), job.info.get("RunTime", ""),
                      _exit_code(job.info), "" if job.info.get("Reason") in (None, "None") else job.info["Reason"])
    return table


def _log_panel(job: "_Job", lines: int) -> Text:
    tail = _tail(job.log, lines)
    return Text(f"── {job.name} {job.job_id}: {job.log}\n" + (tail or "(no output yet)") + "\n", style="dim")


def _report_failure(job: "_Job", console: Console) -> None:
    console.print(f"[red bold]{job.name}[/] (job {job.job_id}) {job.state}, exit code {_exit_code(job.info) or '?'}"
                  f"; log {job.log}")
    tail = _tail(job.log, LOG_TAIL_LINES)
    if tail:
        console.print(Text(tail))


def _exit_code(info: dict) -> str:
    """`ExitCode=1:0` is exit status 1; `0:15` is killed by signal 15."""
    code = info.get("ExitCode")
    if not code:
        return ""
    status, _, signal = code.partition(":")
    return f"signal {signal}" if status == "0" and signal not in ("", "0") else status


def _tail(log: Optional[Path], lines: int) -> str:
    if not log or not log.is_file():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# ---- state ---------------------------------------------------------------------------------------


def _current_jobs(run_dir: Path, chain: List[dict], record: dict) -> List[_Job]:
    jobs = []
    for step in chain:
        name = step["name"]
        job_id = record["jobs"].get(name, {}).get("job_id")
        info, log = None, None
        if job_id:
            log = Path(slurm_log(str(run_dir), name, job_id))
            info = _show_job(job_id)
            marker = Path(slurm_done_marker(str(run_dir), name))
            if marker.is_file() and marker.read_text().strip() == job_id:
                info = dict(info or {}, JobState=COMPLETED)
            elif info is None:
                info = {"JobState": UNKNOWN}
        jobs.append(_Job(name, job_id, info, log))
    return jobs


def _show_job(job_id: str) -> Optional[dict]:
    """`scontrol show job -o ID` as a dict; None once Slurm has forgotten the job."""
    result = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    if result.returncode:
        if "Invalid job id" in result.stderr:
            return None
        raise SlurmError(f"scontrol show job {job_id}: {result.stderr.strip()}")
    line = result.stdout.strip()
    # KEY=VALUE pairs separated by spaces; values may hold spaces, keys never do.
    keys = list(re.finditer(r"(?:^|\s)([A-Za-z][\w:/]*)=", line))
    info = {}
    for match, following in zip(keys, keys[1:] + [None]):
        end = following.start() if following else len(line)
        info[match.group(1)] = line[match.end():end]
    # A job that is being requeued reads e.g. `PENDING` with Reason=BeginTime; the state is the first word.
    info["JobState"] = info.get("JobState", UNKNOWN).split()[0]
    return info


def _load_record(run_dir: Path) -> Optional[dict]:
    path = run_dir / JOBS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _save_record(run_dir: Path, record: dict) -> None:
    path = run_dir / JOBS_FILE
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(canonical_json(record))
    temporary.replace(path)


def _prepare_run_dir(plan: dict, plan_dir: Path, run_dir: Path) -> None:
    """The run folder holds what the jobs read: the plan and the scripts, as planned."""
    for sub in SLURM_RUN_SUBFOLDERS:
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    for relative in [PLAN_FILE] + sorted(plan["backend"]["files"]):
        source = plan_dir / relative
        if not source.is_file():
            raise SlurmError(f"{source} is missing: run `tunespec plan` again to rewrite the plan folder")
        shutil.copyfile(source, run_dir / relative)


def _submit(script: Path, after: List[str]) -> str:
    command = ["sbatch", "--parsable"]
    if after:
        command.append("--dependency=afterok:" + ":".join(after))
    output = _run(command + [str(script)])
    return output.strip().split(";")[0]  # `--parsable` prints `ID` or `ID;CLUSTER`


def _run(command: List[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SlurmError(f"{' '.join(command)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def _require(program: str) -> None:
    if shutil.which(program) is None:
        raise SlurmError(f"`{program}` not found: run tunespec apply on the cluster's head node "
                         "(where Slurm's client commands are)")
