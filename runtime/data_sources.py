"""Where the plan's data rows come from at run time, for every backend that runs the trainer:

  local file, `pkg://`   read where it is
  `s3://bucket/key`     downloaded once (per ETag) into tunespec's cache
  `hub:NAME`            datasets.load_dataset(NAME, config, split=...): Arrow files, memory-mapped; with the
                        plan's model offline (HF_DATASETS_OFFLINE) only the local Hugging Face cache

Rows come one at a time (`iter_source_rows`), so no source is held in memory whole.
"""
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Optional

from ..schema.data_files import FORMATS_BY_SUFFIX, DataError, Row, iter_rows
from ..schema.package_files import PackageFileError, is_package_uri, package_file

S3_PREFIX, HUB_PREFIX = "s3://", "hub:"


def _s3_parts(uri: str) -> tuple:
    bucket, _, key = uri[len(S3_PREFIX):].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise DataError(uri, None, "an s3:// data source names one object (s3://bucket/key.jsonl), not a prefix")
    return bucket, key


def s3_object(uri: str, cache: Path) -> Path:
    """The object's local copy in `cache`, downloaded once per version (its ETag names the folder)."""
    bucket, key = _s3_parts(uri)
    import boto3  # only for data kept in S3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("s3")
    try:
        etag = client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        target = cache / "s3" / bucket / etag / key
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        client.download_file(bucket, key, str(partial))
    except (ClientError, BotoCoreError) as error:
        raise DataError(uri, None, f"cannot download it: {error}") from None
    os.replace(partial, target)  # complete or absent, also when several ranks download at once
    return target


def local_path(path: str, cache: Path) -> Path:
    """A plan data path as a local file (`pkg://` located in its package, `s3://` downloaded)."""
    if path.startswith(S3_PREFIX):
        return s3_object(path, cache)
    if is_package_uri(path):
        try:
            return package_file(path)
        except PackageFileError as error:
            raise DataError(path, None, str(error)) from None
    local = Path(path).expanduser()
    if not local.is_file():
        raise DataError(path, None, "no such file")
    return local


def file_format(source: dict, path: Path) -> str:
    fmt = source.get("format") or FORMATS_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise DataError(source["path"], None, "cannot tell the file format from its extension; set `format`")
    return fmt


def _hub_rows(source: dict) -> Iterator[Row]:
    from datasets import load_dataset
    from datasets.exceptions import DatasetNotFoundError

    name, config, split = source["path"][len(HUB_PREFIX):], source.get("config"), source.get("split") or "train"
    try:
        dataset = load_dataset(name, config, split=split)
    except (DatasetNotFoundError, ConnectionError, FileNotFoundError, ValueError) as error:
        offline = " (offline: only the local Hugging Face cache is read)" if os.environ.get("HF_DATASETS_OFFLINE") == "1" else ""
        which = f"configuration {config!r}, split {split!r}" if config else f"split {split!r}"
        raise DataError(source["path"], None, f"cannot load {which}{offline}: {error}") from None
    for index, row in enumerate(dataset):
        yield f"row {index + 1}", row


def iter_source_rows(source: dict, cache: Path) -> Iterator[Row]:
    """The source's rows (up to its `limit`), one at a time, each with where it is in the source."""
    if source["path"].startswith(HUB_PREFIX):
        rows = _hub_rows(source)
    else:
        path = local_path(source["path"], cache)
        rows = iter_rows(path, file_format(source, path), source["path"])
    limit, count = source.get("limit"), 0
    for row in rows:
        yield row
        count += 1
        if limit and count >= limit:
            break
    if count == 0:
        raise DataError(source["path"], None, "no rows")


def signature(source: dict, cache: Path) -> str:
    """What identifies the source's content: a local file's size and time, an S3 key, a hub dataset name."""
    path = source["path"]
    if path.startswith((S3_PREFIX, HUB_PREFIX)):
        return json.dumps(source, sort_keys=True)
    local = local_path(path, cache)
    stat = local.stat()
    return json.dumps(dict(source, file=str(local.resolve()), size=stat.st_size, mtime=stat.st_mtime_ns), sort_keys=True)


def fingerprint(*parts: Optional[str]) -> str:
    return hashlib.sha256("\n".join(part or "" for part in parts).encode()).hexdigest()[:32]
