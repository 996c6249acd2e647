"""The layout (devices, precision, parallel, batch) is computed once, by compiler/layout.py: a plan records
every layout choice, so laying the plan's own choices out again gives the plan's layout, and a suggestion's
variant is the plan's choices with one change, laid out by the same function as `plan --tune` re-plans it."""
import pytest

from tunespec.compiler.layout import LAYOUT_SECTIONS, LayoutChoices, lay_out
from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec
from tunespec.compiler.suggest import _with_micro_batch

from conftest import REPO
from test_plan_golden import GOLDEN_HOST, SPECS


def _plan(spec_path):
    return build_plan(load_spec(spec_path.relative_to(REPO)), host=GOLDEN_HOST, enforce_budget=False)


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_a_plan_laid_out_again_from_its_own_choices_is_unchanged(spec_path, repo_cwd):
    plan = _plan(spec_path)
    again = lay_out(plan["devices"], LayoutChoices.of_plan(plan), plan["data"])
    assert again == {section: plan[section] for section in LAYOUT_SECTIONS}


def test_a_micro_batch_variant_is_the_spec_with_that_micro_batch(repo_cwd, tmp_path):
    spec = tmp_path / "micro-2.yaml"
    spec.write_text(f"extends: {REPO / 'specs/mixtral-8x7b-viggo-qlora-fsdp.yaml'}\n"
                    "training: {micro_batch_size: 2, gradient_accumulation: 5}\n")
    planned = build_plan(load_spec(spec), host=GOLDEN_HOST, enforce_budget=False)
    variant = _with_micro_batch(_plan(REPO / "specs/mixtral-8x7b-viggo-qlora-fsdp.yaml"), 2)
    assert {section: variant[section] for section in LAYOUT_SECTIONS} == \
        {section: planned[section] for section in LAYOUT_SECTIONS}


def test_the_kbit_upcast_is_decided_once_from_the_spec(repo_cwd, tmp_path):
    spec = tmp_path / "full-preparation.yaml"
    spec.write_text(f"extends: {REPO / 'specs/falcon-40b-samsum-qlora-g5.yaml'}\n"
                    "method: {quantization: {kbit_preparation: full}}\n")
    upcast = build_plan(load_spec(spec), host=GOLDEN_HOST, enforce_budget=False)
    plain = _plan(REPO / "specs/falcon-40b-samsum-qlora-g5.yaml")
    assert (upcast["precision"]["kbit_upcast"], plain["precision"]["kbit_upcast"]) == (True, False)
    weights = upcast["estimates"]["memory"]["weights_by_group"]
    assert weights["embedding"]["dtype"] == "fp32"
    assert plain["estimates"]["memory"]["weights_by_group"]["embedding"]["dtype"] == "bf16"
