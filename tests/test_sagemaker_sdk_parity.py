"""The SageMaker Python SDK 2.x builds the same CreateTrainingJob request as tunespec.

The SDK runs in its own venv (`.venv-sdk/`, made by scripts/setup_sdk_venv.sh: its pins would
downgrade packages of the main environment). There, `PyTorch(**estimator_args).fit(**fit_args)`
runs against moto's server; a botocore `before-call` hook takes the CreateTrainingJob body the SDK
was about to send and stops it, so nothing is created. Outside CI the test skips when the venv is
missing; in CI (CI=true) a missing venv fails.
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec

from conftest import REPO
from test_sagemaker_apply import moto_server  # noqa: F401  (the fixture)
from test_sagemaker_compile import SEED_SPECS, make_plan

SDK_PYTHON = REPO / ".venv-sdk" / "bin" / "python"

SDK_SIDE = r'''
import json, sys
import boto3
from sagemaker.pytorch import PyTorch
from sagemaker.session import Session

class Captured(Exception):
    pass

def capture(params, **_):
    raise Captured(json.loads(params["body"]))

job = json.load(sys.stdin)
aws = boto3.Session(region_name=job["region"])
client = aws.client("sagemaker")
client.meta.events.register("before-call.sagemaker.CreateTrainingJob", capture)
no_telemetry = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
session = Session(boto_session=aws, sagemaker_client=client, sagemaker_config=no_telemetry)
estimator = PyTorch(sagemaker_session=session, **job["estimator"])
try:
    estimator.fit(**job["fit"])
except Captured as captured:
    with open(sys.argv[1], "w") as out:  # not stdout: the SDK prints its own notices there
        json.dump(captured.args[0], out)
else:
    sys.exit("the SDK sent no CreateTrainingJob request")
'''


def sdk_request(backend: dict, tmp_path: Path) -> dict:
    if not SDK_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail("no .venv-sdk: CI must run scripts/setup_sdk_venv.sh")
        pytest.skip("SageMaker SDK venv missing: run scripts/setup_sdk_venv.sh")
    script = tmp_path / "sdk_side.py"
    script.write_text(SDK_SIDE)
    env = {**os.environ, "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
           # Anything the SDK might fetch from the internet goes to a closed local port instead.
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"}
    job = {"region": backend["region"], "estimator": backend["estimator_args"], "fit": backend["fit_args"]}
    # -I: the repository's `schema/` folder must not shadow the SDK's `schema` dependency.
    captured = tmp_path / "sdk_request.json"
    done = subprocess.run([str(SDK_PYTHON), "-I", str(script), str(captured)], input=json.dumps(job),
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(captured.read_text())


@pytest.mark.parametrize("stem", SEED_SPECS)
def test_sdk_builds_the_seed_job_tunespec_builds(stem, tmp_path, monkeypatch, moto_server):  # noqa: F811
    monkeypatch.chdir(REPO)
    backend = build_plan(load_spec(Path(f"specs/{stem}.yaml")))["backend"]
    assert sdk_request(backend, tmp_path) == backend["create_training_job_request"]


@pytest.mark.parametrize("changes", [
    {"backend": {"spot": {"enabled": True, "max_wait_seconds": 100000}, "max_run_seconds": 7200,
                 "disable_output_compression": False, "tags": {"team": "nlp"}}},
    {"backend": {"instance_type": "ml.g6.xlarge", "region": "eu-west-1", "environment": {"MY_FLAG": "1"}}},
    {"distribution": {"strategy": "fsdp"}, "backend": {"instance_type": "ml.g5.12xlarge", "instance_count": 2,
                                                        "keep_alive_seconds": 900}},
], ids=["spot-compressed-tags", "other-region-env", "fsdp-two-nodes-warm-pool"])
def test_sdk_builds_the_same_job_for_backend_options(changes, tmp_path, monkeypatch, moto_server):  # noqa: F811
    backend = make_plan(tmp_path / "spec", monkeypatch, **changes)["backend"]
    assert sdk_request(backend, tmp_path) == backend["create_training_job_request"]
