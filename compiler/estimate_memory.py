"""Peak memory per device of a plan, broken down, against the device's capacity.

The model is what PyTorch's caching allocator sees for the pinned stack (transformers 5, PEFT,
bitsandbytes, Trainer with bf16 autocast):

- weights at their storage dtype; under 4-bit QLoRA the decoder layers' nn.Linear weights
  (bitsandbytes) and the fused 3-D MoE experts of transformers 5 (tunespec quantizes them per
  expert: runtime/moe_quantization.py) become NF4; embeddings, lm_head, norms, biases and the router
  stay 16-bit, or fp32 when the plan asks for PEFT's full k-bit preparation;
- trainable parameters, their gradients and optimizer states (LoRA adapters are fp32: PEFT's
  `autocast_adapter_dtype`; full fine-tuning keeps bf16 weights, bf16 gradients, and torch AdamW
  states in the parameter's dtype);
- activations saved for backward, per token and layer, counted tensor by tensor from the layer's
  forward (see `_layer_activation_bytes`), or only the layer inputs under gradient checkpointing;
- the logits and the loss, which for a 128k vocabulary can outweigh everything else;
- sharding (FSDP, hybrid shard, expert and tensor parallelism, the naive device_map pipeline);
- the allocator's fragmentation slack and the CUDA context that torch's counters never see.

The measured and assumed numbers it rests on, each with its source, are in compiler/calibration.py.
"""
from __future__ import annotations

import math

from . import parameter_counts
from .calibration import GIB, Collectives, CpuTraining, MemoryOverheads, QuantizedStorage, Verdicts

# Bytes per element of each storage dtype.
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "uint8": 1}
# Weight groups repeated in every decoder layer (split over pipeline stages and tensor-parallel ranks).
PER_LAYER_GROUPS = ("linear", "experts", "router", "norms_and_biases")


def nf4_bytes_per_param(double_quant: bool) -> float:
    """4 bits per weight plus the block absmax: fp32 per 64 weights, or with double quantization
    8-bit per 64 weights and one fp32 per 256 blocks."""
    blocksize = QuantizedStorage.nf4_blocksize.value
    if double_quant:
        return 0.5 + 1 / blocksize + 4 / (blocksize * QuantizedStorage.double_quant_blocksize.value)
    return 0.5 + 4 / blocksize


def parameter_groups(arch: dict) -> dict:
    """Parameters of the model by how they are stored: {group: count}."""
    layers = arch["num_hidden_layers"]
    counts = parameter_counts.count_parameters(arch)
    linear = layers * sum(a * b for a, b in parameter_counts.linear_shapes(arch).values())
    experts = layers * sum(e * a * b for e, a, b in parameter_counts.expert_shapes(arch).values())
    router = layers * (arch.get("num_local_experts") or 0) * arch["hidden_size"]
    embedding, lm_head = counts["embedding"], counts["lm_head"]
    other = counts["total"] - linear - experts - router - embedding - lm_head  # norms and biases
    return {"linear": linear, "experts": experts, "router": router, "embedding": embedding,
            "lm_head": lm_head, "norms_and_biases": other}


def quantized_groups(method: dict) -> tuple:
    """The weight groups QLoRA stores in 4 or 8 bits: bitsandbytes' 8-bit path leaves the fused
    experts 16-bit; the 4-bit path quantizes them too."""
    quant = method.get("quantization") if method["type"] == "qlora" else None
    if not quant:
        return ()
    return ("linear", "experts") if quant.get("bits", 4) == 4 else ("linear",)


def weight_bytes(arch: dict, method: dict, precision: str, upcast_non_quantized: bool) -> dict:
    """Bytes of the weights per group, unsharded: {group: {params, dtype, bytes}}.

    `upcast_non_quantized` is PEFT's prepare_model_for_kbit_training, which casts every weight that
    is not quantized to fp32.
    """
    dense_dtype = "fp32" if precision == "fp32" else "bf16"
    quant = method.get("quantization") if method["type"] == "qlora" else None
    out = {}
    for group, count in parameter_groups(arch).items():
        if not count:
            continue
        if group in quantized_groups(method):
            if quant.get("bits", 4) == 4:
                double = quant.get("double_quant", True)
                dtype, per = ("nf4+dq" if double else "nf4"), nf4_bytes_per_param(double)
            else:
                dtype, per = "int8", QuantizedStorage.int8_bytes_per_param.value
            out[group] = {"params": count, "dtype": dtype, "bytes": int(count * per)}
        else:
            dtype = "fp32" if quant and upcast_non_quantized else dense_dtype
            out[group] = {"params": count, "dtype": dtype, "bytes": count * DTYPE_BYTES[dtype]}
    return out


