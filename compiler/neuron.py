"""Trainium settings the plan takes from seed 003's upstream recipe (aws-samples/awsome-distributed-training,
3.test_cases/pytorch/optimum-neuron/llama3/slurm/fine-tuning/llama3-8B/finetune-llama3-8B.sh), where the
spec leaves them to tunespec."""
import re
from typing import List, Optional

from .catalog import load_hardware
from .errors import SpecError

# The recipe's NEURON_CC_FLAGS, less its --cache_dir (the backend's shared cache): transformer-tuned
# scheduling, the compiler's LLM-training partitioning, overflow to ±inf saturated (bf16 NaNs otherwise).
RECIPE_COMPILER_FLAGS = ("--model-type=transformer", "--distribution-strategy=llm-training",
                         "--enable-saturate-infinity")
# neuronx-cc --target per Trainium generation (the catalog's accelerator). The recipe runs trn1 only.
COMPILER_TARGETS = {"trainium1": "trn1", "trainium2": "trn2"}
# A flag goes into `export NEURON_CC_FLAGS="..."`: one word of option characters, nothing a shell expands.
FLAG_PATTERN = r"--?[A-Za-z][A-Za-z0-9_-]*(=[A-Za-z0-9_.,:/+-]+)?"


def compiler_flags(given, hardware: str) -> Optional[List[str]]:
    """The spec's flags, checked, or the recipe's with the --target of the instance's Trainium generation
    (none off Trainium: compiler/rules.py refuses `strategy: neuron` there)."""
    path = ("distribution", "compiler_flags")
    if given is None:
        instances = load_hardware()["instances"]
        accelerator = (instances.get(hardware) or instances.get(f"ml.{hardware}") or {}).get("accelerator")
        target = COMPILER_TARGETS.get(accelerator)
        return [*RECIPE_COMPILER_FLAGS, f"--target={target}"] if target else None
    for flag in given:
        if not re.fullmatch(FLAG_PATTERN, flag):
            raise SpecError(f"{flag!r} is not a neuronx-cc flag tunespec can pass on", path,
                            hint="one `--name` or `--name=value` per item (letters, digits, `_.,:/+-`)")
        if flag.split("=")[0] == "--cache_dir":
            raise SpecError("--cache_dir is set by the backend (the compile and train jobs share it)", path,
                            hint="leave --cache_dir out")
    return list(given)
