"""Slurm backend compile step: golden sbatch scripts, shellcheck, refusals (no Slurm needed).

The golden scripts are the files of the specs' golden plan folders (tests/golden/plans/<spec>/slurm/);
refresh them with `pytest tests/test_plan_golden.py --update-golden`.
"""
import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tunespec.compiler.backend_slurm import compile_slurm
from tunespec.compiler.errors import SpecError
from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec

from conftest import REPO
from test_plan_golden import GOLDEN, GOLDEN_HOST

SPECS = {
    "llama3-8b-dolly-trn1": REPO / "specs" / "llama-3-8b-dolly-lora-trn1.yaml",  # seed 003
    "llama3-8b-dolly-p4d-2nodes": REPO / "tests" / "golden" / "specs" / "llama-3-8b-fsdp-p4d-2nodes.yaml",
}


def plan_and_backend(spec_path: Path):
    loaded = load_spec(spec_path)
    return build_plan(loaded, cwd=REPO), loaded.spec.backend.model_dump()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_scripts_and_chain_are_the_golden_plans(name, repo_cwd):
    """What apply submits (the plan's backend section) is what a reviewer reads in the plan folder."""
    spec_path = SPECS[name]
    backend = build_plan(load_spec(spec_path.relative_to(REPO)), host=GOLDEN_HOST)["backend"]
    folder = GOLDEN / spec_path.stem
    assert backend["files"] == {path.relative_to(folder).as_posix(): path.read_text()
                                for path in sorted((folder / "slurm").iterdir())}
    assert json.loads(json.dumps(backend)) == json.loads((folder / "plan.json").read_text())["backend"]


def test_seed_003_chain_and_neuron_settings(repo_cwd):
    plan, _ = plan_and_backend(SPECS["llama3-8b-dolly-trn1"])
    backend = plan["backend"]
    assert [(job["name"], job["depends_on"]) for job in backend["chain"]] == [
        ("download", []), ("compile", ["download"]), ("train", ["compile"]), ("consolidate", ["train"]),
        ("merge", ["consolidate"])]
    assert backend["run_dir"] == f"/fsx/tunespec/runs/llama3-8b-dolly-trn1-{plan['spec']['hash'][:12]}"
    compile_job = backend["files"]["slurm/compile.sbatch"]
    train_job = backend["files"]["slurm/train.sbatch"]
    assert "neuron_parallel_compile \\\n    torchrun" in compile_job
    assert '--run-dir "$RUN_DIR/compile" --max-steps 10' in compile_job
    assert "neuron_parallel_compile" not in train_job.split("\nsrun")[1]
    for text in (compile_job, train_job):
        assert "export XLA_USE_BF16=1" in text
        assert "--nproc_per_node=32" in text
        assert "tensor parallel 8, pipeline 1, data parallel 4" in text
        assert "gradient accumulation 3" in text
        assert "--auto-resume=1" in text
        # The upstream recipe's compiler flags (finetune-llama3-8B.sh), the cache on the shared disk.
        assert ("export NEURON_CC_FLAGS='--model-type=transformer --distribution-strategy=llm-training "
                "--enable-saturate-infinity --target=trn1 --cache_dir=/fsx/tunespec/neuron-cache'\n") in text
        assert "export NEURON_RT_STOCHASTIC_ROUNDING_EN=1\n" in text
    assert "export NEURON_EXTRACT_GRAPHS_ONLY=0" in train_job


def test_neuron_compiler_flags_are_the_plans(repo_cwd):
    plan, backend = plan_and_backend(SPECS["llama3-8b-dolly-trn1"])
    assert plan["parallel"]["settings"]["compiler_flags"] == [
        "--model-type=transformer", "--distribution-strategy=llm-training", "--enable-saturate-infinity",
        "--target=trn1"]
    plan["parallel"]["settings"]["compiler_flags"] = ["--model-type=transformer", "-O1"]
    files = compile_slurm(plan, backend)["files"]
    for job in ("compile", "train"):
        assert ("export NEURON_CC_FLAGS='--model-type=transformer -O1 --cache_dir=/fsx/tunespec/neuron-cache'\n"
                in files[f"slurm/{job}.sbatch"])


def test_every_job_is_killed_when_its_dependency_fails_and_appends_its_log(repo_cwd):
    for spec in SPECS.values():
        plan, _ = plan_and_backend(spec)
        for text in plan["backend"]["files"].values():
            assert "#SBATCH --kill-on-invalid-dep=yes\n" in text
            assert "#SBATCH --open-mode=append\n" in text


def test_plain_cluster_gets_no_hyperpod_options(repo_cwd):
    plan, backend = plan_and_backend(SPECS["llama3-8b-dolly-trn1"])
    backend["cluster_flavour"] = "plain"
    files = compile_slurm(plan, backend)["files"]
    assert not any("--auto-resume" in text or "--container" in text for text in files.values())


