"""Spec file → validated `Spec`: `extends:` merging, inline-secret refusal, schema errors with positions."""
import difflib
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from pydantic import BaseModel, ValidationError

from ..schema import Spec
from ..schema.contract import data_source_kind, is_relative_path, model_source_kind
from . import secret_scan
from .errors import SpecError, SpecPath, same_field
from .files import regular_file_size
from .loader import MAX_EXTENDS_DEPTH, LoadedYaml, Position, load_yaml_file, load_yaml_text

# Keys whose value selects the shape of the rest of the mapping: a child spec that changes one
# replaces the inherited mapping instead of merging into it.
DISCRIMINATORS = ("type", "strategy")
BASE_SPEC_SUFFIXES = (".yaml", ".yml")
# Fields holding a path relative to the file that writes them, and which of their values are such a
# path (the rest are hub ids, URIs or absolute paths, the same from every folder).
RELATIVE_PATH_FIELDS = {
    ("data", "train", "path"): lambda v: data_source_kind(v) == "local" and is_relative_path(v),
    ("data", "eval", "path"): lambda v: data_source_kind(v) == "local" and is_relative_path(v),
    ("model", "source"): lambda v: model_source_kind(v) in ("local", "gguf") and is_relative_path(v),
    ("model", "architecture"): lambda v: v.startswith(".") or (v.endswith(".json") and is_relative_path(v)),
}

SECRET_REF_KEYS = ("env", "secrets_manager_arn")  # the keys of a reference, not a secret
# Fields that take a secret reference, and the environment variable the hint suggests.
SECRET_REF_FIELDS = {("tracking", "wandb", "api_key"): "WANDB_API_KEY", ("secrets", "hf_token"): "HF_TOKEN"}
# Mappings a backend passes on as they are: random text there is refused as a likely secret.
PASSED_ON = (("backend", "environment"), ("backend", "tags"))


@dataclass
class LoadedSpec:
    spec: Spec
    data: dict
    file: str
    path: Path
    positions: Dict[SpecPath, Position]
    key_positions: Dict[SpecPath, Position]

    def locate(self, error: SpecError) -> SpecError:
        """Fill in file:line:column for an error raised after validation."""
        return locate(error, self.positions, self.key_positions, self.file)


def locate(error: SpecError, values: dict, keys: dict, default_file: str) -> SpecError:
    for other in error.others:
        locate(other, values, keys, default_file)
    if error.line is not None:
        return error
    path = tuple(error.path)
    while path and path not in values:
        path = path[:-1]
    file, line, column = values.get(path, (default_file, None, None))
    error.file = error.file or file
    error.line, error.column = line, column
    return error


def _merge(base: object, child: object, base_pos: dict, child_pos: dict, path: SpecPath, out_pos: dict) -> object:
    """Mappings merge key by key (child wins); lists and scalars replace; `null` removes a key."""
    if isinstance(base, dict) and isinstance(child, dict):
        if any(k in base and k in child and base[k] != child[k] for k in DISCRIMINATORS):
            _copy_positions(child_pos, path, out_pos)
            return child
        merged = {}
        for key in list(base) + [k for k in child if k not in base]:
            if key in child:
                if child[key] is None:
                    if key not in base:
                        close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1, cutoff=0.6)
                        raise SpecError(f"`{key}: null` removes nothing: the base spec has no `{key}` here",
                                        path + (key,), hint=f"did you mean `{close[0]}`?" if close else
                                        "`null` removes an inherited key; check the spelling against the base")
                    continue
                if key in base:
                    merged[key] = _merge(base[key], child[key], base_pos, child_pos, path + (key,), out_pos)
                else:
                    merged[key] = child[key]
                    _copy_positions(child_pos, path + (key,), out_pos)
            else:
                merged[key] = base[key]
                _copy_positions(base_pos, path + (key,), out_pos)
        out_pos[path] = child_pos.get(path, base_pos.get(path))
        return merged
    _copy_positions(child_pos, path, out_pos)
    return child


