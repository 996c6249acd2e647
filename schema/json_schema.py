"""The published JSON Schema (schema/tunespec-v1.schema.json), generated from the spec model."""
import json
from pathlib import Path

from .spec import Spec

SCHEMA_FILE = Path(__file__).with_name("tunespec-v1.schema.json")


def schema_text() -> str:
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://tunespec.dev/schema/tunespec-v1.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
