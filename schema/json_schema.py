"""The published JSON Schemas, generated from the models: the spec's (schema/tunespec-v1.schema.json)
and the plan's (schema/tunespec-plan-v1.schema.json)."""
from pathlib import Path
from typing import Type

from pydantic import BaseModel

from .contract import canonical_json
from .plan import Plan
from .spec import Spec

SCHEMA_FILE = Path(__file__).with_name("tunespec-v1.schema.json")
PLAN_SCHEMA_FILE = Path(__file__).with_name("tunespec-plan-v1.schema.json")


def _text(model: Type[BaseModel], file: Path) -> str:
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://tunespec.dev/schema/{file.name}"
    return canonical_json(schema)


def schema_text() -> str:
    return _text(Spec, SCHEMA_FILE)


def plan_schema_text() -> str:
    return _text(Plan, PLAN_SCHEMA_FILE)
