"""`backend: sagemaker` compiles to the exact CreateTrainingJob request, checked without AWS.

The golden requests of the seed 000 and 001 specs are the files of their golden plan folders
(tests/golden/plans/<spec>/sagemaker/); refresh them with `pytest tests/test_plan_golden.py --update-golden`.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunespec.compiler import backend_sagemaker, sagemaker_image
from tunespec.compiler.errors import SpecError
from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec
from tunespec.schema import contract, sagemaker_api

from test_plan_golden import GOLDEN, GOLDEN_HOST

SEED_SPECS = ["mixtral-8x7b-viggo-qlora-fsdp", "mixtral-8x7b-sst2-smp-expert-parallel"]
JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")

BASE_SPEC = {
    "apiVersion": "tunespec/v1",
    "name": "tiny-sm",
    "model": {"source": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    "method": {"type": "lora"},
    "data": {"train": {"path": "train.jsonl"}, "format": {"type": "text", "column": "text"}, "max_seq_length": 128},
    "training": {"max_steps": 10},
    "backend": {
        "type": "sagemaker",
        "instance_type": "ml.g5.2xlarge",
        "role": "arn:aws:iam::123456789012:role/SageMakerRole",
        "region": "us-east-1",
        "output_s3": "s3://tunespec-test/runs",
        "framework_version": "2.5.1",
        "py_version": "py311",
    },
    # In another region than the job: the container reads it in the secret's own region.
    "secrets": {"hf_token": {"secrets_manager_arn": "arn:aws:secretsmanager:us-west-2:123456789012:secret:hf-AbCdEf"}},
}
# The token from the environment of the machine that runs apply, sent in the request by name.
ENV_SECRET = {"secrets": {"hf_token": {"env": "HF_TOKEN", "secrets_manager_arn": None}},
              "backend": {"secrets_in_request": ["hf_token"]}}


def merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def make_plan(folder: Path, monkeypatch, rows: int = 8, **changes) -> dict:
    """Plan a small SageMaker spec with a local train file, from inside `folder` (plans use relative paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(folder)
    if not (folder / "train.jsonl").exists():
        (folder / "train.jsonl").write_text("".join(json.dumps({"text": f"row {i} of the test data"}) + "\n"
                                                    for i in range(rows)))
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(merged(BASE_SPEC, changes), sort_keys=False))
    return build_plan(load_spec(Path("spec.yaml")))


def compile_error(tmp_path, monkeypatch, **changes) -> SpecError:
    with pytest.raises(SpecError) as caught:
        make_plan(tmp_path, monkeypatch, **changes)
    return caught.value


# ---- golden requests of the seed specs ------------------------------------------------------------

@pytest.mark.parametrize("stem", SEED_SPECS)
def test_seed_spec_requests_are_the_golden_plans_files(stem, repo_cwd):
    """What apply sends (the plan's backend section) is what a reviewer reads in the plan folder."""
    backend = build_plan(load_spec(Path(f"specs/{stem}.yaml")), host=GOLDEN_HOST)["backend"]
    folder = GOLDEN / stem / "sagemaker"
    merge = folder / "merge_training_job.json"
    assert backend["create_training_job_request"] == json.loads((folder / "create_training_job.json").read_text())
    assert backend["merge_job_request"] == (json.loads(merge.read_text()) if merge.exists() else None)
    assert {"estimator": backend["estimator_args"], "fit": backend["fit_args"]} == \
        json.loads((folder / "estimator_args.json").read_text())


