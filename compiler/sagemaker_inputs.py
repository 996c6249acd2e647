"""A SageMaker job's inputs: S3 channels, and the local files apply uploads under content-addressed keys."""
from pathlib import Path
from typing import List, Tuple

from ..schema.contract import CHANNEL_ROOT, PACKAGE_SCHEME, file_sha256
from . import data_sources
from .errors import SpecError


def _local_file(path: str, field: tuple) -> Path:
    local = data_sources.package_file(path, field) if path.startswith(PACKAGE_SCHEME) else Path(path)
    if not local.is_file():
        raise SpecError(f"{path} is not a file: SageMaker jobs get local inputs uploaded file by file", field,
                        hint="upload a folder to S3 yourself and give its `s3://` prefix")
    return local


def channels(plan: dict, backend: dict, output_s3: str) -> Tuple[List[dict], List[dict]]:
    """Input channels (with where each lands in the container) and the local files apply uploads."""
    prefix = (backend.get("data_s3") or f"{output_s3}/tunespec-inputs").rstrip("/")
    inputs = []  # (channel name, plan field, source, kind)
    for split in ("train", "eval"):
        source = plan["data"].get(split)
        if source and source["kind"] != "hub":
            inputs.append((split, ["data", split, "path"], source["path"], source["kind"]))
    model = plan["model"]
    if model["source_kind"] != "hub":
        inputs.append(("model", ["model", "source"], model["source"], model["source_kind"]))
    found, uploads = [], []
    for name, field, source, kind in inputs:
        spec_field = tuple(field[:-1]) + ("path",) if field[0] == "data" else ("model", "source")
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
