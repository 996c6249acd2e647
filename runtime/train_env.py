"""The trainer process's environment, set from the plan before any Hugging Face library is imported
(huggingface_hub reads HF_HUB_OFFLINE once, at import). Light: stdlib only, boto3 on demand."""
import logging
import os
from pathlib import Path

from .run_layout import TENSORBOARD

logger = logging.getLogger("tunespec.train")


def _secret_value(reference: dict):
    if reference.get("env"):
        return os.environ.get(reference["env"])
    import boto3  # only for secrets kept in AWS Secrets Manager

    region = reference["secrets_manager_arn"].split(":")[3]
    return boto3.client("secretsmanager", region_name=region).get_secret_value(
        SecretId=reference["secrets_manager_arn"])["SecretString"]


def _export_secret(variable: str, reference: dict) -> None:
    # A backend may have resolved it already (the SageMaker entry reads Secrets Manager itself).
    if os.environ.get(variable):
        return
    value = _secret_value(reference)
    if value:
        os.environ[variable] = value
    else:
        logger.warning("secret %s: environment variable %s is not set", variable, reference.get("env"))


def prepare_environment(plan: dict, run_dir: Path) -> None:
    if plan["model"].get("offline"):
        for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ[variable] = "1"
    # `hf_token` → HF_TOKEN, `wandb_api_key` → WANDB_API_KEY: the names the libraries read.
    for name, reference in (plan.get("secrets") or {}).items():
        _export_secret(name.upper(), reference)
    tracking = plan.get("tracking") or {}
    wandb = tracking.get("wandb")
    if wandb:
        os.environ.setdefault("WANDB_PROJECT", wandb["project"])
        if wandb.get("entity"):
            os.environ.setdefault("WANDB_ENTITY", wandb["entity"])
        _export_secret("WANDB_API_KEY", wandb["api_key"])
    mlflow = tracking.get("mlflow")
    if mlflow:
        os.environ.setdefault("MLFLOW_TRACKING_URI", mlflow["tracking_uri"])
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", mlflow["experiment"])
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run_dir / TENSORBOARD))
    if plan["trainer"]["torch_compile"]:
        # accelerate compiles the repeated decoder layers one at a time (one graph for all), as the plan says
        os.environ["ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION"] = "1"
    # Tokenizers' own threads fight the dataloader's fork otherwise (and warn about it).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
