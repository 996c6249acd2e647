"""sourcedir.tar.gz: reproducible, complete, and the container entry points the plan at the job's paths."""
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile

from tunespec import __version__
from tunespec.runtime import package_wheel, sourcedir
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
        (wheel_name,) = [name for name in names if name.endswith(".whl")]
        wheel = zipfile.ZipFile(io.BytesIO(tar.extractfile(wheel_name).read()))
    assert names == {"tunespec_entry.py", "plan.json", "requirements.txt", wheel_name}
    assert wheel_name == f"tunespec-{__version__}-py3-none-any.whl"
    assert {"tunespec/__init__.py", "tunespec/runtime/sourcedir.py", "tunespec/cli/defaults/smollm2-viggo-lora.yaml",
            "tunespec/compiler/catalog/sagemaker_images.json", "tunespec/schema/__init__.py"} <= set(wheel.namelist())
    assert wheel.testzip() is None
    assert requirements.splitlines() == plan["backend"]["sourcedir"]["requirements"]


def test_the_archive_ships_the_same_wheel_from_a_regular_install(tmp_path, monkeypatch):
    """Installed from its wheel (no source checkout), tunespec packs its RECORDed files back into the same wheel."""
    from_source_name, from_source = package_wheel.tunespec_wheel()
    wheel_file = tmp_path / from_source_name
    wheel_file.write_bytes(from_source)
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                                "--target", str(site), str(wheel_file)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    repacked = subprocess.run(
        [sys.executable, "-c", "import sys; from tunespec.runtime import package_wheel as w; "
         "name, data = w.tunespec_wheel(); print(name, w.source_checkout()); sys.stdout.flush(); "
         "open(sys.argv[1], 'wb').write(data)", str(tmp_path / "repacked.whl")],
        cwd=tmp_path, capture_output=True, text=True, env={"PATH": os.environ["PATH"], "PYTHONPATH": str(site)})
    assert repacked.returncode == 0, repacked.stderr
    assert repacked.stdout.split() == [from_source_name, "None"]
    names = lambda data: sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())  # noqa: E731
    assert names((tmp_path / "repacked.whl").read_bytes()) == names(from_source)
    contents = lambda data: {n: zipfile.ZipFile(io.BytesIO(data)).read(n) for n in names(data)  # noqa: E731
                             if not n.endswith("RECORD")}
    assert contents((tmp_path / "repacked.whl").read_bytes()) == contents(from_source)


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
