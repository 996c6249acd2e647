"""`training.precision` resolved for the machine a plan runs on (compiler/precision.py, schema/host.py)."""
import pytest

from tunespec.schema.host import Host
from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec
from tunespec.compiler.summary import summary_sections
from tunespec.schema.trainer_arguments import trainer_arguments

from conftest import REPO

DEFAULT = REPO / "cli" / "defaults" / "smollm2-viggo-lora.yaml"
AVX2 = Host(cores=2, capability="avx2", native_bf16=False, memory_gib=16.0, cpu_model="x86 AVX2")
AMX = Host(cores=8, capability="amx", native_bf16=True, memory_gib=64.0, cpu_model="x86 AMX")
AVX512_BF16 = Host(cores=2, capability="avx512_bf16", native_bf16=True, memory_gib=24.0, cpu_model="x86 AVX512-BF16")


def plan_of(tmp_path, host: Host, training: str = "", backend: str = "{type: local, device: cpu}") -> dict:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"apiVersion: tunespec/v1\nname: precision-test\nextends: {DEFAULT}\ntraining:\n"
                    f"  max_steps: 30\n{training}\nbackend: {backend}\n")
    return build_plan(load_spec(spec), cwd=tmp_path, host=host)


@pytest.mark.parametrize("host, trains_in", [(AVX2, "fp32"), (AVX512_BF16, "fp32"), (AMX, "bf16")])
def test_auto_is_bf16_only_on_a_cpu_that_computes_it_faster(tmp_path, host, trains_in):
    plan = plan_of(tmp_path, host)
    assert plan["precision"]["requested"] == "auto" and plan["precision"]["resolved"] == trains_in
    assert trainer_arguments(plan)["bf16"] is (trains_in == "bf16")
    assert not [w for w in plan["warnings"] if w["code"] == "bf16-emulated-on-cpu"]
    layout = dict(dict(summary_sections(plan))["Layout"])
    assert layout["precision"].startswith(f"{trains_in} (auto: this CPU ({host.capability})")
    assert layout["devices"].startswith(f"this machine's CPU ({host.cpu_model}): {host.cores} cores")


def test_explicit_bf16_on_a_cpu_without_it_is_a_located_warning(tmp_path):
    plan = plan_of(tmp_path, AVX2, "  precision: bf16")
    [warning] = [w for w in plan["warnings"] if w["code"] == "bf16-emulated-on-cpu"]
    assert warning["field"] == "training.precision"
    assert warning["location"] == f"{tmp_path / 'spec.yaml'}:6:14"
    assert trainer_arguments(plan)["bf16"] is True  # what the spec says, kept: apply refuses it on this machine
    insisting = plan_of(tmp_path, AVX2, "  precision: bf16\n  allow_emulated_bf16: true")
    assert not [w for w in insisting["warnings"] if w["code"] == "bf16-emulated-on-cpu"]
    assert insisting["precision"]["allow_emulated_bf16"] is True


@pytest.mark.parametrize("gpu, trains_in", [("a100-80gb", "bf16"), ("t4-16gb", "fp16")])
def test_auto_on_gpus_follows_their_bf16_support(tmp_path, gpu, trains_in):
    plan = plan_of(tmp_path, AVX2, backend=f"{{type: local, device: cuda, hardware: {gpu}}}")
    assert plan["precision"]["resolved"] == trains_in
    arguments = trainer_arguments(plan)
    assert (arguments["bf16"], arguments["fp16"]) == (trains_in == "bf16", trains_in == "fp16")


def test_explicit_bf16_where_it_is_native_but_slower_is_kept_without_warning(tmp_path):
    plan = plan_of(tmp_path, AVX512_BF16, "  precision: bf16")
    assert plan["precision"]["resolved"] == "bf16"
    assert not [w for w in plan["warnings"] if w["code"] == "bf16-emulated-on-cpu"]
