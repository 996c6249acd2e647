"""Where the data is and how much of it there is, without importing a data library.

Local paths are resolved against the spec's folder and written relative to the current directory,
so a plan made from the repository root is the same on every machine. Row and token counts of local
text files feed the time estimate; tokens are approximated from characters (no tokenizer at plan
time), which is what `tokens_per_example` in the spec overrides.
"""
import difflib
import os
from pathlib import Path
from typing import Optional

from ..schema import package_files
from ..schema.contract import data_source_kind
from ..schema.data_files import FORMATS_BY_SUFFIX, DataError, chat_messages, iter_rows, template_fields
from ..schema.data import DataSource, DataSpec
from . import templates
from .errors import SpecError
from .files import regular_file_size

CHARS_PER_TOKEN = 3.8  # English text under BPE vocabularies of 32k-128k entries
# Plan time reads a local data file whole for its row count (about 50 MB/s); a larger file is read
# for its first rows only, and the row count is left to `data.num_examples`.
MAX_SCAN_BYTES = 64 << 20
SAMPLE_ROWS = 1000


def package_file(uri: str, field_path: tuple = ()) -> Path:
    """`pkg://DISTRIBUTION/PATH` → the installed file, or a SpecError at `field_path`."""
    try:
        return package_files.package_file(uri)
    except package_files.PackageFileError as error:
        raise SpecError(str(error), field_path, hint="install the package, or point to the file directly") from None


def resolve_path(path: str, base_dir: Path, cwd: Path) -> str:
    if data_source_kind(path) != "local":
        return path
    resolved = (base_dir / path).resolve()
    try:
        return resolved.relative_to(cwd.resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def file_format(source: DataSource, field_path: tuple) -> Optional[str]:
    if source.format:
        return source.format
    if data_source_kind(source.path) == "hub":
        return None
    suffix = Path(source.path.split("?")[0]).suffix.lower()
    if suffix not in FORMATS_BY_SUFFIX:
        raise SpecError(
            f"cannot tell the format of {source.path!r} from its extension",
            field_path + ("path",),
            hint="set `format:` to one of json, jsonl, csv, tsv, parquet",
        )
    return FORMATS_BY_SUFFIX[suffix]


def text_of_row(row: dict, data: DataSpec, file: str, where: str) -> str:
    """The row's text as the format builds it (checked placeholders only: see validate_templates)."""
    fmt = data.format
    if fmt.type == "template":
        return fmt.prompt.format(**row) + fmt.completion.format(**row)
    if fmt.type == "instruction":
        return " ".join(str(row.get(c) or "") for c in (fmt.instruction, fmt.context, fmt.response) if c)
    if fmt.type == "chat":
        return " ".join(m["content"] for m in chat_messages(row, fmt.messages, file, where))
    return str(row.get(fmt.column) or "")


def columns_needed(data: DataSpec) -> list:
    fmt = data.format
    if fmt.type == "template":
        return sorted(set(template_fields(fmt.prompt) + template_fields(fmt.completion)))
    if fmt.type == "instruction":
        return [c for c in (fmt.instruction, fmt.response) if c]
    if fmt.type == "chat":
        return [fmt.messages]
    return [fmt.column]


def _format_key_naming(data: DataSpec, column: str) -> str:
    """The key of `data.format` whose value names (or, for templates, holds a placeholder of) `column`."""
    fmt = data.format
    for key, value in fmt.model_dump().items():
        if key == "type" or not isinstance(value, str):
            continue
        if value == column or (fmt.type == "template" and column in template_fields(value)):
            return key
    return "type"


def _check_columns(row: dict, needed: list, data: DataSpec, name: str, where: str) -> None:
    missing = [c for c in needed if c not in row]
    if not missing:
        return
    close = difflib.get_close_matches(missing[0], [str(c) for c in row], n=1, cutoff=0.6)
    raise SpecError(
        f"{name} has no column {', '.join(repr(m) for m in missing)} "
        f"(it has: {', '.join(map(str, row))}) at {where}",
        ("data", "format", _format_key_naming(data, missing[0])),
        hint=f"did you mean `{close[0]}`?" if close else "name the file's columns in the format, or fix the file",
    )


def local_stats(path: Path, fmt: str, data: DataSpec, limit: Optional[int], field_path: tuple) -> dict:
    """Rows and characters per row (mean, shortest) of a local file; checks every row has the
    columns the format uses, in the shape it needs."""
    whole = regular_file_size(path, field_path + ("path",), f"`{path}`") <= MAX_SCAN_BYTES
    if fmt == "parquet":
        return {"rows": None, "mean_chars": None, "min_chars": None}
    needed = columns_needed(data)
    rows = 0
    chars = 0
    shortest = None
    try:
        for where, row in iter_rows(path, fmt, path.name):
            _check_columns(row, needed, data, path.name, where)
            length = len(text_of_row(row, data, path.name, where))
            chars += length
            shortest = length if shortest is None else min(shortest, length)
            rows += 1
            if (limit and rows >= limit) or (not whole and rows >= SAMPLE_ROWS):
                break
    except DataError as error:
        raise SpecError(str(error), field_path + ("path",)) from None
    except UnicodeDecodeError as error:
        raise SpecError(f"{path.name} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
                        f"{error.start} of a block)", field_path + ("path",), hint="save the file as UTF-8") from None
    if rows == 0:
        raise SpecError(f"{path.name} has no rows", field_path + ("path",),
                        hint="point to a file with training examples (a header alone is no example)")
    return {"rows": rows if whole or (limit and rows >= limit) else None,
            "mean_chars": round(chars / rows, 1), "min_chars": shortest}


def describe_source(source: DataSource, field_path: tuple, data: DataSpec, base_dir: Path, cwd: Path) -> dict:
    fmt = file_format(source, field_path)
    kind = data_source_kind(source.path)
    if source.config is not None and kind != "hub":
        raise SpecError(f"`config` names a configuration of a hub dataset; {source.path} is a file",
                        field_path + ("config",), hint="remove `config`, or load the dataset as `hub:NAME`")
    described = {
        "path": resolve_path(source.path, base_dir, cwd),
        "kind": kind,
        "format": fmt,
        "config": source.config,
        "split": source.split,
        "limit": source.limit,
    }
    if kind in ("local", "package"):
        local = package_file(source.path, field_path + ("path",)) if kind == "package" else base_dir / source.path
        if not local.exists():
            raise SpecError(f"no such file: {source.path}", field_path + ("path",),
                            hint=f"the path is relative to the spec's folder ({os.path.relpath(base_dir, cwd)})")
        described["stats"] = local_stats(local, fmt, data, source.limit, field_path)
    return described


def validate_templates(data: DataSpec) -> None:
    if data.format.type != "template":
        return
    for key in ("prompt", "completion"):
        templates.placeholders(getattr(data.format, key), ("data", "format", key))


def tokens_per_example(data: DataSpec, train: dict) -> Optional[float]:
    if data.tokens_per_example:
        return float(data.tokens_per_example)
    stats = train.get("stats") or {}
    if stats.get("mean_chars"):
        return round(stats["mean_chars"] / CHARS_PER_TOKEN, 1)
    return None