def optimizer_bytes_per_param(optim: str, param_bytes: int) -> float:
    """Optimizer state bytes per trainable parameter."""
    if optim in ("adamw_torch", "adamw_torch_fused"):
        return 2 * param_bytes  # exp_avg and exp_avg_sq in the parameter's dtype
    if optim in ("adamw_8bit", "paged_adamw_8bit"):
        return QuantizedStorage.adamw_8bit_state_bytes_per_param.value
    if optim == "paged_adamw_32bit":
        return 2.0 * DTYPE_BYTES["fp32"]  # bitsandbytes keeps 32-bit states whatever the parameter dtype
    if optim == "adafactor":
        return QuantizedStorage.adafactor_state_share.value * param_bytes
    return 0.0  # sgd without momentum


def optimizer_step_transient_per_param(optim: str, param_bytes: int) -> float:
    """Extra bytes the optimizer step allocates: torch's foreach AdamW builds sqrt(exp_avg_sq) for
    all parameters at once; the fused and bitsandbytes kernels work in place."""
    return float(param_bytes) if optim == "adamw_torch" else 0.0


def _layer_activation_bytes(arch: dict, method: dict, attn_impl: str, seq: int, expert_bytes: int,
                            fp32_residual: bool, liger: bool = False) -> dict:
    """Bytes saved for backward per token in one decoder layer, without checkpointing, and the
    largest transient per token. Counted from the forward of the layer under bf16 autocast, where a
    frozen linear keeps no input (its weight gradient is not needed):

    - HF's RMSNorm keeps its fp32 input copy (4h); a trained one also the bf16 normalised value and
      its output, the next linears' input (2h + 2h). LayerNorm keeps its input (2h), plus its output
      when the next linears are trained (2h).
    - attention keeps q and k after RoPE, v, and the SDPA output (4q + 4kv; the output is also
      o_proj's input); eager attention adds the fp32 softmax and its bf16 copy (6 * heads * seq).
    - the gated MLP keeps gate, act(gate) and up (6i), and the product when down_proj is trained
      (2i); Falcon's MLP keeps h_to_4h's output (2i), and GELU's when dense_4h_to_h is trained (2i).
    - MoE: each token's hidden state is gathered for each of its top_k experts, which then keep
      the MLP tensors (in fp32 when the experts are fp32); the router keeps fp32 logits.
    - each LoRA-adapted module keeps its own bf16 copy of the (dropped-out) input and, with
      dropout, a one-byte mask.
    - bitsandbytes' 4-bit matmul keeps its input although the weight is frozen: the norm output
      once per layer input (2h), or, when PEFT's k-bit preparation has made the embedding and norms
      fp32 (`fp32_residual`: the residual stream and norm outputs are then fp32, +4h per norm), one
      bf16 cast per module reading a norm output; the MLP product feeding down_proj (2i).
    - Liger's kernels (dense gated-MLP models): the fused SiLU-mul keeps gate and up and recomputes
      act(gate) in backward (-2i); the fused RMSNorm keeps its bf16 input and one fp32 scalar per
      row instead of HF's fp32 copy (-2h per norm; nothing to save once the residual is fp32).
    """
    h, i = arch["hidden_size"], arch["intermediate_size"]
    hd = arch["head_dim"]
    q = arch["num_attention_heads"] * hd
    kv = arch["num_key_value_heads"] * hd
    full = method["type"] == "full"
    experts = arch.get("num_local_experts") or 0
    top_k = arch.get("num_experts_per_tok") or 0

    if arch["norm"] == "rmsnorm":
        norm_each = 8 * h if full else 4 * h
    else:
        norm_each = 4 * h if full else 2 * h
    norms = arch["norms_per_layer"] * norm_each
    attention = 4 * q + 4 * kv
    if attn_impl == "eager":
        attention += 6 * arch["num_attention_heads"] * seq
    if arch["mlp"] == "gated":
        mlp_unit = 8 * i if full else 6 * i
    else:
        mlp_unit = 4 * i if full else 2 * i
    if experts:
        mlp = top_k * (2 * h + mlp_unit) * expert_bytes // 2 + 2 * h + 8 * experts
    else:
        mlp = mlp_unit
    lora = 0
    lora_cfg = method.get("lora") or {}
    if not full and lora_cfg:
        dropout = lora_cfg.get("dropout", 0.0) or 0.0
        per_element = 2 + (1 if dropout > 0 else 0)
        shapes = parameter_counts.linear_shapes(arch)
        for name in lora_cfg.get("target_modules") or []:
            if name in shapes:
                lora += per_element * shapes[name][0]
        if lora_cfg.get("include_experts") and experts:
            lora += top_k * 2 * (h + i)
    quantized = 0
    if method["type"] == "qlora":
        shapes = parameter_counts.linear_shapes(arch)
        out_like = {"o_proj", "dense"}  # input is the SDPA output, saved already
        down_like = {"down_proj", "dense_4h_to_h"}
        norm_readers = [n for n in shapes if n not in out_like | down_like]
        if fp32_residual:
            quantized = sum(2 * shapes[n][0] for n in norm_readers) + arch["norms_per_layer"] * 4 * h
        else:
            quantized = arch["norms_per_layer"] * 2 * h
        if not experts:
            quantized += 2 * i
    if liger and arch["mlp"] == "gated" and not experts:
        mlp -= 2 * i
        if arch["norm"] == "rmsnorm" and not fp32_residual:
            norms -= arch["norms_per_layer"] * 2 * h
    saved = norms + attention + mlp + lora + quantized
    transient = max(8 * h, 4 * i if arch["mlp"] == "gated" else 2 * i) * (top_k or 1)
    return {"saved": saved, "transient": transient}


