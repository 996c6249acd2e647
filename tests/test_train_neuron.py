"""The Trainium entry (seed 003) uses the GPU trainer's shared parts: environment preparation, model
loading, tokenizer, LoRA config and datasets. optimum-neuron is a recording double here
(tests/doubles/neuron, put on PYTHONPATH); the Slurm chain around it is tested in test_slurm_cluster."""
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


def test_trainium_entry_loads_through_the_shared_model_loading_and_lora_config(tmp_path, repo_cwd):
    plan = build_plan(load_spec(Path("specs/llama-3-8b-dolly-lora-trn1.yaml")))
    # The node's copy of the model (the chain's download job puts it on the shared file system).
    plan["model"].update(source=str(save_tiny_model(tmp_path / "llama", "llama", num_key_value_heads=1)),
                         source_kind="local", offline=True)
    (tmp_path / "plan.json").write_text(canonical_json(plan))
    log = tmp_path / "neuron.jsonl"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(DOUBLES), "NEURON_DOUBLE_LOG": str(log),
           "HOME": str(tmp_path), "TUNESPEC_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "tunespec.runtime.train_neuron", "train", "--plan",
                           str(tmp_path / "plan.json"), "--run-dir", str(tmp_path / "run")],
                          cwd=repo_cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [record] = [json.loads(line) for line in log.read_text().splitlines()]
    lora = plan["method"]["lora"]
    assert record["lora_targets"] == sorted(lora["target_modules"]) and record["lora_r"] == lora["r"]
    assert record["use_cache"] is False  # set by the shared load_model
    assert record["dtype"] == "torch.bfloat16"
    assert (record["tensor_parallel_size"], record["pipeline_parallel_size"]) == (8, 1)
    assert record["pad_token"] is not None and record["train_rows"] > 0 and record["eval_rows"] > 0
    assert record["tokenizers_parallelism"] == "false"  # prepare_environment ran
    assert record["learning_rate"] == plan["trainer"]["learning_rate"]
