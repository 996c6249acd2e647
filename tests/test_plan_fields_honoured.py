"""Every execution field of the plan is read by something that runs it; review-only fields
(`x-review-only`, schema/plan.py) are for the reviewer and nothing that runs may need them.

How "read" is checked, and its limits: a static scan. A field counts as read when its name appears in
the sources of what executes the plan: runtime/*.py (the trainer and the backends' apply side),
schema/trainer_arguments.py (what the trainer is given: the trainer section, the batch, the precision) and, for
fields outside `backend`, the compiler's backend modules (compiler/backend_*.py, compiler/sagemaker_*.py),
which turn plan sections into scripts and requests. Names are taken from string literals (`plan["x"]`,
`.get("x")`), attribute names and keyword arguments. The scan cannot tell which section a name is read
from (`type` read anywhere counts for every `type`) nor whether the value changes what runs: it catches a
field nobody mentions, which is how plan fields drift from the runtime. Sections handed whole to a
consumer that refuses unknown names are listed in PASSED_WHOLE with that consumer.

The plan's distribution settings (`parallel.settings`) are walked as the spec's distribution models of
each strategy, so an SMP or Neuron setting nobody reads fails here too. FSDP's settings run as
trainer.fsdp / trainer.fsdp_config (compiled in compiler/plan.py), listed in COMPILED_INTO.
"""
import ast
import typing
from pathlib import Path
from typing import Iterator, Tuple

import pytest
import yaml
from pydantic import BaseModel

from tunespec.compiler.errors import SpecError
from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec
from tunespec.schema.distribution import Distribution
from tunespec.schema.plan import REVIEW_ONLY_KEY, Plan

from conftest import REPO

FieldPath = Tuple[str, ...]
PASSED_WHOLE = {
    ("trainer",): "runtime/train.py: SFTConfig(**trainer_arguments(plan)), which refuses a key TRL does not know",
    ("model", "architecture"): "runtime/probe.py: every key becomes the probe model's config",
    ("backend", "create_training_job_request"): "runtime/sagemaker.py sends it as is (botocore validates it)",
    ("backend", "merge_job_request"): "runtime/sagemaker.py sends it as is (botocore validates it)",
    ("backend", "files"): "written beside plan.json; the Slurm backend submits these scripts",
}
COMPILED_INTO = {
    ("parallel", "settings", name): "trainer.fsdp / trainer.fsdp_config"
    for name in ("sharding", "auto_wrap", "offload_params", "backward_prefetch", "forward_prefetch",
                 "use_orig_params", "cpu_ram_efficient_loading")
} | {("parallel", "settings", "pipeline_parallel_degree"): "parallel.pipeline_stages"}


def _models(annotation) -> list:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for argument in typing.get_args(annotation) for model in _models(argument)]


def execution_fields(model: type, prefix: FieldPath = (), into_whole: bool = False) -> Iterator[FieldPath]:
    """Paths of the execution fields, not below the sections PASSED_WHOLE unless `into_whole`."""
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get(REVIEW_ONLY_KEY):
            continue
        path = prefix + (name,)
        yield path
        if path in PASSED_WHOLE and not into_whole:
            continue
        for sub_model in _models(info.annotation):
            yield from execution_fields(sub_model, path, into_whole)
        if path == ("parallel", "settings"):
            for strategy in _models(Distribution):
                yield from (p for p in execution_fields(strategy, path, into_whole) if p[-1] != "strategy")


def names_in(paths) -> set:
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
            elif isinstance(node, ast.Attribute):
                found.add(node.attr)
            elif isinstance(node, ast.keyword) and node.arg:
                found.add(node.arg)
    return found


RUNTIME = sorted((REPO / "runtime").glob("*.py")) + [REPO / "schema" / "trainer_arguments.py"]
BACKEND_COMPILERS = sorted((REPO / "compiler").glob("backend_*.py")) + sorted((REPO / "compiler").glob("sagemaker_*.py"))


def test_every_execution_field_is_read():
    runtime_names, compiler_names = names_in(RUNTIME), names_in(BACKEND_COMPILERS)
    unread = []
    for path in sorted(set(execution_fields(Plan))):
        readers = runtime_names if path[0] == "backend" else runtime_names | compiler_names
        if path[-1] not in readers and path not in COMPILED_INTO:
            unread.append(".".join(path))
    assert not unread, "plan fields nothing that runs reads (read them, mark them review-only, or drop them):\n" \
        + "\n".join(unread)


def test_fields_compiled_elsewhere_land_in_fields_that_are_read():
    fields = {".".join(path) for path in execution_fields(Plan, into_whole=True)}
    for target in COMPILED_INTO.values():
        assert all(part.strip() in fields for part in target.split("/")), target


def test_the_walk_sees_nested_and_settings_fields():
    fields = set(execution_fields(Plan))
    assert ("parallel", "settings", "delayed_param_init") in fields
    assert ("backend", "chain", "depends_on") in fields
    assert ("batch", "steps_per_epoch") not in fields  # review-only


# ---- what a backend cannot execute is refused at plan time ------------------------------------------

SMALL_SPEC = {
    "apiVersion": "tunespec/v1",
    "name": "tiny",
    "model": {"source": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    "method": {"type": "lora"},
    "data": {"train": {"path": "s3://tunespec-test/train.jsonl"}, "format": {"type": "text", "column": "text"},
             "max_seq_length": 128, "num_examples": 100, "tokens_per_example": 100},
    "training": {"max_steps": 10},
}
SAGEMAKER = {"type": "sagemaker", "role": "arn:aws:iam::123456789012:role/SageMakerRole", "region": "us-east-1",
             "output_s3": "s3://tunespec-test/runs"}


def refusal(tmp_path: Path, monkeypatch, **changes) -> SpecError:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**SMALL_SPEC, **changes}, sort_keys=False))
    with pytest.raises(SpecError) as caught:
        build_plan(load_spec(Path("spec.yaml")))
    return caught.value


@pytest.mark.parametrize("backend", [{"type": "local", "device": "cuda", "hardware": "h100-80gb"},
                                     {**SAGEMAKER, "instance_type": "ml.p5.48xlarge"}], ids=["local", "sagemaker"])
def test_fp8_is_refused_where_no_trainer_trains_in_fp8(tmp_path, monkeypatch, backend):
    error = refusal(tmp_path, monkeypatch, backend=backend, training={"max_steps": 10, "precision": "fp8"})
    assert error.field_name() == "training.precision" and error.line is not None
    assert "does not train in fp8" in error.message


def test_trainium_training_is_refused_on_the_local_backend(tmp_path, monkeypatch):
    error = refusal(tmp_path, monkeypatch, backend={"type": "local", "device": "cuda", "hardware": "ml.trn1.32xlarge"},
                    distribution={"strategy": "neuron", "tensor_parallel_degree": 1})
    assert error.field_name() == "distribution.strategy" and error.line is not None
    assert "the local backend does not run `strategy: neuron`" in error.message
