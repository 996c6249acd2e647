"""SMP v2 in the trainer (seed 001's plan shape at reduced scale): two torchrun processes on the CPU run
the trainer's SMP module (tests/smp_steps.py: process group, torch.sagemaker, model, FSDP, then AdamW
steps) with a recording double of `torch.sagemaker` and SMDDP (tests/doubles/smp, put on PYTHONPATH).
The calls, their order and arguments must be what the plan says, and every SMP field of the plan must
be read. FSDP, activation checkpointing and offloading are PyTorch's own, for real.

Not here: the Hugging Face Trainer around the SMP model. accelerate runs FSDP only on accelerators (on
the CPU it puts DDP around any model), so that part needs the GPU machine."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tunespec.compiler.sagemaker_distribution import smp_parameters
from tunespec.compiler.plan import build_plan
from tunespec.schema.contract import canonical_json
from tunespec.compiler.spec_loader import load_spec

from seed_models import save_tiny_model

DOUBLES = Path(__file__).resolve().parent / "doubles" / "smp"
SENTENCES = ["hide new secretions from the parental units", "contains no wit , only labored gags",
             "that loves its characters and communicates something rather beautiful about human nature",
             "remains utterly satisfied to remain the same throughout", "the greatest musicians",
             "on the worst revenge-of-the-nerds clichés the filmmakers could dredge up"]


def smp_spec(root: Path) -> Path:
    """Seed 001's distribution block, on two single-GPU instances (world size 2: EP 2 × hybrid shard 1)."""
    rows = "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(SENTENCES * 8))
    (root / "train.tsv").write_text("sentence\tlabel\n" + rows)
    (root / "dev.tsv").write_text("sentence\tlabel\n" + "".join(rows.splitlines(keepends=True)[:6]))
    save_tiny_model(root / "mixtral", "mixtral", num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2)
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent("""\
        apiVersion: tunespec/v1
        name: tiny-smp-ep
        accept_risks: [does-not-fit]   # planned as Mixtral 8x7B on two A10G; the model run is a tiny one
        model: {source: "s3://tunespec-test/models/tiny-mixtral/", architecture: mixtral-8x7b, offline: true}
        method: {type: full}
        data:
          train: {path: train.tsv, format: tsv}
          eval: {path: dev.tsv, format: tsv}
          format: {type: text, column: sentence, group_into_blocks: true}
          max_seq_length: 32
          packing: false
        training:
          max_steps: 3
          micro_batch_size: 1
          learning_rate: 1.0e-3
          precision: bf16
          gradient_checkpointing: true
          seed: 4242
          checkpoint_every_steps: 100
        distribution:
          strategy: smp
          hybrid_shard_degree: 1
          expert_parallel_degree: 2
          activation_offloading: true
          activation_loading_horizon: 4
          delayed_param_init: true
          smddp: true
          moe: {load_balancing: balanced, all_to_all_dispatcher: false, global_token_shuffle: true}
        backend:
          type: sagemaker
          instance_type: ml.g5.2xlarge
          instance_count: 2
          role: arn:aws:iam::111122223333:role/SageMakerTrainingRole
          region: us-west-2
          output_s3: s3://tunespec-test/runs
          framework_version: "2.5.1"
          py_version: py311
        """))
    return spec


def plan_in(root: Path) -> dict:
    """The plan of smp_spec, compiled from its folder (SageMaker uploads local inputs relative to it)."""
    spec = smp_spec(root)
    previous = Path.cwd()
    os.chdir(root)
    try:
        return build_plan(load_spec(spec), cwd=root)
    finally:
        os.chdir(previous)


def local_inputs(plan: dict, root: Path) -> dict:
    """The model where the container finds its channel (here the tiny model's folder), as the entry does;
    the CPU stands in for the planned GPUs."""
    plan["model"].update(source=str(root / "mixtral"), source_kind="local")
    plan["devices"]["kind"] = "cpu"
    return plan


@pytest.fixture(scope="module")
def smp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smp")
    plan = local_inputs(plan_in(root), root)
    plan_path = root / "plan.json"
    plan_path.write_text(canonical_json(plan))
    log, out = root / "smp_calls.jsonl", root / "out"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(DOUBLES), SMP_DOUBLE_LOG=str(log), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(Path(__file__).with_name("smp_steps.py")), str(plan_path), str(out)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    ranks = [json.loads((out / f"rank-{rank}.json").read_text()) for rank in (0, 1)] if done.returncode == 0 else []
    return plan, ranks, done, calls


def rank_calls(calls: list, rank: int) -> list:
    return [c for c in calls if c["rank"] == rank]


def test_both_ranks_start_from_rank_0s_weights_and_the_loss_falls(smp_run):
    _, ranks, done, _ = smp_run
    assert done.returncode == 0, done.stderr[-4000:]
    # Rank 1 built its model on meta (delayed initialisation): equal losses mean it got rank 0's weights.
    assert ranks[0]["losses"] == ranks[1]["losses"]
    assert ranks[0]["losses"][-1] < ranks[0]["losses"][0]


