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
"""
from __future__ import annotations

import math

from . import parameter_counts

GIB = 1024 ** 3

# --- calibration (benchmarks/measurements/*.json; see benchmarks/estimate_errors.md) -------------
# Memory the CUDA context, kernels and cuBLAS/NCCL handles take outside torch's allocator counters.
CUDA_CONTEXT_BYTES = int(0.55 * GIB)
# Reserved beyond allocated at the peak, as a share of the memory allocated during the step (not
# the resident weights): the caching allocator keeps the freed segments of the loss's large blocks
# while recomputation under checkpointing asks for other sizes (measured on the H100: 0.21-0.67,
# median 0.34); without checkpointing the saved activations are allocated once and stay (0.02-0.16,
# median 0.06). The waste stays below a few large segments however big the step: at most ~6 GiB.
ALLOCATOR_SLACK = {"checkpointing": 0.35, "no_checkpointing": 0.08}
ALLOCATOR_SLACK_CAP = 6 * GIB
# Bytes per logit and token at the loss: the fp32 upcast of the logits (4), the fp32 log-softmax
# kept for backward (4), and at the start of backward its fp32 gradient (4), less what the bf16
# logits' early release gives back: 12 by count; the Llama-3 (128k vocabulary) and Mixtral (32k)
# measurements under checkpointing, where the loss sets the peak, give 11.4-11.8.
LOGIT_BYTES = 11.5
# Fraction of the largest per-layer transient (fp32 norm copies, MLP intermediates being built) in
# flight on top of what is saved.
TRANSIENT_LAYER_FRACTION = 1.0
# CPU runs are held to what the trainer process keeps resident in host RAM (RSS), measured with the
# embedded default on the 2-core Xeon (compiler/estimate_speed.py): the Python process with torch,
# transformers, TRL and the data before the weights load; and what glibc's allocator keeps mapped
# beyond a step's own peak (freed activation and logit blocks it reuses), as a share of that peak.
CPU_PROCESS_BYTES = int(0.55 * GIB)
CPU_RSS_SLACK = 0.84
# Verdict bands over the device's memory.
TIGHT_FRACTION = 0.90

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "uint8": 1}
NF4_BLOCKSIZE = 64
DOUBLE_QUANT_BLOCKSIZE = 256


def nf4_bytes_per_param(double_quant: bool) -> float:
    """4 bits per weight plus the block absmax: fp32 per 64 weights, or with double quantization
    8-bit per 64 weights and one fp32 per 256 blocks."""
    if double_quant:
        return 0.5 + 1 / NF4_BLOCKSIZE + 4 / (NF4_BLOCKSIZE * DOUBLE_QUANT_BLOCKSIZE)
    return 0.5 + 4 / NF4_BLOCKSIZE


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


def kbit_upcast(plan: dict) -> bool:
    """Whether the runtime runs PEFT's prepare_model_for_kbit_training (the plan's full k-bit
    preparation; the rules refuse it under FSDP/SMP)."""
    quant = plan["method"].get("quantization") if plan["method"]["type"] == "qlora" else None
    return bool(quant) and quant.get("kbit_preparation") == "full"


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
                dtype, per = "int8", 1.0 + 4 / 4096  # LLM.int8 row-wise fp32 scales, roughly
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
        return 2.0 + 2 * 4 / 2048  # two uint8 states plus an fp32 absmax per 2048-block each
    if optim == "paged_adamw_32bit":
        return 8.0  # bitsandbytes keeps 32-bit states whatever the parameter dtype
    if optim == "adafactor":
        return 0.05 * param_bytes  # factored second moment: rows + columns, no first moment
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
        gather_units = 2 if sharding in ("full_shard", "hybrid_shard") else 0  # current + prefetched layer
    elif strategy == "smp":
        states = grads = weights = shard
        gather_units = 2
    return {"weights": weights, "grads": grads, "states": states, "tp": tp, "ep": ep, "stages": stages,
            "gather_units": gather_units, "strategy": strategy}


def estimate_memory(plan: dict) -> dict:
    """Per-device peak memory of the plan: breakdown in bytes and GiB, total, capacity, verdict."""
    arch = plan["model"]["architecture"]
    method = plan["method"]
    trainer = plan["trainer"]
    batch = plan["batch"]
    devices = plan["devices"]
    precision = "bf16" if trainer.get("bf16") else ("fp16" if trainer.get("fp16") else "fp32")
    layers = arch["num_hidden_layers"]
    h, vocab = arch["hidden_size"], arch["vocab_size"]
    factors = _shard_factors(plan)
    tp, ep, stages = factors["tp"], factors["ep"], factors["stages"]
    full = method["type"] == "full"

    # --- weights ---------------------------------------------------------------------------------
    upcast = kbit_upcast(plan)
    weights = weight_bytes(arch, method, precision, upcast)
    # the experts compute in their dtype, or in the compute dtype when they are NF4
    expert_bytes = DTYPE_BYTES.get(weights["experts"]["dtype"], 2) if "experts" in weights else 2
    per_layer_groups = ("linear", "experts", "router", "norms_and_biases")
    # Tensor parallelism splits the layer matrices; expert parallelism splits the experts; a pipeline
    # (device_map or neuron) holds 1/stages of the layers plus, on the first and last device, the
    # embedding and the lm_head; we report the heaviest stage.
    layers_here = math.ceil(layers / stages)
    weight_on_device = 0.0
    for group, info in weights.items():
        size = info["bytes"]
        if group in per_layer_groups:
            size = size * layers_here / layers / tp
            if group == "experts":
                size /= ep
        elif stages > 1 and group == "embedding" and not arch["tie_word_embeddings"]:
            size = 0  # embedding on the first stage, lm_head (and the logits) on the last: report the last
        else:
            size /= tp
        weight_on_device += size
    weights_loaded = weight_on_device
    weight_on_device /= factors["weights"]
    if factors["weights"] > 1 and "experts" in weights and weights["experts"]["dtype"].startswith("nf4"):
        # NF4 experts' block scales are buffers, replicated on every rank; only the packed 4 bits shard.
        scales = weights["experts"]["bytes"] - weights["experts"]["params"] / 2
        weight_on_device += scales * layers_here / layers / tp / ep * (1 - 1 / factors["weights"])

    # --- trainable parameters, gradients, optimizer states ---------------------------------------
    trainable = plan["model"]["parameters"]["trainable"]
    if full:
        param_bytes = DTYPE_BYTES["fp32" if precision == "fp32" else "bf16"]
        trainable_extra = 0.0  # the trained weights are the weights above
    else:
        param_bytes = 4  # PEFT keeps adapters in fp32
        trainable_extra = trainable * param_bytes
    model_split = tp * (stages if stages > 1 else 1)
    trainable_here = trainable / model_split
    if full and ep > 1 and "experts" in weights:
        # expert parallelism places each expert's weights, gradients and states on 1/ep of the ranks
        trainable_here -= weights["experts"]["params"] * (1 - 1 / ep) / model_split
    grads = trainable_here * param_bytes / factors["grads"]
    optim = trainer.get("optim", "adamw_torch")
    states = trainable_here * optimizer_bytes_per_param(optim, param_bytes) / factors["states"]
    step_transient = trainable_here * optimizer_step_transient_per_param(optim, param_bytes) / factors["states"]
    adapters = trainable_extra / model_split / factors["weights"]
    # DDP keeps gradient buckets beside the gradients.
    ddp_buckets = grads if factors["strategy"] == "ddp" and plan["parallel"].get("world_size", 1) > 1 else 0.0

    # FSDP/SMP gather a whole decoder layer (current and prefetched) at compute precision.
    gathered = 0.0
    if factors["gather_units"] and factors["weights"] > 1:
        per_layer = sum(weights[g]["bytes"] for g in per_layer_groups if g in weights) / layers / tp
        gathered = factors["gather_units"] * per_layer * (1 - 1 / factors["weights"])

    # --- activations -----------------------------------------------------------------------------
    seq = batch.get("sequence_length") or plan["data"]["max_seq_length"]
    tokens = batch["micro_batch_size"] * seq
    attn_impl = plan["model"].get("attn_implementation", "sdpa")
    fp32_residual = method["type"] == "qlora" and upcast
    layer = _layer_activation_bytes(arch, method, attn_impl, seq, expert_bytes, fp32_residual,
                                    bool(trainer.get("use_liger_kernel")))
    residual_bytes = 4 if fp32_residual else 2
    checkpointing = bool(trainer.get("gradient_checkpointing"))
    adapted_experts = _adapted_expert_bytes(arch, method, weights, layers_here, checkpointing) / tp / ep
    dequant_buffer = expert_dequant_bytes(arch, weights) / tp
    # embedding output, final norm and lm_head input
    outside_layers = tokens * 10 * h / tp
    if trainer.get("use_liger_kernel"):
        logits = tokens * h * 4  # fused linear cross-entropy works in chunks
    else:
        logits = tokens * vocab * LOGIT_BYTES / tp
        if method["type"] == "qlora" and upcast:
            logits += counts_lm_head(arch) * 2 / tp  # autocast's bf16 copy of the fp32 lm_head
    one_layer = tokens * (layer["saved"] + TRANSIENT_LAYER_FRACTION * layer["transient"]) / tp + adapted_experts \
        + dequant_buffer
    if checkpointing:
        # Each layer keeps only its input. The loss (at the end of forward, start of backward) and
        # the recomputation of one layer (later in backward) are not in memory at the same time.
        activations = tokens * layers_here * residual_bytes * h / tp + outside_layers
        activation_peak = activations + max(logits, one_layer)
    else:
        activations = tokens * layers_here * layer["saved"] / tp + outside_layers + adapted_experts
        activation_peak = activations + tokens * layer["transient"] / tp + dequant_buffer + logits

    dequant_at_peak = dequant_buffer if not checkpointing or one_layer > logits else 0.0
    on_cpu = devices.get("kind") == "cpu"
    if on_cpu and precision == "fp32":
        # No bf16 autocast on such a CPU: each saved activation is fp32, twice what is counted above.
        activation_peak += activation_peak - logits

    # --- peak ------------------------------------------------------------------------------------
    static = weight_on_device + adapters + states + ddp_buckets
    # Peak in the backward pass: all activations and the loss; gradients build up as activations are
    # freed, so the larger of the two ends counts. Peak at the optimizer step: gradients and the
    # step's temporaries.
    train_peak = static + gathered + max(activation_peak, grads)
    step_peak = static + grads + step_transient
    # Loading: bitsandbytes quantizes onto this process's GPU as the weights load (tunespec's NF4 experts
    # too), so under FSDP every rank first holds the whole quantized model, and wrapping writes its
    # shard beside it before the unsharded weights go: measured on 2 x H200, Llama-3-8B QLoRA peaks at
    # the wrap, 5.41 GiB loaded + its shard (1 and 2 processes; benchmarks/gpu/results-h200x2-fsdp-*).
    load_peak = weights_loaded + weight_on_device if method["type"] == "qlora" and factors["strategy"] == "fsdp" else 0.0
    allocated = max(train_peak, step_peak, load_peak)
    slack = CPU_RSS_SLACK if on_cpu else ALLOCATOR_SLACK["checkpointing" if checkpointing else "no_checkpointing"]
    reserved = allocated + min(ALLOCATOR_SLACK_CAP, slack * max(0.0, allocated - weight_on_device - adapters))
    context = CUDA_CONTEXT_BYTES if devices.get("kind") == "cuda" else 0
    process = CPU_PROCESS_BYTES if on_cpu else 0
    total = reserved + context + process

    capacity_gib = devices.get("memory_gib")
    capacity = capacity_gib * GIB if capacity_gib else None
    if capacity is None:
        verdict = "unknown"
    elif total <= TIGHT_FRACTION * capacity:
        verdict = "fits"
    elif total <= capacity:
        verdict = "tight"
    else:
        verdict = "does-not-fit"

    breakdown = {
        "weights": weight_on_device,
        "trainable_adapters": adapters,
        "gradients": grads,
        "optimizer_states": states,
        "optimizer_step_transient": step_transient,
        "ddp_buckets": ddp_buckets,
        "fsdp_gathered_layers": gathered,
        # what the load-and-wrap peak adds over the training step's, when it is the larger
        "loading_peak_excess": max(0.0, load_peak - max(train_peak, step_peak)),
        "activations": (activation_peak - logits if not checkpointing or logits >= one_layer else activation_peak)
        - dequant_at_peak,
        "expert_dequant_buffer": dequant_at_peak,
        "logits_and_loss": logits if not checkpointing or logits >= one_layer else 0,
        "allocator_slack": reserved - allocated,
        "cuda_context": context,
        **({"cpu_process": process} if on_cpu else {}),
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
        "verdict": verdict,
        "tokens_per_micro_batch": tokens,
        "gradient_checkpointing": checkpointing,
    }
