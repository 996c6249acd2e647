"""sourcedir.tar.gz: reproducible, complete, and the container entry points the plan at the job's paths."""
import io
import json
import tarfile

from tunespec.runtime import sourcedir
from tunespec.schema import contract

from test_sagemaker_compile import make_plan


def test_archive_is_byte_identical_for_the_same_plan(tmp_path, monkeypatch):
    plan = make_plan(tmp_path, monkeypatch)
    assert sourcedir.build_sourcedir(plan) == sourcedir.build_sourcedir(plan)


def test_archive_holds_entry_plan_requirements_and_tunespec(tmp_path, monkeypatch):
    plan = make_plan(tmp_path, monkeypatch)
    with tarfile.open(fileobj=io.BytesIO(sourcedir.build_sourcedir(plan))) as tar:
        names = set(tar.getnames())
        requirements = tar.extractfile("requirements.txt").read().decode()
        assert json.load(tar.extractfile("plan.json")) == plan
        assert all(member.mtime == 0 and member.uid == 0 for member in tar.getmembers())
    assert {"tunespec_entry.py", "tunespec/__init__.py", "tunespec/runtime/sourcedir.py",
            "tunespec/compiler/catalog/sagemaker_images.json", "tunespec/schema/__init__.py"} <= names
    assert requirements.splitlines() == plan["backend"]["sourcedir"]["requirements"]


def test_container_plan_reads_inputs_from_channels_and_leaves_the_merge_to_the_merge_job(tmp_path, monkeypatch):
    plan = make_plan(tmp_path, monkeypatch, outputs={"merged_model": True, "sample_prompts": ["hi"]})
    train = sourcedir.container_plan(plan, "train")
    assert train["data"]["train"]["path"] == "/opt/ml/input/data/train/train.jsonl"
    assert train["outputs"]["merged_model"] is False and train["outputs"]["sample_prompts"] == []
    merge = sourcedir.container_plan(plan, "merge")
    assert merge["outputs"]["merged_model"] is True and merge["outputs"]["sample_prompts"] == ["hi"]
    assert plan["data"]["train"]["path"] == "train.jsonl"  # the plan itself is left as it was


def test_secret_arns_are_found_by_their_variable_names():
    environ = {"TUNESPEC_SECRET_HF_TOKEN_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:x", "PATH": "/bin"}
    assert contract.secret_arns(environ) == {"HF_TOKEN": "arn:aws:secretsmanager:us-east-1:1:secret:x"}
