"""A spec asking for flash-attention 2 or Liger where they are not installed: one clear message per
kernel and exit 2, from `tunespec apply` and from the trainer itself; never a traceback."""
import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest

from tunespec.compiler.plan import build_plan
from tunespec.schema.contract import canonical_json
from tunespec.compiler.spec_loader import load_spec

from conftest import REPO

DEFAULT_SPEC = REPO / "cli" / "defaults" / "smollm2-viggo-lora.yaml"
pytestmark = pytest.mark.skipif(bool(importlib.util.find_spec("flash_attn") or importlib.util.find_spec("liger_kernel")),
                                reason="flash-attn or liger-kernel is installed here")


def kernel_spec(root, model="{attn_implementation: flash_attention_2}"):
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: kernels-missing
        extends: {DEFAULT_SPEC}
        model: {model}
        training: {{liger_kernels: true, precision: bf16}}
        backend: {{type: local, device: cuda, hardware: ml.g5.12xlarge, run_dir: {root / "run"}}}
        """))
    return spec


def apply(spec):
    return subprocess.run([sys.executable, "-m", "tunespec.cli.main", "apply", str(spec)],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "COLUMNS": "400"})


def test_apply_refuses_an_attention_kernel_missing_here_at_plan_time(tmp_path):
    done = apply(kernel_spec(tmp_path))
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    assert f"{tmp_path / 'spec.yaml'}:4:" in done.stdout + done.stderr
    assert ("model.attn_implementation: flash_attention_2 needs flash-attn (`pip install flash-attn "
            "--no-build-isolation`, built against this torch and CUDA), which is not installed here; install it, "
            "or set `attn_implementation: sdpa` in the spec") in " ".join((done.stdout + done.stderr).split())
    assert not (tmp_path / "run" / "train.log").exists()


def test_apply_refuses_with_one_message_per_missing_kernel(tmp_path):
    done = apply(kernel_spec(tmp_path, model="{attn_implementation: sdpa}"))
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: training.liger_kernels: true needs liger-kernel (`pip install 'tunespec[gpu]'`), which is not "
        "installed here; install it, or set `liger_kernels: false` in the spec"]
    assert not (tmp_path / "run" / "train.log").exists()


def test_the_trainer_refuses_the_same_way_where_it_runs(tmp_path):
    # A plan made where flash-attn is installed, run where it is not (a container, a cluster node).
    plan = build_plan(load_spec(kernel_spec(tmp_path, "{attn_implementation: sdpa}")), cwd=tmp_path)
    plan["model"]["attn_implementation"] = "flash_attention_2"
    (tmp_path / "plan.json").write_text(canonical_json(plan))
    done = subprocess.run([sys.executable, "-m", "tunespec.runtime.train", "--plan", str(tmp_path / "plan.json"),
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 6 and "Traceback" not in done.stderr
    errors = [json.loads(line) for line in (tmp_path / "run" / "progress.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "error"]
    assert errors[0]["kind"] == "plan" and "flash-attn" in errors[0]["message"] and "liger-kernel" in errors[0]["message"]
