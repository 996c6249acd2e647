"""The Trainium entry (seed 003) uses the GPU trainer's shared parts: environment preparation, model
loading, tokenizer, LoRA config and datasets, with the model loaded lazily for tensor parallelism as the
recipe's train.py does. optimum-neuron is a recording double here (tests/doubles/neuron, put on
PYTHONPATH); the Slurm chain around it is tested in test_slurm_cluster."""
import json
import os
import subprocess
import sys
from pathlib import Path

from tunespec.compiler.plan import build_plan
from tunespec.schema.contract import canonical_json
from tunespec.compiler.spec_loader import load_spec

from seed_models import save_tiny_model

DOUBLES = Path(__file__).resolve().parent / "doubles" / "neuron"
SEED_003 = Path("specs/llama-3-8b-dolly-lora-trn1.yaml")


def seed_003_plan(tmp_path: Path) -> dict:
    plan = build_plan(load_spec(SEED_003))
    # The node's copy of the model (the chain's download job puts it on the shared file system).
    plan["model"].update(source=str(save_tiny_model(tmp_path / "llama", "llama", num_key_value_heads=1)),
                         source_kind="local", offline=True)
    return plan


def run_entry(plan: dict, tmp_path: Path, cwd: Path) -> list:
    """`train_neuron train` on the plan; the records the optimum-neuron double wrote, in call order."""
    (tmp_path / "plan.json").write_text(canonical_json(plan))
    log = tmp_path / "neuron.jsonl"
    log.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "tunespec.runtime.train_neuron", "train", "--plan",
                           str(tmp_path / "plan.json"), "--run-dir", str(tmp_path / "run")],
                          cwd=cwd, env=entry_environment(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in log.read_text().splitlines()]


def entry_environment(tmp_path: Path) -> dict:
    """The optimum-neuron double first on the path; its log in tmp_path."""
    python_path = os.pathsep.join(filter(None, [str(DOUBLES), os.environ.get("PYTHONPATH")]))
    return {"PATH": os.environ["PATH"], "PYTHONPATH": python_path, "NEURON_DOUBLE_LOG": str(tmp_path / "neuron.jsonl"),
            "HOME": str(tmp_path), "TUNESPEC_CACHE": str(tmp_path / "cache")}


def test_trainium_entry_loads_through_the_shared_model_loading_and_lora_config(tmp_path, repo_cwd):
    plan = seed_003_plan(tmp_path)
    records = run_entry(plan, tmp_path, repo_cwd)
    [record] = [r for r in records if r["call"] == "NeuronSFTTrainer.train"]
    lora = plan["method"]["lora"]
    assert record["lora_targets"] == sorted(lora["target_modules"]) and record["lora_r"] == lora["r"]
    assert record["use_cache"] is False  # set by the shared load_model
    assert record["dtype"] == "torch.bfloat16"
    assert (record["tensor_parallel_size"], record["pipeline_parallel_size"]) == (8, 1)
    assert record["pad_token"] is not None and record["train_rows"] > 0 and record["eval_rows"] > 0
    assert record["tokenizers_parallelism"] == "false"  # prepare_environment ran
    assert record["learning_rate"] == plan["trainer"]["learning_rate"]
    # optimum-neuron 0.1.0's names for the plan's sequence length and warmup (schema/neuron_sft_config.py).
    assert record["max_seq_length"] == plan["batch"]["sequence_length"]
    assert record["warmup_ratio"] == plan["trainer"]["warmup_ratio"]


OLDER_OPTIMUM_NEURON = """\
import dataclasses

import optimum.neuron
from trl import SFTConfig


@dataclasses.dataclass
class NeuronSFTConfig(SFTConfig):  # an optimum-neuron whose config lacks max_seq_length
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    warmup_ratio: float = 0.0


optimum.neuron.NeuronSFTConfig = NeuronSFTConfig
"""


