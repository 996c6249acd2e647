"""Optional kernels a plan asks for (flash-attention 2, torch's flex attention, Liger): installed where
the trainer runs, or one clear refusal naming the spec field to change. Light (stdlib only), shared by
both sides: the compiler chooses a local plan's attention kernel from what this environment has and
refuses one it lacks; the local backend checks before it starts the trainer, `tunespec probe` before it
builds the model, the trainer itself (in SageMaker containers and on Slurm nodes) before it loads anything."""
import importlib.metadata
import importlib.util
import re
from typing import List

# transformers' flex attention path needs torch's mask combinators (and_masks) of torch 2.6.
FLEX_MIN_TORCH = (2, 6)


def _module_installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _torch_at_least(version: tuple) -> bool:
    """From the installed distribution's metadata: importing torch would make planning heavy."""
    try:
        found = re.match(r"(\d+)\.(\d+)", importlib.metadata.version("torch"))
    except importlib.metadata.PackageNotFoundError:
        return False
    return bool(found) and tuple(map(int, found.groups())) >= version


# Attention kernels beyond torch's own sdpa/eager: (installed here?, package to install).
ATTENTION_KERNELS = {
    "flash_attention_2": (lambda: _module_installed("flash_attn"),
                          "flash-attn (`pip install flash-attn --no-build-isolation`, built against this torch and CUDA)"),
    "flex_attention": (lambda: _torch_at_least(FLEX_MIN_TORCH),
                       f"torch {'.'.join(map(str, FLEX_MIN_TORCH))} or newer (`pip install 'torch>=2.6'`)"),
}


def attention_installed(kernel: str) -> bool:
    """Whether this Python environment can run `kernel` (sdpa and eager are torch's own)."""
    installed = ATTENTION_KERNELS.get(kernel)
    return installed is None or installed[0]()


def attention_refusal(kernel: str) -> str:
    """The message for an attention kernel this environment lacks."""
    return (f"{kernel} needs {ATTENTION_KERNELS[kernel][1]}, which is not installed here; install it, or set "
            "`attn_implementation: sdpa` in the spec")


def missing_kernels(plan: dict) -> List[str]:
    """One message per kernel the plan asks for that this Python environment does not have."""
    missing = []
    kernel = plan["model"].get("attn_implementation")
    if not attention_installed(kernel):
        missing.append(f"model.attn_implementation: {attention_refusal(kernel)}")
    if plan["trainer"].get("use_liger_kernel") and not _module_installed("liger_kernel"):
        missing.append("training.liger_kernels: true needs liger-kernel (`pip install 'tunespec[gpu]'`), which is "
                       "not installed here; install it, or set `liger_kernels: false` in the spec")
    return missing
