"""The trainer path's cheap speed settings: dataloader workers and pinned memory from the plan (within the
node's CPUs), no device sync per micro batch for logging or token counting, and examples tokenized once:
reused by the next apply of the same data, tokenizer and template, tokenized again when the data changes."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec
from tunespec.schema.host import Host

from conftest import REPO
from seed_models import save_tiny_model

DEFAULT_SPEC = REPO / "cli" / "defaults" / "smollm2-viggo-lora.yaml"
DATA = REPO / "cli" / "defaults" / "data"


def plan_for(root, backend: str, cores: int = 16, training: str = "{}", extra: str = "") -> dict:
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: trainer-speed
        extends: {DEFAULT_SPEC}
        training: {training}
        backend: {backend}
        """) + extra)
    host = Host(cores=cores, capability="avx2", native_bf16=False, memory_gib=64.0, cpu_model="test CPU")
    return build_plan(load_spec(spec), cwd=root, host=host, enforce_budget=False)


def loading(plan: dict) -> tuple:
    t = plan["trainer"]
    return (t["dataloader_num_workers"], t["dataloader_persistent_workers"], t["dataloader_pin_memory"],
            t["logging_nan_inf_filter"])


def test_a_cpu_plan_keeps_every_core_for_training(tmp_path):
    assert loading(plan_for(tmp_path, "{type: local, device: cpu, run_dir: run}")) == (0, False, False, True)


@pytest.mark.parametrize("cores, workers", [(16, 2), (2, 1), (1, 0)])
def test_a_gpu_plan_loads_beside_the_gpu_within_this_machines_cores(tmp_path, cores, workers):
    plan = plan_for(tmp_path, "{type: local, device: cuda, hardware: h200-141gb, run_dir: run}", cores,
                    "{precision: bf16}")
    assert loading(plan) == (workers, workers > 0, True, False)


def test_a_cluster_plan_shares_the_instances_vcpus_between_its_processes(tmp_path):
    backend = ("{type: hyperpod-slurm, cluster_flavour: hyperpod, instance_type: ml.g5.12xlarge, nodes: 1, "
               "environment: {venv: /fsx/envs/train}}")
    plan = plan_for(tmp_path, backend, training="{precision: bf16}", extra="distribution: {strategy: ddp}\n")
    assert plan["parallel"]["processes_per_node"] == 4  # 48 vCPUs: 11 spare per process
    assert loading(plan) == (2, True, True, False)


def test_the_trainer_gets_the_plans_settings(tmp_path):
    from tunespec.runtime.train import trainer_config

    # fp32: TrainingArguments refuses bf16 where there is no GPU, as here
    plan = plan_for(tmp_path, "{type: local, device: cuda, hardware: h200-141gb, run_dir: run}", 16, "{precision: fp32}")
    config = trainer_config(plan, tmp_path / "run", has_eval=True, resuming=False)
    assert (config.dataloader_num_workers, config.dataloader_persistent_workers, config.dataloader_pin_memory,
            config.logging_nan_inf_filter) == (2, True, True, False)


@pytest.mark.parametrize("precision, method, cast", [("bf16", "lora", False), ("fp16", "qlora", False),
                                                     ("fp32", "lora", True), ("bf16", "dora", True)])
def test_adapters_keep_a_16_bit_input_under_mixed_precision(tmp_path, precision, method, cast):
    plan = plan_for(tmp_path, "{type: local, device: cuda, hardware: h200-141gb, run_dir: run}",
                    training=f"{{precision: {precision}}}", extra=f"method: {{type: {method}}}\n")
    assert plan["method"]["lora"]["cast_input_to_adapter_dtype"] is cast


def test_the_trainium_trainer_keeps_peft_s_cast():
    plan = build_plan(load_spec(REPO / "specs" / "llama-3-8b-dolly-lora-trn1.yaml"), cwd=REPO, enforce_budget=False)
    assert plan["precision"]["resolved"] == "bf16"
    assert plan["method"]["lora"]["cast_input_to_adapter_dtype"] is True


@pytest.mark.parametrize("cast, lora_a_input", [(True, "torch.float32"), (False, "torch.bfloat16")])
def test_the_runtime_applies_the_plans_adapter_input_cast(tmp_path, cast, lora_a_input):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunespec.runtime.model_loading import set_adapter_input_cast

    save_tiny_model(tmp_path / "model", "llama", num_hidden_layers=1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype=torch.bfloat16),
                           LoraConfig(r=2, lora_alpha=4, lora_dropout=0.1, target_modules=["q_proj"]))
    set_adapter_input_cast(model, {"cast_input_to_adapter_dtype": cast})
    seen = []
    lora_a = next(m for name, m in model.named_modules() if name.endswith("q_proj.lora_A.default"))
    lora_a.register_forward_pre_hook(lambda module, args: seen.append(str(args[0].dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])).loss
    loss.backward()
    assert seen == [lora_a_input]
    assert lora_a.weight.dtype == torch.float32 and lora_a.weight.grad is not None


def test_torch_compile_runs_per_decoder_layer_as_the_plan_says(tmp_path, monkeypatch):
    from tunespec.runtime.train import trainer_config
    from tunespec.runtime.train_env import prepare_environment

    monkeypatch.delenv("ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION", raising=False)
    plan = plan_for(tmp_path, "{type: local, device: cuda, hardware: h200-141gb, run_dir: run}",
                    training="{precision: fp32, torch_compile: true}")
    assert plan["trainer"]["torch_compile"] is True
    prepare_environment(plan, tmp_path / "run")
    assert os.environ["ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION"] == "1"
    assert trainer_config(plan, tmp_path / "run", has_eval=False, resuming=False).torch_compile is True


