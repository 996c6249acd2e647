"""`tunespec apply` on SageMaker: real HTTP to moto's server on 127.0.0.1, and botocore's Stubber.

moto stores uploads and training jobs, but completes every job at once and has no StopTrainingJob:
following a job through its states, failures and cancel are tested with botocore's Stubber on the
service model's own response shapes (the tests say "stubber" in their names).
"""
import datetime
import io
import json
import socket
import tarfile
import urllib.request

import boto3
import pytest
from botocore.stub import Stubber
from rich.console import Console

from tunespec.runtime import sagemaker as runtime
from tunespec.runtime.sourcedir import build_sourcedir

from .test_sagemaker_compile import make_plan

BUCKET = "tunespec-test"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def moto_server(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # The server serves moto's in-process state, which outlives one server: start each test empty.
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST"))
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                       "HF_TOKEN": "test-token-value"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    boto3.Session(region_name=REGION).client("s3").create_bucket(Bucket=BUCKET)
    yield
    server.stop()


def console() -> Console:
    return Console(file=io.StringIO(), width=200, record=True)


class CallCounter:
    """Counts API calls of one operation made through a session (a botocore event hook)."""

    def __init__(self, session: boto3.Session, event: str):
        self.calls = []
        session.events.register(f"before-call.{event}", lambda params, **_: self.calls.append(params))


def test_apply_uploads_creates_the_job_and_a_second_apply_follows_it(tmp_path, monkeypatch, moto_server):
    plan = make_plan(tmp_path, monkeypatch)
    backend = plan["backend"]
    session = boto3.Session(region_name=REGION)
    creates = CallCounter(session, "sagemaker.CreateTrainingJob")
    out = console()
    assert runtime.apply_sagemaker(plan, tmp_path, out, session=session, poll_seconds=0) == 0

    s3 = session.client("s3")
    [upload] = backend["uploads"]
    key = upload["s3_uri"].split(f"s3://{BUCKET}/", 1)[1]
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == (tmp_path / "train.jsonl").read_bytes()
    source_key = backend["sourcedir"]["s3_uri"].split(f"s3://{BUCKET}/", 1)[1]
    archive = s3.get_object(Bucket=BUCKET, Key=source_key)["Body"].read()
    assert archive == build_sourcedir(plan)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = tar.getnames()
        shipped_plan = json.load(tar.extractfile("plan.json"))
    assert {"tunespec_entry.py", "requirements.txt", "tunespec/runtime/sourcedir.py"} <= set(names)
    assert shipped_plan["backend"]["job_name"] == backend["job_name"]

    client = session.client("sagemaker")
    job = client.describe_training_job(TrainingJobName=backend["job_name"])
    sent = backend["create_training_job_request"]
    assert job["HyperParameters"] == sent["HyperParameters"]
    assert job["AlgorithmSpecification"]["TrainingImage"] == sent["AlgorithmSpecification"]["TrainingImage"]
    assert job["InputDataConfig"] == sent["InputDataConfig"]
    assert [j["TrainingJobName"] for j in client.list_training_jobs()["TrainingJobSummaries"]] == [backend["job_name"]]
    assert "model artifacts: s3://" in out.export_text()

    again = console()
    assert runtime.apply_sagemaker(plan, tmp_path, again, session=session, poll_seconds=0) == 0
    assert len(creates.calls) == 1
    assert "exists: following it" in again.export_text()
    assert len(client.list_training_jobs()["TrainingJobSummaries"]) == 1


def test_unchanged_data_is_not_uploaded_again(tmp_path, monkeypatch, moto_server):
    session = boto3.Session(region_name=REGION)
    puts = CallCounter(session, "s3.PutObject")
    first = make_plan(tmp_path, monkeypatch)
    runtime.upload_inputs(first, session.client("s3"), console())
    sent_first = len(puts.calls)
    other = make_plan(tmp_path, monkeypatch, name="tiny-sm-other")  # another job, the same file
    out = console()
    runtime.upload_inputs(other, session.client("s3"), out)
    assert sent_first == 1 and len(puts.calls) == 1
    assert "unchanged  train.jsonl" in out.export_text()


def test_merge_job_runs_after_training(tmp_path, monkeypatch, moto_server):
    plan = make_plan(tmp_path, monkeypatch, outputs={"merged_model": True})
    session = boto3.Session(region_name=REGION)
    assert runtime.apply_sagemaker(plan, tmp_path, console(), session=session, poll_seconds=0) == 0
    names = {j["TrainingJobName"] for j in session.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]}
    assert names == {plan["backend"]["job_name"], plan["backend"]["job_name"] + "-m"}