def counts_lm_head(arch: dict) -> int:
    return arch["vocab_size"] * arch["hidden_size"]


def _adapted_expert_bytes(arch: dict, method: dict, weights: dict, layers_here: int, checkpointing: bool) -> float:
    """PEFT's lora.ParamWrapper adapts a 16-bit fused expert parameter W by materialising W + B@A in
    the forward (a full copy of the layer's experts, which the grouped GEMM keeps for backward) and a
    full-size gradient of it in backward. Without checkpointing every layer keeps its copy; with it,
    only the layer being recomputed. On top, the largest parameter's delta or gradient in flight:
    gate_up_proj, two thirds of the layer's experts. NF4 experts add each expert's low-rank product
    to its output instead (runtime/moe_quantization.py): nothing of the kind."""
    lora = method.get("lora") or {}
    if method["type"] == "full" or not lora.get("include_experts") or "experts" not in weights \
            or weights["experts"]["dtype"].startswith("nf4"):
        return 0.0
    per_layer = weights["experts"]["bytes"] / arch["num_hidden_layers"]
    copies = 1 if checkpointing else layers_here
    return per_layer * (copies + 1 / 3)


def expert_dequant_bytes(arch: dict, weights: dict) -> float:
    """NF4 experts are multiplied one expert and matrix at a time, dequantized into a 16-bit
    buffer of that expert's matrix (forward and backward): one expert's gate_up_proj and down_proj
    in flight at most."""
    if "experts" not in weights or not weights["experts"]["dtype"].startswith("nf4"):
        return 0.0
    return 2 * sum(a * b for _, a, b in parameter_counts.expert_shapes(arch).values())


def _shard_factors(plan: dict) -> dict:
    """How each kind of state is divided over the devices of one model replica."""
    parallel = plan["parallel"]
    strategy = parallel["strategy"]
    settings = parallel.get("settings") or {}
    tp = parallel.get("tensor_parallel", 1) or 1
    ep = parallel.get("expert_parallel", 1) or 1
    shard = parallel.get("shard_degree", 1) or 1
    stages = parallel.get("pipeline_stages", 1) or 1
    weights = grads = states = 1.0
    gather_units = 0
    if strategy == "fsdp":
        sharding = settings.get("sharding", "full_shard")
        states = grads = shard
        weights = shard if sharding in ("full_shard", "hybrid_shard") else 1
        gather_units = Collectives.gathered_layers.value if sharding in ("full_shard", "hybrid_shard") else 0
    elif strategy == "smp":
        states = grads = weights = shard
        gather_units = Collectives.gathered_layers.value
    return {"weights": weights, "grads": grads, "states": states, "tp": tp, "ep": ep, "stages": stages,
            "gather_units": gather_units, "strategy": strategy}


