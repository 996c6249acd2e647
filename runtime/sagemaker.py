"""Launch, follow, inspect and stop a spec's SageMaker training jobs (boto3, the compiled requests as is).

A spec's jobs are found by their `tunespec:spec` tag (SageMaker Search), a plan's jobs among them by
`tunespec:plan` (see schema/contract.py). `apply` refuses to launch while a job of another plan
of the same spec runs (exit code JOB_CONFLICT), unless `replace`, which stops those jobs first. It uploads the local
inputs and the job's sourcedir.tar.gz to S3 under content-addressed keys (an object already there with
the same sha256 is not sent again), validates the request with botocore's own ParamValidator and the
service model's limits, and creates the job under the plan's deterministic name: a job of the plan that
exists is followed, never launched twice. A failed or stopped job stays failed until `retry`, which
launches it again under the next attempt's name (same plan, same checkpoint prefix, so the trainer
resumes). When training completes, the plan's merge job (if any) runs the same way.
Nothing here writes local files.
"""
import copy
import hashlib
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import boto3
from botocore.exceptions import ClientError
from botocore.validate import ParamValidator

from ..schema import exit_codes, sagemaker_api
from ..schema.contract import (MAX_ATTEMPT, PACKAGE_SCHEME, PLAN_TAG, SPEC_TAG, attempt_name, attempt_requests,
                               file_sha256, parse_job_name)
from ..schema.package_files import PackageFileError, package_file
from .errors import BackendError
from .sourcedir import build_sourcedir

BACKEND_NAME = "sagemaker"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")
ENDED_BADLY = ("Failed", "Stopped")
POLL_SECONDS = 30
LOG_LINES_PER_POLL = 20
S3_HASH_KEY = "sha256"  # user metadata on uploaded objects: what makes a key content-addressed


class ApplyError(Exception):
    """Something to tell the user before any job is created (missing secret, invalid request)."""


class ConflictError(Exception):
    """A job of another plan of the same spec is running; launching would leave two jobs racing."""


class NotRetried(Exception):
    """The plan's latest job failed or was stopped, and apply was not asked to retry it."""

    def __init__(self, job: dict):
        super().__init__(job["TrainingJobName"])
        self.job = job


@contextmanager
def _aws_errors() -> Iterator[None]:
    """An AWS refusal (permissions, limits, a bad request) is a one-line backend error, not a traceback."""
    try:
        yield
    except ClientError as error:
        raise BackendError(str(error)) from None


def _session(plan: dict, session: Optional[boto3.Session]) -> boto3.Session:
    return session or boto3.Session(region_name=plan["backend"]["region"])


def split_s3(uri: str):
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def describe_job(client, name: str) -> Optional[dict]:
    try:
        return client.describe_training_job(TrainingJobName=name)
    except ClientError as error:
        # SageMaker answers an unknown name with ValidationException "Requested resource not found."
        # (moto: "Could not find training job ...").
        message = error.response["Error"].get("Message", "").lower()
        if error.response["Error"]["Code"] == "ValidationException" and ("not found" in message or "could not find" in message):
            return None
        raise


# ---- a spec's jobs --------------------------------------------------------------------------------

def _tag(job: dict, key: str) -> Optional[str]:
    return next((tag["Value"] for tag in job.get("Tags") or [] if tag["Key"] == key), None)


def spec_jobs(client, spec_name: str) -> List[dict]:
    """Every training job tagged with the spec's name, oldest first; unfinished ones described afresh
    (Search's index lags behind the jobs' states)."""
    search = {"Filters": [{"Name": f"Tags.{SPEC_TAG}", "Operator": "Equals", "Value": spec_name}]}
    jobs = []
    for page in client.get_paginator("search").paginate(Resource="TrainingJob", SearchExpression=search):
        for record in page.get("Results", []):
            job = record["TrainingJob"]
            if job["TrainingJobStatus"] not in TERMINAL:
                job = {**job, **(describe_job(client, job["TrainingJobName"]) or {})}
            jobs.append(job)
    return sorted(jobs, key=lambda job: (job["CreationTime"], job["TrainingJobName"]))


