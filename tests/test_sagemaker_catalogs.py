"""The SageMaker data files tunespec plans from agree with their sources (botocore, SDK 2.x)."""
import json
import os
import subprocess

import pytest

from tunespec.schema import sagemaker_api

from conftest import REPO
from test_sagemaker_sdk_parity import SDK_PYTHON

SCHEMA = REPO / "schema"


def test_constraints_match_the_installed_botocore_service_model():
    botocore = pytest.importorskip("botocore")
    from botocore.loaders import Loader

    recorded = json.loads((SCHEMA / "sagemaker_constraints.json").read_text())
    if recorded["source"]["botocore"] == botocore.__version__:
        done = subprocess.run(["python", str(REPO / "scripts" / "update_sagemaker_constraints.py"), "--check"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return
    # Another botocore: the limits tunespec relies on must still hold, and no instance type it accepts may
    # have left the API (new ones may come: regenerate with scripts/update_sagemaker_constraints.py).
    shapes = Loader().load_service_model("sagemaker", "service-2")["shapes"]
    for name in ("TrainingJobName", "KeepAlivePeriodInSeconds", "HyperParameterValue", "TrainingEnvironmentKey"):
        assert {k: shapes[name].get(k) for k in ("min", "max", "pattern")} == \
            {k: recorded["shapes"][name].get(k) for k in ("min", "max", "pattern")}, name
    assert set(recorded["shapes"]["TrainingInstanceType"]["enum"]) <= set(shapes["TrainingInstanceType"]["enum"])


def test_constraints_hold_the_limits_the_issue_names():
    assert sagemaker_api.shape("KeepAlivePeriodInSeconds")["max"] == 21600
    assert sagemaker_api.shape("TrainingJobName")["max"] == 63
    assert "ml.p4d.24xlarge" in sagemaker_api.shape("TrainingInstanceType")["enum"]


def test_image_catalogue_matches_the_sdk():
    if not SDK_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail("no .venv-sdk: CI must run scripts/setup_sdk_venv.sh")
        pytest.skip("SageMaker SDK venv missing: run scripts/setup_sdk_venv.sh")
    done = subprocess.run([str(SDK_PYTHON), "-I", str(REPO / "scripts" / "update_sagemaker_images.py"), "--check"],
                          capture_output=True, text=True, env={**os.environ, "SAGEMAKER_SUPPRESS_V2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