def _resident_weights(arch: dict, weights: dict, factors: dict, layers_here: int) -> tuple:
    """(loaded, resident) weight bytes on the heaviest device: as loaded, before any sharding, and as held
    during training. Tensor parallelism splits the layer matrices; expert parallelism splits the experts;
    a pipeline (device_map or neuron) holds 1/stages of the layers plus, on the first and last device, the
    embedding and the lm_head, of which the last stage (lm_head and the logits) is reported."""
    layers, tp, ep, stages = arch["num_hidden_layers"], factors["tp"], factors["ep"], factors["stages"]
    loaded = 0.0
    for group, info in weights.items():
        size = info["bytes"]
        if group in PER_LAYER_GROUPS:
            size = size * layers_here / layers / tp
            if group == "experts":
                size /= ep
        elif stages > 1 and group == "embedding" and not arch["tie_word_embeddings"]:
            size = 0
        else:
            size /= tp
        loaded += size
    resident = loaded / factors["weights"]
    if factors["weights"] > 1 and "experts" in weights and weights["experts"]["dtype"].startswith("nf4"):
        # NF4 experts' block scales are buffers, replicated on every rank; only the packed 4 bits shard.
        scales = weights["experts"]["bytes"] - weights["experts"]["params"] / 2
        resident += scales * layers_here / layers / tp / ep * (1 - 1 / factors["weights"])
    return loaded, resident


def _trainable_state(plan: dict, weights: dict, precision: str, factors: dict) -> dict:
    """Bytes of what training adds to the weights on one device: the adapters (PEFT keeps them fp32; full
    fine-tuning trains the weights themselves), their gradients, the optimizer states, the optimizer
    step's temporaries and DDP's gradient buckets."""
    full = plan["method"]["type"] == "full"
    tp, ep, stages = factors["tp"], factors["ep"], factors["stages"]
    trainable = plan["model"]["parameters"]["trainable"]
    if full:
        param_bytes = DTYPE_BYTES["fp32" if precision == "fp32" else "bf16"]
        trainable_extra = 0.0  # the trained weights are the weights counted already
    else:
        param_bytes = DTYPE_BYTES["fp32"]
        trainable_extra = trainable * param_bytes
    model_split = tp * (stages if stages > 1 else 1)
    trainable_here = trainable / model_split
    if full and ep > 1 and "experts" in weights:
        # expert parallelism places each expert's weights, gradients and states on 1/ep of the ranks
        trainable_here -= weights["experts"]["params"] * (1 - 1 / ep) / model_split
    grads = trainable_here * param_bytes / factors["grads"]
    optim = plan["trainer"].get("optim", "adamw_torch")
    parallel = plan["parallel"]
    return {
        "adapters": trainable_extra / model_split / factors["weights"],
        "grads": grads,
        "states": trainable_here * optimizer_bytes_per_param(optim, param_bytes) / factors["states"],
        "step_transient": trainable_here * optimizer_step_transient_per_param(optim, param_bytes) / factors["states"],
        # DDP keeps gradient buckets beside the gradients.
        "ddp_buckets": grads if factors["strategy"] == "ddp" and parallel.get("world_size", 1) > 1 else 0.0,
    }


def _gathered_layers(arch: dict, weights: dict, factors: dict) -> float:
    """FSDP/SMP gather whole decoder layers (the current and the prefetched one) at compute precision."""
    if not (factors["gather_units"] and factors["weights"] > 1):
        return 0.0
    per_layer = sum(weights[g]["bytes"] for g in PER_LAYER_GROUPS if g in weights) / arch["num_hidden_layers"] \
        / factors["tp"]
    return factors["gather_units"] * per_layer * (1 - 1 / factors["weights"])


