"""QLoRA on a tiny Mixtral-shaped model with random weights, on the CPU (bitsandbytes' CPU backend):
NF4 experts, expert adapters through PEFT's target_parameters, training, saving, reloading, merging."""
import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, MixtralConfig  # noqa: E402

from tunespec.runtime import moe_quantization  # noqa: E402

QUANT = {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bf16", "storage_dtype": "bf16"}
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
EXPERTS = ["experts.gate_up_proj", "experts.down_proj"]


def tiny_mixtral():
    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                           num_experts_per_tok=2, max_position_embeddings=64)
    return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)


def relative_error(value, reference) -> float:
    return ((value.float() - reference.float()).norm() / reference.float().norm()).item()


def lora(model, r=4):
    config = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=ATTENTION,
                        target_parameters=EXPERTS, task_type="CAUSAL_LM")
    moe_quantization.register_lora_modules(config)
    return get_peft_model(model, config)


@pytest.fixture(scope="module")
def tokens():
    torch.manual_seed(1)
    return torch.randint(0, 128, (2, 16))


def test_nf4_experts_replace_the_fused_experts_and_match_bf16(tokens):
    model = tiny_mixtral()
    with torch.no_grad():
        reference = model(tokens).logits
    quantized = copy.deepcopy(model)
    assert moe_quantization.quantize_experts(quantized, QUANT) == 2
    experts = quantized.model.layers[0].mlp.experts
    assert isinstance(experts, moe_quantization.Nf4Experts)
    # 4 bits per weight in the storage dtype; no 16-bit copy of the experts left as a parameter
    assert experts.gate_up_proj.dtype == torch.bfloat16
    assert experts.gate_up_proj.numel() * 2 == 4 * 2 * 128 * 64 // 2
    assert experts.logical_shape("gate_up_proj") == (4, 256, 64)
    assert not any(p.ndim == 3 for p in quantized.parameters())
    with torch.no_grad():
        output = quantized(tokens).logits
    # NF4 with 64-weight blocks keeps each expert output within a few percent; the logits closer still
    assert relative_error(output, reference) < 0.05


def test_expert_adapters_train_save_reload_and_merge(tokens, tmp_path):
    base = tiny_mixtral()
    quantized = copy.deepcopy(base)
    moe_quantization.quantize_experts(quantized, QUANT)
    model = lora(quantized)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any(".mlp.experts." in name for name in names) and any("q_proj" in name for name in names)
    assert not any("gate.weight" in name for name in names)  # the router stays frozen

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model(tokens, labels=tokens).loss
        loss.backward()
        expert_grads = [p.grad for name, p in model.named_parameters() if ".mlp.experts." in name and p.requires_grad]
        assert expert_grads and all(g is not None for g in expert_grads)
        assert any(g.abs().sum() > 0 for g in expert_grads)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    with torch.no_grad():
        trained = model(tokens).logits

    model.save_pretrained(tmp_path / "adapter")
    # The adapter is stock PEFT: it loads onto the 16-bit model, where PEFT's own ParamWrapper applies it.
    reloaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "adapter")
    assert set(reloaded.peft_config["default"].target_parameters) == set(EXPERTS)
    with torch.no_grad():
        unmerged = reloaded(tokens).logits
    assert relative_error(unmerged, trained) < 0.05  # the 4-bit base differs from the 16-bit one by NF4 error
    merged = reloaded.merge_and_unload()
    assert isinstance(merged.model.layers[0].mlp.experts.gate_up_proj, torch.nn.Parameter)
    with torch.no_grad():
        merged_logits = merged(tokens).logits
        base_logits = base(tokens).logits
    assert relative_error(merged_logits, unmerged) < 0.02
    assert relative_error(merged_logits, base_logits) > 0.05  # the merge changed the experts


def test_experts_offloaded_to_host_memory_are_quantized_from_the_offload_hook(tokens):
    """The trainer's device_map keeps the 16-bit experts in host memory beside the GPU, so accelerate
    offloads them: their parameters are meta and the tensors live in the hook (seen on 2 x H200)."""
    from accelerate import cpu_offload

    model = tiny_mixtral()
    reference = copy.deepcopy(model)
    moe_quantization.quantize_experts(reference, QUANT)
    for layer in model.model.layers:
        cpu_offload(layer.mlp.experts, execution_device=torch.device("cpu"))
    assert model.model.layers[0].mlp.experts.gate_up_proj.is_meta
    moe_quantization.quantize_experts(model, QUANT)
    experts = model.model.layers[0].mlp.experts
    assert not experts.gate_up_proj.is_meta
    packed = reference.model.layers[0].mlp.experts.gate_up_proj
    assert torch.equal(experts.gate_up_proj.view(torch.uint8), packed.view(torch.uint8))
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, reference(tokens).logits)


def test_meta_experts_get_empty_storage_of_the_right_shape():
    # FSDP ranks that load no weights hold meta tensors; rank 0's are broadcast into these.
    with torch.device("meta"):
        model = tiny_mixtral()
    moe_quantization.quantize_experts(model, dict(QUANT, storage_dtype="uint8"))
    experts = model.model.layers[1].mlp.experts
    assert experts.gate_up_proj.is_meta and experts.gate_up_proj.shape == (4, 256 * 64 // 2)
    assert experts.gate_up_proj_absmax.shape == (4, 256 * 64 // 64)


def test_the_loading_device_map_names_no_whole_model_entry_and_keeps_only_the_experts_in_host_memory():
    """accelerate moves everything under a GPU entry onto the GPU before offloading host-memory modules:
    with a "" entry all 16-bit experts passed through the GPU while loading (84 GiB of Mixtral's)."""
    from transformers.integrations.accelerate import expand_device_map

    from tunespec.runtime.model_loading import host_experts_device_map

    with torch.device("meta"):
        model = tiny_mixtral()
    experts = moe_quantization.fused_experts_names(model)
    device_map = host_experts_device_map(model, experts, 0)
    assert "" not in device_map
    assert {name for name, device in device_map.items() if device == "cpu"} == set(experts)
    tensors = [name for name, _ in model.named_parameters()] + [name for name, _ in model.named_buffers()]
    placed = expand_device_map(device_map, tensors)
    assert {name for name, device in placed.items() if device == "cpu"} == \
        {name for name in tensors if any(name.startswith(e + ".") for e in experts)}
    assert all(device == 0 for name, device in placed.items() if ".experts." not in name)
    assert "model.layers.0.self_attn" in device_map and "model.embed_tokens" in device_map
