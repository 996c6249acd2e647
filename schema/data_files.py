"""Rows of a data file (csv, tsv, json, jsonl, parquet) with where each is in the file.

Light (standard library; pyarrow only for parquet): the compiler reads local data at plan time for
row counts and column checks, and the trainer reads it to train, through the same reader.
"""
import csv
import json
import string
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

FORMATS_BY_SUFFIX = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
# UTF-8 with or without a byte-order mark: Excel's "CSV UTF-8" writes one.
ENCODING = "utf-8-sig"
CHAT_ROLES = {"system", "user", "assistant", "tool"}


class DataError(ValueError):
    """A data problem: which file, where in it ("line 12", "record 3"), what is wrong."""

    def __init__(self, file: str, where: Optional[str], message: str):
        self.file, self.where, self.message = file, where, message
        super().__init__(f"{file}: {where}: {message}" if where else f"{file}: {message}")


Row = Tuple[str, dict]  # (where in the file, the row's columns)


def _csv_rows(path: Path, name: str, delimiter: str) -> Iterator[Row]:
    with path.open(newline="", encoding=ENCODING) as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        if reader.fieldnames is None:  # reads the header, so line_num counts from the first row
            raise DataError(name, None, "empty file (no header)")
        start = reader.line_num + 1
        try:
            for row in reader:
                where = f"line {start}"
                if None in row:
                    raise DataError(name, where, f"{len(reader.fieldnames) + len(row[None])} fields, "
                                                 f"the header has {len(reader.fieldnames)}")
                if any(value is None for value in row.values()):
                    raise DataError(name, where, f"fewer fields than the header's {len(reader.fieldnames)}")
                yield where, row
                start = reader.line_num + 1
        except csv.Error as error:
            raise DataError(name, f"line {start}", f"not valid {'TSV' if delimiter == chr(9) else 'CSV'}: {error}") \
                from None


def json_object(name: str, where: str, text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(name, where, f"not valid JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(value, dict):
        raise DataError(name, where, f"expected a JSON object, got {type(value).__name__}")
    return value


def _json_rows(path: Path, name: str) -> Iterator[Row]:
    text = path.read_text(encoding=ENCODING)
    if not text.lstrip().startswith("["):
        # `datasets.Dataset.to_json` (as in the seed recipes) writes JSON lines into a .json file.
        yield from _jsonl_rows(text, name)
        return
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(name, f"line {error.lineno}", f"not valid JSON: {error.msg}") from None
    for index, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise DataError(name, f"record {index}", f"expected a JSON object, got {type(record).__name__}")
        yield f"record {index}", record


def _jsonl_rows(text: str, name: str) -> Iterator[Row]:
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield f"line {number}", json_object(name, f"line {number}", line)


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    for index, record in enumerate(pq.read_table(path).to_pylist(), 1):
        yield f"row {index}", record


def iter_rows(path: Path, fmt: str, name: str) -> Iterator[Row]:
    """The rows of a local file in the given format; `name` is how errors name the file."""
    if fmt in ("csv", "tsv"):
        return _csv_rows(path, name, "\t" if fmt == "tsv" else ",")
    if fmt == "jsonl":
        return _jsonl_rows(path.read_text(encoding=ENCODING), name)
    if fmt == "json":
        return _json_rows(path, name)
    return _parquet_rows(path)


def chat_messages(row: dict, column: str, file: str, where: str) -> list:
    """The row's conversation: a non-empty list of {role, content} ending with the assistant's turn."""
    if column not in row:
        raise DataError(file, where, f"no column {column!r} (columns: {', '.join(map(str, row))})")
    messages = row[column]
    if isinstance(messages, str):  # CSV cells hold the list as JSON text
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError as error:
            raise DataError(file, where, f"column {column!r} is not a JSON list: {error.msg}") from None
    if not isinstance(messages, list) or not messages:
        raise DataError(file, where, f"column {column!r} must be a non-empty list of messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES \
                or not isinstance(message.get("content"), str):
            raise DataError(file, where, f"message {index} must be {{role: {'|'.join(sorted(CHAT_ROLES))}, "
                                         f"content: text}}, got {_shape(message)}")
    if messages[-1]["role"] != "assistant":
        raise DataError(file, where, "the last message must be the assistant's (the part the model learns)")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _shape(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping with keys " + ", ".join(repr(str(k))[:30] for k in list(value)[:6])
    return f"{type(value).__name__} {json.dumps(value, default=str)[:40]}"


def template_fields(template: str) -> List[str]:
    """Column names a format string uses (`{ref}`, `{row[x]}` → ref, row)."""
    names = []
    for _, field, _, _ in string.Formatter().parse(template):
        if field:
            root = field.split(".", 1)[0].split("[", 1)[0]
            if root not in names:
                names.append(root)
    return names
