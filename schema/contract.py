"""The contract between the compiler and the runtime: what both sides must write and read the same way.

The compiler writes these names into plans, scripts and requests; the runtime finds files, jobs and
secrets by them. Each is written here once and both sides import it: the runtime never imports the
compiler (tests/test_layers.py). Standard library only.
"""
import hashlib
import json
import re
from pathlib import Path
from typing import Dict, Literal, Optional, Tuple

# The tunespec release: written into every plan (`tunespec_version`) and the name of its wheel.
VERSION = "0.1.0"

# ---- encodings ---------------------------------------------------------------------------------------


def canonical_json(value: object) -> str:
    """The one JSON text of a value tunespec writes (plan.json, requests, records): sorted, indented, UTF-8."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def digest(value: object) -> str:
    """sha256 of a value's compact sorted JSON: the spec hash and the plan hash."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes: local inputs are uploaded under (and checked against) it."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


# ---- the programs a plan launches (plan.launch.module) ---------------------------------------------------

TRAINER_MODULE = "tunespec.runtime.train"                # `tunespec apply`: TRL's SFTTrainer
NEURON_TRAINER_MODULE = "tunespec.runtime.train_neuron"  # Trainium: optimum-neuron's trainer
PROBE_MODULE = "tunespec.runtime.probe"                  # `tunespec probe`: a plain training loop


# ---- the run folder --------------------------------------------------------------------------------------

PLAN_FILE = "plan.json"  # in a plan folder, a run folder and the SageMaker source archive


# ---- URI kinds -----------------------------------------------------------------------------------------

S3_SCHEME = "s3://"
HUB_PREFIX = "hub:"
PACKAGE_SCHEME = "pkg://"  # pkg://DISTRIBUTION/PATH: a file installed with a Python package
DataKind = Literal["s3", "hub", "package", "local"]
ModelKind = Literal["s3", "package", "gguf", "local", "hub"]


def data_source_kind(path: str) -> DataKind:
    """How a data path is read: `s3://`, `hub:NAME`, `pkg://`, or a local file."""
    if path.startswith(S3_SCHEME):
        return "s3"
    if path.startswith(HUB_PREFIX):
        return "hub"
    if path.startswith(PACKAGE_SCHEME):
        return "package"
    return "local"


def model_source_kind(source: str) -> ModelKind:
    """How a model source is loaded: a hub id unless it is an S3 URI, a package file, a GGUF file or a path."""
    if source.startswith(S3_SCHEME):
        return "s3"
    if source.startswith(PACKAGE_SCHEME):
        return "package"
    if source.endswith(".gguf") and "://" not in source:
        return "gguf"
    if source.startswith((".", "/", "~")):
        return "local"
    return "hub"


def is_relative_path(value: str) -> bool:
    """A path that means something only next to the file that wrote it."""
    return not value.startswith(("/", "~"))


# ---- secrets ---------------------------------------------------------------------------------------------

# A secret given by Secrets Manager ARN travels into a job as TUNESPEC_SECRET_<VARIABLE>_ARN; the job's
# entry reads the value and sets <VARIABLE>. Values never travel in a plan or a request.
SECRET_PREFIX, SECRET_SUFFIX = "TUNESPEC_SECRET_", "_ARN"
SECRET_VARIABLES = {"hf_token": "HF_TOKEN", "wandb_api_key": "WANDB_API_KEY"}  # spec secret → variable


def secret_arn_variable(variable: str) -> str:
    """`HF_TOKEN` → `TUNESPEC_SECRET_HF_TOKEN_ARN`."""
    return f"{SECRET_PREFIX}{variable}{SECRET_SUFFIX}"


def secret_arns(environ: Dict[str, str]) -> Dict[str, str]:
    """`TUNESPEC_SECRET_HF_TOKEN_ARN=arn:...` → {"HF_TOKEN": "arn:..."}."""
    return {key[len(SECRET_PREFIX):-len(SECRET_SUFFIX)]: value for key, value in environ.items()
            if key.startswith(SECRET_PREFIX) and key.endswith(SECRET_SUFFIX)}


# ---- SageMaker: the container's folders -----------------------------------------------------------------

