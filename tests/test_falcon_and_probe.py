"""Seed 002's Falcon through `tunespec apply` on the CPU (a tiny Falcon-40B-shaped model: grouped
key/value heads, the new decoder architecture, LoRA on the seed's four modules), and every catalog
architecture built the way `tunespec probe` builds it."""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tunespec.compiler.catalog import load_models
from tunespec.compiler.parameter_counts import count_parameters

from conftest import REPO
from seed_models import save_tiny_model

FALCON_SPEC = REPO / "specs" / "falcon-40b-samsum-qlora-g5.yaml"
SEED_TARGETS = ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"]


def test_a_tiny_falcon_trains_on_the_cpu_through_tunespec_apply(tmp_path):
    save_tiny_model(tmp_path / "falcon", "falcon", num_kv_heads=1, new_decoder_architecture=True,
                    parallel_attn=True, bias=False)
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: falcon-tiny-cpu
        extends: {FALCON_SPEC}
        model: {{source: ./falcon, trust_remote_code: false, offline: true}}
        method:
          type: lora
          lora: {{r: 8, alpha: 32, dropout: 0.05, target_modules: [query_key_value, dense, dense_h_to_4h, dense_4h_to_h]}}
        data:
          train: {{path: {REPO / "specs" / "data" / "samsum-style" / "train.jsonl"}}}
          num_examples: null
          tokens_per_example: null
          max_seq_length: 128
        training: {{epochs: null, max_steps: 4, micro_batch_size: 2, precision: fp32, gradient_checkpointing: false}}
        distribution: {{strategy: none}}
        backend: {{type: local, device: cpu, run_dir: {tmp_path / "run"}}}
        tracking: null
        """))
    done = subprocess.run([sys.executable, "-m", "tunespec.cli.main", "apply", "spec.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", COLUMNS="160"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    adapter = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == SEED_TARGETS
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and metrics["final_eval_loss"] is not None


@pytest.mark.parametrize("name", sorted(load_models()))
def test_probe_builds_every_catalog_architecture_at_one_layer(name):
    """The probe's config of each catalog entry builds (on the meta device: shapes, no memory) into a
    model of exactly the catalog's parameter count, and survives a save and reload (where Qwen2.5's
    per-layer `layer_types` used to disagree with the layer count)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunespec.runtime.probe import hf_config

    arch = load_models()[name]
    config = hf_config(arch, 1)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(dict(arch, num_hidden_layers=1))["total"]
    with tempfile.TemporaryDirectory() as folder:
        config.save_pretrained(folder)
        assert AutoConfig.from_pretrained(folder).num_hidden_layers == 1