def _copy_positions(source: dict, prefix: SpecPath, out: dict) -> None:
    n = len(prefix)
    for p, pos in source.items():
        if p[:n] == prefix:
            out[p] = pos


def _load_with_extends(path: Path, display: str, chain: List[Path], text: Optional[str] = None,
                       extended_by: Optional[LoadedYaml] = None) -> LoadedYaml:
    loaded = load_yaml_text(text, display) if text is not None else load_yaml_file(path, display)
    if not isinstance(loaded.data, dict) and extended_by is not None:
        raise locate(SpecError(f"`extends` names a file that is not a spec: it holds {_kind(loaded.data)}, not a "
                               "mapping of keys to values", ("extends",), hint="name a tunespec spec (.yaml)"),
                     extended_by.values, extended_by.keys, extended_by.file)
    if not isinstance(loaded.data, dict):
        _, line, column = loaded.values.get((), (display, 1, 1))
        # Named by kind only: the file may be anything (`extends: ../.env`), its text is not repeated.
        raise SpecError(f"a spec must be a mapping of keys to values; this file holds {_kind(loaded.data)}", (),
                        hint="start from one of the examples in specs/", file=display, line=line, column=column)
    parent = loaded.data.get("extends")
    if parent is None:
        return loaded
    if not isinstance(parent, str):
        raise locate(SpecError("`extends` must be a path to a base spec", ("extends",)), loaded.values, loaded.keys, display)
    base_path = (path.parent / parent).resolve()
    if base_path in chain:
        cycle = " → ".join(p.name for p in chain[chain.index(base_path):] + [base_path])
        raise locate(SpecError(f"`extends` forms a cycle: {cycle}", ("extends",),
                               hint="a spec cannot extend itself, or a spec that extends it"),
                     loaded.values, loaded.keys, display)
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise locate(SpecError(f"`extends` chain is deeper than {MAX_EXTENDS_DEPTH} files", ("extends",)),
                     loaded.values, loaded.keys, display)
    if base_path.suffix.lower() not in BASE_SPEC_SUFFIXES:
        # Never read what is not a spec: its content could end up in an error message.
        raise locate(SpecError("`extends` names a base spec, a .yaml or .yml file", ("extends",),
                               hint="write the path of a tunespec spec, relative to this file"),
                     loaded.values, loaded.keys, display)
    if not base_path.exists():
        raise locate(SpecError(f"base spec not found: {parent}", ("extends",),
                               hint="the path is relative to the file that names it"),
                     loaded.values, loaded.keys, display)
    try:
        regular_file_size(base_path, ("extends",), f"base spec `{parent}`")
    except SpecError as error:
        raise locate(error, loaded.values, loaded.keys, display) from None
    base_display = str(Path(display).parent / parent)
    base = _load_with_extends(base_path, base_display, chain + [base_path], extended_by=loaded)
    values: dict = {}
    child_data = {k: v for k, v in loaded.data.items() if k != "extends"}
    base_data = _rebase_paths({k: v for k, v in base.data.items() if k != "extends"},
                              base_path.parent, path.parent.resolve())
    try:
        data = _merge(base_data, child_data, base.values, loaded.values, (), values)
    except SpecError as error:
        raise locate(error, loaded.values, loaded.keys, display) from None
    keys = dict(base.keys)
    keys.update(loaded.keys)
    return LoadedYaml(data=data, file=display, values=values, keys=keys)


def _rebase_paths(base_data: dict, base_dir: Path, child_dir: Path) -> dict:
    """A base spec's relative paths, rewritten relative to the extending spec's folder: a path means
    what the file that wrote it meant, wherever that file is extended from."""
    if base_dir == child_dir:
        return base_data
    for field, is_relative in RELATIVE_PATH_FIELDS.items():
        parent = _value_at(base_data, field[:-1])
        value = parent.get(field[-1]) if isinstance(parent, dict) else None
        if isinstance(value, str) and value and is_relative(value):
            parent[field[-1]] = Path(os.path.relpath(base_dir / value, child_dir)).as_posix()
    return base_data


