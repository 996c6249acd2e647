"""pydantic's errors on a spec → located SpecErrors: one per independent mistake, in the user's words, with a hint."""
import difflib
import re
import typing
from typing import Optional

from pydantic import BaseModel, ValidationError

from ..schema import Spec
from ..schema.common import DISCRIMINATORS
from .errors import SpecError, SpecPath, locate, same_field
from .loader import LoadedYaml, value_at

def _data_path(loc: tuple, data: object) -> SpecPath:
    """Drop the union-member names pydantic puts into `loc` (they are not keys of the file)."""
    path: list = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(node, (dict, list)) and isinstance(part, str) and not _is_member_tag(part, node):
            path.append(part)  # a missing or unknown key: still name it
            node = None
    return tuple(path)


def _is_member_tag(part: str, node: object) -> bool:
    if isinstance(node, dict) and any(node.get(k) == part for k in DISCRIMINATORS):
        return True
    return part[:1].isupper() or part.startswith(("list[", "literal[", "dict[", "str", "int", "function-"))


def _models_at(loc: tuple, data: object) -> tuple:
    """(model, the other members of its union) for the mapping at `loc`."""
    model: Optional[type] = Spec
    members: list = []
    node = data
    for part in loc:
        if model is None:
            return None, []
        if isinstance(part, int) or part not in model.model_fields:
            if isinstance(node, list):
                node = node[part] if isinstance(part, int) and part < len(node) else None
                continue
            if _is_member_tag(str(part), node):
                continue  # a union member's name, not a key: the model stays the picked member
            return None, []
        annotation = model.model_fields[part].annotation
        node = node.get(part) if isinstance(node, dict) else None
        model = _pick_model(annotation, node)
        members = [a for a in _flatten(annotation) if isinstance(a, type) and issubclass(a, BaseModel) and a is not model]
    return model, members


def _member_label(model: type) -> str:
    """`strategy: fsdp` for a member of a discriminated union, else the keys that select it."""
    for disc in DISCRIMINATORS:
        field = model.model_fields.get(disc)
        if field is not None:
            return f"`{disc}: {typing.get_args(field.annotation)[0]}`"
    return "a mapping with " + ", ".join(f"`{k}`" for k, f in model.model_fields.items() if f.is_required())