def test_a_trainer_argument_this_optimum_neuron_lacks_stops_the_entry(tmp_path, repo_cwd):
    """The plan is right for the optimum-neuron it was compiled for; another installed version that lacks
    one of its arguments stops the entry with one line instead of dropping the argument."""
    plan = seed_003_plan(tmp_path)
    (tmp_path / "plan.json").write_text(canonical_json(plan))
    older = tmp_path / "older-optimum-neuron"
    older.mkdir()
    (older / "sitecustomize.py").write_text(OLDER_OPTIMUM_NEURON)
    env = entry_environment(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(older), env["PYTHONPATH"]])
    done = subprocess.run([sys.executable, "-m", "tunespec.runtime.train_neuron", "train", "--plan",
                           str(tmp_path / "plan.json"), "--run-dir", str(tmp_path / "run")], cwd=repo_cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "NeuronSFTConfig has no max_seq_length; tunespec plans for optimum-neuron 0.1.0" in done.stderr


def test_each_process_loads_the_model_lazily_for_its_tensor_parallel_shard(tmp_path, repo_cwd):
    plan = seed_003_plan(tmp_path)
    assert plan["parallel"]["settings"]["lazy_load"] is True
    records = run_entry(plan, tmp_path, repo_cwd)
    # The model was loaded once, under lazy_load_for_parallelism with the plan's degrees, before training.
    assert [r["call"] for r in records] == ["lazy_load_for_parallelism", "NeuronSFTTrainer.train"]
    assert records[0] == {"call": "lazy_load_for_parallelism", "model": "LlamaForCausalLM",
                          "tensor_parallel_size": 8, "pipeline_parallel_size": 1}


def test_lazy_loading_off_loads_the_whole_model_in_each_process(tmp_path, repo_cwd):
    plan = seed_003_plan(tmp_path)
    plan["parallel"]["settings"]["lazy_load"] = False
    records = run_entry(plan, tmp_path, repo_cwd)
    assert [r["call"] for r in records] == ["NeuronSFTTrainer.train"]


def consolidated_run(plan: dict, tmp_path: Path, rename=lambda name: name) -> Path:
    """A run folder whose adapter/ is what optimum-neuron's consolidation writes: adapter_config.json and
    adapter_model.safetensors under PEFT's saved names (no adapter name), with non-zero LoRA weights."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(plan["model"]["source"]),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.normal_(std=0.5)
    adapter = tmp_path / "run" / "adapter"
    model.peft_config["default"].save_pretrained(str(adapter))
    state = get_peft_model_state_dict(model)
    save_file({rename(name): tensor.contiguous() for name, tensor in state.items()}, str(adapter / "adapter_model.safetensors"))
    torch.save(model.merge_and_unload().state_dict(), tmp_path / "expected.pt")
    (tmp_path / "plan.json").write_text(canonical_json(plan))
    return tmp_path / "run"


def run_merge(tmp_path: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunespec.runtime.train_neuron", "merge", "--plan",
                           str(tmp_path / "plan.json"), "--run-dir", str(tmp_path / "run")],
                          cwd=cwd, env={**os.environ, "HOME": str(tmp_path), "TUNESPEC_CACHE": str(tmp_path / "cache")},
                          capture_output=True, text=True, timeout=600)


def test_merge_renames_the_consolidated_lora_keys_and_folds_them_in(tmp_path, repo_cwd):
    import torch
    from safetensors.torch import load_file

    plan = seed_003_plan(tmp_path)
    run_dir = consolidated_run(plan, tmp_path)
    done = run_merge(tmp_path, repo_cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "merged 4 LoRA tensors" in done.stdout  # q_proj and v_proj of the one layer, A and B each
    merged = load_file(str(run_dir / "model" / "model.safetensors"))
    expected = torch.load(tmp_path / "expected.pt")
    base = load_file(str(Path(plan["model"]["source"]) / "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged[name].float(), base[name].float(), atol=0.1)  # the adapter is in
    assert torch.allclose(merged[name].float(), expected[name].float(), atol=0.05)  # as PEFT merges it (bf16)
    assert (run_dir / "model" / "tokenizer.json").is_file()


def test_merge_refuses_an_adapter_whose_keys_fit_no_lora_weight(tmp_path, repo_cwd):
    plan = seed_003_plan(tmp_path)
    # As an unconsolidated fused projection would be named: nothing of q_proj's LoRA weights is in it.
    run_dir = consolidated_run(plan, tmp_path, rename=lambda name: name.replace("q_proj", "qkv_proj"))
    done = run_merge(tmp_path, repo_cwd)
    assert done.returncode == 1
    assert "does not fit the model: 2 LoRA weights get no tensor" in done.stderr
    assert "2 tensors have no weight" in done.stderr and "Traceback" not in done.stderr
    assert not (run_dir / "model").exists()
