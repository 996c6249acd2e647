"""Failures of a backend at run time (not of the spec): reported in one line, exit code 1; a missing
optional dependency names the extra that installs it, exit code 3."""
from typing import Optional


class BackendError(Exception):
    """A backend command or service failed, or this machine cannot reach the backend."""


class RunNotReady(BackendError):
    """The run folder a verb needs is missing, unfinished or still training (message says what to do)."""


# Optional modules (top-level import names) → the tunespec extra that installs them.
EXTRAS = {
    "boto3": "sagemaker", "botocore": "sagemaker",
    "torch": "train", "transformers": "train", "accelerate": "train", "peft": "train", "trl": "train",
    "datasets": "train", "gguf": "train", "safetensors": "train", "tensorboard": "train", "matplotlib": "train",
}


class MissingExtra(Exception):
    """An optional dependency is not installed; the message names the pip command that installs it."""

    @classmethod
    def module(cls, module: str, needed_for: str) -> "MissingExtra":
        extra = EXTRAS[module]
        return cls(f"{needed_for} needs `{module}`, which is not installed here; it comes with "
                   f"tunespec's [{extra}] extra: pip install 'tunespec[{extra}]'")


def missing_extra(error: ModuleNotFoundError, needed_for: str) -> Optional[MissingExtra]:
    """The MissingExtra an import error means, or None for a module no extra provides (a real bug)."""
    module = (error.name or "").split(".")[0]
    return MissingExtra.module(module, needed_for) if module in EXTRAS else None
