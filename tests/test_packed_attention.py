"""The attention kernel of packed (padding-free) batches: chosen by the compiler from what the trainer's
environment has, written in the plan, run as is by the trainer; documents packed into one row do not
attend to each other under it."""
import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest

from tunespec.compiler import attention
from tunespec.compiler.errors import SpecError
from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec
from tunespec.compiler.summary import layout_rows, model_rows
from tunespec.schema.trainer_arguments import trainer_arguments

from conftest import REPO
from seed_models import save_tiny_model

DEFAULT_SPEC = REPO / "cli" / "defaults" / "smollm2-viggo-lora.yaml"
DATA = "pkg://tunespec/tunespec/cli/defaults/data/"


def write_spec(root, backend: str, model: str = "{}", packing: bool = True, training: str = "{}"):
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: packed-attention
        extends: {DEFAULT_SPEC}
        model: {model}
        data: {{packing: {str(packing).lower()}}}
        training: {training}
        backend: {backend}
        """))
    return load_spec(spec)


GPU_BACKEND = "{type: local, device: cuda, hardware: h200-141gb, run_dir: run}"
GPU_TRAINING = "{precision: bf16}"


def gpu_plan(tmp_path, model="{}", packing=True):
    return build_plan(write_spec(tmp_path, GPU_BACKEND, model, packing, GPU_TRAINING), cwd=tmp_path)


def installed_here(monkeypatch, *kernels):
    monkeypatch.setattr(attention, "attention_installed", lambda kernel: kernel in kernels + ("sdpa", "eager"))


def test_flash_attention_where_flash_attn_is_installed(tmp_path, monkeypatch):
    installed_here(monkeypatch, "flash_attention_2", "flex_attention")
    plan = gpu_plan(tmp_path)
    assert plan["model"]["attn_implementation"] == "flash_attention_2"
    assert plan["trainer"]["pad_to_multiple_of"] is None
    assert plan["data"]["packed_row_tokens"] == plan["batch"]["micro_batch_size"] * plan["data"]["max_seq_length"]
    assert ("attention", "flash_attention_2 (flash-attn is installed here: packed batches run as varlen flash "
                         "attention)") in model_rows(plan)


def test_flex_attention_for_packed_batches_without_flash_attn(tmp_path, monkeypatch):
    installed_here(monkeypatch, "flex_attention")
    plan = gpu_plan(tmp_path)
    assert plan["model"]["attn_implementation"] == "flex_attention"
    # the micro batch is one packed row, padded to its length: one compiled shape, not one per packed length
    row = plan["batch"]["micro_batch_size"] * plan["data"]["max_seq_length"]
    assert plan["data"]["packed_row_tokens"] == plan["trainer"]["pad_to_multiple_of"] == row
    arguments = trainer_arguments(plan)
    assert (arguments["per_device_train_batch_size"], arguments["max_length"]) == (1, row)
    assert ("packed rows", f"one padding-free row of {row:,} tokens per micro batch: documents (each cut at "
                           f"{plan['data']['max_seq_length']:,}) packed into it by best fit") in layout_rows(plan)
    assert "block-sparse document mask" in plan["model"]["attn_reason"]
    unpacked = gpu_plan(tmp_path, packing=False)
    assert unpacked["model"]["attn_implementation"] == "sdpa" and unpacked["trainer"]["pad_to_multiple_of"] is None
    assert unpacked["data"]["packed_row_tokens"] is None


def test_sdpa_keeps_one_sequence_per_max_seq_length(tmp_path, monkeypatch):
    installed_here(monkeypatch)
    plan = gpu_plan(tmp_path)
    assert plan["data"]["packed_row_tokens"] is None
    arguments = trainer_arguments(plan)
    assert (arguments["per_device_train_batch_size"], arguments["max_length"]) == (
        plan["batch"]["micro_batch_size"], plan["data"]["max_seq_length"])


def test_documents_are_cut_at_max_seq_length_then_packed_into_whole_rows(tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from tunespec.runtime.sft_trainer import sft_trainer_class

    path = save_tiny_model(tmp_path / "tiny-llama", "llama", num_key_value_heads=1)
    tokenizer = AutoTokenizer.from_pretrained(path)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    rows = [{"prompt": " ".join(words[: 1 + i % 6]) + ":", "completion": " " + " ".join(words * (1 + i % 5))}
            for i in range(40)] + [{"prompt": "long:", "completion": " " + " ".join(words * 40)}]
    example_tokens, micro = 32, 4
    config = SFTConfig(output_dir=str(tmp_path / "out"), packing=True, max_length=micro * example_tokens,
                       per_device_train_batch_size=1, completion_only_loss=True, use_cpu=True, report_to="none")
    trainer = sft_trainer_class()(model=AutoModelForCausalLM.from_pretrained(path), args=config,
                                  train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                  example_tokens=example_tokens)
    packed = trainer.train_dataset
    lengths = [length for row in packed["seq_lengths"] for length in row]
    assert max(lengths) == example_tokens  # the long example, cut at max_seq_length (keep_start) ...
    assert len(lengths) == len(rows)  # ... and every document kept
    assert all(len(ids) <= micro * example_tokens for ids in packed["input_ids"])
    # whole rows filled by best fit: fewer rows than documents would need in sequences of example_tokens
    assert len(packed) < sum(lengths) / example_tokens
    # the same documents and labelled tokens as TRL's own packing into sequences of max_seq_length
    sequences = sft_trainer_class()(
        model=AutoModelForCausalLM.from_pretrained(path), processing_class=tokenizer,
        args=dataclasses.replace(config, max_length=example_tokens, per_device_train_batch_size=micro),
        train_dataset=Dataset.from_list(rows)).train_dataset
    assert sorted(lengths) == sorted(length for row in sequences["seq_lengths"] for length in row)

    def labelled(dataset):
        return sum(label != -100 for row in dataset["labels"] for label in row)

    assert labelled(packed) == labelled(sequences) > 0


def test_sdpa_says_what_the_document_mask_costs(tmp_path, monkeypatch):
    installed_here(monkeypatch)
    plan = gpu_plan(tmp_path)
    assert plan["model"]["attn_implementation"] == "sdpa"
    assert "dense document mask" in plan["model"]["attn_reason"] and "-8% tokens/s" in plan["model"]["attn_reason"]


def test_cpu_plans_keep_sdpa_and_refuse_flex(tmp_path):
    plan = build_plan(write_spec(tmp_path, "{type: local, device: cpu, run_dir: run}"), cwd=tmp_path)
    assert plan["model"]["attn_implementation"] == "sdpa"
    assert plan["model"]["attn_reason"].startswith("on a CPU, where flex attention has no backward pass")
    with pytest.raises(SpecError) as refused:
        build_plan(write_spec(tmp_path, "{type: local, device: cpu, run_dir: run}", "{attn_implementation: flex_attention}"),
                   cwd=tmp_path)
    assert refused.value.field_name() == "model.attn_implementation" and "no backward pass" in str(refused.value)


def test_a_kernel_this_environment_lacks_is_refused_at_plan_time(tmp_path):
    from tunespec.schema.kernels import attention_installed

    lacking = next((k for k in ("flash_attention_2", "flex_attention") if not attention_installed(k)), None)
    if lacking is None:
        pytest.skip("flash-attn and torch 2.6+ are both installed here")
    spec = write_spec(tmp_path, GPU_BACKEND, f"{{attn_implementation: {lacking}}}", True, GPU_TRAINING)
    done = subprocess.run([sys.executable, "-m", "tunespec.cli.main", "plan", str(spec.path)], capture_output=True,
                          text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "COLUMNS": "400"})
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output
    assert f"model.attn_implementation: {lacking} needs" in output and "spec.yaml:4:" in output, output


def test_remote_environments_keep_sdpa_and_say_how_to_choose(tmp_path):
    backend = (f"{{type: hyperpod-slurm, cluster_flavour: hyperpod, instance_type: ml.p5.48xlarge, nodes: 1, "
               f"environment: {{venv: /fsx/envs/train}}}}")
    plan = build_plan(write_spec(tmp_path, backend, training=GPU_TRAINING), cwd=tmp_path, enforce_budget=False)
    assert plan["model"]["attn_implementation"] == "sdpa"
    assert "not visible at plan time" in plan["model"]["attn_reason"]


# ---- the kernel on a packed batch ------------------------------------------------------------------

def runnable_here(kernel: str):
    import torch

    from tunespec.schema.kernels import attention_installed

    if kernel in ("flash_attention_2", "flex_attention") and not torch.cuda.is_available():
        return pytest.mark.skip(reason=f"{kernel} trains on CUDA only (run this test on the GPU machine)")
    return pytest.mark.skipif(not attention_installed(kernel), reason=f"{kernel} is not installed here")


KERNELS = ["sdpa", "eager", "flex_attention", "flash_attention_2"]


@pytest.mark.parametrize("kernel", [pytest.param(k, marks=runnable_here(k)) for k in KERNELS])
def test_packed_documents_do_not_attend_to_each_other(kernel):
    """Two documents in one padding-free row (TRL's collator: position_ids restart, no attention mask) have
    the per-token losses they have run alone."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if kernel == "flash_attention_2" else torch.float32
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         attn_implementation=kernel)
    model = LlamaForCausalLM(config).to(device, dtype)
    model.config.use_cache = False  # as the runtime loads it: with a KV cache transformers ignores packing
    documents = [torch.randint(1, 101, (11,)).tolist(), torch.randint(1, 101, (7,)).tolist()]
    packed = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(
        [{"input_ids": ids} for ids in documents])
    assert packed["position_ids"].tolist() == [list(range(11)) + list(range(7))] and "attention_mask" not in packed

    def token_losses(batch: dict) -> torch.Tensor:
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits.float()[0, :-1]
        targets = batch["labels"][0, 1:].to(device)
        return torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="none")

    alone = [token_losses({"input_ids": torch.tensor([ids]), "labels": torch.tensor([ids])}) for ids in documents]
    together = token_losses(packed)
    # the first token of the second document has no label (-100) in the packed row: nothing predicts it
    expected = torch.cat([alone[0], torch.zeros(1, device=device), alone[1]])
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-5
    assert torch.allclose(together, expected, atol=tolerance), (together - expected).abs().max()
    if kernel in ("sdpa", "eager"):
        loss = model(**{k: v.to(device) for k, v in packed.items() if torch.is_tensor(v)}).loss
        loss.backward()  # trains: the backward pass runs under this kernel
        assert model.model.layers[0].self_attn.q_proj.weight.grad is not None


def test_the_trainer_runs_the_planned_kernel_on_packed_batches(tmp_path):
    model = save_tiny_model(tmp_path / "tiny-llama", "llama", num_key_value_heads=1)
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: packed-trainer
        extends: {DEFAULT_SPEC}
        model: {{source: {model}, architecture: null}}
        data:
          train: {{path: "{DATA}viggo_train.csv", format: csv, limit: 24}}
          eval: {{path: "{DATA}viggo_valid.csv", format: csv, limit: 4}}
          packing: true
        training: {{max_steps: 2, micro_batch_size: 2, checkpoint_every_steps: 2, eval_every_steps: 2}}
        backend: {{type: local, device: cpu, run_dir: run}}
        tracking: {{tensorboard: false}}
        outputs: {{sample_prompts: []}}
        """))
    plan = build_plan(load_spec(spec), cwd=tmp_path)
    assert plan["data"]["packing"] and plan["model"]["attn_implementation"] == "sdpa"
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    done = subprocess.run([sys.executable, "-m", "tunespec.runtime.train", "--plan", "plan.json", "--run-dir", "run"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "attention kernel: sdpa" in log
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 2
