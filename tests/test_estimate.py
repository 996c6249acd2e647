"""The estimator from first principles: memory breakdown, FLOPs, time, cost, suggestions, warnings."""
import importlib.util
import pathlib

import pytest

from tunespec.compiler.estimate import estimate
from tunespec.compiler.estimate_memory import estimate_memory, nf4_bytes_per_param
from tunespec.compiler.estimate_speed import flops_per_token

_spec = importlib.util.spec_from_file_location(
    "estimate_errors", pathlib.Path(__file__).parents[1] / "benchmarks" / "estimate_errors.py")
estimate_errors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(estimate_errors)
make_plan = estimate_errors.make_plan

FALCON_TARGETS = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]


def test_estimate_returns_every_section():
    result = estimate(make_plan("llama-3-8b", "lora", checkpointing=True))
    assert set(result) == {"memory", "throughput", "time", "cost", "suggestions", "warnings"}
    assert result["memory"]["verdict"] == "fits"
    assert all({"code", "message"} <= set(w) for w in result["warnings"])


def test_nf4_with_double_quantization():
    assert nf4_bytes_per_param(False) == pytest.approx(0.5 + 4 / 64)
    assert nf4_bytes_per_param(True) == pytest.approx(0.5159, abs=1e-4)


def test_qlora_quantizes_the_linear_layers_and_prepares_only_when_asked():
    memory = estimate_memory(make_plan("llama-3-8b", "qlora", checkpointing=True))
    groups = memory["weights_by_group"]
    assert groups["linear"]["dtype"] == "nf4+dq"
    assert groups["embedding"]["dtype"] == groups["lm_head"]["dtype"] == "bf16"
    lora = estimate_memory(make_plan("llama-3-8b", "lora"))
    assert memory["breakdown_bytes"]["weights"] < 0.6 * lora["breakdown_bytes"]["weights"]
    # PEFT's full k-bit preparation upcasts the embedding and lm_head to fp32, and costs speed
    full = estimate(make_plan("llama-3-8b", "qlora", checkpointing=True, kbit_preparation="full"))
    assert full["memory"]["weights_by_group"]["embedding"]["dtype"] == "fp32"
    assert full["memory"]["total_bytes"] > memory["total_bytes"] + 2 * 2 ** 30
    minimal = estimate(make_plan("llama-3-8b", "qlora", checkpointing=True))
    assert full["throughput"]["tokens_per_s_total"] < 0.9 * minimal["throughput"]["tokens_per_s_total"]


def test_4bit_qlora_mixtral_quantizes_the_experts_and_adapts_them_per_expert():
    plan = make_plan("mixtral-8x7b", "qlora", micro=1, seq=2048, checkpointing=True, include_experts=True,
                     dropout=0.0, hardware="ml.p4d.24xlarge", strategy="fsdp")
    result = estimate(plan)
    memory = result["memory"]
    experts = memory["weights_by_group"]["experts"]
    assert experts["dtype"] == "nf4+dq" and 20 < experts["gib"] < 23  # 45.1B weights at 0.516 bytes
    assert "qlora-moe-experts-not-quantized" not in {w["code"] for w in result["warnings"]}
    # one expert's gate_up_proj and down_proj dequantized to bf16 at a time: 3 * 4096 * 14336 * 2 bytes
    assert memory["breakdown_bytes"]["expert_dequant_buffer"] in (0, 3 * 4096 * 14336 * 2)
    assert memory["verdict"] == "fits"
    # the NF4 experts' adapters add each expert's low-rank product: no ParamWrapper weight gradient
    assert result["throughput"]["experts_compute_dtype"] == "bf16"
    lora_bf16 = estimate(make_plan("mixtral-8x7b", "lora", micro=1, seq=2048, checkpointing=True,
                                   include_experts=True, dropout=0.0, hardware="ml.p4d.24xlarge", strategy="fsdp"))
    assert result["throughput"]["flops_per_token"] < lora_bf16["throughput"]["flops_per_token"]


