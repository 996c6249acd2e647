"""Plan → SageMaker training job: the exact CreateTrainingJob request, and the same job as SDK 2.x arguments.

Nothing here talks to AWS or imports boto3 or the SageMaker SDK. This module puts the job together and
checks its spot options; beside it: what the instances and strategy allow (sagemaker_distribution), the
training image (sagemaker_image), inputs and uploads (sagemaker_inputs), names, tags and checkpoint prefix
(sagemaker_jobs), Environment and secrets (sagemaker_secrets), the container's pinned libraries
(sagemaker_requirements) and the requests themselves (sagemaker_requests). Every request is checked
against the service model's limits (sagemaker_validate).
"""
from typing import List, Optional

from ..schema.contract import (CHECKPOINT_DIR, MODEL_DIR, PLAN_FILE, PLAN_HYPERPARAMETER, TASK_HYPERPARAMETER,
                               canonical_json)
from . import sagemaker_distribution, sagemaker_inputs, sagemaker_jobs, sagemaker_secrets, sagemaker_validate
from .errors import SpecError
from .sagemaker_image import training_image_uri
from .sagemaker_requests import (ENTRY_POINT, distribution_hyperparameters, estimator_args, merge_request,
                                 sdk_hyperparameters, training_request, warm_pool_environment, warm_pool_warnings)
from .sagemaker_requirements import container_requirements
from .supports import BackendSupport

# The job runs tunespec's trainer (runtime/sourcedir.py) in a PyTorch framework image, under torchrun
# or SMP v2 (runtime/smp.py); Trainium runs on HyperPod/Slurm. No trainer trains in fp8.
SUPPORTS = BackendSupport(strategies=("none", "ddp", "fsdp", "device_map", "smp"), devices=("cpu", "cuda"),
                          precisions=("fp32", "bf16", "fp16"))

# Request fields → the spec field a reviewer should change when the API refuses them.
SPEC_PATHS = {
    ("TrainingJobName",): ("name",),
    ("RoleArn",): ("backend", "role"),
    ("ResourceConfig", "InstanceType"): ("backend", "instance_type"),
    ("ResourceConfig", "InstanceCount"): ("backend", "instance_count"),
    ("ResourceConfig", "VolumeSizeInGB"): ("backend", "volume_size_gb"),
    ("ResourceConfig", "KeepAlivePeriodInSeconds"): ("backend", "keep_alive_seconds"),
    ("StoppingCondition", "MaxRuntimeInSeconds"): ("backend", "max_run_seconds"),
    ("StoppingCondition", "MaxWaitTimeInSeconds"): ("backend", "spot", "max_wait_seconds"),
    ("OutputDataConfig",): ("backend", "output_s3"),
    ("CheckpointConfig",): ("backend", "checkpoint_s3"),
    ("Environment",): ("backend", "environment"),
    ("Tags",): ("backend", "tags"),
    ("InputDataConfig",): ("data",),
}


