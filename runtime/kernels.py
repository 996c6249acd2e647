"""Optional kernels a plan asks for (flash-attention 2, Liger): installed where the trainer runs, or one
clear refusal naming the spec field to change. Light (stdlib only): the local backend checks before it
starts the trainer, `tunespec probe` before it builds the model, the trainer itself (in SageMaker
containers and on Slurm nodes) before it loads anything."""
import importlib.util
from typing import List

# (asked by the plan?, import name, package to install, spec field, what to set instead)
KERNELS = (
    (lambda plan: plan["model"].get("attn_implementation") == "flash_attention_2", "flash_attn",
     "flash-attn (`pip install flash-attn --no-build-isolation`, built against this torch and CUDA)",
     "model.attn_implementation: flash_attention_2", "`attn_implementation: sdpa`"),
    (lambda plan: bool(plan["trainer"].get("use_liger_kernel")), "liger_kernel",
     "liger-kernel (`pip install 'tunespec[gpu]'`)", "training.liger_kernels: true", "`liger_kernels: false`"),
)


def missing_kernels(plan: dict) -> List[str]:
    """One message per kernel the plan asks for that this Python environment does not have."""
    return [f"{field} needs {package}, which is not installed here; install it, or set {instead} in the spec"
            for asked, module, package, field, instead in KERNELS
            if asked(plan) and importlib.util.find_spec(module) is None]