def _is_running(job: dict) -> bool:
    return job["TrainingJobStatus"] not in TERMINAL


def _plan_attempts(client, jobs: List[dict], backend: dict) -> Dict[Tuple[int, bool], dict]:
    """The plan's jobs by (attempt, is the merge job). Its first job is also looked up by name, which
    holds even before Search indexes a job created moments ago."""
    first = backend["create_training_job_request"]["TrainingJobName"]
    attempts = {}
    for job in jobs:
        parsed = parse_job_name(job["TrainingJobName"], first)
        if parsed is not None and _tag(job, PLAN_TAG) == backend["plan_hash"]:
            attempts[parsed] = job
    if (0, False) not in attempts:
        job = describe_job(client, first)
        if job is not None:
            attempts[(0, False)] = job
    return attempts


def _latest(attempts: Dict[Tuple[int, bool], dict], merge: bool, since: int = 0) -> Optional[Tuple[int, dict]]:
    found = sorted((attempt, job) for (attempt, is_merge), job in attempts.items()
                   if is_merge == merge and attempt >= since)
    return found[-1] if found else None


# ---- uploads --------------------------------------------------------------------------------------

def upload_if_changed(s3, uri: str, data: Optional[bytes] = None, path: Optional[Path] = None,
                      sha256: Optional[str] = None) -> bool:
    """Put the object unless one with the same sha256 is there. Returns whether it was sent."""
    bucket, key = split_s3(uri)
    digest = sha256 or hashlib.sha256(data).hexdigest()
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        if head.get("Metadata", {}).get(S3_HASH_KEY) == digest:
            return False
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
            raise
    extra = {"Metadata": {S3_HASH_KEY: digest}}
    if path is not None:
        s3.upload_file(str(path), bucket, key, ExtraArgs=extra)
    else:
        s3.put_object(Bucket=bucket, Key=key, Body=data, **extra)
    return True


def _local_path(source: str) -> Path:
    if source.startswith(PACKAGE_SCHEME):
        try:
            return package_file(source)
        except PackageFileError as error:
            raise ApplyError(str(error)) from None
    return Path(source)


def upload_inputs(plan: dict, s3, console) -> None:
    for upload in plan["backend"]["uploads"]:
        local = _local_path(upload["source"])
        if file_sha256(local) != upload["sha256"]:
            raise ApplyError(f"{upload['source']} changed since the plan was made: run `tunespec plan` again")
        sent = upload_if_changed(s3, upload["s3_uri"], path=local, sha256=upload["sha256"])
        console.print(f"  {'uploaded' if sent else 'unchanged'}  {upload['source']} → {upload['s3_uri']}")


def upload_sourcedir(plan: dict, s3, console) -> None:
    uri = plan["backend"]["sourcedir"]["s3_uri"]
    sent = upload_if_changed(s3, uri, data=build_sourcedir(plan))
    console.print(f"  {'uploaded' if sent else 'unchanged'}  sourcedir.tar.gz → {uri}")


# ---- the request ----------------------------------------------------------------------------------

def request_to_send(request: dict, apply_environment: Dict[str, str], environ=os.environ) -> dict:
    """The compiled request plus the secrets the spec names in backend.secrets_in_request."""
    missing = [local for local in apply_environment.values() if not environ.get(local)]
    if missing:
        raise ApplyError(f"the plan passes ${', $'.join(missing)} to the job, and it is not set here")
    sent = copy.deepcopy(request)
    if apply_environment:
        sent["Environment"] = {**sent.get("Environment", {}),
                               **{target: environ[local] for target, local in apply_environment.items()}}
    return sent


