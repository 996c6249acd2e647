"""`tunespec apply`/`status`/`cancel` on SageMaker: real HTTP to moto's server on 127.0.0.1, and botocore's Stubber.

moto stores uploads, secrets and training jobs and answers Search by tag, but completes every job at
once: a test that needs a job running, failed or stopped puts it in that state in the server's own
records (`set_job_state`), as SageMaker would show it. moto has no StopTrainingJob: stopping a job
(cancel, `apply --replace`) and following a job through its states are tested with botocore's Stubber
on the service model's own response shapes (those tests say "stubber" in their names).
"""
import datetime
import io
import json
import socket
import tarfile
import tempfile
import urllib.request

import boto3
import pytest
from botocore.stub import Stubber
from rich.console import Console

from tunespec.schema import exit_codes
from tunespec.schema.contract import VERSION
from tunespec.runtime import sagemaker as runtime
from tunespec.runtime.errors import BackendError
from tunespec.runtime.sourcedir import build_sourcedir, resolve_secrets

from test_sagemaker_compile import ENV_SECRET, make_plan

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


def set_job_state(name: str, status: str, failure_reason: str = "") -> None:
    """Put a job of moto's server into another state (moto completes every job at once)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemaker.models import sagemaker_backends

    job = sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].training_jobs[name]
    job.training_job_status = status
    job.secondary_status = "Training" if status == "InProgress" else status
    if failure_reason:
        job.failure_reason = failure_reason


def console() -> Console:
    return Console(file=io.StringIO(), width=300, record=True)


class CallCounter:
    """The parameters of every call of one operation made through a session (a botocore event hook)."""

    def __init__(self, session: boto3.Session, event: str):
        self.calls = []
        session.events.register(f"before-parameter-build.{event}", lambda params, **_: self.calls.append(params))


def job_names(session: boto3.Session) -> set:
    return {job["TrainingJobName"] for job in session.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]}


def apply(plan: dict, session: boto3.Session, **options) -> tuple:
    out = console()
    code = runtime.apply_sagemaker(plan, None, out, session=session, poll_seconds=0, **options)
    return code, out.export_text()


def test_apply_uploads_creates_the_job_and_a_second_apply_follows_it(tmp_path, monkeypatch, moto_server):
    plan = make_plan(tmp_path, monkeypatch)
    backend = plan["backend"]
    session = boto3.Session(region_name=REGION)
    creates = CallCounter(session, "sagemaker.CreateTrainingJob")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    code, text = apply(plan, session)
    assert code == 0 and "model artifacts: s3://" in text
    assert list(temporary.iterdir()) == []  # apply writes no local files, temporary ones included

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
    assert {"tunespec_entry.py", "requirements.txt", f"tunespec-{VERSION}-py3-none-any.whl"} <= set(names)
    assert shipped_plan["backend"]["job_name"] == backend["job_name"]

    client = session.client("sagemaker")
    job = client.describe_training_job(TrainingJobName=backend["job_name"])
    sent = backend["create_training_job_request"]
    assert job["HyperParameters"] == sent["HyperParameters"]
    assert job["AlgorithmSpecification"]["TrainingImage"] == sent["AlgorithmSpecification"]["TrainingImage"]
    assert job["InputDataConfig"] == sent["InputDataConfig"]
    assert job_names(session) == {backend["job_name"]}
    # The hub token travels as its Secrets Manager ARN: no value in what DescribeTrainingJob would show.
    [created] = creates.calls
    assert created["Environment"] == {"TUNESPEC_SECRET_HF_TOKEN_ARN": plan["secrets"]["hf_token"]["secrets_manager_arn"]}
    assert "test-token-value" not in json.dumps(created)

    code, text = apply(plan, session)
    assert code == 0 and len(creates.calls) == 1
    assert "exists: following it" in text
    assert job_names(session) == {backend["job_name"]}


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
    assert apply(plan, session)[0] == 0
    assert job_names(session) == {plan["backend"]["job_name"], plan["backend"]["job_name"] + "-m"}


def test_merge_job_is_sent_for_the_training_jobs_warm_pool_and_model_cache(tmp_path, monkeypatch, moto_server):
    plan = make_plan(tmp_path, monkeypatch, outputs={"merged_model": True}, backend={"keep_alive_seconds": 900})
    session = boto3.Session(region_name=REGION)
    creates = CallCounter(session, "sagemaker.CreateTrainingJob")
    assert apply(plan, session)[0] == 0
    client = session.client("sagemaker")
    train, merge = (client.describe_training_job(TrainingJobName=plan["backend"]["job_name"] + suffix)
                    for suffix in ("", "-m"))
    # Same ResourceConfig, warm pool kept: SageMaker runs the merge job on the training job's warm pool,
    # whose persistent cache holds the Hugging Face cache the training job downloaded the model into.
    assert train["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 900
    assert merge["ResourceConfig"] == train["ResourceConfig"]
    # moto's DescribeTrainingJob leaves Environment out: the requests as sent.
    assert [sent["TrainingJobName"] for sent in creates.calls] == [train["TrainingJobName"], merge["TrainingJobName"]]
    assert [sent["Environment"]["HF_HOME"] for sent in creates.calls] == [
        "/opt/ml/sagemaker/warmpoolcache/huggingface"] * 2


def test_missing_secret_stops_apply_before_anything_is_sent(tmp_path, monkeypatch, moto_server):
    plan = make_plan(tmp_path, monkeypatch, **ENV_SECRET)
    monkeypatch.delenv("HF_TOKEN")
    session = boto3.Session(region_name=REGION)
    code, text = apply(plan, session)
    assert code == exit_codes.FAILED and "$HF_TOKEN" in text
    assert job_names(session) == set()


def test_a_secret_named_by_the_spec_goes_only_into_the_sent_request(tmp_path, monkeypatch):
    plan = make_plan(tmp_path, monkeypatch, **ENV_SECRET)
    backend = plan["backend"]
    sent = runtime.request_to_send(backend["create_training_job_request"], backend["apply_environment"],
                                   environ={"HF_TOKEN": "secret-value"})
    assert sent["Environment"]["HF_TOKEN"] == "secret-value"
    assert "secret-value" not in json.dumps(plan)


def test_the_container_reads_a_secret_in_the_secrets_own_region(moto_server):
    # The job runs in us-east-1 (AWS_DEFAULT_REGION); the token is kept in us-west-2.
    arn = boto3.client("secretsmanager", region_name="us-west-2").create_secret(
        Name="hf-token", SecretString="hf-token-value")["ARN"]
    environ = {"TUNESPEC_SECRET_HF_TOKEN_ARN": arn}
    resolve_secrets(environ)
    assert environ["HF_TOKEN"] == "hf-token-value"


def test_botocore_validation_runs_before_sending(tmp_path, monkeypatch):
    plan = make_plan(tmp_path, monkeypatch)
    client = boto3.Session(region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x").client("sagemaker")
    request = dict(plan["backend"]["create_training_job_request"], TrainingJobName="has_underscore", Bogus=1)
    with pytest.raises(runtime.ApplyError) as caught:
        runtime.validate_request(client, request)
    assert "Unknown parameter in input: \"Bogus\"" in str(caught.value)
    assert "TrainingJobName 'has_underscore' does not match the pattern" in str(caught.value)


# ---- one spec, several plans: the spec's tag, conflicts, retries -----------------------------------

def test_a_changed_spec_is_refused_while_the_earlier_plan_job_runs(tmp_path, monkeypatch, moto_server):
    session = boto3.Session(region_name=REGION)
    first = make_plan(tmp_path, monkeypatch)
    assert apply(first, session)[0] == 0
    running = first["backend"]["job_name"]
    set_job_state(running, "InProgress")
    edited = make_plan(tmp_path, monkeypatch, training={"learning_rate": 1e-4})
    assert edited["backend"]["job_name"] != running

    code, text = apply(edited, session)
    assert code == exit_codes.JOB_CONFLICT
    assert f"{running} (InProgress)" in text and "tunespec apply --replace" in text and "tunespec cancel" in text
    assert job_names(session) == {running}

    out = console()
    assert runtime.status_sagemaker(edited, out, session=session) == 0
    assert f"{running} (another plan): InProgress" in out.export_text()

    # The running job's own plan is not refused: apply follows that job until it ends.
    code, text = apply(first, session, sleep=lambda _: set_job_state(running, "Completed"))
    assert code == 0 and f"{running}: InProgress" in text and f"{running} completed" in text


def test_cli_apply_refuses_an_edited_spec_and_status_names_the_running_job(tmp_path, monkeypatch, capsys,
                                                                              moto_server):
    from tunespec.cli.main import main

    first = make_plan(tmp_path, monkeypatch)
    assert main(["apply", "spec.yaml"]) == 0
    running = first["backend"]["job_name"]
    set_job_state(running, "InProgress")
    make_plan(tmp_path, monkeypatch, training={"learning_rate": 1e-4})  # rewrites spec.yaml
    capsys.readouterr()
    assert main(["apply", "spec.yaml"]) == exit_codes.JOB_CONFLICT
    assert "--replace" in capsys.readouterr().out
    assert main(["status", "spec.yaml"]) == 0
    assert f"{running} (another plan): InProgress" in capsys.readouterr().out
    assert main(["apply", "--retry", "spec.yaml"]) == exit_codes.JOB_CONFLICT  # a retry is no way around the running job


def test_status_and_cancel_find_the_spec_jobs_by_its_tag(tmp_path, monkeypatch, moto_server):
    session = boto3.Session(region_name=REGION)
    first = make_plan(tmp_path, monkeypatch)
    out = console()
    assert runtime.status_sagemaker(first, out, session=session) == 1
    assert f"no job launched (this plan's first job would be {first['backend']['job_name']})" in out.export_text()

    assert apply(first, session)[0] == 0
    other_spec = make_plan(tmp_path, monkeypatch, name="tiny-sm-other")  # a name that starts the same
    assert apply(other_spec, session)[0] == 0
    edited = make_plan(tmp_path, monkeypatch, training={"learning_rate": 1e-4})
    out = console()
    assert runtime.status_sagemaker(edited, out, session=session) == 0
    lines = [line for line in out.export_text().splitlines() if "plan)" in line]
    assert lines == [f"{first['backend']['job_name']} (another plan): Completed Completed — Preparing the instances "
                     "for training"]
    out = console()
    assert runtime.cancel_sagemaker(edited, out, session=session) == 0
    assert "spec `tiny-sm`: no job running; nothing to stop" in out.export_text()


def test_a_failed_job_is_retried_only_on_request_under_a_new_name(tmp_path, monkeypatch, moto_server):
    session = boto3.Session(region_name=REGION)
    creates = CallCounter(session, "sagemaker.CreateTrainingJob")
    plan = make_plan(tmp_path, monkeypatch, backend={"checkpoint_s3": f"s3://{BUCKET}/checkpoints"})
    name = plan["backend"]["job_name"]
    assert apply(plan, session)[0] == 0
    set_job_state(name, "Failed", "AlgorithmError: CUDA out of memory")

    code, text = apply(plan, session)
    assert code == 1 and "AlgorithmError: CUDA out of memory" in text and "tunespec apply --retry" in text
    assert job_names(session) == {name}

    code, text = apply(plan, session, retry=True)
    assert code == 0 and f"Retrying {name} (failed) as {name}-r1" in text
    assert job_names(session) == {name, f"{name}-r1"}
    first, retried = creates.calls
    # The same job under the next name, checkpointing to the plan's own prefix: the trainer resumes there.
    assert retried["CheckpointConfig"] == first["CheckpointConfig"] == {"S3Uri": f"s3://{BUCKET}/checkpoints/{name}"}
    assert json.loads(retried["HyperParameters"].pop("sagemaker_job_name")) == f"{name}-r1"
    first["HyperParameters"].pop("sagemaker_job_name")
    assert {**retried, "TrainingJobName": name} == first

    code, text = apply(plan, session, retry=True)  # the retry completed: nothing more to launch
    assert code == 0 and len(creates.calls) == 2 and f"{name}-r1 completed" in text


def test_a_failed_merge_is_retried_from_the_completed_training(tmp_path, monkeypatch, moto_server):
    session = boto3.Session(region_name=REGION)
    creates = CallCounter(session, "sagemaker.CreateTrainingJob")
    plan = make_plan(tmp_path, monkeypatch, outputs={"merged_model": True})
    name = plan["backend"]["job_name"]
    assert apply(plan, session)[0] == 0
    set_job_state(f"{name}-m", "Stopped")

    code, text = apply(plan, session, retry=True)
    assert code == 0 and f"Retrying {name}-m (stopped) as {name}-r1-m" in text
    assert [call["TrainingJobName"] for call in creates.calls] == [name, f"{name}-m", f"{name}-r1-m"]
    [run_channel] = [channel for channel in creates.calls[-1]["InputDataConfig"] if channel["ChannelName"] == "run"]
    assert run_channel["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/runs/{name}/output/model/"


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


def search_result(*jobs: dict) -> dict:
    """A Search response: the spec's jobs as TrainingJob records."""
    return {"Results": [{"TrainingJob": job} for job in jobs]}


