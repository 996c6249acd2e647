"""The published JSON Schema is the spec model's, and every example spec satisfies it and points editors at it."""
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tunespec.compiler.spec_loader import load_spec
from tunespec.schema.json_schema import SCHEMA_FILE, schema_text

from conftest import REPO

SCHEMA_PATH = REPO / "schema" / "tunespec-v1.schema.json"
# The examples and the embedded default.
EXAMPLES = sorted((REPO / "specs").glob("*.yaml")) + [REPO / "cli" / "defaults" / "smollm2-viggo-lora.yaml"]
MODELINE = "# yaml-language-server: $schema="


def test_schema_file_is_generated_from_the_model():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "schema/tunespec-v1.schema.json is stale: regenerate it with `tunespec schema > schema/tunespec-v1.schema.json`"
    )
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text()  # the copy the installed package serves


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


@pytest.mark.parametrize("spec", EXAMPLES, ids=[spec.name for spec in EXAMPLES])
def test_example_validates_against_the_json_schema(spec: Path):
    data = yaml.safe_load(spec.read_text(encoding="utf-8"))
    if "extends" in data:
        # A spec that extends a base is complete only once merged with it; check the merged document.
        data = load_spec(spec).data
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("spec", EXAMPLES, ids=[spec.name for spec in EXAMPLES])
def test_example_carries_the_schema_modeline(spec: Path):
    first = spec.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(MODELINE), f"{spec.name}: first line must be `{MODELINE}../schema/tunespec-v1.schema.json`"
    target = (spec.parent / first[len(MODELINE):].strip()).resolve()
    assert target == SCHEMA_PATH.resolve()