def validate_request(client, request: dict, operation: str = "CreateTrainingJob") -> None:
    """botocore's checks (types, required, unknown keys) and the model's max/pattern/enum."""
    shape = client.meta.service_model.operation_model(operation).input_shape
    report = ParamValidator().validate(request, shape)
    problems = [f"{'.'.join(map(str, path))} {message}" for path, message in sagemaker_api.problems(request, operation)]
    if report.has_errors():
        problems.insert(0, report.generate_report())
    if problems:
        raise ApplyError(f"{operation} request is not valid:\n  " + "\n  ".join(problems))


def _create_or_follow(client, request: dict, console) -> None:
    name = request["TrainingJobName"]
    if describe_job(client, name) is not None:
        console.print(f"Training job [bold]{name}[/] exists: following it (no new job)")
        return
    validate_request(client, request)
    try:
        client.create_training_job(**request)
        console.print(f"Created training job [bold]{name}[/]")
    except ClientError as error:
        # Another apply of the same plan won the race: that job is this plan's job.
        if "must be unique" not in str(error) and error.response["Error"]["Code"] != "ResourceInUse":
            raise
        console.print(f"Training job [bold]{name}[/] was just created elsewhere: following it")


def stop_job(client, name: str, console) -> None:
    try:
        client.stop_training_job(TrainingJobName=name)
    except ClientError as error:
        # It ended between the look-up and the stop: there is nothing left to stop.
        if error.response["Error"]["Code"] != "ValidationException":
            raise
        console.print(f"{name}: {error.response['Error'].get('Message', 'not running')}")
        return
    console.print(f"{name}: stop requested")


# ---- following ------------------------------------------------------------------------------------

class LogTail:
    """The newest CloudWatch log lines of a job, from every instance's stream, each line once."""

    def __init__(self, logs, job_name: str):
        self.logs, self.job_name = logs, job_name
        self.tokens: Dict[str, str] = {}

    def new_lines(self) -> List[str]:
        try:
            streams = self.logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self.job_name}/")
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                return []  # no log group before the first job of the account starts
            raise
        lines = []
        for stream in streams.get("logStreams", []):
            name = stream["logStreamName"]
            kwargs = {"logGroupName": LOG_GROUP, "logStreamName": name, "startFromHead": True}
            if name in self.tokens:
                kwargs["nextToken"] = self.tokens[name]
            events = self.logs.get_log_events(**kwargs)
            self.tokens[name] = events["nextForwardToken"]
            host = name.split("/")[-1].split("-")[:2]
            lines += [f"[{'-'.join(host)}] {event['message']}" for event in events.get("events", [])]
        return lines[-LOG_LINES_PER_POLL:]


def describe_line(job: dict) -> str:
    parts = [f"[bold]{job['TrainingJobStatus']}[/]", job.get("SecondaryStatus", "")]
    transitions = job.get("SecondaryStatusTransitions") or []
    if transitions and transitions[-1].get("StatusMessage"):
        parts.append(f"— {transitions[-1]['StatusMessage']}")
    if job.get("BillableTimeInSeconds"):
        parts.append(f"(billable {job['BillableTimeInSeconds']} s)")
    return " ".join(part for part in parts if part)


def follow_job(client, logs, name: str, console, poll_seconds: float = POLL_SECONDS,
               sleep: Callable[[float], None] = time.sleep) -> dict:
    """Print status changes and new log lines until the job ends. Returns the last description."""
    tail = LogTail(logs, name) if logs is not None else None
    last = None
    while True:
        job = client.describe_training_job(TrainingJobName=name)
        line = describe_line(job)
        if line != last:
            console.print(f"{name}: {line}")
            last = line
        for log_line in tail.new_lines() if tail else []:
            console.print(log_line, markup=False, highlight=False)
        if job["TrainingJobStatus"] in TERMINAL:
            return job
        sleep(poll_seconds)


def report_end(job: dict, console) -> int:
    """What the user needs at the end: where the model is, or why it failed. Returns the exit code."""
    status = job["TrainingJobStatus"]
    if status == "Completed":
        artifacts = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        console.print(f"[green]{job['TrainingJobName']} completed[/]; model artifacts: {artifacts}")
        return 0
    reason = job.get("FailureReason") or ("stopped on request" if status == "Stopped" else "no reason given")
    console.print(f"[red]{job['TrainingJobName']} {status.lower()}[/]: {reason}")
    return 1