def test_missing_secret_stops_apply_before_anything_is_sent(tmp_path, monkeypatch, moto_server):
    plan = make_plan(tmp_path, monkeypatch)
    monkeypatch.delenv("HF_TOKEN")
    session = boto3.Session(region_name=REGION)
    out = console()
    assert runtime.apply_sagemaker(plan, tmp_path, out, session=session, poll_seconds=0) == 2
    assert "$HF_TOKEN" in out.export_text()
    assert session.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_secret_value_goes_only_into_the_sent_request(tmp_path, monkeypatch):
    plan = make_plan(tmp_path, monkeypatch)
    backend = plan["backend"]
    sent = runtime.request_to_send(backend["create_training_job_request"], backend["apply_environment"],
                                   environ={"HF_TOKEN": "secret-value"})
    assert sent["Environment"]["HF_TOKEN"] == "secret-value"
    assert "secret-value" not in json.dumps(plan)


def test_botocore_validation_runs_before_sending(tmp_path, monkeypatch):
    plan = make_plan(tmp_path, monkeypatch)
    client = boto3.Session(region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x").client("sagemaker")
    request = dict(plan["backend"]["create_training_job_request"], TrainingJobName="has_underscore", Bogus=1)
    with pytest.raises(runtime.ApplyError) as caught:
        runtime.validate_request(client, request)
    assert "Unknown parameter in input: \"Bogus\"" in str(caught.value)
    assert "TrainingJobName 'has_underscore' does not match the pattern" in str(caught.value)


# ---- stubber: following, failure and cancel on real response shapes -------------------------------

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def description(name: str, status: str, secondary: str, **extra) -> dict:
    """A DescribeTrainingJob response with the members the service model requires."""
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/runs/{name}/output/model/"},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 500},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        "CreationTime": NOW,
        **extra,
    }


def stubbed_client():
    client = boto3.Session(region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x").client("sagemaker")
    return client, Stubber(client)


def test_stubber_follow_shows_states_and_billable_time_until_completed():
    client, stub = stubbed_client()
    name = "tiny-sm-0000abcd"
    for response in (
        description(name, "InProgress", "Starting", SecondaryStatusTransitions=[
            {"Status": "Starting", "StartTime": NOW, "StatusMessage": "Preparing the instances for training"}]),
        description(name, "InProgress", "Training", BillableTimeInSeconds=95, SecondaryStatusTransitions=[
            {"Status": "Training", "StartTime": NOW, "StatusMessage": "Training image download completed."}]),
        description(name, "Completed", "Completed", BillableTimeInSeconds=1800),
    ):
        stub.add_response("describe_training_job", response, {"TrainingJobName": name})
    out = console()
    with stub:
        job = runtime.follow_job(client, None, name, out, poll_seconds=0, sleep=lambda _: None)
        code = runtime.report_end(job, out)
    text = out.export_text()
    assert code == 0
    assert "InProgress Starting — Preparing the instances for training" in text
    assert "(billable 95 s)" in text and "(billable 1800 s)" in text
    assert f"model artifacts: s3://{BUCKET}/runs/{name}/output/model/" in text
    stub.assert_no_pending_responses()


def test_stubber_failed_job_shows_failure_reason_and_returns_nonzero():
    client, stub = stubbed_client()
    name = "tiny-sm-0000abcd"
    reason = "AlgorithmError: train: OutOfMemoryError: CUDA out of memory"
    stub.add_response("describe_training_job", description(name, "Failed", "Failed", FailureReason=reason),
                      {"TrainingJobName": name})
    out = console()
    with stub:
        code = runtime.report_end(runtime.follow_job(client, None, name, out, poll_seconds=0), out)
    assert code == 1 and reason in out.export_text()


def test_stubber_cancel_stops_the_running_job(tmp_path, monkeypatch):
    plan = make_plan(tmp_path, monkeypatch)
    name = plan["backend"]["job_name"]
    client, stub = stubbed_client()
    stub.add_response("describe_training_job", description(name, "InProgress", "Training"), {"TrainingJobName": name})
    stub.add_response("stop_training_job", {}, {"TrainingJobName": name})
    out = console()
    with stub:
        assert runtime.cancel_sagemaker(plan, out, client=client) == 0
    stub.assert_no_pending_responses()
    assert "stop requested" in out.export_text()


def test_stubber_status_of_a_job_not_launched():
    plan = {"backend": {"create_training_job_request": {"TrainingJobName": "tiny-sm-0000abcd"}, "merge_job_request": None}}
    client, stub = stubbed_client()
    stub.add_client_error("describe_training_job", "ValidationException", "Requested resource not found.")
    out = console()
    with stub:
        assert runtime.status_sagemaker(plan, out, client=client) == 1
    assert "not launched" in out.export_text()