def compile_sagemaker(plan: dict, backend: dict) -> dict:
    """The plan's `backend` section for a SageMaker training job (plus its follow-up merge job)."""
    distribution = sagemaker_distribution.distribution(plan, backend)
    image = training_image(plan, backend)
    environment, apply_environment, warnings = sagemaker_secrets.environment(plan, backend)
    environment = warm_pool_environment(backend, environment)
    output_s3 = backend["output_s3"].rstrip("/")
    channels, uploads = sagemaker_inputs.channels(plan, backend, output_s3)
    plan_hash = sagemaker_jobs.plan_hash(plan, backend, channels)
    job_name = sagemaker_jobs.job_name_for(plan, plan_hash)
    tags = sagemaker_jobs.tags(backend, plan, plan_hash)
    sourcedir_s3 = f"{output_s3}/{job_name}/source/sourcedir.tar.gz"
    checkpoint_s3 = sagemaker_jobs.checkpoint_uri(backend, output_s3, job_name)
    refuse_job_options(plan, backend)
    warnings += _spot_warnings(plan, backend, checkpoint_s3)

    user_hps = {PLAN_HYPERPARAMETER: PLAN_FILE, TASK_HYPERPARAMETER: "train"}
    hyperparameters = {**user_hps, **sdk_hyperparameters(job_name, sourcedir_s3, backend["region"]),
                       **distribution_hyperparameters(distribution, backend["instance_type"])}
    request = training_request(job_name, backend, image, hyperparameters, channels, environment, checkpoint_s3, tags)
    sagemaker_validate.check(request, SPEC_PATHS, what="CreateTrainingJob")

    merge = merge_request(request, plan, sourcedir_s3, channels)
    if merge is not None:
        sagemaker_validate.check(merge, SPEC_PATHS, what="CreateTrainingJob (merge job)")
    warnings += warm_pool_warnings(request, merge)

    requirements = container_requirements(plan, backend)
    estimator = estimator_args(backend, sourcedir_s3, user_hps, distribution, environment, checkpoint_s3, tags)
    fit = {"inputs": {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request.get("InputDataConfig", [])},
           "job_name": job_name, "wait": False}
    files = {
        "sagemaker/create_training_job.json": canonical_json(request),
        "sagemaker/estimator_args.json": canonical_json({"estimator": estimator, "fit": fit}),
        "sagemaker/requirements.txt": "".join(line + "\n" for line in requirements),
    }
    if merge is not None:
        files["sagemaker/merge_training_job.json"] = canonical_json(merge)
    return {
        "type": "sagemaker",
        "region": backend["region"],
        "job_name": job_name,
        "plan_hash": plan_hash,
        "create_training_job_request": request,
        "merge_job_request": merge,
        "estimator_args": estimator,
        "fit_args": fit,
        "uploads": uploads,
        "sourcedir": {"s3_uri": sourcedir_s3, "entry_point": ENTRY_POINT, "plan": PLAN_FILE,
                      "requirements": requirements},
        "channels": channels,
        # The run folder is the local side of the plan's own checkpoint prefix, or the job's fresh model dir.
        "container": {"run_dir": CHECKPOINT_DIR if checkpoint_s3 else MODEL_DIR, "model_dir": MODEL_DIR},
        "apply_environment": apply_environment,
        "warnings": warnings,
        "files": files,
    }


def training_image(plan: dict, backend: dict) -> str:
    """The job's training image: SMP v2's for `strategy: smp`, else the PyTorch framework image."""
    return training_image_uri(backend["region"], backend["framework_version"], backend["py_version"],
                              backend["instance_type"], smp=plan["parallel"]["strategy"] == "smp")


# ---- job options ----------------------------------------------------------------------------------

def refuse_job_options(plan: dict, backend: dict) -> None:
    """Spot options SageMaker refuses (compiler/checks.py runs this with the other checks)."""
    spot = backend.get("spot") or {}
    if not spot.get("enabled"):
        return
    if spot["max_wait_seconds"] < backend["max_run_seconds"]:
        raise SpecError(f"max_wait_seconds ({spot['max_wait_seconds']}) is shorter than max_run_seconds "
                        f"({backend['max_run_seconds']})", ("backend", "spot", "max_wait_seconds"),
                        hint="max_wait counts run time plus time waiting for spot capacity: make it ≥ max_run_seconds")
    if backend.get("keep_alive_seconds"):
        raise SpecError("SageMaker warm pools (keep_alive_seconds) do not work with managed spot training",
                        ("backend", "keep_alive_seconds"), hint="set keep_alive_seconds: 0, or turn spot off")


def _spot_warnings(plan: dict, backend: dict, checkpoint_s3: Optional[str]) -> List[dict]:
    if not (backend.get("spot") or {}).get("enabled"):
        return []
    warnings = []
    if not plan["trainer"].get("save_steps"):
        warnings.append({"code": "sagemaker-spot-checkpoints", "message": (
            "spot training without training.checkpoint_every_steps: an interruption loses the epoch in progress")})
    if not backend.get("checkpoint_s3"):
        warnings.append({"code": "sagemaker-spot-checkpoint-s3", "message": (
            f"spot training checkpoints to {checkpoint_s3} (backend.checkpoint_s3 not given)")})
    return warnings
