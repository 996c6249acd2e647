"""Training throughput of a plan, from what the GPU must compute and move, and what the CPU must
launch:

    GPU time per micro batch = matmul FLOPs / (peak * utilisation)
                               + bytes of memory-bound work / (bandwidth * efficiency)
    CPU time per micro batch = decoder layers * passes * Python and launch cost per layer-pass
    step time                = max(GPU, CPU) over the forward + max(GPU, CPU) over the backward
                               + collectives not hidden behind compute

The GPU runs behind the CPU, so each phase costs whichever is longer: small steps of an adapted model are
launch-bound (the measured Llama-3-8B LoRA steps take the same ~0.5 s from 512 to 2048 tokens). The forward
(Python) carries more of the host's cost than the backward (autograd's C++ engine): a micro batch whose GPU
work is about the host's is host-bound in its forward and GPU-bound in its backward.

Matmul FLOPs per token = forward * (1 + backward multiple + recompute under checkpointing), forward
= 2 * (active matmul parameters, lm_head included) + causal attention. Full fine-tuning's backward
computes gradients of inputs and weights (2x forward); frozen weights only of inputs (1x). MoE
counts the top_k experts a token visits; 16-bit experts adapted through PEFT's ParamWrapper get a
full weight gradient (the adapter's gradient comes through it), so they cost like full fine-tuning;
NF4 experts (runtime/moe_quantization.py) add each expert's low-rank product to its output, so their
adapters cost like LoRA on linear layers. fp32 weights (8-bit QLoRA's experts after the full k-bit
preparation, which autocast does not cover in grouped GEMMs) run at the plain fp32 peak.

Memory-bound work: LoRA's per-adapter casts, dropout and adds over the activations; ParamWrapper's
W + B@A materialisation and full-size gradient per layer and pass; NF4 dequantisation (the experts
one expert at a time); the optimizer step. NF4 experts run as a Python loop over the experts, whose
launches count on the CPU side.

The utilisations, byte counts and launch costs, each with its source, are in compiler/calibration.py.
"""
from __future__ import annotations

from ..schema.contract import TRAINER_MODULE
from . import instances, parameter_counts
from .calibration import (Collectives, CpuTraining, DeviceEfficiency, HardwareFallbacks, LaunchCosts, MemoryTraffic,
                          PackedAttention)
from .estimate_memory import nf4_bytes_per_param, weight_bytes

def flops_per_token(arch: dict, method: dict, seq: int, checkpointing: bool, attn_impl: str,
                    experts_nf4: bool = False) -> dict:
    """Training FLOPs per token, split by the dtype the experts compute in, and the forward."""
    h, layers = arch["hidden_size"], arch["num_hidden_layers"]
    shapes = parameter_counts.linear_shapes(arch)
    dense = sum(a * b for a, b in shapes.values())
    experts = parameter_counts.expert_shapes(arch)
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
    lora = method.get("lora") or {}
    backward = 2.0 if full else 1.0
    param_wrapper = lora.get("include_experts") and not experts_nf4
    expert_backward = 2.0 if full or param_wrapper else 1.0
    recompute = 1.0 if checkpointing else 0.0
    adapter = expert_adapter = 0
    if not full:
        r = lora.get("r", 16)
        adapter = sum(2 * r * (shapes[n][0] + shapes[n][1]) for n in lora.get("target_modules") or [] if n in shapes)
        if lora.get("include_experts") and experts_nf4:
            expert_adapter = top_k * sum(2 * r * (a + b) for _, a, b in experts.values())
    dense_train = layers * (layer_fwd_dense * (1 + backward + recompute) + adapter * (3 + recompute))
    dense_train += head_fwd * (1 + backward)
    expert_train = layers * (layer_fwd_experts * (1 + expert_backward + recompute)
                             + expert_adapter * (3 + recompute))
    return {"forward": layers * (layer_fwd_dense + layer_fwd_experts) + head_fwd,
            "train": dense_train + expert_train, "dense_train": dense_train, "expert_train": expert_train}