@pytest.mark.parametrize("base, says", [
    (DEFAULT_SPEC, "planned for CUDA GPUs (Triton kernels); this plan runs on a CPU"),
    (REPO / "specs" / "llama-3-8b-dolly-lora-trn1.yaml", "compiles its graphs with the Neuron compiler"),
])
def test_torch_compile_is_refused_where_it_cannot_run(tmp_path, base, says):
    from tunespec.compiler.errors import SpecError

    spec = tmp_path / "spec.yaml"
    spec.write_text(f"extends: {base}\ntraining: {{torch_compile: true}}\n")
    with pytest.raises(SpecError) as refused:
        build_plan(load_spec(spec), cwd=tmp_path, enforce_budget=False)
    message = str(refused.value)
    assert "training.torch_compile" in message and says in message and "set `torch_compile: false`" in message


def test_torch_compile_is_refused_with_4_bit_experts(tmp_path):
    from tunespec.compiler.errors import SpecError

    spec = tmp_path / "spec.yaml"
    spec.write_text(f"extends: {REPO / 'specs' / 'mixtral-8x7b-viggo-qlora-fsdp.yaml'}\n"
                    "training: {torch_compile: true}\n")
    with pytest.raises(SpecError, match="torch_compile is not planned with 4-bit experts") as refused:
        build_plan(load_spec(spec), cwd=tmp_path, enforce_budget=False)
    assert "training.torch_compile" in str(refused.value)


def test_padding_free_rows_are_counted_on_the_host(tmp_path):
    """One process, packed rows without padding: the count is the row's length, with no gather (the Trainer's
    own count moves it to the device and reads it back, a device sync every micro batch)."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from tunespec.runtime.sft_trainer import sft_trainer_class

    trainer = sft_trainer_class().__new__(sft_trainer_class())  # only the counting method is exercised
    trainer.args = type("Args", (), {"pad_to_multiple_of": None, "include_num_input_tokens_seen": "non_padding"})()
    trainer.accelerator = type("Accelerator", (), {"num_processes": 1, "gather": None})()
    trainer.state = type("State", (), {"num_input_tokens_seen": 0})()
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(
        [{"input_ids": list(range(1, 12))}, {"input_ids": list(range(1, 8))}])
    trainer._track_num_input_tokens(batch)
    assert trainer.state.num_input_tokens_seen == 18 and isinstance(batch["input_ids"], torch.Tensor)


# ---- tokenized once ----------------------------------------------------------------------------------

PREPARE = """
import json, sys
from pathlib import Path
from tunespec.runtime import model_loading
from tunespec.runtime.data import build_datasets
from tunespec.runtime.sft_trainer import sft_trainer_class
from tunespec.runtime.train import trainer_config
plan = json.loads(Path(sys.argv[1]).read_text())
path = Path(plan["model"]["source"])
tokenizer = model_loading.load_tokenizer(path, plan["model"])
train, evaluation = build_datasets(plan, tokenizer, cache=Path(sys.argv[2]))
model = model_loading.load_model(plan, path)
trainer = sft_trainer_class()(model=model, args=trainer_config(plan, Path(sys.argv[3]), evaluation is not None, False),
                              train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer,
                              peft_config=model_loading.lora_config(plan, model))
print(json.dumps([f["filename"] for f in trainer.train_dataset.cache_files]))
"""


def prepared_files(root, csv, cache) -> list:
    """The Arrow files of the train set as the trainer gets it (tokenized, labelled, packed), from a fresh
    process as each apply is."""
    model = root / "tiny-llama"
    if not model.exists():
        save_tiny_model(model, "llama", num_key_value_heads=1)
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: tokenized-once
        extends: {DEFAULT_SPEC}
        model: {{source: {model}, architecture: null}}
        data:
          train: {{path: {csv}, format: csv, limit: 40}}
          eval: {{path: {csv}, format: csv, limit: 8}}
          packing: true
        backend: {{type: local, device: cpu, run_dir: run}}
        """))
    plan = build_plan(load_spec(spec), cwd=root)
    (root / "plan.json").write_text(json.dumps(plan))
    done = subprocess.run([sys.executable, "-c", PREPARE, str(root / "plan.json"), str(cache), str(root / "run")],
                          capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    files = json.loads(done.stdout.strip().splitlines()[-1])
    return [(name, (root / name).stat().st_mtime_ns) for name in files]


def test_examples_are_tokenized_once_and_again_when_the_data_changes(tmp_path):
    csv = tmp_path / "train.csv"
    shutil.copy(DATA / "viggo_train.csv", csv)
    cache = tmp_path / "cache"
    first = prepared_files(tmp_path, csv, cache)
    assert first and all(name.startswith(str(cache)) for name, _ in first)
    assert prepared_files(tmp_path, csv, cache) == first  # the same files, not written again
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text(lines[0] + lines[2] + lines[1] + "".join(lines[3:]))  # two rows swapped
    changed = prepared_files(tmp_path, csv, cache)
    assert {name for name, _ in changed}.isdisjoint(name for name, _ in first)
