"""The one trainer of tunespec, the same on this machine, in SageMaker containers and on Slurm nodes:

    python -m tunespec.runtime.train --plan PLAN.json --run-dir DIR     (under torchrun for several processes)

It reads only the plan and writes into DIR: checkpoints/checkpoint-N/, adapter/ (or model/), merged/
(when asked), metrics.json, loss.png, samples.json, train.log, progress.jsonl, tensorboard/.
Run again on the same DIR, it resumes from the last complete checkpoint; on a finished DIR it does nothing.

Exit codes: 0 done, 3 bad data, 4 model cannot be loaded, 5 out of memory, 6 plan not understood.
"""
import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

from .progress import LOADING, READING_DATA, SAVING, WRITING, ProgressWriter
from .run_layout import (ADAPTER, CHECKPOINTS, FULL_MODEL, LOSS_PLOT, PROGRESS, TENSORBOARD, TRAIN_LOG,
                         finished_metrics, last_complete_checkpoint)
from ..schema.kernels import missing_kernels
from ..schema.plan import read_plan_to_run
from ..schema.trainer_arguments import trainer_arguments
from .train_env import prepare_environment

EXIT_DATA, EXIT_MODEL, EXIT_OOM, EXIT_PLAN = 3, 4, 5, 6
logger = logging.getLogger("tunespec.train")


