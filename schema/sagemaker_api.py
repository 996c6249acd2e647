"""SageMaker requests against the service model's constraints, without botocore.

botocore's ParamValidator checks types, required and unknown members, but not `min`/`max`/`pattern`/
`enum`; SageMaker checks those only after the request is sent. The shapes come from
sagemaker_constraints.json beside this module (scripts/update_sagemaker_constraints.py). The compiler
checks the requests it writes (compiler/sagemaker_validate.py) and apply checks what it sends.
"""
import json
import re
from functools import lru_cache
from importlib import resources
from typing import List, Tuple

RequestPath = Tuple[object, ...]

# The service model writes Java regular expressions; Python's `re` lacks Unicode property classes.
# Each is replaced by a Python class that accepts at least the same characters (never a false refusal).
JAVA_CLASSES = {r"\p{L}": r"\w", r"\p{N}": r"\w", r"\p{Z}": r"\s", r"\p{Alnum}": "a-zA-Z0-9"}


@lru_cache(maxsize=1)
def _model() -> dict:
    text = resources.files("tunespec.schema").joinpath("sagemaker_constraints.json").read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=None)
def _pattern(java: str) -> "re.Pattern":
    python = java
    for java_class, python_class in JAVA_CLASSES.items():
        python = python.replace(java_class, python_class)
    return re.compile(python)


def shape(name: str) -> dict:
    return _model()["shapes"][name]


def problems(request: dict, operation: str = "CreateTrainingJob") -> List[Tuple[RequestPath, str]]:
    """Every constraint the request breaks, as (path in the request, message)."""
    found: List[Tuple[RequestPath, str]] = []
    _check(request, _model()["operations"][operation], (), found)
    return found


def _check(value: object, shape_name: str, path: RequestPath, found: list) -> None:
    spec = shape(shape_name)
    kind = spec["type"]
    if kind == "structure":
        _check_structure(value, spec, path, found)
    elif kind == "list":
        if not isinstance(value, list):
            found.append((path, f"expected a list, got {type(value).__name__}"))
            return
        _check_size(len(value), spec, path, found, "items")
        for index, item in enumerate(value):
            _check(item, spec["member"], path + (index,), found)
    elif kind == "map":
        if not isinstance(value, dict):
            found.append((path, f"expected a mapping, got {type(value).__name__}"))
            return
        _check_size(len(value), spec, path, found, "entries")
        for key, item in value.items():
            _check(key, spec["key"], path + (key,), found)
            _check(item, spec["value"], path + (key,), found)
    elif kind == "string":
        _check_string(value, spec, path, found)
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            found.append((path, f"expected an integer, got {value!r}"))
            return
        if "min" in spec and value < spec["min"]:
            found.append((path, f"{value} is below the minimum {spec['min']}"))
        if "max" in spec and value > spec["max"]:
            found.append((path, f"{value} is above the maximum {spec['max']}"))
    elif kind == "boolean" and not isinstance(value, bool):
        found.append((path, f"expected true or false, got {value!r}"))


def _check_structure(value: object, spec: dict, path: RequestPath, found: list) -> None:
    if not isinstance(value, dict):
        found.append((path, f"expected a structure, got {type(value).__name__}"))
        return
    members = spec.get("members", {})
    for name in spec.get("required", []):
        if name not in value:
            found.append((path + (name,), "is required"))
    for name, item in value.items():
        if name not in members:
            found.append((path + (name,), "is not a member of the request"))
        else:
            _check(item, members[name], path + (name,), found)


def _check_size(size: int, spec: dict, path: RequestPath, found: list, unit: str) -> None:
    if "min" in spec and size < spec["min"]:
        found.append((path, f"has {size} {unit}, fewer than {spec['min']}"))
    if "max" in spec and size > spec["max"]:
        found.append((path, f"has {size} {unit}, more than {spec['max']}"))


def _check_string(value: object, spec: dict, path: RequestPath, found: list) -> None:
    if not isinstance(value, str):
        found.append((path, f"expected a string, got {value!r}"))
        return
    if "enum" in spec and value not in spec["enum"]:
        found.append((path, f"{value!r} is not one of the {len(spec['enum'])} values the API accepts"))
        return
    if "min" in spec and len(value) < spec["min"]:
        found.append((path, f"is {len(value)} characters long, shorter than {spec['min']}"))
    if "max" in spec and len(value) > spec["max"]:
        found.append((path, f"is {len(value)} characters long, longer than {spec['max']}"))
    if "pattern" in spec and not _pattern(spec["pattern"]).fullmatch(value):
        found.append((path, f"{value!r} does not match the pattern {spec['pattern']}"))
