"""A spec file and the base specs it `extends:`, merged into one mapping that keeps every value's position."""
import difflib
import os
from pathlib import Path
from typing import List, Optional

from ..schema.common import DISCRIMINATORS
from ..schema.contract import data_source_kind, is_relative_path, model_source_kind
from .errors import SpecError, SpecPath, locate
from .files import regular_file_size
from .loader import LoadedYaml, load_yaml_file, load_yaml_text, value_at

MAX_EXTENDS_DEPTH = 8
BASE_SPEC_SUFFIXES = (".yaml", ".yml")
# Fields holding a path relative to the file that writes them, and which of their values are such a
# path (the rest are hub ids, URIs or absolute paths, the same from every folder).
RELATIVE_PATH_FIELDS = {
    ("data", "train", "path"): lambda v: data_source_kind(v) == "local" and is_relative_path(v),
    ("data", "eval", "path"): lambda v: data_source_kind(v) == "local" and is_relative_path(v),
    ("model", "source"): lambda v: model_source_kind(v) in ("local", "gguf") and is_relative_path(v),
    ("model", "architecture"): lambda v: v.startswith(".") or (v.endswith(".json") and is_relative_path(v)),
}


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


def load_with_extends(path: Path, display: str, chain: List[Path], text: Optional[str] = None,
                      extended_by: Optional[LoadedYaml] = None) -> LoadedYaml:
    """The spec at `path` (or `text`, its content) with its base specs merged under it; `chain`: files read so far."""
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
    base = load_with_extends(base_path, base_display, chain + [base_path], extended_by=loaded)
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
        parent = value_at(base_data, field[:-1])
        value = parent.get(field[-1]) if isinstance(parent, dict) else None
        if isinstance(value, str) and value and is_relative(value):
            parent[field[-1]] = Path(os.path.relpath(base_dir / value, child_dir)).as_posix()
    return base_data


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a single text value"}.get(type(value), "a single value")