def spec_search(spec_name: str) -> dict:
    return {"Resource": "TrainingJob", "SearchExpression": {"Filters": [
        {"Name": "Tags.tunespec:spec", "Operator": "Equals", "Value": spec_name}]}}


def earlier_plan_job(name: str, status: str, secondary: str) -> dict:
    """A Search record of a job of the spec launched by another plan (Search returns tags, Describe does not)."""
    return description(name, status, secondary, Tags=[{"Key": "tunespec:spec", "Value": "tiny-sm"},
                                                      {"Key": "tunespec:plan", "Value": "0" * 64}])


def test_stubber_cancel_after_a_spec_edit_stops_the_earlier_plan_job(tmp_path, monkeypatch):
    make_plan(tmp_path, monkeypatch)
    edited = make_plan(tmp_path, monkeypatch, training={"learning_rate": 1e-4})
    running = "tiny-sm-0000abcd"
    client, stub = stubbed_client()
    stub.add_response("search", search_result(earlier_plan_job(running, "InProgress", "Training")),
                      spec_search("tiny-sm"))
    stub.add_response("describe_training_job", description(running, "InProgress", "Training"),
                      {"TrainingJobName": running})
    stub.add_response("stop_training_job", {}, {"TrainingJobName": running})
    out = console()
    with stub:
        assert runtime.cancel_sagemaker(edited, out, client=client) == 0
    stub.assert_no_pending_responses()
    assert f"{running}: stop requested" in out.export_text()