def _scan_inline_secrets(data: dict, loaded: LoadedYaml) -> None:
    """Refuse secrets written into the spec: a plan, a log or a hyperparameter would carry them.

    The message never holds the secret: a secret used as a key is reported at its mapping, with the
    key's position."""
    findings = secret_scan.scan(data, (), PASSED_ON, SECRET_REF_KEYS)
    finding = next(iter(findings), None)
    if finding is None:
        return
    if finding.key is not None:
        error = SpecError(f"a key here is what looks like {finding.what}", finding.path,
                          hint="never write secrets into a spec, not even as a name: reference them under "
                               "`secrets:` (environment variable or Secrets Manager ARN)")
        error.file, error.line, error.column = loaded.keys.get(finding.path + (finding.key,), (None, None, None))
        raise error
    key = finding.path[-1] if finding.path else None
    variable = SECRET_REF_FIELDS.get(finding.path)
    if finding.by_name:
        hint = (f"give a reference instead: `{key}: {{env: {variable}}}` or "
                f"`{key}: {{secrets_manager_arn: arn:aws:secretsmanager:...}}`; the value is read at run time"
                if variable else
                "secrets are given by reference: `secrets: {hf_token: {env: HF_TOKEN}}` or "
                "`{secrets_manager_arn: arn:aws:secretsmanager:...}`; the value is read at run time")
        raise SpecError(f"`{key}` looks like {finding.what}", finding.path, hint=hint)
    raise SpecError(f"this value contains what looks like {finding.what}", finding.path,
                    hint="never write secrets into a spec: reference them under `secrets:` "
                         "(environment variable or Secrets Manager ARN)")


def load_spec(path: Path, display: Optional[str] = None, text: Optional[str] = None) -> LoadedSpec:
    """Load, merge and validate a spec. `text` replaces the file's content (a spec from a git ref);
    relative paths in it still resolve against `path`'s folder."""
    display = display or str(path)
    loaded = _load_with_extends(path, display, [path.resolve()], text)
    data = loaded.data
    try:
        _scan_inline_secrets(data, loaded)
        if "apiVersion" not in data:
            raise SpecError("missing `apiVersion`", ("apiVersion",), hint="start the spec with `apiVersion: tunespec/v1`")
        if data["apiVersion"] != "tunespec/v1":
            raise SpecError(f"unsupported apiVersion {data['apiVersion']!r}", ("apiVersion",),
                            hint="this tunespec reads `apiVersion: tunespec/v1`")
        spec = Spec.model_validate(data)
    except SpecError as error:
        raise locate(error, loaded.values, loaded.keys, display) from None
    except ValidationError as exc:
        raise _from_validation_error(exc, data, loaded, display) from None
    return LoadedSpec(spec=spec, data=data, file=display, path=path, positions=loaded.values, key_positions=loaded.keys)


# --- pydantic errors → one SpecError -------------------------------------------------------------

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


def _model_at(loc: tuple, data: object) -> Optional[type]:
    """The pydantic model class that validates the mapping at `loc` (for the list of allowed keys)."""
    return _models_at(loc, data)[0]


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


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a single text value"}.get(type(value), "a single value")


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


def _value_at(data: object, path: SpecPath) -> object:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


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


def _from_validation_error(exc: ValidationError, data: dict, loaded: LoadedYaml, display: str) -> SpecError:
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
    elif kind == "value_error" and isinstance(_value_at(data, path), dict):
        # A check over several keys of one mapping: point at the last named key that is present.
        named = [k for k in re.findall(r"`([A-Za-z_]+)`", message) if k in _value_at(data, path)]
        if named:
            path = path + (named[-1],)
        message = message[0].lower() + message[1:] if message else message
    else:
        message = message[0].lower() + message[1:] if message else message
        if value is not None and not isinstance(value, (dict, list)) and kind not in ("value_error",):
            message += f"; got {_describe(value)}"
    return locate(SpecError(message, path, hint=hint), loaded.values, loaded.keys, display)
