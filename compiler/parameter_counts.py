"""Exact parameter counts of an architecture: linear and expert shapes, totals, and what a method trains."""
from .lora_targets import ALL_LINEAR, LM_HEAD, resolve_target_modules, resolve_target_parameters

_ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "query_key_value", "dense")


def linear_shapes(arch: dict) -> dict:
    """{module name: (in_features, out_features)} of the nn.Linear modules of one decoder layer."""
    h, i, hd = arch["hidden_size"], arch["intermediate_size"], arch["head_dim"]
    q_out = arch["num_attention_heads"] * hd
    kv_out = arch["num_key_value_heads"] * hd
    if arch["model_type"] == "falcon":
        return {
            "query_key_value": (h, q_out + 2 * kv_out),
            "dense": (q_out, h),
            "dense_h_to_4h": (h, i),
            "dense_4h_to_h": (i, h),
        }
    shapes = {"q_proj": (h, q_out), "k_proj": (h, kv_out), "v_proj": (h, kv_out), "o_proj": (q_out, h)}
    if not arch.get("num_local_experts"):
        shapes.update(gate_proj=(h, i), up_proj=(h, i), down_proj=(i, h))
    return shapes


def expert_shapes(arch: dict) -> dict:
    """{parameter name: (experts, in_features, out_features)} of the fused MoE experts of one layer."""
    if not arch.get("num_local_experts"):
        return {}
    e, h, i = arch["num_local_experts"], arch["hidden_size"], arch["intermediate_size"]
    return {"experts.gate_up_proj": (e, h, 2 * i), "experts.down_proj": (e, i, h)}


def _layer_bias_count(arch: dict) -> int:
    h, i, hd = arch["hidden_size"], arch["intermediate_size"], arch["head_dim"]
    qkv_out = (arch["num_attention_heads"] + 2 * arch["num_key_value_heads"]) * hd
    count = qkv_out if arch.get("qkv_bias") else 0
    count += h if arch.get("o_bias") else 0
    if arch.get("mlp_bias"):
        count += (i + h) if arch["mlp"] == "plain" else (2 * i + h)
    return count


def _norm_size(arch: dict) -> int:
    return arch["hidden_size"] * (2 if arch["norm"] == "layernorm" else 1)


def count_parameters(arch: dict) -> dict:
    """Exact parameter counts: total, those one token passes through (MoE), and the embedding."""
    h, v, layers = arch["hidden_size"], arch["vocab_size"], arch["num_hidden_layers"]
    dense_layer = sum(a * b for a, b in linear_shapes(arch).values())
    dense_layer += _layer_bias_count(arch) + arch["norms_per_layer"] * _norm_size(arch)
    experts = arch.get("num_local_experts") or 0
    per_expert = sum(fan_in * fan_out for _, fan_in, fan_out in expert_shapes(arch).values())
    router = experts * h
    embedding = v * h
    lm_head = 0 if arch["tie_word_embeddings"] else v * h
    outside_layers = embedding + lm_head + _norm_size(arch)
    total = layers * (dense_layer + router + experts * per_expert) + outside_layers
    active = layers * (dense_layer + router + (arch.get("num_experts_per_tok") or 0) * per_expert) + outside_layers
    return {"total": total, "active_per_token": active, "embedding": embedding, "lm_head": lm_head}


def count_trainable(arch: dict, method: dict) -> int:
    """Trainable parameters of the plan's method section (full, lora, dora, qlora), as PEFT counts them."""
    return sum(trainable_by_group(arch, method).values())


def trainable_by_group(arch: dict, method: dict) -> dict:
    """Trainable parameters by module group (attention, mlp, experts, lm_head, biases; full: all)."""
    if method["type"] == "full":
        return {"all": count_parameters(arch)["total"]}
    lora = method["lora"] or {}
    r = lora.get("r", 16)
    use_dora = method["type"] == "dora" or lora.get("use_dora", False)
    shapes = linear_shapes(arch)
    shapes[LM_HEAD] = (arch["hidden_size"], arch["vocab_size"])
    targets = resolve_target_modules(arch, lora.get("target_modules", ALL_LINEAR))
    layers = arch["num_hidden_layers"]

    groups = {"attention": 0, "mlp": 0, "experts": 0, "lm_head": 0, "biases": 0}
    for name in targets:
        fan_in, fan_out = shapes[name]
        adapter = r * (fan_in + fan_out) + (fan_out if use_dora else 0)  # DoRA: one magnitude per output
        if name == LM_HEAD:
            groups["lm_head"] += adapter
        else:
            groups["attention" if name in _ATTENTION_MODULES else "mlp"] += layers * adapter
    # PEFT's ParamWrapper: lora_A (in -> r*E) and lora_B (r*E -> out) per 3-D parameter.
    experts = expert_shapes(arch)
    groups["experts"] = layers * sum(r * e * (fan_in + fan_out) for name, (e, fan_in, fan_out) in experts.items()
                                     if name in resolve_target_parameters(arch, lora, method["type"]))
    groups["biases"] = layers * _trainable_biases(arch, targets, lora.get("bias", "none"))
    return {group: count for group, count in groups.items() if count}


def _trainable_biases(arch: dict, targets: list, bias: str) -> int:
    """Bias parameters unfrozen by `bias: all` (every bias) or `lora_only` (biases of adapted modules)."""
    if bias == "none":
        return 0
    shapes = linear_shapes(arch)
    has_bias = {
        "q_proj": arch.get("qkv_bias"), "k_proj": arch.get("qkv_bias"), "v_proj": arch.get("qkv_bias"),
        "query_key_value": arch.get("qkv_bias"), "o_proj": arch.get("o_bias"), "dense": arch.get("o_bias"),
        "gate_proj": arch.get("mlp_bias"), "up_proj": arch.get("mlp_bias"), "down_proj": arch.get("mlp_bias"),
        "dense_h_to_4h": arch.get("mlp_bias"), "dense_4h_to_h": arch.get("mlp_bias"),
    }
    chosen = shapes if bias == "all" else [t for t in targets if t in shapes]
    linear_biases = sum(shapes[name][1] for name in chosen if has_bias.get(name))
    if bias == "all" and arch["norm"] == "layernorm":
        linear_biases += arch["norms_per_layer"] * arch["hidden_size"]
    return linear_biases
