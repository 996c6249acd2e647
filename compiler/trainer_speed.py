"""The trainer path's cheap speed settings, in TrainingArguments' names for plan.trainer: data loading
beside the accelerator's work, and no device sync per micro batch for logging's sake.

- Dataloader workers: each trainer process collates its next batches in worker processes while the
  accelerator runs the current one. Examples are tokenized before training (and cached, runtime/data.py),
  so collation is light: a couple of workers per process keep it ahead; more only cost host memory. On a
  CPU the training itself needs every core: no workers.
- Pinned host memory: batches copied to a GPU from page-locked memory go asynchronously.
- Adapter input cast: PEFT copies each adapted module's 16-bit input to fp32 (the adapters' dtype) before
  dropout and lora_A, and autocast copies it back to 16 bits for lora_A's matmul: two full-size copies per
  adapted module and pass, for a matmul that runs in 16 bits either way. Under mixed precision the plan turns
  the cast off; the adapters keep their fp32 weights and optimizer state. DoRA's weight-norm path and the
  Trainium trainer (no autocast there) keep PEFT's cast.
- `logging_nan_inf_filter` tests each micro batch's loss for NaN/inf on the host (a device sync that stops
  the host from queueing the next kernels); without it a NaN loss is logged as NaN, which is what a user
  should see anyway.
"""
from typing import Optional

from ..schema.contract import TRAINER_MODULE
from .calibration import DataLoading


def dataloader_workers(devices: dict, processes_per_node: int, cpus_per_node: Optional[int]) -> int:
    """Workers per trainer process: two, within the node's CPUs after one for each trainer process."""
    if devices["kind"] == "cpu":
        return 0
    workers = DataLoading.workers_per_process.value
    if cpus_per_node is None:
        return workers
    spare = cpus_per_node // processes_per_node - 1
    return max(0, min(workers, spare))


def trainer_speed_settings(devices: dict, processes_per_node: int, cpus_per_node: Optional[int]) -> dict:
    """plan.trainer's data loading and logging settings for these devices."""
    workers = dataloader_workers(devices, processes_per_node, cpus_per_node)
    on_gpu = devices["kind"] == "cuda"
    return {
        "dataloader_num_workers": workers,
        "dataloader_persistent_workers": workers > 0,  # not forked again for every epoch and evaluation
        "dataloader_pin_memory": on_gpu,
        "logging_nan_inf_filter": not on_gpu,
    }


def with_adapter_input_cast(method: dict, precision: dict, launch: dict) -> dict:
    """plan.method with lora.cast_input_to_adapter_dtype decided: off under the torch trainer's mixed precision."""
    lora = method.get("lora")
    if lora is None:
        return method
    autocast = precision["resolved"] in ("bf16", "fp16") and launch["module"] == TRAINER_MODULE
    keep_cast = not autocast or lora["use_dora"]
    return dict(method, lora=dict(lora, cast_input_to_adapter_dtype=keep_cast))
