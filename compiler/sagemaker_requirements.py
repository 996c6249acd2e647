"""The sourcedir's requirements.txt: the trainer's libraries pinned to tested versions, PyTorch held at the image's."""
from typing import List

# What the container installs beside the image's own PyTorch (pinned to the image's version, so pip
# fails instead of silently replacing the image's CUDA build). Versions: those tunespec is tested with.
CONTAINER_PINS = {
    "accelerate": "1.15.0",
    "datasets": "5.2.0",
    "matplotlib": "3.11.2",
    "peft": "0.21.2",
    "pydantic": "2.13.4",
    "PyYAML": "6.0.3",
    "rich": "15.0.0",
    "safetensors": "0.8.0",
    "tensorboard": "2.21.0",
    "transformers": "5.17.0",
    "trl": "1.16.0",
}
QUANTIZATION_PIN = "bitsandbytes==0.45.5"
LIGER_PIN = "liger-kernel==0.6.0"


def container_requirements(plan: dict, backend: dict) -> List[str]:
    """requirements.txt of the sourcedir: the trainer's libraries, pinned; PyTorch held at the image's."""
    lines = [f"torch=={backend['framework_version']}"] + [f"{name}=={version}" for name, version in CONTAINER_PINS.items()]
    if plan["method"]["quantization"] or "8bit" in plan["trainer"]["optim"]:
        lines.append(QUANTIZATION_PIN)
    if plan["trainer"].get("use_liger_kernel"):
        lines.append(LIGER_PIN)
    return sorted(lines, key=str.lower)
