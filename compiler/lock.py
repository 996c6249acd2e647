"""`tunespec.lock`: what a plan took from outside its spec, pinned by content, and the check against it.

One lock file per spec folder, one entry per spec file in it (a plan folder holds its own copy, keyed
by `plan.json`). An entry pins the model (requested revision, the commit it resolved to, the config),
the data files (sha256), the training image (with its digest where the reference carries one),
tunespec's version and the trainer's package versions where the plan runs.

Checking never goes to the network: what cannot be known here (remote data, a hub revision not in the
local Hugging Face cache, an image named by tag, packages installed elsewhere) is reported as not
verified, never as drift.
"""
import json
import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .data_sources import package_file
from ..schema.contract import canonical_json, digest, file_sha256

LOCK_FILE = "tunespec.lock"
LOCK_FORMAT = "tunespec-lock/v1"
# What the trainer imports on the machine that runs a local plan (the `train` and `gpu` extras).
TRAINER_PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes",
                    "liger-kernel")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
HASH = re.compile(r"^([0-9a-f]{40}|[0-9a-f]{64})$")  # a commit or a sha256: shown by its first 12 characters
# Informational fields: where a file was found differs between machines; its content is what counts.
NOT_COMPARED = ("path",)
# Why a value cannot be known here, by the first part of its key that has a reason.
UNKNOWN_REASONS = {
    "model.commit": "the revision is not a commit and is not in the local Hugging Face cache",
    "model.config_sha256": "the model's config.json is not in the local Hugging Face cache",
    "model.files_sha256": "the model's files are not on this machine",
    "data": "remote data (s3://, hub:) is not read at plan time",
    "image.digest": "the image is named by tag; its digest is only known to the registry",
    "packages.trainer": "not installed where this check runs",
}


class LockDrift(Exception):
    """A lock that no longer matches what the plan resolves (exit code 4)."""


@dataclass
class LockCheck:
    drift: List[Tuple[str, object, object]] = field(default_factory=list)  # (key, locked, now)
    unverified: List[Tuple[str, str]] = field(default_factory=list)  # (key, why)
    verified: List[str] = field(default_factory=list)
    missing: Optional[str] = None  # no entry to check against, and why

    def drift_lines(self) -> List[str]:
        return [f"{key}: locked {_short(locked)}, now {_short(now)}" for key, locked, now in self.drift]

    def unverified_lines(self) -> List[str]:
        return [f"{key}: {why}" for key, why in self.unverified]


def _short(value: object) -> str:
    if value is None:
        return "nothing"
    text = str(value)
    return text[:12] if HASH.match(text) else text


# ---- resolving ------------------------------------------------------------------------------------

def resolve(plan: dict, cwd: Path, lock_dir: Path) -> dict:
    """The lock entry of a plan made in `cwd` (its local paths are relative to it), for a lock in `lock_dir`."""
    data = {split: _data_entry(plan["data"][split], cwd, lock_dir)
            for split in ("train", "eval") if plan["data"].get(split)}
    entry = {"model": _model_entry(plan["model"], cwd, lock_dir), "data": data,
             "packages": {"tunespec": plan["tunespec_version"], "trainer": _trainer_packages(plan)}}
    image = _image_entry(plan)
    if image is not None:
        entry["image"] = image
    return entry


def _relative(path: Path, lock_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), lock_dir.resolve())).as_posix()


def hub_cache() -> Path:
    """Where huggingface_hub keeps downloads (its own environment variables, in its order)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface" / "hub"


def _model_entry(model: dict, cwd: Path, lock_dir: Path) -> dict:
    """Only what applies to the model's kind of source; None where it applies but is not known here."""
    entry = {"source": model["source"], "architecture_sha256": digest(model["architecture"])}
    kind = model["source_kind"]
    if kind == "hub":
        repo = model["source"][len("hub:"):] if model["source"].startswith("hub:") else model["source"]
        revision = model["revision"] or "main"
        cached = hub_cache() / f"models--{repo.replace('/', '--')}"
        ref = cached / "refs" / revision
        commit = revision if COMMIT.match(revision) else (ref.read_text().strip() if ref.is_file() else None)
        config = cached / "snapshots" / commit / "config.json" if commit else None
        entry.update(revision=revision, commit=commit,
                     config_sha256=file_sha256(config) if config is not None and config.is_file() else None)
    elif kind == "package":
        entry["file_sha256"] = file_sha256(package_file(model["source"], ("model", "source")))
    elif kind in ("local", "gguf"):
        local = cwd / model["source"]
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
        entry.update(source="local", path=_relative(local, lock_dir),
                     files_sha256=digest({p.relative_to(local).as_posix() if local.is_dir() else p.name: file_sha256(p)
                                          for p in files if p.is_file()}) if local.exists() else None)
    else:
        entry["files_sha256"] = None  # on S3: not read at plan time
    return entry


