"""The SageMaker job's source (sourcedir.tar.gz): building it, and the entry it runs in the container.

The archive holds tunespec's own wheel (the one trainer of the project, not a copied script), the plan
the job runs, the pinned requirements.txt the framework container installs first, and `tunespec_entry.py`,
which SageMaker starts (under torchrun when the plan is distributed). The entry installs the wheel, points
the plan at the container's paths (input channels, /opt/ml/checkpoints, /opt/ml/model), reads secrets
referenced by a Secrets Manager ARN, and runs `tunespec.runtime.train` (`tunespec.runtime.merge` for the
second job).
"""
import gzip
import hashlib
import io
import json
import os
import runpy
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Dict, List

from ..schema import contract
from ..schema.plan import read_plan_to_run
from .package_wheel import tunespec_wheel

ENTRY_SOURCE = '''"""SageMaker starts this file (hyperparameter sagemaker_program): it installs the tunespec wheel beside it
(a pure-Python wheel installs by unpacking it) and runs the plan beside it."""
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

CODE = Path(__file__).resolve().parent
SITE = CODE / ".site-{digest}"
if not SITE.is_dir():
    # Every torchrun process starts here: each unpacks aside, one rename wins and the others use its copy.
    staging = Path(tempfile.mkdtemp(dir=CODE, prefix=".site-staging-"))
    with zipfile.ZipFile(CODE / "{wheel}") as wheel:
        wheel.extractall(staging)
    try:
        os.rename(staging, SITE)
    except OSError:
        if not SITE.is_dir():
            raise
        shutil.rmtree(staging)
sys.path.insert(0, str(SITE))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")]))

from tunespec.runtime.sourcedir import container_main

sys.exit(container_main(sys.argv[1:], code_dir=CODE))
'''
TASK_MODULES = {"train": contract.TRAINER_MODULE, "merge": "tunespec.runtime.merge"}
FAILURE_FILE = Path(contract.FAILURE_FILE)


def sourcedir_files(plan: dict) -> Dict[str, bytes]:
    """The archive's files: the entry, the plan, the requirements and tunespec's own wheel."""
    sourcedir = plan["backend"]["sourcedir"]
    wheel_name, wheel = tunespec_wheel()
    entry = ENTRY_SOURCE.replace("{wheel}", wheel_name).replace("{digest}", hashlib.sha256(wheel).hexdigest()[:16])
    return {
        wheel_name: wheel,
        sourcedir["entry_point"]: entry.encode(),
        sourcedir["plan"]: contract.canonical_json(plan).encode(),
        "requirements.txt": "".join(line + "\n" for line in sourcedir["requirements"]).encode(),
    }


def build_sourcedir(plan: dict) -> bytes:
    """sourcedir.tar.gz, byte-identical for the same plan and tunespec files (no times, owners or order)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(sourcedir_files(plan).items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, filename="") as archive:
        archive.write(raw.getvalue())
    return packed.getvalue()


# ---- in the container -----------------------------------------------------------------------------

def container_plan(plan: dict, task: str) -> dict:
    """The plan as the job sees it: inputs at their channel paths; the merge left to the merge job."""
    adjusted = json.loads(json.dumps(plan))
    backend = adjusted["backend"]
    for channel in backend["channels"]:
        *parents, leaf = channel["plan_field"]
        section = adjusted
        for key in parents:
            section = section[key]
        section[leaf] = channel["container_path"]
        if parents == ["model"]:
            section["source_kind"] = "gguf" if channel["container_path"].endswith(".gguf") else "local"
        else:
            section["kind"] = "local"
    if task == "train" and backend.get("merge_job_request"):
        adjusted["outputs"]["merged_model"] = False
        adjusted["outputs"]["sample_prompts"] = []
    return adjusted


def resolve_secrets(environ=os.environ) -> None:
    """Set each `TUNESPEC_SECRET_<VARIABLE>_ARN` secret's value as <VARIABLE>, read in the secret's own region."""
    arns = contract.secret_arns(dict(environ))
    if not arns:
        return
    import boto3  # present in every SageMaker framework image

    for variable, arn in arns.items():
        region = arn.split(":")[3]  # arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME
        environ[variable] = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=arn)["SecretString"]


def _arguments(argv: List[str]) -> Dict[str, str]:
    """SageMaker passes hyperparameters as `--name value` pairs."""
    pairs = {}
    for flag, value in zip(argv[::2], argv[1::2]):
        pairs[flag.lstrip("-")] = value
    return pairs


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _copy_outputs(run_dir: Path, model_dir: Path) -> None:
    """Everything the run wrote except checkpoints goes to /opt/ml/model (the job's ModelArtifacts)."""
    for item in run_dir.iterdir():
        if item.name == "checkpoints":
            continue
        target = model_dir / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)


def _stage_previous_run(channel_dir: Path, model_dir: Path) -> None:
    """The merge job starts from the training job's outputs (a folder, or model.tar.gz when compressed)."""
    archives = list(channel_dir.glob("*.tar.gz"))
    if archives:
        with tarfile.open(archives[0]) as tar:
            tar.extractall(model_dir, filter="data")
    else:
        shutil.copytree(channel_dir, model_dir, dirs_exist_ok=True)


def container_main(argv: List[str], code_dir: Path) -> int:
    """Run the plan's task in the SageMaker container (the archive unpacked in `code_dir`). Returns the exit code."""
    arguments = _arguments(argv)
    print(f"tunespec {contract.VERSION} from {Path(__file__).resolve().parents[1]}", flush=True)
    task = arguments.get(contract.TASK_HYPERPARAMETER, "train")
    plan_file = code_dir / arguments.get(contract.PLAN_HYPERPARAMETER, contract.PLAN_FILE)
    plan = container_plan(read_plan_to_run(plan_file), task)
    backend = plan["backend"]
    resolve_secrets()
    model_dir = Path(backend["container"]["model_dir"])
    run_dir = Path(backend["container"]["run_dir"]) if task == "train" else model_dir
    if task == "merge":
        _stage_previous_run(Path(contract.CHANNEL_ROOT) / contract.RUN_CHANNEL, model_dir)
    # Not /tmp/tunespec: a folder of the package's name there would shadow it for `python -m` run from /tmp.
    plan_path = Path("/tmp/tunespec-container") / f"plan-{task}.json"
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    # Every torchrun process writes the same text: replace atomically so none reads a partial file.
    partial = plan_path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(contract.canonical_json(plan))
    os.replace(partial, plan_path)
    sys.argv = [TASK_MODULES[task], "--plan", str(plan_path), "--run-dir", str(run_dir)]
    try:
        runpy.run_module(TASK_MODULES[task], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception as error:
        # Re-raised: only recorded first, so that DescribeTrainingJob's FailureReason says what broke.
        if _is_main_process():
            FAILURE_FILE.parent.mkdir(parents=True, exist_ok=True)
            FAILURE_FILE.write_text(f"{task}: {type(error).__name__}: {error}"[:1000])
        raise
    if code == 0 and task == "train" and run_dir != model_dir and _is_main_process():
        _copy_outputs(run_dir, model_dir)
    return code