def _loss_bytes(plan: dict, tokens: int, upcast: bool, tp: int) -> float:
    """The logits and the loss of one micro batch: fp32 logits and log-softmax over the vocabulary, or
    Liger's chunked fused linear cross-entropy."""
    arch, method = plan["model"]["architecture"], plan["method"]
    h = arch["hidden_size"]
    if plan["trainer"].get("use_liger_kernel"):
        return tokens * h * MemoryOverheads.fused_loss_bytes_per_hidden.value
    logits = tokens * arch["vocab_size"] * MemoryOverheads.logit_bytes.value / tp
    if method["type"] == "qlora" and upcast:
        logits += counts_lm_head(arch) * 2 / tp  # autocast's bf16 copy of the fp32 lm_head
    return logits


def _activations(plan: dict, weights: dict, factors: dict, layers_here: int, upcast: bool, precision: str) -> dict:
    """Activation memory at the peak of one micro batch: what the layers save for backward, the loss, the
    one layer being recomputed under checkpointing, the MoE expert buffers. Returns the peak, the loss,
    the largest single layer in flight, the dequantisation buffer at the peak, the tokens."""
    arch, method, trainer, batch = plan["model"]["architecture"], plan["method"], plan["trainer"], plan["batch"]
    h = arch["hidden_size"]
    tp, ep = factors["tp"], factors["ep"]
    seq = batch["sequence_length"]
    tokens = batch["micro_batch_size"] * seq
    attn_impl = plan["model"].get("attn_implementation", "sdpa")
    fp32_residual = method["type"] == "qlora" and upcast
    # the experts compute in their dtype, or in the compute dtype when they are NF4
    expert_bytes = DTYPE_BYTES.get(weights["experts"]["dtype"], 2) if "experts" in weights else 2
    layer = _layer_activation_bytes(arch, method, attn_impl, seq, expert_bytes, fp32_residual,
                                    bool(trainer.get("use_liger_kernel")))
    residual_bytes = 4 if fp32_residual else 2
    checkpointing = bool(trainer.get("gradient_checkpointing"))
    adapted_experts = _adapted_expert_bytes(arch, method, weights, layers_here, checkpointing) / tp / ep
    dequant_buffer = expert_dequant_bytes(arch, weights) / tp
    # embedding output, final norm and lm_head input
    outside_layers = tokens * 10 * h / tp
    logits = _loss_bytes(plan, tokens, upcast, tp)
    one_layer = tokens * (layer["saved"] + MemoryOverheads.transient_layer_fraction.value * layer["transient"]) / tp \
        + adapted_experts + dequant_buffer
    if checkpointing:
        # Each layer keeps only its input. The loss (at the end of forward, start of backward) and the
        # recomputation of one layer (later in backward) are not in memory at the same time.
        saved = tokens * layers_here * residual_bytes * h / tp + outside_layers
        peak = saved + max(logits, one_layer)
    else:
        saved = tokens * layers_here * layer["saved"] / tp + outside_layers + adapted_experts
        peak = saved + tokens * layer["transient"] / tp + dequant_buffer + logits
    if plan["devices"].get("kind") == "cpu" and precision == "fp32":
        # No bf16 autocast on such a CPU: each saved activation is fp32, twice what is counted above.
        peak += peak - logits
    return {"peak": peak, "logits": logits, "one_layer": one_layer, "checkpointing": checkpointing,
            "dequant_at_peak": dequant_buffer if not checkpointing or one_layer > logits else 0.0,
            "tokens": tokens}


def _load_peak(plan: dict, factors: dict, loaded: float, resident: float) -> float:
    """Loading: bitsandbytes quantizes onto this process's GPU as the weights load (tunespec's NF4 experts
    too), so under FSDP every rank first holds the whole quantized model, and wrapping writes its shard
    beside it before the unsharded weights go: measured on 2 x H200, Llama-3-8B QLoRA peaks at the wrap,
    5.41 GiB loaded + its shard (1 and 2 processes; benchmarks/gpu/results-h200x2-fsdp-*)."""
    return loaded + resident if plan["method"]["type"] == "qlora" and factors["strategy"] == "fsdp" else 0.0