# ---- apply ----------------------------------------------------------------------------------------

class _Run:
    """One apply: the clients, the console and the polling, shared by the steps."""

    def __init__(self, plan: dict, client, s3, logs, console, poll_seconds: float, sleep):
        self.plan, self.client, self.s3, self.logs, self.console = plan, client, s3, logs, console
        self.poll_seconds, self.sleep = poll_seconds, sleep
        self.uploaded = False

    def launch(self, request: dict) -> int:
        """Create the job (uploading the plan's files first) or follow the one of that name; report its end."""
        if not self.uploaded and describe_job(self.client, request["TrainingJobName"]) is None:
            self.console.print(f"Uploading to S3 for [bold]{request['TrainingJobName']}[/]")
            upload_inputs(self.plan, self.s3, self.console)
            upload_sourcedir(self.plan, self.s3, self.console)
            self.uploaded = True
        _create_or_follow(self.client, request, self.console)
        return self.follow(request["TrainingJobName"])

    def follow(self, name: str) -> int:
        job = follow_job(self.client, self.logs, name, self.console, self.poll_seconds, self.sleep)
        return report_end(job, self.console)

    def stop_and_wait(self, job: dict) -> None:
        stop_job(self.client, job["TrainingJobName"], self.console)
        follow_job(self.client, None, job["TrainingJobName"], self.console, self.poll_seconds, self.sleep)


def _conflict_message(plan: dict, others: List[dict]) -> str:
    jobs = ", ".join(f"{job['TrainingJobName']} ({job['TrainingJobStatus']})" for job in others)
    return (f"spec `{plan['spec']['name']}` has a job of another plan running: {jobs}. This plan "
            f"({plan['backend']['job_name']}) would run beside it, and the two would not share their files. "
            "Stop it and launch this plan with `tunespec apply --replace`, stop it with `tunespec cancel`, "
            "or wait for it to end.")


def _refuse_ended(job: dict, console) -> int:
    code = report_end(job, console)
    console.print("Run `tunespec apply --retry` to launch it again under a new name (same plan; training "
                  "resumes from the plan's checkpoints where it has them).")
    return code


def apply_sagemaker(plan: dict, plan_dir, console, session: Optional[boto3.Session] = None, client=None,
                    replace: bool = False, retry: bool = False, poll_seconds: float = POLL_SECONDS,
                    sleep: Callable[[float], None] = time.sleep) -> int:
    """Launch (or find) the plan's training job and follow it to the end, then its merge job.

    Exit codes (tunespec.schema.exit_codes): OK, FAILED (a job failed or was stopped, or the plan cannot be
    sent from here: a secret missing, an invalid request), JOB_CONFLICT (a job of another plan of this
    spec runs; `replace` stops it instead).
    """
    backend = plan["backend"]
    aws = _session(plan, session)
    client = client or aws.client("sagemaker")
    run = _Run(plan, client, aws.client("s3"), aws.client("logs"), console, poll_seconds, sleep)
    with _aws_errors():
        try:
            train = request_to_send(backend["create_training_job_request"], backend["apply_environment"])
            merge = (request_to_send(backend["merge_job_request"], backend["apply_environment"])
                     if backend.get("merge_job_request") else None)
            jobs = spec_jobs(client, plan["spec"]["name"])
            others = [job for job in jobs if _is_running(job) and _tag(job, PLAN_TAG) != backend["plan_hash"]]
            if others and not replace:
                raise ConflictError(_conflict_message(plan, others))
            for job in others:
                console.print(f"Replacing {job['TrainingJobName']} ({job['TrainingJobStatus']}), a job of another plan")
                run.stop_and_wait(job)
            return _apply_plan(run, _plan_attempts(client, jobs, backend), train, merge, retry)
        except ApplyError as error:
            console.print(f"[red]error:[/] {error}")
            return exit_codes.FAILED
        except ConflictError as error:
            console.print(f"[red]refused:[/] {error}")
            return exit_codes.JOB_CONFLICT
        except NotRetried as ended:
            return _refuse_ended(ended.job, console)