def test_stubber_replace_stops_the_earlier_plan_job_before_launching(tmp_path, monkeypatch, moto_server):
    plan = make_plan(tmp_path, monkeypatch)
    name, running = plan["backend"]["job_name"], "tiny-sm-0000abcd"
    client, stub = stubbed_client()
    stub.add_response("search", search_result(earlier_plan_job(running, "InProgress", "Training")),
                      spec_search("tiny-sm"))
    stub.add_response("describe_training_job", description(running, "InProgress", "Training"),
                      {"TrainingJobName": running})
    stub.add_response("stop_training_job", {}, {"TrainingJobName": running})
    for status, secondary in (("Stopping", "Stopping"), ("Stopped", "Stopped")):
        stub.add_response("describe_training_job", description(running, status, secondary),
                          {"TrainingJobName": running})
    for _ in range(3):  # the plan's own job: looked up by name, before uploading, before creating
        stub.add_client_error("describe_training_job", "ValidationException", "Requested resource not found.",
                              expected_params={"TrainingJobName": name})
    stub.add_response("create_training_job", {"TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}"},
                      plan["backend"]["create_training_job_request"])
    stub.add_response("describe_training_job", description(name, "Completed", "Completed"), {"TrainingJobName": name})
    out = console()
    with stub:
        code = runtime.apply_sagemaker(plan, None, out, session=boto3.Session(region_name=REGION), client=client,
                                       replace=True, poll_seconds=0)
    stub.assert_no_pending_responses()
    text = out.export_text()
    assert code == 0
    assert text.index(f"{running}: stop requested") < text.index(f"{running}: Stopped") < text.index(f"Created training job {name}")


def test_stubber_a_refused_search_is_a_one_line_backend_error(tmp_path, monkeypatch):
    # moto does not enforce IAM; the Stubber gives SageMaker's own refusal of a role without sagemaker:Search.
    plan = make_plan(tmp_path, monkeypatch)
    client, stub = stubbed_client()
    stub.add_client_error("search", "AccessDeniedException", "User is not authorized to perform: sagemaker:Search")
    with stub, pytest.raises(BackendError) as caught:
        runtime.status_sagemaker(plan, console(), client=client)
    assert "not authorized to perform: sagemaker:Search" in str(caught.value)