def _lora_elementwise_bytes(arch: dict, method: dict, passes: float) -> float:
    """Bytes per token the LoRA adapters' elementwise kernels move, over all layers and passes."""
    lora = method.get("lora") or {}
    if method["type"] == "full" or not lora:
        return 0.0
    shapes = parameter_counts.linear_shapes(arch)
    per_input = (MemoryTraffic.lora_bytes_per_input if lora["cast_input_to_adapter_dtype"]
                 else MemoryTraffic.lora_bytes_per_uncast_input).value["dropout" if lora.get("dropout") else "no_dropout"]
    per_output = MemoryTraffic.lora_bytes_per_output.value
    per_layer = sum(per_input * shapes[n][0] + per_output * shapes[n][1]
                    for n in lora.get("target_modules") or [] if n in shapes)
    return arch["num_hidden_layers"] * per_layer * passes


def _optimizer_bytes(method: str, trainable: int, optim: str) -> float:
    """Bytes the optimizer step reads and writes."""
    param = 4 if method != "full" else 2
    if optim == "adamw_torch":
        return trainable * param * MemoryTraffic.foreach_adamw_bytes_per_param_byte.value
    # fused and 8-bit kernels read parameter, gradient and both states once and write them back
    state = {"adamw_8bit": 1, "paged_adamw_8bit": 1, "paged_adamw_32bit": 4, "sgd": 0}.get(optim, param)
    return trainable * (2 * param + param + 4 * state)