def _next_attempt(attempts: Dict[Tuple[int, bool], dict]) -> int:
    attempt = max((number for number, _ in attempts), default=-1) + 1
    if attempt > MAX_ATTEMPT:
        raise ApplyError(f"this plan has had {MAX_ATTEMPT} retries: change the spec (a new plan) to try again")
    return attempt


def _attempt(attempts: Dict[Tuple[int, bool], dict], latest: Optional[Tuple[int, dict]], first: int,
             retry: bool) -> int:
    """The attempt to launch or follow: `first` when there is none yet, the latest one, or the next one
    when the latest failed or was stopped and `retry` asks for it."""
    if latest is None:
        return first
    number, job = latest
    if job["TrainingJobStatus"] not in ENDED_BADLY:
        return number
    if not retry:
        raise NotRetried(job)
    return _next_attempt(attempts)


def _launch_attempt(run: _Run, latest: Optional[Tuple[int, dict]], request: dict) -> int:
    if latest is not None and latest[1]["TrainingJobName"] != request["TrainingJobName"]:
        run.console.print(f"Retrying {latest[1]['TrainingJobName']} ({latest[1]['TrainingJobStatus'].lower()}) "
                          f"as [bold]{request['TrainingJobName']}[/]")
    return run.launch(request)


def _apply_plan(run: _Run, attempts: Dict[Tuple[int, bool], dict], train: dict, merge: Optional[dict],
                retry: bool) -> int:
    """Training, then the merge job after it, each launched, followed, or retried."""
    latest = _latest(attempts, merge=False)
    trained = _attempt(attempts, latest, 0, retry)
    code = _launch_attempt(run, latest, attempt_requests(train, merge, trained)[0])
    if code != 0 or merge is None:
        return code
    run.console.print("Training done: merge job (adapter merge and sample answers)")
    latest = _latest(attempts, merge=True, since=trained)
    attempt = _attempt(attempts, latest, trained, retry)
    trained_name = attempt_name(train["TrainingJobName"], trained)
    return _launch_attempt(run, latest, attempt_requests(train, merge, attempt, trained_job_name=trained_name)[1])


# ---- status and cancel ----------------------------------------------------------------------------

def status_sagemaker(plan: dict, console, session: Optional[boto3.Session] = None, client=None) -> int:
    """One line per job of the spec (found by its tag), oldest first. Returns 1 when none was launched."""
    client = client or _session(plan, session).client("sagemaker")
    with _aws_errors():
        jobs = spec_jobs(client, plan["spec"]["name"])
    if not jobs:
        console.print(f"spec `{plan['spec']['name']}`: no job launched (this plan's first job would be "
                      f"{plan['backend']['job_name']})")
        return 1
    for job in jobs:
        whose = "this plan" if _tag(job, PLAN_TAG) == plan["backend"]["plan_hash"] else "another plan"
        console.print(f"{job['TrainingJobName']} ({whose}): {describe_line(job)}")
        if job["TrainingJobStatus"] == "Completed":
            console.print(f"  model artifacts: {job.get('ModelArtifacts', {}).get('S3ModelArtifacts')}")
        elif job.get("FailureReason"):
            console.print(f"  failure reason: {job['FailureReason']}")
    return 0


def cancel_sagemaker(plan: dict, console, session: Optional[boto3.Session] = None, client=None) -> int:
    """Stop every running job of the spec (found by its tag, so also those of earlier plans)."""
    client = client or _session(plan, session).client("sagemaker")
    with _aws_errors():
        running = [job for job in spec_jobs(client, plan["spec"]["name"]) if job["TrainingJobStatus"] == "InProgress"]
        if not running:
            console.print(f"spec `{plan['spec']['name']}`: no job running; nothing to stop")
        for job in running:
            stop_job(client, job["TrainingJobName"], console)
    return 0