def test_8bit_qlora_mixtral_keeps_experts_16bit_and_warns():
    plan = make_plan("mixtral-8x7b", "qlora", micro=1, seq=2048, checkpointing=True,
                     hardware="ml.p4d.24xlarge", strategy="fsdp")
    plan["method"]["quantization"]["bits"] = 8
    result = estimate(plan)
    experts = result["memory"]["weights_by_group"]["experts"]
    assert experts["dtype"] == "bf16" and experts["gib"] > 80
    assert "qlora-moe-experts-not-quantized" in {w["code"] for w in result["warnings"]}


def test_fsdp_shards_weights_and_states():
    single = estimate_memory(make_plan("llama-3-8b", "full", hardware="ml.p4de.24xlarge", strategy="ddp"))
    sharded = estimate_memory(make_plan("llama-3-8b", "full", hardware="ml.p4de.24xlarge", strategy="fsdp"))
    assert sharded["breakdown_bytes"]["weights"] == pytest.approx(single["breakdown_bytes"]["weights"] / 8, rel=1e-6)
    assert sharded["breakdown_bytes"]["optimizer_states"] == pytest.approx(
        single["breakdown_bytes"]["optimizer_states"] / 8, rel=1e-6)
    assert single["verdict"] == "does-not-fit" and sharded["verdict"] == "fits"


def test_checkpointing_and_batch_move_activations():
    base = estimate_memory(make_plan("llama-3-8b", "lora", micro=2, seq=2048))
    checkpointed = estimate_memory(make_plan("llama-3-8b", "lora", micro=2, seq=2048, checkpointing=True))
    bigger = estimate_memory(make_plan("llama-3-8b", "lora", micro=4, seq=2048))
    assert checkpointed["breakdown_bytes"]["activations"] < 0.2 * base["breakdown_bytes"]["activations"]
    assert bigger["breakdown_bytes"]["activations"] == pytest.approx(2 * base["breakdown_bytes"]["activations"],
                                                                     rel=0.05)


def test_large_vocabulary_logits_and_liger():
    llama3 = estimate_memory(make_plan("llama-3-8b", "lora", micro=4, seq=4096, checkpointing=True))
    mistral = estimate_memory(make_plan("mistral-7b", "lora", micro=4, seq=4096, checkpointing=True))
    assert llama3["breakdown_bytes"]["logits_and_loss"] == pytest.approx(
        4 * mistral["breakdown_bytes"]["logits_and_loss"], rel=0.01)  # 128256 vs 32000 tokens
    liger = estimate_memory(make_plan("llama-3-8b", "lora", micro=4, seq=4096, checkpointing=True, liger=True))
    assert liger["breakdown_bytes"]["logits_and_loss"] < 0.05 * llama3["breakdown_bytes"]["logits_and_loss"]


def test_eager_attention_costs_quadratic_memory():
    sdpa = estimate_memory(make_plan("llama-3-8b", "lora", seq=4096))
    eager = estimate_memory(make_plan("llama-3-8b", "lora", seq=4096, attn="eager"))
    extra = eager["breakdown_bytes"]["activations"] - sdpa["breakdown_bytes"]["activations"]
    assert extra == pytest.approx(32 * 6 * 32 * 4096 * 4096, rel=0.01)


def test_flops_per_token_follow_6n_and_4n():
    plan = make_plan("llama-3-8b", "full")
    arch = plan["model"]["architecture"]
    matmul_params = plan["model"]["parameters"]["total"] - plan["model"]["parameters"]["embedding"]
    attention = 32 * 2 * 2048 * 4096
    full = flops_per_token(arch, plan["method"], 2048, False, "sdpa")
    assert full["train"] == pytest.approx(6 * matmul_params + 3 * attention, rel=0.01)
    lora_plan = make_plan("llama-3-8b", "lora")
    lora = flops_per_token(arch, lora_plan["method"], 2048, False, "sdpa")
    assert lora["train"] == pytest.approx(4 * matmul_params + 2 * attention, rel=0.02)
    recompute = flops_per_token(arch, lora_plan["method"], 2048, True, "sdpa")
    assert recompute["train"] - lora["train"] == pytest.approx(2 * (matmul_params - 128256 * 4096) + attention,
                                                               rel=0.02)


