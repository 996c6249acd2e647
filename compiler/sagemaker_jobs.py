"""Who a SageMaker job is: the spec it belongs to, the plan it runs, its attempt, where it checkpoints.

Every job carries the tag `tunespec:spec` (the spec's name): apply, status and cancel find a spec's
jobs by it, whichever plan launched them. `tunespec:plan` holds the plan hash: the hash of the plan as
the job sees it (local inputs by their content-addressed S3 key, never by a path relative to the folder
apply ran from). A plan's first job is named `<spec name>-<hash>`; a retry (`apply --retry`) appends
`-r<N>`, a merge job `-m`. The checkpoint prefix is keyed by the same name, so a changed plan never
starts from another plan's files and a retry of the same plan resumes from its own.
"""
import json
from typing import List, Optional

from ..schema.contract import PLAN_TAG, SPEC_HASH_TAG, SPEC_TAG, digest
from .errors import SpecError

NAME_HASH_CHARS = 8  # spec name (≤48) + "-" + hash, room left for "-r99" and "-m" within SageMaker's 63


def plan_hash(plan: dict, backend: dict, channels: List[dict]) -> str:
    """sha256 of the plan as the job runs it: inputs at their S3 URIs (content-addressed for local files)."""
    as_run = json.loads(json.dumps({key: value for key, value in plan.items()
                                    if key not in ("warnings", "backend", "estimates")}))
    for channel in channels:
        *parents, leaf = channel["plan_field"]
        section = as_run
        for key in parents:
            section = section[key]
        section[leaf] = channel["s3_uri"]
    return digest({"plan": as_run, "backend": backend})


def job_name_for(plan: dict, digest: str) -> str:
    """`<spec name>-<hash>`: the same plan gives the same job name from any folder."""
    return f"{plan['spec']['name']}-{digest[:NAME_HASH_CHARS]}"


def checkpoint_uri(backend: dict, output_s3: str, first_job_name: str) -> Optional[str]:
    """The plan's own checkpoint prefix (under backend.checkpoint_s3, or the output for spot), or None."""
    if backend.get("checkpoint_s3"):
        return f"{backend['checkpoint_s3'].rstrip('/')}/{first_job_name}"
    if (backend.get("spot") or {}).get("enabled"):
        return f"{output_s3}/{first_job_name}/checkpoints"
    return None


def refuse_reserved_tags(plan: dict, backend: dict) -> None:
    """A user tag may not take one of tunespec's own keys (compiler/checks.py runs this with the other checks)."""
    for key in backend.get("tags") or {}:
        if key.lower().startswith("tunespec:"):
            raise SpecError(f"tag `{key}` is reserved", ("backend", "tags", key),
                            hint="tunespec's own tags tell apply, status and cancel which spec and plan a job "
                                 "belongs to; choose another key")


def tags(backend: dict, plan: dict, digest: str) -> List[dict]:
    own = {SPEC_TAG: plan["spec"]["name"], SPEC_HASH_TAG: plan["spec"]["hash"], PLAN_TAG: digest}
    refuse_reserved_tags(plan, backend)
    merged = {**own, **(backend.get("tags") or {})}
    return [{"Key": key, "Value": value} for key, value in sorted(merged.items())]