def _pick_model(annotation: object, node: object) -> Optional[type]:
    candidates = [a for a in _flatten(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    if isinstance(node, dict):
        for cand in candidates:
            for disc in DISCRIMINATORS:
                field = cand.model_fields.get(disc)
                if field is not None and node.get(disc) in typing.get_args(field.annotation):
                    return cand
        best = max(candidates, key=lambda c: len(set(node) & set(c.model_fields)))
        return best
    return None


def _flatten(annotation: object) -> list:
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    out = []
    for a in args:
        out.extend(_flatten(a))
    return out


_TYPE_NAMES = {
    "int_type": "a whole number", "float_type": "a number", "bool_type": "true or false",
    "string_type": "text", "dict_type": "a mapping", "list_type": "a list", "model_type": "a mapping",
    "int_from_float": "a whole number",
}


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"text {value!r}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "nothing" if value is None else type(value).__name__


_BOUNDS = {"greater_than": "greater than", "greater_than_equal": "at least", "less_than": "less than",
           "less_than_equal": "at most"}
_PATTERN_HINTS = {
    "region": "for example `region: us-east-1`",
    "role": "for example `role: arn:aws:iam::111122223333:role/SageMakerTrainingRole`",
    "output_s3": "for example `output_s3: s3://my-bucket/runs`",
    "checkpoint_s3": "for example `checkpoint_s3: s3://my-bucket/checkpoints`",
    "data_s3": "for example `data_s3: s3://my-bucket/data`",
    "name": "use lower-case letters, digits and dashes (at most 48), e.g. `name: mixtral-viggo-qlora`",
    "time_limit": "for example `time_limit: 2-00:00:00` (days-hours:minutes:seconds)",
    "env": "the name of an environment variable, e.g. `env: HF_TOKEN`",
}
_LITERAL_PREFIX = "literal["


def _number(value: object) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _union_alternatives(errors: list, err: dict, loc: tuple) -> list:
    """For a value no member of a plain union accepts (`all-linear` or a list), what each member wants."""
    if not loc or not isinstance(loc[-1], str) or not loc[-1].startswith((_LITERAL_PREFIX, "list[", "str", "int")):
        return []
    out = []
    for other in errors:
        other_loc = tuple(other["loc"])
        if other_loc[:-1] != loc[:-1]:
            continue
        if other["type"] == "literal_error":
            out.extend(f"`{o}`" for o in re.findall(r"'([^']*)'", str((other.get("ctx") or {}).get("expected", ""))))
        elif other["type"] in _TYPE_NAMES:
            out.append(_TYPE_NAMES[other["type"]])
    return out if len(out) > 1 else []


def _error_priority(err: dict) -> int:
    # Report the most specific problem first: unknown keys and bad values before "missing".
    order = {"extra_forbidden": 0, "union_tag_invalid": 1, "literal_error": 2, "missing": 5}
    return order.get(err["type"], 3)


def from_validation_error(exc: ValidationError, data: dict, loaded: LoadedYaml, display: str) -> SpecError:
    """Every independent problem pydantic found, most specific first: one per field, where a field and
    the fields inside it count as one (a bad mapping's own keys, a union's alternatives), and a key
    missing beside a reported problem is its consequence (a misspelt key is also a missing one)."""
    errors = sorted(exc.errors(include_url=False), key=_error_priority)
    found, paths = [], []
    for err in errors:
        path = _data_path(tuple(err["loc"]), data)
        if any(same_field(path, seen) for seen in paths):
            continue
        if err["type"] == "missing" and any(seen[:-1] == path[:-1] for seen in paths):
            continue
        paths.append(path)
        found.append(_one_error(err, errors, data, loaded, display))
    first, *others = found
    first.others = others
    return first


def _one_error(err: dict, errors: list, data: dict, loaded: LoadedYaml, display: str) -> SpecError:
    loc = tuple(err["loc"])
    path = _data_path(loc, data)
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    hint = None
    field = str(path[-1]) if path else "spec"
    if kind == "extra_forbidden":
        model, members = _models_at(loc[:-1], data)
        allowed = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(field, allowed, n=1, cutoff=0.6)
        owners = [m for m in members if field in m.model_fields]
        message = f"unknown key `{field}`"
        if close:
            hint = f"did you mean `{close[0]}`?"
        elif owners:
            message += f" for {_member_label(model)}"
            hint = f"`{field}` is a setting of {' or '.join(_member_label(m) for m in owners)}"
        elif allowed:
            hint = "allowed keys here: " + ", ".join(allowed)
        error = SpecError(message, path, hint=hint)
        pos = loaded.keys.get(path)
        if pos:
            error.file, error.line, error.column = pos
        return locate(error, loaded.values, loaded.keys, display)
    if kind == "missing":
        message = f"missing required key `{field}`"
        parent = path[:-1]
        error = SpecError(message, path)
        pos = loaded.keys.get(parent) or loaded.values.get(parent)
        if pos:
            error.file, error.line, error.column = pos
        return locate(error, loaded.values, loaded.keys, display)
    alternatives = _union_alternatives(errors, err, loc)
    if alternatives:
        message = f"expected {' or '.join(alternatives)}, got {_describe(value)}"
        return locate(SpecError(message, path), loaded.values, loaded.keys, display)
    if kind == "literal_error" or kind == "union_tag_invalid":
        expected = ctx.get("expected") or ctx.get("expected_tags") or ""
        options = re.findall(r"'([^']*)'", str(expected)) or re.findall(r"\d+", str(expected))
        got = value if kind == "literal_error" else ctx.get("tag")
        if kind == "union_tag_invalid":
            path = path + (ctx.get("discriminator", "").strip("'"),) if ctx.get("discriminator") else path
            field = str(path[-1])
        message = f"`{field}` must be one of {', '.join(options)}; got {_describe(got)}"
        # A value that starts an option (`adamw` → `adamw_torch`) means that option more often
        # than the closest spelling does.
        close = [o for o in options if str(got) and o.startswith(str(got))][:1] or \
            difflib.get_close_matches(str(got), options, n=1, cutoff=0.5)
        hint = f"did you mean `{close[0]}`?" if close else None
        return locate(SpecError(message, path, hint=hint), loaded.values, loaded.keys, display)
    if kind == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "type")).strip("'")
        model, members = _models_at(loc, data)
        tags = [str(t) for m in ([model] if model else []) + members
                for t in typing.get_args(m.model_fields[disc].annotation) if disc in m.model_fields]
        error = SpecError(f"missing `{disc}`", path + (disc,),
                          hint=f"set `{disc}` to one of {', '.join(tags)}" if tags else None)
        pos = loaded.keys.get(path) or loaded.values.get(path)
        if pos:
            error.file, error.line, error.column = pos
        return locate(error, loaded.values, loaded.keys, display)
    if kind in _TYPE_NAMES:
        message = f"expected {_TYPE_NAMES[kind]}, got {_describe(value)}"
        if isinstance(value, str) and kind in ("int_type", "float_type", "bool_type"):
            hint = "remove the quotes around the value"
        elif isinstance(value, list) and kind in ("dict_type", "model_type"):
            hint = f"write the keys under `{field}:` as `key: value` lines, without a `-` in front"
        return locate(SpecError(message, path, hint=hint), loaded.values, loaded.keys, display)
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if kind in _BOUNDS:
        message = f"must be {_BOUNDS[kind]} {_number(next(iter(ctx.values())))}; got {_describe(value)}"
    elif kind == "string_pattern_mismatch":
        message = f"{_describe(value)} is not a valid `{field}` (expected the pattern {ctx.get('pattern')})"
        hint = _PATTERN_HINTS.get(field)
    elif kind == "value_error" and isinstance(value_at(data, path), dict):
        # A check over several keys of one mapping: point at the last named key that is present.
        named = [k for k in re.findall(r"`([A-Za-z_]+)`", message) if k in value_at(data, path)]
        if named:
            path = path + (named[-1],)
        message = message[0].lower() + message[1:] if message else message
    else:
        message = message[0].lower() + message[1:] if message else message
        if value is not None and not isinstance(value, (dict, list)) and kind not in ("value_error",):
            message += f"; got {_describe(value)}"
    return locate(SpecError(message, path, hint=hint), loaded.values, loaded.keys, display)
