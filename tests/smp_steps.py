"""Started under torchrun by tests/test_smp_runtime.py: the SMP runtime (process group, torch.sagemaker,
model, FSDP) of a plan, then a few AdamW steps on one fixed block of tokens, every rank writing
its losses and the wrapped model's layout to OUT/rank-N.json."""
import json
import logging
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from tunespec.runtime import smp


def main(plan_path: str, out: str) -> None:
    logging.basicConfig(level=logging.INFO)
    plan = json.loads(Path(plan_path).read_text())
    smp.start(plan)
    model = smp.load_model(plan, plan["model"]["source"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan["trainer"]["learning_rate"])
    ids = torch.arange(1, 33).reshape(1, 32) * 37 % 1000
    losses = []
    for _ in range(4):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    layout = sorted({type(module).__name__ for module in model.modules()})
    Path(out, f"rank-{dist.get_rank()}.json").write_text(json.dumps(
        {"losses": losses, "outermost": type(model).__name__, "module_types": layout}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