def estimate_throughput(plan: dict) -> dict:
    """Tokens per second per device and in total, with the pieces of one micro batch's time."""
    arch = plan["model"]["architecture"]
    method = plan["method"]
    trainer, batch, devices, parallel = plan["trainer"], plan["batch"], plan["devices"], plan["parallel"]
    kind = devices.get("kind")
    peak_tflops = devices.get("peak_tflops")
    if kind == "cpu":
        return _cpu_throughput(plan)
    if not peak_tflops:
        return {"tokens_per_s_per_device": None, "tokens_per_s_total": None, "micro_step_time_s": None,
                "note": "no peak compute on record for this device"}
    hardware = instances.lookup_instance(devices["hardware"]) if devices.get("hardware") else {}

    seq = batch["sequence_length"]
    micro = batch["micro_batch_size"]
    # Without packing a sequence holds one example (padded to the longest of its batch): count the
    # tokens the plan says a sequence carries.
    if batch.get("tokens_per_step") and batch.get("global_batch_size"):
        seq = min(seq, batch["tokens_per_step"] / batch["global_batch_size"])
    tokens = micro * seq
    checkpointing = bool(trainer.get("gradient_checkpointing"))
    attn_impl = plan["model"].get("attn_implementation", "sdpa")
    mtype = method["type"]
    upcast = plan["precision"]["kbit_upcast"]
    weights = weight_bytes(arch, method, "bf16", upcast)
    experts_nf4 = weights.get("experts", {}).get("dtype", "").startswith("nf4")
    flops = flops_per_token(arch, method, seq, checkpointing, attn_impl, experts_nf4)
    layers = arch["num_hidden_layers"]
    passes = 2 + (1 if checkpointing else 0)

    tp = parallel.get("tensor_parallel", 1) or 1
    stages = parallel.get("pipeline_stages", 1) or 1
    trainium = DeviceEfficiency.trainium_utilisation.value
    utilisation = trainium if kind == "trainium" else \
        DeviceEfficiency.full_gemm_utilisation.value if mtype == "full" else DeviceEfficiency.gemm_utilisation.value
    experts_fp32 = weights.get("experts", {}).get("dtype") == "fp32"
    fp32_peak = hardware.get("peak_fp32_tflops") or peak_tflops / HardwareFallbacks.bf16_to_fp32_peak_ratio.value
    expert_utilisation = trainium if kind == "trainium" else DeviceEfficiency.nf4_expert_gemm_utilisation.value \
        if experts_nf4 else DeviceEfficiency.moe_gemm_utilisation.value
    expert_rate = fp32_peak * 1e12 * DeviceEfficiency.fp32_utilisation.value if experts_fp32 else \
        peak_tflops * 1e12 * expert_utilisation
    # Tensor parallelism splits each matmul over tp devices; a device_map pipeline runs its stages
    # one after another, so the whole replica goes at the speed of one device.
    compute_s = tokens * (flops["dense_train"] / (peak_tflops * 1e12 * utilisation)
                          + flops["expert_train"] / expert_rate) / tp

    bandwidth = (hardware.get("memory_bandwidth_gbps") or HardwareFallbacks.memory_bandwidth_gbps.value) * 1e9 \
        * DeviceEfficiency.bandwidth_efficiency.value
    # elementwise traffic scales like the matmuls: forward, recompute, and backward at twice forward
    memory_bytes = tokens * _lora_elementwise_bytes(arch, method, passes + 1)
    lora = method.get("lora") or {}
    if mtype != "full" and lora.get("include_experts") and "experts" in weights and not experts_nf4:
        memory_bytes += passes * weights["experts"]["bytes"] * MemoryTraffic.param_wrapper_bytes_per_weight_byte.value
    if upcast:
        memory_bytes += tokens * layers * (passes + 1) * MemoryTraffic.fp32_residual_bytes_per_hidden.value \
            * arch["hidden_size"]
    if mtype == "qlora":
        quant = method.get("quantization") or {}
        per_param = MemoryTraffic.dequant_bytes_per_param.value + nf4_bytes_per_param(quant.get("double_quant", True))
        quantized = weights["linear"]["params"] + (weights["experts"]["params"] if experts_nf4 else 0)
        memory_bytes += passes * quantized * per_param
    trainable = plan["model"]["parameters"]["trainable"]
    shard = parallel.get("shard_degree", 1) or 1
    accumulation = batch.get("gradient_accumulation", 1) or 1
    optimizer_bytes = _optimizer_bytes(mtype, trainable, trainer.get("optim", "adamw_torch")) / shard / accumulation
    memory_s = memory_bytes / tp / bandwidth
    optimizer_s = optimizer_bytes / bandwidth
    gpu_s = compute_s + memory_s
    per_method = LaunchCosts.cpu_per_layer_pass_s
    cpu_s = layers * passes * per_method.get(mtype, per_method["lora"]).value
    if upcast:
        cpu_s += layers * passes * LaunchCosts.kbit_preparation_cpu_per_layer_pass_s.value
    if experts_nf4:
        cpu_s += layers * passes * arch["num_local_experts"] * LaunchCosts.cpu_per_nf4_expert_pass_s.value
    if (plan.get("launch") or {}).get("module") == TRAINER_MODULE:
        scale = PackedAttention.trainer_scale[attn_impl].value if plan["data"]["packing"] \
            else LaunchCosts.trainer_unpacked_scale.value
        cpu_s += layers * passes * LaunchCosts.trainer_cpu_per_layer_pass_s.value * scale
    if parallel["strategy"] in ("fsdp", "smp") and (parallel.get("shard_degree") or 1) > 1:
        cpu_s += layers * passes * LaunchCosts.fsdp_sharded_cpu_per_layer_pass_s.value

    comm_s = _communication_seconds(plan, hardware, accumulation)
    # The optimizer step waits for the last gradient: it cannot hide behind the next step's launches.
    # Two phases per micro batch, each as long as the slower of the GPU and the host: the forward, which the host
    # paces from Python, and the backward (with a recompute under checkpointing), which autograd's C++ engine
    # launches for the most part. A micro batch starts after the previous one's sync, so the phases do not overlap.
    fwd_share = flops["forward"] / flops["train"]
    cpu_fwd = cpu_s / passes * LaunchCosts.forward_pass_host_share.value
    busy_s = max(gpu_s * fwd_share, cpu_fwd) + max(gpu_s * (1 - fwd_share), cpu_s - cpu_fwd) + optimizer_s
    step_s = busy_s + max(0.0, comm_s - Collectives.overlap.value * busy_s)
    per_replica = tokens / step_s
    replicas = parallel.get("data_parallel", 1) or 1
    devices_per_replica = tp * stages
    return {
        "flops_per_token": int(flops["train"]),
        "forward_flops_per_token": int(flops["forward"]),
        "gemm_utilisation": utilisation,
        "micro_step_time_s": round(step_s, 4),
        "compute_s": round(compute_s, 4),
        "memory_bound_s": round(memory_s, 4),
        "optimizer_s": round(optimizer_s, 4),
        "cpu_launch_s": round(cpu_s, 4),
        "bound_by": "cpu" if cpu_s > gpu_s else "gpu",
        "communication_s": round(comm_s, 4),
        "experts_compute_dtype": ("fp32" if experts_fp32 else "bf16") if "experts" in weights else None,
        "tokens_per_s_per_device": round(per_replica / devices_per_replica, 1),
        "tokens_per_s_total": round(per_replica * replicas, 1),
        "mfu": round(tokens * flops["train"] / step_s / (peak_tflops * 1e12 * devices_per_replica), 3),
    }