def _framework_overhead(devices: dict, allocated: float, resident: float, adapters: float,
                        checkpointing: bool) -> dict:
    """What the process holds beyond torch's allocated peak: the caching allocator's slack (a share of what
    the step allocates beyond the resident weights and adapters, capped) or on a CPU glibc's, the CUDA
    context, and on a CPU the trainer process itself."""
    on_cpu = devices.get("kind") == "cpu"
    if on_cpu:
        slack = CpuTraining.rss_slack.value
    else:
        slack = MemoryOverheads.allocator_slack["checkpointing" if checkpointing else "no_checkpointing"].value
    reserved = allocated + min(MemoryOverheads.allocator_slack_cap_bytes.value,
                               slack * max(0.0, allocated - resident - adapters))
    return {"reserved": reserved,
            "context": MemoryOverheads.cuda_context_bytes.value if devices.get("kind") == "cuda" else 0,
            "process": CpuTraining.process_bytes.value if on_cpu else 0}


def _verdict(total: float, capacity: float | None) -> str:
    """fits / tight (within the margin kept for the estimate's error) / does-not-fit / unknown."""
    if capacity is None:
        return "unknown"
    if total <= Verdicts.tight_fraction.value * capacity:
        return "fits"
    return "tight" if total <= capacity else "does-not-fit"


def estimate_memory(plan: dict) -> dict:
    """Per-device peak memory of the plan: breakdown in bytes and GiB, total, capacity, verdict.

    The peak is the largest of three moments: the backward pass (all activations and the loss; gradients
    build up as activations are freed, so the larger of the two ends counts), the optimizer step
    (gradients and the step's temporaries), and loading (QLoRA under FSDP)."""
    arch, devices = plan["model"]["architecture"], plan["devices"]
    precision = plan["precision"]["resolved"]
    factors = _shard_factors(plan)
    upcast = plan["precision"]["kbit_upcast"]
    weights = weight_bytes(arch, plan["method"], precision, upcast)
    layers_here = math.ceil(arch["num_hidden_layers"] / factors["stages"])
    loaded, resident = _resident_weights(arch, weights, factors, layers_here)
    state = _trainable_state(plan, weights, precision, factors)
    gathered = _gathered_layers(arch, weights, factors)
    act = _activations(plan, weights, factors, layers_here, upcast, precision)

    static = resident + state["adapters"] + state["states"] + state["ddp_buckets"]
    train_peak = static + gathered + max(act["peak"], state["grads"])
    step_peak = static + state["grads"] + state["step_transient"]
    load_peak = _load_peak(plan, factors, loaded, resident)
    allocated = max(train_peak, step_peak, load_peak)
    overhead = _framework_overhead(devices, allocated, resident, state["adapters"], act["checkpointing"])
    reserved = overhead["reserved"]
    total = reserved + overhead["context"] + overhead["process"]

    capacity_gib = devices.get("memory_gib")
    logits_at_peak = not act["checkpointing"] or act["logits"] >= act["one_layer"]
    breakdown = {
        "weights": resident,
        "trainable_adapters": state["adapters"],
        "gradients": state["grads"],
        "optimizer_states": state["states"],
        "optimizer_step_transient": state["step_transient"],
        "ddp_buckets": state["ddp_buckets"],
        "fsdp_gathered_layers": gathered,
        # what the load-and-wrap peak adds over the training step's, when it is the larger
        "loading_peak_excess": max(0.0, load_peak - max(train_peak, step_peak)),
        "activations": (act["peak"] - act["logits"] if logits_at_peak else act["peak"]) - act["dequant_at_peak"],
        "expert_dequant_buffer": act["dequant_at_peak"],
        "logits_and_loss": act["logits"] if logits_at_peak else 0,
        "allocator_slack": reserved - allocated,
        "cuda_context": overhead["context"],
        **({"cpu_process": overhead["process"]} if devices.get("kind") == "cpu" else {}),
    }
    return {
        "breakdown_bytes": {k: int(v) for k, v in breakdown.items()},
        "breakdown_gib": {k: round(v / GIB, 2) for k, v in breakdown.items()},
        "weights_by_group": {g: {"params": w["params"], "dtype": w["dtype"], "gib": round(w["bytes"] / GIB, 2)}
                             for g, w in weights.items()},
        "peak_allocated_bytes": int(allocated),
        "peak_reserved_bytes": int(reserved),
        "total_bytes": int(total),
        "total_gib": round(total / GIB, 2),
        "capacity_gib": capacity_gib,
        "verdict": _verdict(total, capacity_gib * GIB if capacity_gib else None),
        "tokens_per_micro_batch": act["tokens"],
        "gradient_checkpointing": act["checkpointing"],
    }