def test_moe_counts_active_experts():
    plan = make_plan("mixtral-8x7b", "lora")
    flops = flops_per_token(plan["model"]["architecture"], plan["method"], 2048, False, "sdpa")
    active = plan["model"]["parameters"]["active_per_token"] - plan["model"]["parameters"]["embedding"]
    assert flops["forward"] == pytest.approx(2 * active + 32 * 2 * 2048 * 4096, rel=0.01)


def test_time_and_cost_from_data():
    plan = make_plan("llama-3-8b", "lora", micro=4, seq=2048, checkpointing=True, hardware="ml.p4d.24xlarge",
                     strategy="ddp", num_examples=100_000, tokens_per_example=512, epochs=2)
    result = estimate(plan)
    time, cost = result["time"], result["cost"]
    assert time["train_tokens"] == plan["batch"]["total_steps"] * 4 * 2048 * 8
    assert time["train_tokens"] >= 2 * 100_000 * 512
    assert time["train_s"] == pytest.approx(time["train_tokens"] / result["throughput"]["tokens_per_s_total"], rel=0.01)
    assert cost["usd"] == pytest.approx(cost["instance_hours"] * 37.688, rel=0.01)
    assert cost["price_date"] and cost["price_source"]


def test_unknown_price_is_said_not_guessed():
    plan = make_plan("llama-3-8b", "lora", hardware="ml.p5e.48xlarge", strategy="ddp", max_steps=100)
    result = estimate(plan)
    assert result["cost"]["usd"] is None
    assert "no-price" in {w["code"] for w in result["warnings"]}


def test_no_data_size_no_time():
    result = estimate(make_plan("llama-3-8b", "lora"))
    assert result["time"]["total_s"] is None
    assert "no-data-size" in {w["code"] for w in result["warnings"]}


def test_does_not_fit_gets_fitting_suggestions():
    plan = make_plan("llama-3-8b", "lora", micro=8, seq=4096, hardware="ml.g5.2xlarge")
    result = estimate(plan)
    assert result["memory"]["verdict"] == "does-not-fit"
    suggestions = result["suggestions"]
    assert any(s["verdict"] == "fits" for s in suggestions)
    changed = {key for s in suggestions for key in s["change"]}
    assert {"training.gradient_checkpointing", "method.type"} <= changed


def test_fitting_plan_gets_faster_suggestions():
    plan = make_plan("llama-3-8b", "qlora", micro=1, seq=1024, checkpointing=True)
    suggestions = estimate(plan)["suggestions"]
    assert suggestions and all(s["verdict"] == "fits" for s in suggestions)
    assert any("training.micro_batch_size" in s["change"] for s in suggestions)


def test_falcon_40b_qlora_on_g5_12xlarge_device_map():
    plan = make_plan("falcon-40b", "qlora", r=8, targets=FALCON_TARGETS, micro=8, seq=512, checkpointing=True,
                     hardware="ml.g5.12xlarge", strategy="device_map", num_examples=14732,
                     tokens_per_example=160, packing=False)
    result = estimate(plan)
    memory = result["memory"]
    assert plan["model"]["parameters"]["trainable"] == 55_541_760
    # a quarter of ~21 GB of NF4 weights per A10G
    assert 4 < memory["breakdown_gib"]["weights"] < 9
    assert memory["verdict"] == "fits"
    assert result["cost"]["usd"] is not None


def test_full_llama3_8b_does_not_fit_one_h100():
    memory = estimate_memory(make_plan("llama-3-8b", "full", checkpointing=True))
    assert memory["verdict"] in ("tight", "does-not-fit")


def test_cpu_run():
    plan = make_plan("smollm2-135m", "lora", hardware="cpu")
    result = estimate(plan)
    assert result["throughput"]["tokens_per_s_total"] is None
    assert result["memory"]["verdict"] == "unknown"
    assert "cpu-estimates" in {w["code"] for w in result["warnings"]}


def test_trainium_plan():
    plan = make_plan("llama-3-8b", "lora", hardware="ml.trn1.32xlarge", strategy="neuron", tensor_parallel=8,
                     max_steps=100)
    result = estimate(plan)
    assert result["memory"]["capacity_gib"] == 16
    assert result["throughput"]["tokens_per_s_total"] > 0
    assert "trainium-uncalibrated" in {w["code"] for w in result["warnings"]}