CHANNEL_ROOT = "/opt/ml/input/data"  # each input channel lands in CHANNEL_ROOT/<channel>
MODEL_DIR = "/opt/ml/model"  # uploaded to S3 as the job's ModelArtifacts when the job ends
CHECKPOINT_DIR = "/opt/ml/checkpoints"  # synced with CheckpointConfig.S3Uri (the plan's own prefix)
FAILURE_FILE = "/opt/ml/output/failure"  # SageMaker shows its text as the job's FailureReason
RUN_CHANNEL = "run"  # the merge job's input: the training job's outputs
# Hyperparameters of tunespec's own: the job's entry reads which plan (in the source archive) and task to run.
PLAN_HYPERPARAMETER, TASK_HYPERPARAMETER = "tunespec_plan", "tunespec_task"


def s3_channel(name: str, s3_uri: str) -> dict:
    """What the SDK makes of `fit(inputs={name: "s3://..."})`."""
    return {"ChannelName": name, "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": s3_uri, "S3DataDistributionType": "FullyReplicated"}}}


# ---- SageMaker: who a job is --------------------------------------------------------------------------

# Every job carries `tunespec:spec` (apply, status and cancel find a spec's jobs by it) and
# `tunespec:plan` (the plan hash). A plan's first job is `<spec name>-<hash>`; a retry appends `-r<N>`,
# a merge job `-m`.
SPEC_TAG = "tunespec:spec"
SPEC_HASH_TAG = "tunespec:spec-hash"
PLAN_TAG = "tunespec:plan"
MAX_ATTEMPT = 99
MERGE_SUFFIX = "-m"


def attempt_name(first_job_name: str, attempt: int) -> str:
    return first_job_name if attempt == 0 else f"{first_job_name}-r{attempt}"


def merge_job_name(train_job_name: str) -> str:
    return f"{train_job_name}{MERGE_SUFFIX}"


def parse_job_name(name: str, first_job_name: str) -> Optional[Tuple[int, bool]]:
    """(attempt, is the merge job) of one of the plan's job names, or None for another name."""
    match = re.fullmatch(re.escape(first_job_name) + r"(?:-r(\d+))?(-m)?", name)
    if match is None:
        return None
    return int(match[1] or 0), bool(match[2])


def train_output_uri(train_request: dict) -> str:
    """Where SageMaker puts the training job's /opt/ml/model: a prefix, or model.tar.gz when compressed."""
    base = f"{train_request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{train_request['TrainingJobName']}/output"
    if train_request["OutputDataConfig"].get("CompressionType") == "NONE":
        return f"{base}/model/"
    return f"{base}/model.tar.gz"


def _renamed(request: dict, name: str) -> dict:
    renamed = json.loads(json.dumps(request))
    renamed["TrainingJobName"] = name
    renamed["HyperParameters"]["sagemaker_job_name"] = json.dumps(name)
    return renamed


def attempt_requests(train: dict, merge: Optional[dict], attempt: int,
                     trained_job_name: Optional[str] = None) -> Tuple[dict, Optional[dict]]:
    """The plan's requests for attempt N of `apply --retry`: new names, the same job otherwise.

    The training job keeps its checkpoint prefix (so it resumes); the merge job reads the outputs of
    `trained_job_name` (an earlier attempt that completed) or of this attempt's training job.
    """
    name = attempt_name(train["TrainingJobName"], attempt)
    train_attempt = _renamed(train, name)
    if merge is None:
        return train_attempt, None
    merge_attempt = _renamed(merge, merge_job_name(name))
    trained = _renamed(train, trained_job_name or name)
    merge_attempt["InputDataConfig"] = [
        s3_channel(RUN_CHANNEL, train_output_uri(trained)) if channel["ChannelName"] == RUN_CHANNEL else channel
        for channel in merge_attempt["InputDataConfig"]]
    return train_attempt, merge_attempt


# ---- Slurm: the run folder on the shared file system ------------------------------------------------------

# Where every job leaves its mark when it ends well: `scontrol` forgets finished jobs after MinJobAge
# (5 minutes by default) and `sacct` needs accounting, which many clusters lack.
SLURM_DONE_DIR = "status"
SLURM_LOG_DIR = "logs"
SLURM_SCRIPT_DIR = "slurm"
SLURM_RUN_SUBFOLDERS = (SLURM_LOG_DIR, SLURM_DONE_DIR, SLURM_SCRIPT_DIR)


def slurm_done_marker(run_dir: str, step: str) -> str:
    """The file a step's script writes (holding its job id) when it ends well."""
    return f"{run_dir}/{SLURM_DONE_DIR}/{step}.done"


def slurm_log(run_dir: str, step: str, job_id: str) -> str:
    """A step's log; `%j` as job_id gives the pattern sbatch expands."""
    return f"{run_dir}/{SLURM_LOG_DIR}/{step}-{job_id}.out"
