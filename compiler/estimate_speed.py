"""Training throughput of a plan: FLOPs per token over the devices' achievable rate, plus the
memory-bound work (4-bit dequantization, optimizer step) and the collectives of sharded runs.

    time per micro batch = FLOPs / (peak * utilisation[method]) + memory traffic / bandwidth
                           + per-layer launch overhead
    FLOPs per token      = forward * (1 + backward multiple + recompute under checkpointing)
    forward              = 2 * (active matmul parameters, lm_head included) + causal attention

Full fine-tuning's backward computes gradients of inputs and weights (2x forward); with frozen
weights (LoRA, QLoRA) only of inputs (1x), plus the adapters' own small matmuls. Gradient
checkpointing re-runs each layer's forward once. MoE counts only the top_k experts a token visits.
"""
from __future__ import annotations

from . import catalog
from .estimate_memory import nf4_bytes_per_param

# --- calibration (benchmarks/measurements/*.json; see benchmarks/estimate_errors.md) -------------
# Share of the dense bf16 peak the training step's matmuls reach, by method. LoRA and QLoRA run the
# same large GEMMs as full fine-tuning but add many small adapter kernels and casts.
UTILISATION = {"full": 0.55, "lora": 0.50, "dora": 0.40, "qlora": 0.45}
# Transformers 5's MoE experts run one small GEMM per expert (or a grouped GEMM): less efficient
# than a dense layer of the same active size.
MOE_EFFICIENCY = 0.6
# Memory bandwidth the dequantization and optimizer kernels reach, as a share of the datasheet's.
BANDWIDTH_EFFICIENCY = 0.7
# Bytes moved per 4-bit weight each time a layer's weight is dequantized and used: read the packed
# weight and its constants, write a bf16 copy, read it again in the GEMM.
DEQUANT_BYTES_PER_PARAM = 0.52 + 2 + 2
# Kernel launches and Python per decoder layer and pass (forward, backward, recompute), seconds.
LAYER_OVERHEAD_S = {"full": 0.4e-3, "lora": 1.2e-3, "dora": 1.6e-3, "qlora": 1.4e-3}
# Share of the collectives hidden behind computation (FSDP prefetch, DDP bucketing).
COMM_OVERLAP = 0.5
# Share of the link bandwidth collectives reach.
COMM_EFFICIENCY = 0.7
# Trainium through optimum-neuron: no measurement yet; a conservative share of the peak.
TRAINIUM_UTILISATION = 0.25


def flops_per_token(arch: dict, method: dict, seq: int, checkpointing: bool, attn_impl: str) -> dict:
    """Forward and training FLOPs per token."""
    h, layers = arch["hidden_size"], arch["num_hidden_layers"]
    shapes = catalog.linear_shapes(arch)
    dense = sum(a * b for a, b in shapes.values())
    experts = catalog.expert_shapes(arch)
    top_k = arch.get("num_experts_per_tok") or 0
    expert_active = top_k * sum(a * b for _, a, b in experts.values())
    router = (arch.get("num_local_experts") or 0) * h
    q_dim = arch["num_attention_heads"] * arch["head_dim"]
    # QK^T and AV over the causal half (flash/SDPA skip the masked blocks; eager computes all keys)
    attention = (2 if attn_impl == "eager" else 1) * 2 * seq * q_dim
    layer_fwd_dense = 2 * (dense + router) + attention
    layer_fwd_experts = 2 * expert_active
    head_fwd = 2 * h * arch["vocab_size"]

    full = method["type"] == "full"
    backward = 2.0 if full else 1.0
    adapter = 0
    lora = method.get("lora") or {}
    if not full:
        r = lora.get("r", 16)
        adapter = sum(2 * r * (shapes[n][0] + shapes[n][1]) for n in lora.get("target_modules") or [] if n in shapes)
        if lora.get("include_experts"):
            adapter += sum(2 * r * e * (a + b) for e, a, b in experts.values())
    recompute = 1.0 if checkpointing else 0.0
    layer_train = (layer_fwd_dense + layer_fwd_experts) * (1 + backward + recompute) + adapter * (3 + recompute)
    fwd = layers * (layer_fwd_dense + layer_fwd_experts) + head_fwd
    train = layers * layer_train + head_fwd * (1 + backward)
    moe_share = layers * layer_fwd_experts * (1 + backward + recompute) / train if train else 0.0
    return {"forward": fwd, "train": train, "moe_share": moe_share}


def _optimizer_bytes(method: str, trainable: int, optim: str) -> float:
    """Bytes the optimizer step reads and writes: parameter, gradient, two states."""
    param = 4 if method != "full" else 2
    state = {"adamw_8bit": 1, "paged_adamw_8bit": 1, "paged_adamw_32bit": 4, "sgd": 0}.get(optim, param)
    return trainable * (2 * param + param + 4 * state)