def _data_entry(source: dict, cwd: Path, lock_dir: Path) -> dict:
    entry = {"path": source["path"], "kind": source["kind"], "sha256": None, "size": None}
    if source["kind"] == "local":
        local = cwd / source["path"]
        entry["path"] = _relative(local, lock_dir)
    elif source["kind"] == "package":
        local = package_file(source["path"])
    else:
        return entry
    if local.is_file():
        entry["sha256"], entry["size"] = file_sha256(local), local.stat().st_size
    return entry


def _image_entry(plan: dict) -> Optional[dict]:
    """The training image of a SageMaker job; local runs use this environment (see `packages`), Slurm
    jobs the cluster's."""
    request = plan["backend"].get("create_training_job_request")
    if not request:
        return None
    reference = request["AlgorithmSpecification"]["TrainingImage"]
    pinned = reference.partition("@")[2] if "@sha256:" in reference else None
    return {"reference": reference, "digest": pinned}


def _trainer_packages(plan: dict) -> Dict[str, Optional[str]]:
    """The versions the trainer will import: this environment's for a local plan, the container's pins
    for SageMaker; a Slurm cluster's environment is not known to the plan."""
    backend = plan["backend"]
    if backend["type"] == "local":
        return {name: _installed(name) for name in TRAINER_PACKAGES}
    if backend["type"] == "sagemaker":
        pins = dict(line.split("==", 1) for line in backend["sourcedir"]["requirements"] if "==" in line)
        return {name: pins.get(name) for name in TRAINER_PACKAGES}
    return {name: None for name in TRAINER_PACKAGES}


def _installed(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ---- the file -------------------------------------------------------------------------------------

def lock_location(target: Path) -> Tuple[Path, str]:
    """(lock file, entry key) for a spec file or a plan folder."""
    if target.is_dir():
        return target / LOCK_FILE, "plan.json"
    return target.parent / LOCK_FILE, target.name


def read_entries(lock_file: Path) -> Dict[str, dict]:
    if not lock_file.is_file():
        return {}
    return json.loads(lock_file.read_text(encoding="utf-8"))["specs"]


def write_entry(lock_file: Path, key: str, entry: dict) -> None:
    entries = read_entries(lock_file)
    entries[key] = entry
    lock_file.write_text(canonical_json({"format": LOCK_FORMAT, "specs": entries}), encoding="utf-8")


# ---- checking -------------------------------------------------------------------------------------

def _flatten(value: object, prefix: str = "") -> Dict[str, object]:
    if isinstance(value, dict):
        flat: Dict[str, object] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def _reason(key: str) -> str:
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        reason = UNKNOWN_REASONS.get(".".join(parts[:end]))
        if reason:
            return reason
    return "not known here"


def compare(locked: Optional[dict], now: dict) -> LockCheck:
    """What drifted between a lock entry and the current resolution, and what could not be checked."""
    if locked is None:
        return LockCheck(missing="no lock entry for this spec")
    check = LockCheck()
    old, new = _flatten(locked), _flatten(now)
    for key in sorted(set(old) | set(new)):
        if key.rsplit(".", 1)[-1] in NOT_COMPARED:
            continue
        was, current = old.get(key), new.get(key)
        if key.startswith("packages.trainer.") and was is None and current is None:
            continue  # a package neither side uses
        if was is not None and current is not None:
            if was == current:
                check.verified.append(key)
            else:
                check.drift.append((key, was, current))
        elif was is None and current is None:
            check.unverified.append((key, _reason(key)))
        elif current is None:
            check.unverified.append((key, f"locked {_short(was)}; {_reason(key)}"))
        else:
            check.unverified.append((key, f"now {_short(current)}; the lock does not pin it"))
    return check


def check_target(plan: dict, target: Path, cwd: Path) -> LockCheck:
    """Compare the plan of a spec file or plan folder with the lock beside it."""
    lock_file, key = lock_location(target)
    entries = read_entries(lock_file)
    if key not in entries:
        return LockCheck(missing=f"{lock_file} has no entry for {key}" if entries or lock_file.is_file()
                         else f"no {LOCK_FILE} beside {target}")
    return compare(entries[key], resolve(plan, cwd, lock_file.parent))


def drift_error(check: LockCheck, target: str) -> LockDrift:
    lines = "\n".join(f"  drifted: {line}" for line in check.drift_lines())
    fix = ("plan the spec again after `tunespec lock SPEC`" if Path(target).is_dir()
           else f"`tunespec lock {target}` records the new inputs")
    return LockDrift(f"{target}: the lock no longer matches what the plan resolves\n{lines}\n"
                     f"  hint: review what changed; {fix}")

