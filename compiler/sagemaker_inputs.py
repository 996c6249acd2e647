"""A SageMaker job's inputs: S3 channels, and the local files apply uploads under content-addressed keys."""
from functools import partial
from pathlib import Path
from typing import List, Tuple

from ..schema.contract import CHANNEL_ROOT, PACKAGE_SCHEME, file_sha256
from . import data_sources
from .errors import SpecError, all_of


def _local_file(path: str, field: tuple) -> Path:
    local = data_sources.package_file(path, field) if path.startswith(PACKAGE_SCHEME) else Path(path)
    if not local.is_file():
        raise SpecError(f"{path} is not a file: SageMaker jobs get local inputs uploaded file by file", field,
                        hint="upload a folder to S3 yourself and give its `s3://` prefix")
    return local


def _inputs(plan: dict) -> List[Tuple[str, list, tuple, str, str]]:
    """(channel name, plan field, spec field, source, kind) of each input the job does not fetch from the hub."""
    inputs = []
    for split in ("train", "eval"):
        source = plan["data"].get(split)
        if source and source["kind"] != "hub":
            inputs.append((split, ["data", split, "path"], ("data", split, "path"), source["path"], source["kind"]))
    model = plan["model"]
    if model["source_kind"] != "hub":
        inputs.append(("model", ["model", "source"], ("model", "source"), model["source"], model["source_kind"]))
    return inputs


def refuse_local_folders(plan: dict, backend: dict) -> None:
    """Every local input must be a file (compiler/checks.py runs this with the other checks)."""
    all_of(*(partial(_local_file, source, field) for _, _, field, source, kind in _inputs(plan) if kind != "s3"))


def channels(plan: dict, backend: dict, output_s3: str) -> Tuple[List[dict], List[dict]]:
    """Input channels (with where each lands in the container) and the local files apply uploads."""
    prefix = (backend.get("data_s3") or f"{output_s3}/tunespec-inputs").rstrip("/")
    found, uploads = [], []
    for name, field, spec_field, source, kind in _inputs(plan):
        if kind == "s3":
            s3_uri = source
        else:
            local = _local_file(source, spec_field)
            digest = file_sha256(local)
            s3_uri = f"{prefix}/sha256/{digest}/{local.name}"
            uploads.append({"source": source, "s3_uri": s3_uri, "sha256": digest, "size": local.stat().st_size,
                            "channel": name})
        basename = s3_uri.rstrip("/").rsplit("/", 1)[-1]
        is_folder = s3_uri.endswith("/") or (name == "model" and "." not in basename)
        container_path = f"{CHANNEL_ROOT}/{name}" + ("" if is_folder else f"/{basename}")
        found.append({"name": name, "plan_field": field, "s3_uri": s3_uri, "container_path": container_path})
    return found, uploads
