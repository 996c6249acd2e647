"""Where the trainer's load-time GPU peak comes from, stage by stage (issue 17: seed 000's Mixtral QLoRA
over FSDP peaked at 85.1 GiB allocated per GPU while loading, against 41 GiB estimated in all).

Runs the trainer's own sequence in one process under torchrun (so the distributed environment is the
trainer's): the Trainer arguments first (they set accelerate's FSDP environment, which changes how
transformers loads), then runtime/model_loading.load_model, and records the GPU memory after each stage:

    torchrun --nproc_per_node 1 benchmarks/gpu/load_peak.py PLAN_DIR MODEL_DIR OUT.json

Each stage: peak allocated since the start, allocated now (GiB), seconds since the start.
"""
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from tunespec.runtime import model_loading, moe_quantization
from tunespec.runtime.train import trainer_config

STARTED = time.time()
STAGES = []


def mark(stage: str) -> None:
    torch.cuda.synchronize()
    STAGES.append({"stage": stage, "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                   "allocated_gib": round(torch.cuda.memory_allocated() / 2**30, 2),
                   "seconds": round(time.time() - STARTED, 1)})
    print(STAGES[-1], flush=True)


def after(function, stage: str):
    def measured(*args, **kwargs):
        result = function(*args, **kwargs)
        mark(stage)
        return result
    return measured


def main() -> int:
    plan_dir, model_dir, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    plan = json.loads((plan_dir / "plan.json").read_text())
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer_config(plan, Path(run_dir), False, False)
        mark("trainer arguments")
        AutoModelForCausalLM.from_pretrained = after(AutoModelForCausalLM.from_pretrained, "from_pretrained")
        moe_quantization.quantize_experts = after(moe_quantization.quantize_experts, "experts quantized")
        model_loading.load_model(plan, model_dir)
        mark("load_model returned")
    out.write_text(json.dumps({"plan": str(plan_dir), "model": model_dir, "stages": STAGES}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
