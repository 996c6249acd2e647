"""plan.json has a typed contract (schema/plan.py), published as schema/tunespec-plan-v1.schema.json:
every golden plan and the plan of every example spec satisfy it, and every field says what it is."""
import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import BaseModel

from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec
from tunespec.schema import plan as plan_schema
from tunespec.schema.json_schema import PLAN_SCHEMA_FILE, plan_schema_text
from tunespec.schema.plan import Plan, execution_fields, review_only_fields

from conftest import REPO
from test_plan_golden import GOLDEN, GOLDEN_HOST, SPECS

PLAN_SCHEMA_PATH = REPO / "schema" / "tunespec-plan-v1.schema.json"
GOLDEN_PLANS = sorted(GOLDEN.glob("*/plan.json"))


def test_plan_schema_file_is_generated_from_the_model():
    assert PLAN_SCHEMA_PATH.read_text(encoding="utf-8") == plan_schema_text(), (
        "schema/tunespec-plan-v1.schema.json is stale: regenerate it with "
        "`tunespec schema --plan > schema/tunespec-plan-v1.schema.json`"
    )
    assert PLAN_SCHEMA_FILE.read_text(encoding="utf-8") == plan_schema_text()


def test_plan_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(json.loads(PLAN_SCHEMA_PATH.read_text(encoding="utf-8")))


def _schema_errors(plan: dict) -> list:
    validator = jsonschema.Draft202012Validator(json.loads(PLAN_SCHEMA_PATH.read_text(encoding="utf-8")))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(plan)]


@pytest.mark.parametrize("plan_file", GOLDEN_PLANS, ids=[p.parent.name for p in GOLDEN_PLANS])
def test_golden_plan_validates(plan_file: Path):
    text = plan_file.read_text(encoding="utf-8")
    Plan.model_validate_json(text)
    assert not _schema_errors(json.loads(text))


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_plan_of_every_example_validates(spec_path: Path, repo_cwd):
    plan = json.loads(json.dumps(build_plan(load_spec(spec_path.relative_to(REPO)), host=GOLDEN_HOST)))
    Plan.model_validate(plan)
    assert not _schema_errors(plan)


def _plan_models() -> list:
    return [value for value in vars(plan_schema).values()
            if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == plan_schema.__name__]


def test_every_plan_field_is_documented():
    undocumented = [f"{model.__name__}.{name}" for model in _plan_models()
                    for name, info in model.model_fields.items() if not info.description]
    assert not undocumented


def test_review_sections_are_marked_apart_from_execution_sections():
    assert set(review_only_fields()) == {"warnings", "estimates", "tuning", "tunespec_version"}
    assert {"model", "method", "data", "devices", "parallel", "trainer", "batch", "launch", "backend", "secrets",
            "outputs", "tracking"} <= set(execution_fields())
    schema = json.loads(PLAN_SCHEMA_PATH.read_text(encoding="utf-8"))
    assert all(schema["properties"][name].get(plan_schema.REVIEW_ONLY_KEY) for name in review_only_fields())


def test_a_plan_with_an_unknown_field_is_refused():
    plan = json.loads(GOLDEN_PLANS[0].read_text(encoding="utf-8"))
    plan["trainer"]["learning_rate_typo"] = 1e-4
    with pytest.raises(ValueError, match="learning_rate_typo"):
        Plan.model_validate(plan)


def test_a_sagemaker_request_the_api_would_refuse_is_not_a_plan():
    plan_file = GOLDEN / "mixtral-8x7b-viggo-qlora-fsdp" / "plan.json"
    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    plan["backend"]["create_training_job_request"]["ResourceConfig"]["KeepAlivePeriodInSeconds"] = 30000
    with pytest.raises(ValueError, match="KeepAlivePeriodInSeconds .*21600"):
        Plan.model_validate(plan)