def test_smp_calls_their_order_and_arguments_follow_the_plan(smp_run):
    plan, _, done, calls = smp_run
    assert done.returncode == 0, done.stderr[-4000:]
    settings = plan["parallel"]["settings"]
    moe = settings["moe"]
    expected_init = dict(smp_parameters(settings), random_seed=4242, tensor_parallel_degree=1)
    expected_moe = {"smp_moe": moe["use_smp_implementation"], "random_seed": 4242,
                    "moe_load_balancing": "balanced", "global_token_shuffle": True,
                    "moe_all_to_all_dispatcher": False, "moe_aux_loss_coeff": 0.001, "moe_z_loss_coeff": 0.001}
    for rank in (0, 1):
        mine = rank_calls(calls, rank)
        assert [c["call"] for c in mine][:4] == ["smddp_process_group", "init", "MoEConfig", "transform"]
        init = mine[1]
        assert init["backend"] == "smddp" and init["world_size"] == 2
        assert init["config"] == expected_init
        assert {k: v for k, v in mine[2].items() if k not in ("call", "rank")} == expected_moe
        assert mine[3]["config"] == expected_moe and mine[3]["load_state_dict_from_rank0"] is True
    # Delayed parameter initialisation: only rank 0 holds weights; the others build on meta and are
    # materialised by FSDP through SMP's param_init_fn, then receive rank 0's weights.
    assert rank_calls(calls, 0)[3]["parameters_on_meta"] is False
    assert "DelayedParamIniter" not in [c["call"] for c in rank_calls(calls, 0)]
    rank1 = rank_calls(calls, 1)
    assert rank1[3]["parameters_on_meta"] is True
    assert [c["call"] for c in rank1[4:6]] == ["DelayedParamIniter", "get_param_init_fn"]


def test_fsdp_checkpointing_and_offloading_wrap_the_transformed_layers(smp_run):
    _, ranks, done, _ = smp_run
    assert done.returncode == 0, done.stderr[-4000:]
    assert ranks[0]["outermost"] == "FullyShardedDataParallel"  # what the Trainer must see (no DDP around it)
    assert {"TransformerLayer", "CheckpointWrapper", "OffloadWrapper"} <= set(ranks[0]["module_types"])
    assert "SMP: activation offloading, loading horizon 4" in done.stderr
    assert ("SMP: FSDP over TransformerLayer layers, hybrid shard degree 1, expert parallel degree 2, "
            "delayed init True") in done.stderr


def test_the_trainer_is_told_the_model_is_already_fsdp_and_checkpointed(tmp_path):
    from tunespec.runtime.train import trainer_config

    plan = plan_in(tmp_path)
    assert plan["trainer"]["gradient_checkpointing"] is True
    plan["devices"]["kind"] = "cpu"  # this machine has no GPU for TrainingArguments' bf16 check
    config = trainer_config(plan, tmp_path, has_eval=True, resuming=False)
    assert config.fsdp and config.gradient_checkpointing is False


def test_every_smp_setting_of_the_plan_is_read(tmp_path, monkeypatch):
    """Changing any field of plan.parallel.settings changes what the runtime hands to SMP; the three that
    are not arguments (smddp, delayed_param_init, activation_offloading) are proven by the run above."""
    import importlib.util

    from tunespec.runtime import smp

    finder = importlib.util.spec_from_file_location("smp_double_finder", DOUBLES / "sitecustomize.py")
    monkeypatch.syspath_prepend(str(DOUBLES))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    finder.loader.exec_module(importlib.util.module_from_spec(finder))
    monkeypatch.setenv("SMP_DOUBLE_LOG", str(tmp_path / "calls.jsonl"))

    plan = plan_in(tmp_path)

    def handed(changed: dict) -> tuple:
        return smp.init_config(changed), smp.moe_config(changed).arguments

    before = handed(plan)
    changes = {"activation_loading_horizon": 7, "expert_parallel_degree": 4, "hybrid_shard_degree": 2,
               "tensor_parallel_degree": 2, "activation_offloading": False}
    moe_changes = {"load_balancing": "aux_loss", "all_to_all_dispatcher": True, "global_token_shuffle": False,
                   "use_smp_implementation": False}
    for key, value in changes.items():
        changed = json.loads(json.dumps(plan))
        changed["parallel"]["settings"][key] = value
        assert handed(changed) != before, key
    for key, value in moe_changes.items():
        changed = json.loads(json.dumps(plan))
        changed["parallel"]["settings"]["moe"][key] = value
        assert handed(changed) != before, key
    reseeded = json.loads(json.dumps(plan))
    reseeded["trainer"]["seed"] = 1
    assert handed(reseeded)[0]["random_seed"] == handed(reseeded)[1]["random_seed"] == 1
    proven_by_the_run = {"smddp", "delayed_param_init"}
    assert set(plan["parallel"]["settings"]) == set(changes) | proven_by_the_run | {"moe"}
    assert set(plan["parallel"]["settings"]["moe"]) == set(moe_changes)
