"""The Trainium entry of the Slurm chain, through optimum-neuron (seed 003's flow).

    python -m tunespec.runtime.train_neuron [train] --plan PLAN --run-dir RUN [--max-steps N]
    python -m tunespec.runtime.train_neuron consolidate --plan PLAN --run-dir RUN
    python -m tunespec.runtime.train_neuron merge --plan PLAN --run-dir RUN

`train` runs under torchrun, one process per NeuronCore (and under neuron_parallel_compile with
--max-steps for the graph-extraction job). It writes sharded checkpoints into RUN/checkpoints and the
final sharded weights into RUN/neuron_model; `consolidate` turns those shards into RUN/adapter (or
RUN/model for full fine-tuning); `merge` folds the adapter into the base weights, into RUN/model.
Needs the `[neuron]` extra (optimum-neuron, torch-neuronx) on Trainium nodes; nothing else imports it.
"""
import argparse
import contextlib
import dataclasses
import shutil
import sys
from pathlib import Path

from ..schema.plan import read_plan_to_run
from ..schema.neuron_sft_config import OPTIMUM_NEURON_VERSION, neuron_sft_arguments
from ..schema.trainer_arguments import trainer_arguments
from .run_layout import CHECKPOINTS, last_complete_checkpoint
from .train_env import prepare_environment

SHARDED_DIR = "neuron_model"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunespec.runtime.train_neuron")
    parser.add_argument("action", nargs="?", default="train", choices=("train", "consolidate", "merge"))
    parser.add_argument("--plan", required=True, type=Path)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--max-steps", type=int, help="stop after N steps (the graph-extraction run)")
    args = parser.parse_args(argv)
    plan = read_plan_to_run(args.plan)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    if args.action == "train":
        train(plan, args.run_dir, args.max_steps)
    elif args.action == "consolidate":
        consolidate(plan, args.run_dir)
    else:
        from .neuron_adapter import NeuronAdapterError

        try:
            merge(plan, args.run_dir)
        except NeuronAdapterError as error:
            sys.exit(f"merge: {error}")
    return 0


def train(plan: dict, run_dir: Path, max_steps) -> None:
    # The GPU trainer's environment (offline switches, secrets, tokenizer threads), before the
    # Hugging Face libraries are imported.
    prepare_environment(plan, run_dir)
    try:
        from optimum.neuron import NeuronSFTConfig, NeuronSFTTrainer
    except ImportError as error:
        sys.exit(f"optimum-neuron is not importable here ({error}); install tunespec[neuron] in the job's venv")

    from . import model_loading
    from .data import build_datasets

    parallel = plan["parallel"]
    # The GPU trainer's model loading and adapter config, so both read the plan the same way.
    path = model_loading.model_path(plan["model"])
    tokenizer = model_loading.load_tokenizer(path, plan["model"])
    with _model_loading(parallel):
        model = model_loading.load_model(plan, path)
    lora = model_loading.lora_config(plan, model)

    # The GPU trainer's datasets, in TRL's formats: NeuronSFTTrainer is TRL's SFTTrainer underneath.
    train_set, eval_set = build_datasets(plan, tokenizer)

    # The plan's trainer arguments under NeuronSFTConfig's names (the compiler refused any it has no field for).
    settings = dict(neuron_sft_arguments(trainer_arguments(plan)), output_dir=str(run_dir / CHECKPOINTS),
                    tensor_parallel_size=parallel["tensor_parallel"],
                    pipeline_parallel_size=parallel["pipeline_stages"])
    if max_steps:
        settings.update(max_steps=max_steps, save_strategy="no")
    lacking = sorted(set(settings) - {field.name for field in dataclasses.fields(NeuronSFTConfig)})
    if lacking:
        sys.exit(f"this optimum-neuron's NeuronSFTConfig has no {', '.join(lacking)}; tunespec plans for "
                 f"optimum-neuron {OPTIMUM_NEURON_VERSION} (pip install 'tunespec[neuron]')")
    config = NeuronSFTConfig(**settings)
    trainer = NeuronSFTTrainer(model=model, args=config, peft_config=lora, tokenizer=tokenizer,
                               train_dataset=train_set, eval_dataset=eval_set)
    # Resume after a requeue (HyperPod auto-resume) from the newest complete checkpoint, if any.
    checkpoint = last_complete_checkpoint(run_dir)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if not max_steps:
        trainer.save_model(str(run_dir / SHARDED_DIR))


def _model_loading(parallel: dict):
    """Lazy loading for model parallelism, as the recipe's train.py loads: the layers are built on the meta
    device and each process later materialises only its own shard, so 32 processes do not each hold the
    whole model in host memory (optimum-neuron does nothing lazily with tensor and pipeline degree 1)."""
    if not parallel["settings"]["lazy_load"]:
        return contextlib.nullcontext()
    from optimum.neuron.distributed import lazy_load_for_parallelism

    return lazy_load_for_parallelism(tensor_parallel_size=parallel["tensor_parallel"],
                                     pipeline_parallel_size=parallel["pipeline_stages"])


def consolidate(plan: dict, run_dir: Path) -> None:
    from optimum.neuron.distributed.checkpointing import consolidate_model_parallel_checkpoints_to_unified_checkpoint

    target = run_dir / ("model" if plan["method"]["type"] == "full" else "adapter")
    consolidate_model_parallel_checkpoints_to_unified_checkpoint(run_dir / SHARDED_DIR, target)
    # The configs beside the shards (adapter_config.json, config.json, tokenizer files) are not sharded.
    for path in (run_dir / SHARDED_DIR).glob("*.json"):
        shutil.copy2(path, target / path.name)
    print(f"consolidated {run_dir / SHARDED_DIR} into {target}")


def merge(plan: dict, run_dir: Path) -> None:
    """The consolidated adapter folded into the base weights, loaded through the shared model loading."""
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM

    from . import model_loading
    from .neuron_adapter import load_consolidated_adapter

    path = model_loading.model_path(plan["model"])
    # On the host CPU (the job holds no NeuronCore), in the training precision, as the recipe merges.
    base = AutoModelForCausalLM.from_pretrained(path, dtype=model_loading.weights_dtype(plan),
                                                **model_loading.hub_options(plan["model"]))
    adapter = run_dir / "adapter"
    model = PeftModel(base, LoraConfig.from_pretrained(str(adapter)))
    loaded = load_consolidated_adapter(model, adapter)
    merged = model.merge_and_unload()
    merged.save_pretrained(str(run_dir / "model"), safe_serialization=True)
    model_loading.load_tokenizer(path, plan["model"]).save_pretrained(str(run_dir / "model"))
    print(f"merged {loaded} LoRA tensors of {adapter} into {run_dir / 'model'}")

if __name__ == "__main__":
    sys.exit(main())