def test_container_image_and_efa_on_gpu_nodes(repo_cwd):
    plan, _ = plan_and_backend(SPECS["llama3-8b-dolly-p4d-2nodes"])
    train = plan["backend"]["files"]["slurm/train.sbatch"]
    assert "--container-image=/fsx/images/tunespec-pytorch.sqsh --container-mounts=/fsx:/fsx" in train
    assert "source " not in train  # the image is the environment
    assert "export FI_PROVIDER=efa" in train
    assert "#SBATCH --nodes=2\n" in train and "--nproc_per_node=8" in train
    assert "#SBATCH --partition=dev\n" in train and "#SBATCH --time=12:00:00\n" in train


def test_same_plan_same_bytes(repo_cwd):
    plan, backend = plan_and_backend(SPECS["llama3-8b-dolly-trn1"])
    assert compile_slurm(copy.deepcopy(plan), dict(backend)) == compile_slurm(plan, backend)


# Trainium/QLoRA, bitsandbytes optimizers, TP degrees and containers on plain clusters are refused
# earlier, by compiler/rules.py and the schema (tests/broken_specs/); this is the backend's own rule.
@pytest.mark.parametrize("change, path", [
    (lambda plan, backend: backend.update(shared_dir="fsx"), ("backend", "shared_dir")),
    (lambda plan, backend: backend.update(shared_dir="/my fsx"), ("backend", "shared_dir")),
    (lambda plan, backend: backend.update(shared_dir="/fsx/$(touch /tmp/x)"), ("backend", "shared_dir")),
    (lambda plan, backend: backend.update(partition="gpu\nrm -rf ~"), ("backend", "partition")),
    (lambda plan, backend: backend.update(partition="gpu --uid=0"), ("backend", "partition")),
    (lambda plan, backend: backend.update(time_limit="1:00:00\n#SBATCH --uid=0"), ("backend", "time_limit")),
    (lambda plan, backend: backend.update(environment={"venv": "/fsx/venv`id`"}), ("backend", "environment", "venv")),
    (lambda plan, backend: backend.update(environment={"container_image": "img;id"}),
     ("backend", "environment", "container_image")),
    (lambda plan, backend: backend.update(environment={"container_image": "img", "container_mounts": "/a:/b /c"}),
     ("backend", "environment", "container_mounts")),
])
def test_refusals(change, path, repo_cwd):
    plan, backend = plan_and_backend(SPECS["llama3-8b-dolly-trn1"])
    change(plan, backend)
    with pytest.raises(SpecError) as error:
        compile_slurm(plan, backend)
    assert error.value.path == path


def test_scripts_are_shellcheck_clean(repo_cwd, tmp_path):
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (tests/slurm_cluster.sh install)", pytrace=False)
    scripts = [REPO / "tests" / "slurm_cluster.sh"]
    for spec in SPECS.values():
        plan, backend = plan_and_backend(spec)
        for flavour in ("hyperpod", "plain"):
            if flavour == "plain" and "container_image" in backend["environment"]:
                continue
            for relative, text in compile_slurm(plan, dict(backend, cluster_flavour=flavour))["files"].items():
                script = tmp_path / flavour / plan["spec"]["name"] / relative
                script.parent.mkdir(parents=True, exist_ok=True)
                script.write_text(text)
                scripts.append(script)
    result = subprocess.run(["shellcheck", "--severity=style", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_hostile_values_in_shell_lines_stay_literal(repo_cwd, tmp_path):
    """Values that reach shell lines (model id, revision) run through bash as data, never as code."""
    plan, backend = plan_and_backend(SPECS["llama3-8b-dolly-trn1"])
    hostile_source = "org/model$(touch pwned-source)"
    hostile_revision = "main\"; touch pwned-revision; echo \"`touch pwned-backquote`'$(touch pwned-quote)'"
    plan["model"]["revision"] = hostile_revision
    plan["model"]["source"] = hostile_source
    venv, bin_dir, argv_file = tmp_path / "venv", tmp_path / "bin", tmp_path / "python-argv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    bin_dir.mkdir()
    # srun runs its command without its own options; python records what it was given.
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (bin_dir / "python").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" >{argv_file}\n')
    for stub in ("srun", "python"):
        (bin_dir / stub).chmod(0o755)
    backend.update(shared_dir=str(tmp_path / "shared"), environment={"venv": str(venv)})
    script = compile_slurm(plan, backend)["files"]["slurm/download.sbatch"]
    run_dir = tmp_path / "shared" / "tunespec" / "runs" / f"{plan['spec']['name']}-{plan['spec']['hash'][:12]}"
    (run_dir / "status").mkdir(parents=True)
    (tmp_path / "download.sbatch").write_text(script)
    done = subprocess.run(["bash", str(tmp_path / "download.sbatch")], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "7", "HF_TOKEN": "x"}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("pwned*"))
    assert argv_file.read_text().splitlines()[-2:] == [hostile_source, hostile_revision]
    header = script.split("set -euo pipefail")[0]
    assert [line for line in header.splitlines() if line and not line.startswith("#")] == []
