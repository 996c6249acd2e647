"""Launch, follow, inspect and stop a plan's SageMaker training jobs (boto3, the compiled request as is).

`apply` uploads the local inputs and the job's sourcedir.tar.gz to S3 under content-addressed keys
(an object already there with the same sha256 is not sent again), validates the request with
botocore's own ParamValidator and with the service model's limits, and creates the job under the
plan's deterministic name. A job of that name that already exists is followed, never launched twice.
When the training job completes, the plan's merge job (if any) runs the same way.
"""
import copy
import hashlib
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import boto3
from botocore.exceptions import ClientError
from botocore.validate import ParamValidator

from ..compiler import sagemaker_validate
from .sourcedir import build_sourcedir

BACKEND_NAME = "sagemaker"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")
POLL_SECONDS = 30
LOG_LINES_PER_POLL = 20
S3_HASH_KEY = "sha256"  # user metadata on uploaded objects: what makes a key content-addressed


class ApplyError(Exception):
    """Something to tell the user before any job is created (missing secret, invalid request)."""


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
    if source.startswith("pkg://"):
        from ..compiler.data_sources import package_file

        return package_file(source)
    return Path(source)


def upload_inputs(plan: dict, s3, console) -> None:
    from ..compiler.backend_sagemaker import sha256_file

    for upload in plan["backend"]["uploads"]:
        local = _local_path(upload["source"])
        if sha256_file(local) != upload["sha256"]:
            raise ApplyError(f"{upload['source']} changed since the plan was made: run `tunespec plan` again")
        sent = upload_if_changed(s3, upload["s3_uri"], path=local, sha256=upload["sha256"])
        console.print(f"  {'uploaded' if sent else 'unchanged'}  {upload['source']} → {upload['s3_uri']}")


def upload_sourcedir(plan: dict, s3, console) -> None:
    uri = plan["backend"]["sourcedir"]["s3_uri"]
    sent = upload_if_changed(s3, uri, data=build_sourcedir(plan))
    console.print(f"  {'uploaded' if sent else 'unchanged'}  sourcedir.tar.gz → {uri}")


# ---- the request ----------------------------------------------------------------------------------

def request_to_send(request: dict, apply_environment: Dict[str, str], environ=os.environ) -> dict:
    """The compiled request plus the secrets the plan takes from this machine's environment."""
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
    problems = [f"{'.'.join(map(str, path))} {message}" for path, message in sagemaker_validate.problems(request, operation)]
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


def _run_job(client, logs, request: dict, console, poll_seconds: float, sleep) -> int:
    _create_or_follow(client, request, console)
    job = follow_job(client, logs, request["TrainingJobName"], console, poll_seconds, sleep)
    return report_end(job, console)


# ---- the verbs ------------------------------------------------------------------------------------

def apply_sagemaker(plan: dict, plan_dir, console, session: Optional[boto3.Session] = None,
                    poll_seconds: float = POLL_SECONDS, sleep: Callable[[float], None] = time.sleep) -> int:
    """Launch (or find) the plan's training job, follow it to the end, then its merge job."""
    backend = plan["backend"]
    aws = _session(plan, session)
    client, s3, logs = aws.client("sagemaker"), aws.client("s3"), aws.client("logs")
    try:
        train = request_to_send(backend["create_training_job_request"], backend["apply_environment"])
        merge = (request_to_send(backend["merge_job_request"], backend["apply_environment"])
                 if backend.get("merge_job_request") else None)
        if describe_job(client, train["TrainingJobName"]) is None:
            console.print(f"Uploading to S3 for [bold]{backend['job_name']}[/]")
            upload_inputs(plan, s3, console)
            upload_sourcedir(plan, s3, console)
        code = _run_job(client, logs, train, console, poll_seconds, sleep)
        if code == 0 and merge is not None:
            console.print("Training done: merge job (adapter merge and sample answers)")
            code = _run_job(client, logs, merge, console, poll_seconds, sleep)
    except ApplyError as error:
        console.print(f"[red]error:[/] {error}")
        return 2
    return code


def _job_names(plan: dict) -> List[str]:
    backend = plan["backend"]
    names = [backend["create_training_job_request"]["TrainingJobName"]]
    if backend.get("merge_job_request"):
        names.append(backend["merge_job_request"]["TrainingJobName"])
    return names


def status_sagemaker(plan: dict, console, session: Optional[boto3.Session] = None, client=None) -> int:
    """One line per job of the plan. Returns 1 when none was launched yet."""
    client = client or _session(plan, session).client("sagemaker")
    found = 0
    for name in _job_names(plan):
        job = describe_job(client, name)
        if job is None:
            console.print(f"{name}: not launched")
            continue
        found += 1
        console.print(f"{name}: {describe_line(job)}")
        if job["TrainingJobStatus"] == "Completed":
            console.print(f"  model artifacts: {job.get('ModelArtifacts', {}).get('S3ModelArtifacts')}")
        elif job.get("FailureReason"):
            console.print(f"  failure reason: {job['FailureReason']}")
    return 0 if found else 1


def cancel_sagemaker(plan: dict, console, session: Optional[boto3.Session] = None, client=None) -> int:
    """Stop the plan's jobs that are still running (StopTrainingJob)."""
    client = client or _session(plan, session).client("sagemaker")
    for name in _job_names(plan):
        job = describe_job(client, name)
        if job is None or job["TrainingJobStatus"] != "InProgress":
            console.print(f"{name}: {'not launched' if job is None else job['TrainingJobStatus']}; nothing to stop")
            continue
        client.stop_training_job(TrainingJobName=name)
        console.print(f"{name}: stop requested")
    return 0