def test_seed_000_is_torchrun_on_one_p4d_with_warm_pool_and_merge_job(repo_cwd):
    backend = build_plan(load_spec(Path("specs/mixtral-8x7b-viggo-qlora-fsdp.yaml")))["backend"]
    request = backend["create_training_job_request"]
    assert request["ResourceConfig"] == {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 1,
                                         "VolumeSizeInGB": 500, "KeepAlivePeriodInSeconds": 1800}
    assert request["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
    assert request["OutputDataConfig"]["CompressionType"] == "NONE"
    assert "pytorch-training:" in request["AlgorithmSpecification"]["TrainingImage"]
    merge = backend["merge_job_request"]
    assert json.loads(merge["HyperParameters"]["tunespec_task"]) == "merge"
    assert merge["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"].endswith(
        f"/{request['TrainingJobName']}/output/model/")
    # The hub token is read in the container from Secrets Manager: the request holds only its ARN.
    assert backend["apply_environment"] == {}
    # The seed's warm-pool model cache: the Hugging Face cache in the pool's persistent cache, and a merge job
    # with the training job's ResourceConfig, so it runs on that pool and finds the model there.
    assert request["Environment"] == {
        "HF_HOME": "/opt/ml/sagemaker/warmpoolcache/huggingface",
        "TUNESPEC_SECRET_HF_TOKEN_ARN": "arn:aws:secretsmanager:us-east-1:111122223333:secret:hf-token-AbCdEf"}
    assert merge["Environment"] == request["Environment"]
    assert merge["ResourceConfig"] == request["ResourceConfig"]


def test_seed_001_is_smp_expert_parallel_on_the_smp_image(repo_cwd):
    backend = build_plan(load_spec(Path("specs/mixtral-8x7b-sst2-smp-expert-parallel.yaml")))["backend"]
    request = backend["create_training_job_request"]
    hps = request["HyperParameters"]
    assert json.loads(hps["mp_parameters"]) == {"activation_loading_horizon": 4, "expert_parallel_degree": 2,
                                                "hybrid_shard_degree": 8, "sm_activation_offloading": True}
    assert hps["sagemaker_torch_distributed_enabled"] == "true"
    assert hps["sagemaker_distributed_dataparallel_enabled"] == "false"
    assert "/smdistributed-modelparallel:" in request["AlgorithmSpecification"]["TrainingImage"]
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["Environment"] == {
        "TUNESPEC_SECRET_HF_TOKEN_ARN": "arn:aws:secretsmanager:us-west-2:111122223333:secret:hf-token-AbCdEf"}


# ---- job names, hyperparameters, files ------------------------------------------------------------

def test_job_name_is_valid_deterministic_and_changes_with_the_data(tmp_path, monkeypatch):
    first = make_plan(tmp_path, monkeypatch)["backend"]["job_name"]
    assert first == make_plan(tmp_path, monkeypatch)["backend"]["job_name"]
    assert JOB_NAME.fullmatch(first) and len(first) <= 63 and first.startswith("tiny-sm-")
    (tmp_path / "train.jsonl").write_text('{"text": "other data"}\n')
    assert make_plan(tmp_path, monkeypatch)["backend"]["job_name"] != first


def test_the_same_spec_planned_from_another_folder_names_the_same_job(tmp_path, monkeypatch):
    first = make_plan(tmp_path, monkeypatch)
    backend = first["backend"]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    plan = build_plan(load_spec(Path("../spec.yaml")))
    assert plan["data"]["train"]["path"] != first["data"]["train"]["path"]  # the local path follows the folder...
    assert plan["backend"]["job_name"] == backend["job_name"]  # ...the job it names does not
    assert plan["backend"]["create_training_job_request"] == backend["create_training_job_request"]


def test_jobs_carry_the_spec_and_plan_tags_and_user_tags_cannot_take_them(tmp_path, monkeypatch):
    backend = make_plan(tmp_path, monkeypatch, backend={"tags": {"team": "nlp"}})["backend"]
    tags = {tag["Key"]: tag["Value"] for tag in backend["create_training_job_request"]["Tags"]}
    assert tags["tunespec:spec"] == "tiny-sm" and tags["tunespec:plan"] == backend["plan_hash"]
    assert tags["team"] == "nlp" and backend["job_name"] == f"tiny-sm-{backend['plan_hash'][:8]}"
    error = compile_error(tmp_path, monkeypatch, backend={"tags": {"tunespec:spec": "other"}})
    assert error.path == ("backend", "tags", "tunespec:spec") and "reserved" in error.message


def test_longest_spec_name_still_gives_valid_job_names(tmp_path, monkeypatch):
    backend = make_plan(tmp_path, monkeypatch, name="n" * 48, outputs={"merged_model": True})["backend"]
    last_retry = contract.attempt_requests(backend["create_training_job_request"],
                                           backend["merge_job_request"], contract.MAX_ATTEMPT)
    for request in (backend["create_training_job_request"], backend["merge_job_request"], *last_retry):
        assert JOB_NAME.fullmatch(request["TrainingJobName"]) and len(request["TrainingJobName"]) <= 63
        assert sagemaker_api.problems(request) == []


def test_a_retry_is_the_same_job_under_the_next_name_resuming_from_the_plan_checkpoints(tmp_path, monkeypatch):
    backend = make_plan(tmp_path, monkeypatch, outputs={"merged_model": True},
                        backend={"checkpoint_s3": "s3://tunespec-test/checkpoints"})["backend"]
    train, merge = backend["create_training_job_request"], backend["merge_job_request"]
    retried, retried_merge = contract.attempt_requests(train, merge, 2)
    name = backend["job_name"]
    assert retried["TrainingJobName"] == f"{name}-r2" and retried_merge["TrainingJobName"] == f"{name}-r2-m"
    assert json.loads(retried["HyperParameters"]["sagemaker_job_name"]) == f"{name}-r2"
    assert retried["CheckpointConfig"] == train["CheckpointConfig"]
    assert {key: value for key, value in retried.items() if key not in ("TrainingJobName", "HyperParameters")} == \
        {key: value for key, value in train.items() if key not in ("TrainingJobName", "HyperParameters")}
    run_channel = retried_merge["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    assert run_channel == f"s3://tunespec-test/runs/{name}-r2/output/model/"
    # Only the merge failed: its retry merges what the first training job left.
    _, merge_only = contract.attempt_requests(train, merge, 1, trained_job_name=name)
    assert merge_only["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == \
        f"s3://tunespec-test/runs/{name}/output/model/"
    assert contract.parse_job_name(f"{name}-r2-m", name) == (2, True)
    assert contract.parse_job_name(f"{name}-other", name) is None


def test_hyperparameters_are_json_quoted_and_point_at_the_uploaded_sourcedir(tmp_path, monkeypatch):
    backend = make_plan(tmp_path, monkeypatch)["backend"]
    hps = backend["create_training_job_request"]["HyperParameters"]
    assert {key: json.loads(value) for key, value in hps.items()} == {
        "tunespec_plan": "plan.json", "tunespec_task": "train", "sagemaker_program": "tunespec_entry.py",
        "sagemaker_submit_directory": backend["sourcedir"]["s3_uri"], "sagemaker_container_log_level": 20,
        "sagemaker_job_name": backend["job_name"], "sagemaker_region": "us-east-1"}
    assert backend["sourcedir"]["s3_uri"] == f"s3://tunespec-test/runs/{backend['job_name']}/source/sourcedir.tar.gz"


def test_local_data_becomes_a_content_addressed_upload_and_channel(tmp_path, monkeypatch):
    backend = make_plan(tmp_path, monkeypatch)["backend"]
    [upload] = backend["uploads"]
    assert upload["source"] == "train.jsonl" and upload["channel"] == "train"
    assert upload["s3_uri"] == f"s3://tunespec-test/runs/tunespec-inputs/sha256/{upload['sha256']}/train.jsonl"
    [channel] = backend["create_training_job_request"]["InputDataConfig"]
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == upload["s3_uri"]
    assert backend["channels"][0]["container_path"] == "/opt/ml/input/data/train/train.jsonl"


def test_plan_files_hold_the_request_byte_for_byte(tmp_path, monkeypatch):
    backend = make_plan(tmp_path, monkeypatch)["backend"]
    files = backend["files"]
    assert json.loads(files["sagemaker/create_training_job.json"]) == backend["create_training_job_request"]
    assert json.loads(files["sagemaker/estimator_args.json"])["estimator"] == backend["estimator_args"]
    assert "transformers==5.17.0\n" in files["sagemaker/requirements.txt"]
    assert "torch==2.5.1\n" in files["sagemaker/requirements.txt"]


def test_spot_sets_max_wait_and_checkpoints(tmp_path, monkeypatch):
    backend = make_plan(tmp_path, monkeypatch, backend={"spot": {"enabled": True, "max_wait_seconds": 90000},
                                                        "max_run_seconds": 3600})["backend"]
    request = backend["create_training_job_request"]
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 90000}
    assert request["CheckpointConfig"]["S3Uri"] == f"s3://tunespec-test/runs/{backend['job_name']}/checkpoints"
    assert backend["container"]["run_dir"] == "/opt/ml/checkpoints"  # restored from S3 on resume


def test_each_plan_checkpoints_under_its_own_prefix(tmp_path, monkeypatch):
    given = {"checkpoint_s3": "s3://tunespec-test/checkpoints/"}
    first = make_plan(tmp_path, monkeypatch, backend=given)["backend"]
    edited = make_plan(tmp_path, monkeypatch, backend=given, training={"learning_rate": 1e-4})["backend"]
    for backend in (first, edited):
        uri = backend["create_training_job_request"]["CheckpointConfig"]["S3Uri"]
        assert uri == f"s3://tunespec-test/checkpoints/{backend['job_name']}"
        assert backend["container"]["run_dir"] == "/opt/ml/checkpoints"  # the local side of that prefix
    assert first["job_name"] != edited["job_name"]


# ---- refusals -------------------------------------------------------------------------------------

def test_literal_token_in_environment_is_refused_with_the_reason(tmp_path, monkeypatch):
    # The spec loader refuses this pattern too; the backend refuses it for plans compiled from data.
    plan = make_plan(tmp_path, monkeypatch)
    with pytest.raises(SpecError) as caught:
        backend_sagemaker.compile_sagemaker(plan, {**_defaults(), "environment": {"HUB": "hf_" + "a" * 34}})
    assert caught.value.path == ("backend", "environment", "HUB")
    assert "DescribeTrainingJob" in caught.value.hint and "secrets_manager_arn" in caught.value.hint


def test_a_secret_from_this_machine_is_refused_unless_the_spec_names_it(tmp_path, monkeypatch):
    error = compile_error(tmp_path, monkeypatch, secrets=ENV_SECRET["secrets"])
    assert error.path == ("secrets", "hf_token") and error.line is not None
    assert "DescribeTrainingJob" in error.message and "$HF_TOKEN" in error.message
    assert "secrets_manager_arn" in error.hint and "secrets_in_request: [hf_token]" in error.hint

    plan = make_plan(tmp_path, monkeypatch, **ENV_SECRET)
    assert plan["backend"]["apply_environment"] == {"HF_TOKEN": "HF_TOKEN"}
    assert "Environment" not in plan["backend"]["create_training_job_request"]  # the value is added by apply
    assert "sagemaker-secret-in-request" in {warning["code"] for warning in plan["warnings"]}


def test_naming_a_secrets_manager_secret_for_the_request_is_refused(tmp_path, monkeypatch):
    error = compile_error(tmp_path, monkeypatch, backend={"secrets_in_request": ["hf_token"]})
    assert error.path == ("backend", "secrets_in_request", 0) and "not a secret given by `env:`" in error.message


def test_secrets_manager_secrets_travel_as_their_arn(tmp_path, monkeypatch):
    backend = make_plan(tmp_path, monkeypatch)["backend"]
    assert backend["apply_environment"] == {}
    assert backend["create_training_job_request"]["Environment"] == {
        "TUNESPEC_SECRET_HF_TOKEN_ARN": BASE_SPEC["secrets"]["hf_token"]["secrets_manager_arn"]}


def _defaults() -> dict:
    from tunespec.schema.backend import SageMakerBackend

    return SageMakerBackend(**BASE_SPEC["backend"]).model_dump()


def test_framework_older_than_transformers_5_needs_is_refused(tmp_path, monkeypatch):
    error = compile_error(tmp_path, monkeypatch, backend={"framework_version": "2.2.0", "py_version": "py310"})
    assert error.path == ("backend", "framework_version") and "2.5" in error.message


def test_smp_needs_an_smp_capable_framework_version(tmp_path, monkeypatch):
    changes = {"method": {"type": "full"}, "distribution": {"strategy": "smp"},
               "backend": {"instance_type": "ml.p4d.24xlarge", "framework_version": "2.6.0", "py_version": "py312"}}
    error = compile_error(tmp_path, monkeypatch, **changes)
    assert error.path == ("backend", "framework_version") and "2.5.1" in error.hint


def test_wrong_python_for_the_image_is_refused(tmp_path, monkeypatch):
    error = compile_error(tmp_path, monkeypatch, backend={"py_version": "py310"})
    assert error.path == ("backend", "py_version") and "py311" in error.hint


def test_warm_pool_cache_only_with_a_warm_pool_and_the_specs_own_hf_home_wins(tmp_path, monkeypatch):
    assert "HF_HOME" not in make_plan(tmp_path, monkeypatch)["backend"]["create_training_job_request"].get(
        "Environment", {})
    kept = make_plan(tmp_path, monkeypatch, backend={"keep_alive_seconds": 600,
                                                     "environment": {"HF_HOME": "/opt/ml/input/hf"}})
    assert kept["backend"]["create_training_job_request"]["Environment"]["HF_HOME"] == "/opt/ml/input/hf"


def test_a_merge_job_that_cannot_reuse_the_warm_pool_is_said(tmp_path, monkeypatch):
    plan = make_plan(tmp_path, monkeypatch, distribution={"strategy": "ddp"}, outputs={"merged_model": True},
                     backend={"instance_count": 2, "keep_alive_seconds": 600})
    [warning] = [w for w in plan["warnings"] if w["code"] == "sagemaker-warm-pool-not-reused"]
    assert "not the training job's 2" in warning["message"]


def test_spot_with_warm_pool_is_refused(tmp_path, monkeypatch):
    error = compile_error(tmp_path, monkeypatch, backend={"spot": {"enabled": True}, "keep_alive_seconds": 600})
    assert error.path == ("backend", "keep_alive_seconds")


def test_one_process_strategy_on_two_instances_is_refused(tmp_path, monkeypatch):
    error = compile_error(tmp_path, monkeypatch, backend={"instance_count": 2})
    assert error.path == ("backend", "instance_count")


def test_api_limits_are_enforced_at_plan_time(tmp_path, monkeypatch):
    plan = make_plan(tmp_path, monkeypatch)
    too_long = {**_defaults(), "keep_alive_seconds": 30000}  # past the schema: the API model still refuses it
    with pytest.raises(SpecError) as caught:
        backend_sagemaker.compile_sagemaker(plan, too_long)
    assert caught.value.path == ("backend", "keep_alive_seconds") and "21600" in caught.value.message
    unknown = {**_defaults(), "instance_type": "ml.p9.mega"}
    with pytest.raises(SpecError) as caught:
        backend_sagemaker.compile_sagemaker(plan, unknown)
    assert caught.value.path == ("backend", "instance_type")
    # Every limit a request breaks is reported, each at its own spec field.
    two_limits = {**too_long, "tags": {"team": "x" * 300}}
    with pytest.raises(SpecError) as caught:
        backend_sagemaker.compile_sagemaker(plan, two_limits)
    assert [error.path for error in (caught.value, *caught.value.others)] == \
        [("backend", "keep_alive_seconds"), ("backend", "tags")]


def test_validator_reports_pattern_length_enum_and_unknown_members():
    request = {"TrainingJobName": "bad_name", "RoleArn": "arn:aws:iam::123456789012:role/R",
               "AlgorithmSpecification": {"TrainingInputMode": "Sideways"},
               "OutputDataConfig": {"S3OutputPath": "s3://b/o"}, "Unknown": 1,
               "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1},
               "StoppingCondition": {"MaxRuntimeInSeconds": 1}, "HyperParameters": {"x": "y" * 2501}}
    found = dict(sagemaker_api.problems(request))
    assert "does not match the pattern" in found[("TrainingJobName",)]
    assert "not one of" in found[("AlgorithmSpecification", "TrainingInputMode")]
    assert "longer than 2500" in found[("HyperParameters", "x")]
    assert found[("Unknown",)] == "is not a member of the request"


def test_image_uris_follow_region_partition_and_processor():
    uri = sagemaker_image.training_image_uri("cn-north-1", "2.5.1", "py311", "ml.m5.xlarge", smp=False)
    assert uri == "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/pytorch-training:2.5.1-cpu-py311"
    uri = sagemaker_image.training_image_uri("us-east-1", "2.5.1", "py311", "ml.p5.48xlarge", smp=True)
    assert uri == "658645717510.dkr.ecr.us-east-1.amazonaws.com/smdistributed-modelparallel:2.5.1-gpu-py311-cu124"


def test_compiling_imports_no_aws_library():
    code = ("import sys; from tunespec.compiler import backend_sagemaker, sagemaker_validate; from tunespec.schema import sagemaker_api; "
            "sys.exit(' '.join(m for m in ('boto3', 'botocore', 'sagemaker') if m in sys.modules) or None)")
    assert subprocess.run([sys.executable, "-c", code], cwd="/").returncode == 0


def test_a_local_model_folder_is_refused_with_the_other_mistakes(tmp_path, monkeypatch):
    # SageMaker gets local inputs file by file: a model folder is refused at plan time, with the spot option.
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(
        {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
         "vocab_size": 1000, "intermediate_size": 128}))
    error = compile_error(tmp_path, monkeypatch, model={"source": "./model"},
                          backend={"spot": {"enabled": True}, "keep_alive_seconds": 600})
    assert [e.path for e in (error, *error.others)] == [("backend", "keep_alive_seconds"), ("model", "source")]
    assert "uploaded file by file" in error.others[0].message