def estimate_throughput(plan: dict) -> dict:
    """Tokens per second per device and in total, with the pieces of one optimizer step's time."""
    arch = plan["model"]["architecture"]
    method = plan["method"]
    trainer, batch, devices, parallel = plan["trainer"], plan["batch"], plan["devices"], plan["parallel"]
    kind = devices.get("kind")
    peak_tflops = devices.get("peak_tflops")
    if kind == "cpu" or not peak_tflops:
        return {"tokens_per_s_per_device": None, "tokens_per_s_total": None, "micro_step_time_s": None,
                "note": "no throughput estimate for CPU runs: measure with `tunespec probe`"}
    hardware = catalog.lookup_instance(devices["hardware"]) if devices.get("hardware") else {}

    seq = batch.get("sequence_length") or plan["data"]["max_seq_length"]
    micro = batch["micro_batch_size"]
    # Without packing a sequence holds one example (padded to the longest of its batch): count the
    # tokens the plan says a sequence carries.
    if batch.get("tokens_per_step") and batch.get("global_batch_size"):
        seq = min(seq, batch["tokens_per_step"] / batch["global_batch_size"])
    tokens = micro * seq
    checkpointing = bool(trainer.get("gradient_checkpointing"))
    attn_impl = plan["model"].get("attn_implementation", "sdpa")
    flops = flops_per_token(arch, method, seq, checkpointing, attn_impl)
    mtype = method["type"]

    tp = parallel.get("tensor_parallel", 1) or 1
    stages = parallel.get("pipeline_stages", 1) or 1
    if kind == "trainium":
        utilisation = TRAINIUM_UTILISATION
    else:
        utilisation = UTILISATION.get(mtype, UTILISATION["lora"])
    moe_factor = (1 - flops["moe_share"]) + flops["moe_share"] / MOE_EFFICIENCY
    # Tensor parallelism splits each matmul over tp devices; a device_map pipeline runs its stages
    # one after another, so the whole replica goes at the speed of one device.
    compute_s = tokens * flops["train"] * moe_factor / (peak_tflops * 1e12 * utilisation) / tp

    bandwidth = (hardware.get("memory_bandwidth_gbps") or 2000) * 1e9 * BANDWIDTH_EFFICIENCY
    layers = arch["num_hidden_layers"]
    passes = 2 + (1 if checkpointing else 0)
    memory_bytes = 0.0
    if mtype == "qlora":
        linear = layers * sum(a * b for a, b in catalog.linear_shapes(arch).values())
        memory_bytes += passes * linear * DEQUANT_BYTES_PER_PARAM * (nf4_bytes_per_param(True) / 0.5159) / tp
    trainable = plan["model"]["parameters"]["trainable"]
    shard = parallel.get("shard_degree", 1) or 1
    accumulation = batch.get("gradient_accumulation", 1) or 1
    optimizer_bytes = _optimizer_bytes(mtype, trainable, trainer.get("optim", "adamw_torch")) / shard / tp
    memory_s = memory_bytes / bandwidth + optimizer_bytes / bandwidth / accumulation
    overhead_s = layers * passes * LAYER_OVERHEAD_S.get(mtype, LAYER_OVERHEAD_S["lora"])

    comm_s = _communication_seconds(plan, hardware, accumulation)
    compute_total = compute_s + memory_s + overhead_s
    step_s = compute_total + max(0.0, comm_s - COMM_OVERLAP * compute_total)
    per_replica = tokens / step_s
    replicas = parallel.get("data_parallel", 1) or 1
    devices_per_replica = tp * stages
    return {
        "flops_per_token": int(flops["train"]),
        "forward_flops_per_token": int(flops["forward"]),
        "utilisation": utilisation,
        "micro_step_time_s": round(step_s, 4),
        "compute_s": round(compute_s, 4),
        "memory_bound_s": round(memory_s, 4),
        "overhead_s": round(overhead_s, 4),
        "communication_s": round(comm_s, 4),
        "tokens_per_s_per_device": round(per_replica / devices_per_replica, 1),
        "tokens_per_s_total": round(per_replica * replicas, 1),
        "mfu": round(tokens * flops["train"] / step_s / (peak_tflops * 1e12 * devices_per_replica), 3),
    }


def _communication_seconds(plan: dict, hardware: dict, accumulation: int) -> float:
    """Seconds per micro batch of collectives that move weights or gradients between devices."""
    parallel, devices = plan["parallel"], plan["devices"]
    world = parallel.get("world_size", 1) or 1
    if world <= 1 or parallel["strategy"] in ("none", "device_map"):
        return 0.0
    interconnect = hardware.get("interconnect") or {}
    per_node = devices.get("per_node", 1) or 1
    nodes = devices.get("nodes", 1) or 1
    intra = (interconnect.get("intra_node_gbytes_per_s") or 16) * 1e9
    inter = (interconnect.get("network_gbps") or 25) * 1e9 / 8 / per_node
    bandwidth = (min(intra, inter) if nodes > 1 else intra) * COMM_EFFICIENCY
    trainable = plan["model"]["parameters"]["trainable"]
    total = plan["model"]["parameters"]["total"]
    grad_bytes = trainable * (2 if plan["method"]["type"] == "full" else 4)
    ring = (world - 1) / world
    strategy = parallel["strategy"]
    if strategy in ("fsdp", "smp") and (parallel.get("shard_degree", 1) or 1) > 1:
        # all-gather the weights for forward and again for backward, reduce-scatter the gradients
        weight_bytes = total * (2 if plan["method"]["type"] != "qlora" else 0.6)
        per_micro = 2 * weight_bytes * ring
        per_step = grad_bytes * ring
    else:
        per_micro = 0.0
        per_step = 2 * grad_bytes * ring  # all-reduce
    return (per_micro + per_step / accumulation) / bandwidth
