"""Every example spec compiles into the committed plan folder, byte for byte.

Refresh after an intended change with `pytest tests/test_plan_golden.py --update-golden` and review
the diff of tests/golden/plans/ like any other code change. This is the one golden tree of plan output:
the SageMaker and Slurm tests check their requests and scripts against these folders.
"""
import shutil
from pathlib import Path

import pytest

from tunespec.schema.host import Host
from tunespec.compiler.plan import build_plan
from tunespec.compiler.render import write_plan_folder
from tunespec.compiler.spec_loader import load_spec

from conftest import REPO

# The examples, the embedded default (what `tunespec apply` runs with no argument), and specs kept only to
# pin a backend's output (tests/golden/specs/).
SPECS = (sorted((REPO / "specs").glob("*.yaml")) + [REPO / "cli" / "defaults" / "smollm2-viggo-lora.yaml"]
         + sorted((REPO / "tests" / "golden" / "specs").glob("*.yaml")))
# The machine local CPU plans are made for here: the 2-core AVX2 machine the README's first line targets.
GOLDEN_HOST = Host(cores=2, capability="avx2", native_bf16=False, memory_gib=16.0, cpu_model="2-core AVX2 x86")
GOLDEN = REPO / "tests" / "golden" / "plans"


def files_under(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_example_spec_matches_golden_plan(spec_path, tmp_path, repo_cwd, update_golden):
    plan = build_plan(load_spec(spec_path.relative_to(REPO)), host=GOLDEN_HOST)
    out = tmp_path / "plan"
    write_plan_folder(plan, out)
    golden = GOLDEN / spec_path.stem
    if update_golden:
        shutil.rmtree(golden, ignore_errors=True)
        shutil.copytree(out, golden)
    assert files_under(out) == files_under(golden)


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_plan_is_deterministic(spec_path, tmp_path, repo_cwd):
    first, second = tmp_path / "a", tmp_path / "b"
    write_plan_folder(build_plan(load_spec(spec_path.relative_to(REPO))), first)
    write_plan_folder(build_plan(load_spec(spec_path.relative_to(REPO))), second)
    assert files_under(first) == files_under(second)


def test_plan_carries_spec_hash_and_version(repo_cwd):
    from tunespec import __version__

    plan = build_plan(load_spec(Path("specs/mixtral-8x7b-viggo-qlora-fsdp.yaml")))
    assert plan["tunespec_version"] == __version__
    assert len(plan["spec"]["hash"]) == 64


def test_global_batch_is_micro_times_devices_times_accumulation(repo_cwd):
    plan = build_plan(load_spec(Path("specs/mixtral-8x7b-viggo-qlora-fsdp.yaml")))
    batch = plan["batch"]
    assert (batch["micro_batch_size"], batch["data_parallel"], batch["gradient_accumulation"]) == (10, 8, 1)
    assert batch["global_batch_size"] == 80
    assert batch["tokens_per_step"] == 80 * 2048