def _cpu_throughput(plan: dict) -> dict:
    """A local CPU run: FLOPs of a step at the measured rate of this CPU's cores in the plan's precision."""
    cpu = plan["devices"].get("cpu")
    precision = plan["precision"]["resolved"]
    rate = CpuTraining.gflops_per_core.get((cpu or {}).get("capability"), {}).get(precision)
    if rate is None:
        return {"tokens_per_s_per_device": None, "tokens_per_s_total": None, "micro_step_time_s": None,
                "note": "no CPU rate on record for this CPU and precision: `tunespec probe` measures it"}
    batch = plan["batch"]
    tokens = batch["tokens_per_step"] / batch["global_batch_size"] * batch["micro_batch_size"]
    seq = batch["sequence_length"]
    flops = flops_per_token(plan["model"]["architecture"], plan["method"], seq,
                            bool(plan["trainer"].get("gradient_checkpointing")),
                            plan["model"].get("attn_implementation", "sdpa"))
    rate = rate.value
    per_second = cpu["cores"] * rate * 1e9
    step_s = tokens * flops["train"] / per_second
    return {"flops_per_token": int(flops["train"]), "cpu_gflops_per_core": rate, "cores": cpu["cores"],
            "micro_step_time_s": round(step_s, 3), "tokens_per_s_per_device": round(tokens / step_s, 1),
            "tokens_per_s_total": round(tokens / step_s, 1)}


def _communication_seconds(plan: dict, hardware: dict, accumulation: int) -> float:
    """Seconds per micro batch of collectives that move weights or gradients between devices."""
    parallel, devices = plan["parallel"], plan["devices"]
    world = parallel.get("world_size", 1) or 1
    if world <= 1 or parallel["strategy"] in ("none", "device_map"):
        return 0.0
    interconnect = hardware.get("interconnect") or {}
    per_node = devices.get("per_node", 1) or 1
    efficiency = Collectives.link_efficiency.value
    intra = (interconnect.get("intra_node_gbytes_per_s") or HardwareFallbacks.intra_node_gbytes_per_s.value) * 1e9 \
        * efficiency
    inter = (interconnect.get("network_gbps") or HardwareFallbacks.network_gbps.value) * 1e9 / 8 / per_node * efficiency

    def bandwidth(group: int) -> float:
        return intra if group <= per_node else min(intra, inter)

    trainable = plan["model"]["parameters"]["trainable"]
    total = plan["model"]["parameters"]["total"]
    grad_bytes = trainable * (2 if plan["method"]["type"] == "full" else 4)
    shard = parallel.get("shard_degree", 1) or 1
    if parallel["strategy"] in ("fsdp", "smp") and shard > 1:
        # all-gather the weights for forward and again for backward and reduce-scatter the gradients
        # within a shard group; hybrid sharding then all-reduces the gradient shards across groups
        ring = (shard - 1) / shard
        per_param = 2 if plan["method"]["type"] != "qlora" else Collectives.qlora_gathered_bytes_per_param.value
        weight_bytes = total * per_param
        seconds = 2 * weight_bytes * ring / bandwidth(shard)
        seconds += grad_bytes * ring / bandwidth(shard) / accumulation
        groups = world // shard
        if groups > 1:
            seconds += 2 * grad_bytes / shard * (groups - 1) / groups / inter / accumulation
        return seconds
    ring = (world - 1) / world
    return 2 * grad_bytes * ring / bandwidth(world) / accumulation  # DDP all-reduce