class PlanError(ValueError):
    """The plan asks for something this trainer does not know (e.g. a trainer key of another TRL)."""


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def setup_logging(run_dir: Path) -> None:
    rank = int(os.environ.get("RANK", "0"))
    handlers = [logging.StreamHandler(sys.stderr)]
    if rank == 0:
        handlers.append(logging.FileHandler(run_dir / TRAIN_LOG, encoding="utf-8"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)


def _uses_smp(plan: dict) -> bool:
    return (plan.get("parallel") or {}).get("strategy") == "smp"


def _uses_blocks(plan: dict) -> bool:
    fmt = plan["data"]["format"]
    return fmt["type"] == "text" and fmt.get("group_into_blocks", True)


def plan_trainer_settings(plan: dict, known: set) -> dict:
    """The plan's trainer arguments in the names of a config class whose fields are `known` (SFTConfig,
    NeuronSFTConfig)."""
    # None means "the library's default" in the plan (e.g. save_steps with save_strategy epoch).
    settings = {key: value for key, value in trainer_arguments(plan).items() if value is not None}
    if "warmup_ratio" in settings and "warmup_ratio" not in known:
        # The plan format names warmup_ratio; transformers 5 folded it into warmup_steps (< 1: a ratio).
        settings.setdefault("warmup_steps", settings.pop("warmup_ratio"))
    return settings


def trainer_config(plan: dict, run_dir: Path, has_eval: bool, resuming: bool):
    """SFTConfig from the plan's trainer arguments plus what the run folder decides."""
    from trl import SFTConfig

    known = {field.name for field in dataclasses.fields(SFTConfig)}
    settings = plan_trainer_settings(plan, known)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise PlanError(f"the plan's trainer arguments have keys this TRL/transformers does not know: "
                        f"{', '.join(unknown)}")
    if _uses_blocks(plan):
        # Blocks are already max_seq_length tokens of plain text: nothing to pack or mask.
        settings.update(packing=False, completion_only_loss=False)
    if not has_eval:
        settings["eval_strategy"] = "no"
    if _uses_smp(plan):
        from .smp import trainer_settings

        settings.update(trainer_settings())
    if (plan.get("parallel") or {}).get("world_size", 1) > 1:
        # Frozen base weights get no gradient; DDP must not wait for them.
        settings.setdefault("ddp_find_unused_parameters", False)
    report_to = settings.get("report_to") or "none"
    settings.update(
        output_dir=str(run_dir / CHECKPOINTS),
        report_to=report_to,
        use_cpu=(plan.get("devices") or {}).get("kind") == "cpu",
        disable_tqdm=True,  # progress goes to progress.jsonl; the log stays readable
        include_num_input_tokens_seen="non_padding",
        # The loss before any training, so the report shows how far it fell; not again on resume.
        eval_on_start=has_eval and not resuming,
        logging_first_step=True,
    )
    return SFTConfig(**settings)


def train(plan: dict, run_dir: Path, progress: ProgressWriter, started: float) -> None:
    import torch

    from . import model_loading, smp
    from .data import build_datasets
    from .merge import finish_outputs
    from .metrics import (build_metrics, cuda_peak_bytes, memory_phases_callback, peaks_per_rank, placement,
                          plot_losses, write_metrics)
    from .progress_callback import ProgressCallback
    from .sft_trainer import sft_trainer_class

    missing = missing_kernels(plan)
    if missing:
        raise PlanError("; ".join(missing))
    if _uses_smp(plan):
        smp.start(plan)  # SMP's process group and init come before the Trainer's own distributed setup
    progress.emit("phase", name=LOADING)
    path = model_loading.model_path(plan["model"], on_convert=lambda phase: progress.emit("phase", name=phase))
    tokenizer = model_loading.load_tokenizer(path, plan["model"])
    if plan["data"]["format"]["type"] == "chat" and not tokenizer.chat_template:
        raise PlanError("data.format chat needs a tokenizer with a chat template; this model's has none")
    progress.emit("phase", name=READING_DATA)
    train_set, eval_set = build_datasets(plan, tokenizer)
    logger.info("data: %d train examples, %d eval examples", len(train_set), len(eval_set) if eval_set else 0)

    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    config = trainer_config(plan, run_dir, eval_set is not None, checkpoint is not None)
    # Back to this phase for the weights themselves (the first part resolved the files and the tokenizer):
    # on large models this is the long part, and the view would otherwise count it as reading the data.
    progress.emit("phase", name=LOADING)
    model = smp.load_model(plan, path) if _uses_smp(plan) else model_loading.load_model(plan, path)
    logger.info("attention kernel: %s", model.config._attn_implementation)
    placed = placement(model)
    if placed:
        logger.info("placement (modules of the device map per device): %s; map: %s", placed, model.hf_device_map)
    memory_phases = memory_phases_callback()
    memory_phases.peaks["loaded"] = cuda_peak_bytes()
    callback = ProgressCallback(progress)
    trainer = sft_trainer_class()(model=model, args=config, train_dataset=train_set, eval_dataset=eval_set,
                                  processing_class=tokenizer, peft_config=model_loading.lora_config(plan, model),
                                  callbacks=[callback, memory_phases],
                                  example_tokens=plan["batch"]["sequence_length"] if plan["data"]["packed_row_tokens"]
                                  else None)
    if plan["method"]["lora"] is not None:
        model_loading.set_adapter_input_cast(trainer.model, plan["method"]["lora"])
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    state = trainer.state
    if eval_set is not None and not any(e.get("step") == state.global_step and "eval_loss" in e
                                        for e in state.log_history):
        trainer.evaluate()

    output = run_dir / (FULL_MODEL if plan["method"]["type"] == "full" else ADAPTER)
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    progress.emit("phase", name=SAVING)
    trainer.save_model(str(output))
    trainer.accelerator.wait_for_everyone()
    metrics_inputs = dict(log_history=list(state.log_history), global_step=state.global_step,
                          max_steps=state.max_steps, resumed_from_step=callback.resumed_from_step,
                          tokens_per_s=callback.tokens_per_second(), train_tokens=callback.step_tokens,
                          rank_peaks=peaks_per_rank(memory_phases.peaks), placement=placed)
    # Only the main process goes on, alone: the others' model copies are freed first.
    del trainer, model
    model_loading.free_accelerator_memory()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if not is_main_process():
        return
    tokenizer.save_pretrained(str(output))
    progress.emit("phase", name=WRITING)
    outputs = {"model" if plan["method"]["type"] == "full" else "adapter": output.name,
               **finish_outputs(plan, run_dir, progress), "loss_plot": LOSS_PLOT, "train_log": TRAIN_LOG}
    if (run_dir / TENSORBOARD).is_dir():
        outputs["tensorboard"] = TENSORBOARD
    metrics = build_metrics(**metrics_inputs, duration_s=time.time() - started, outputs=outputs)
    plot_losses(run_dir, metrics, plan["spec"]["name"])
    write_metrics(run_dir, metrics)
    progress.emit("end", step=metrics["global_step"], final_eval_loss=metrics["final_eval_loss"])
    logger.info("done: step %d, final eval loss %s, %s tokens/s", metrics["global_step"],
                metrics["final_eval_loss"], metrics["tokens_per_s"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunespec.runtime.train")
    parser.add_argument("--plan", required=True, type=Path)
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    started = time.time()
    plan = read_plan_to_run(args.plan, exit_code=EXIT_PLAN)
    run_dir = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(run_dir)
    if finished_metrics(run_dir):
        logger.info("%s already holds a finished run; nothing to do", run_dir)
        return 0
    prepare_environment(plan, run_dir)  # before the Hugging Face imports below read the environment
    progress = ProgressWriter(run_dir / PROGRESS, enabled=is_main_process())

    import torch

    from .data import DataError
    from .model_loading import ModelLoadError

    failures = ((DataError, "data", EXIT_DATA), (ModelLoadError, "model", EXIT_MODEL),
                (torch.OutOfMemoryError, "oom", EXIT_OOM), (PlanError, "plan", EXIT_PLAN))
    try:
        train(plan, run_dir, progress, started)
    except tuple(kind for kind, _, _ in failures) as error:
        kind, code = next((name, code) for cls, name, code in failures if isinstance(error, cls))
        logger.error("%s error: %s", kind, error)
        details = {"file": error.file, "where": error.where} if isinstance(error, DataError) else {}
        progress.emit("error", kind=kind, message=str(error), **details)
        return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
