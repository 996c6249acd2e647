"""The model and hardware catalogs: lookups by name, exact parameter counts, LoRA target modules.

The data lives in `catalog/models.yaml` and `catalog/hardware.yaml` (package data). Everything here
is arithmetic over those shapes; nothing downloads or imports a deep-learning library.
"""
from __future__ import annotations

import difflib
import functools
import pathlib
from importlib import resources
from typing import Iterable, Optional

import yaml

from . import model_config
from .errors import SpecError, SpecPath

ALL_LINEAR = "all-linear"
_LM_HEAD = "lm_head"
# Names a spec may give to an MoE model's fused experts in target_modules, and the parameters they mean.
_EXPERT_ALIASES = {"experts": ("experts.gate_up_proj", "experts.down_proj"),
                   "experts.gate_up_proj": ("experts.gate_up_proj",), "gate_up_proj": ("experts.gate_up_proj",),
                   "experts.down_proj": ("experts.down_proj",), "down_proj": ("experts.down_proj",)}
_TRANSFORMERS4_EXPERT_NAMES = ("w1", "w2", "w3")
_ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "query_key_value", "dense")
# model_type values whose layer layout count_parameters knows exactly.
_SUPPORTED_MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "falcon")


@functools.lru_cache(maxsize=None)
def load_models() -> dict:
    return _load_yaml("models.yaml")


@functools.lru_cache(maxsize=None)
def load_hardware() -> dict:
    return _load_yaml("hardware.yaml")


def _load_yaml(name: str) -> dict:
    text = resources.files("tunespec.compiler").joinpath("catalog", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _did_you_mean(name: str, choices: Iterable[str]) -> Optional[str]:
    choices = list(choices)
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)
    if not close:
        return None
    return "did you mean " + " or ".join(f"`{by_lower[c]}`" for c in close) + "?"


# --------------------------------------------------------------------------------------------------
# Architectures


def resolve_architecture(source: str, architecture: Optional[str], base_dir: pathlib.Path) -> dict:
    """The normalised shape of the model: by catalog name, hub id, or a local config.json.

    `architecture` wins over `source`; it is a catalog name, a hub id, or a path to a config.json.
    Without it, `source` is looked up as a hub id, or read as a local folder holding config.json.
    """
    if architecture:
        if architecture.endswith(".json") or architecture.startswith((".", "/")):
            return _from_config_file(base_dir / architecture, ("model", "architecture"))
        entry = _catalog_entry(architecture)
        if entry is not None:
            return entry
        raise SpecError(
            f"unknown architecture `{architecture}`",
            path=("model", "architecture"),
            hint=_did_you_mean(architecture, _all_model_names()) or _catalog_hint(),
        )

    local = base_dir / source
    if source.startswith((".", "/")) or local.is_dir():
        if local.is_dir():
            return _from_config_file(local / "config.json", ("model", "source"))
        raise SpecError(
            f"cannot infer the architecture of `{source}`: it is not a folder with a config.json",
            path=("model", "architecture"),
            hint="set `model.architecture` to a catalog name (e.g. `llama-3-8b`) or the path of a config.json",
        )
    hub_id = source[len("hub:"):] if source.startswith("hub:") else source
    if "://" not in hub_id and not hub_id.endswith(".gguf"):
        entry = _catalog_entry(hub_id)
        if entry is not None:
            return entry
        raise SpecError(
            f"`{source}` is not in the model catalog, so its shape is unknown",
            path=("model", "source"),
            hint=" ".join(filter(None, (_did_you_mean(hub_id, _all_model_names()),
                                        "Or set `model.architecture` to a catalog name or the path of the "
                                        "model's config.json."))),
        )
    raise SpecError(
        f"cannot infer the architecture of `{source}` without downloading it",
        path=("model", "architecture"),
        hint="set `model.architecture` to a catalog name (e.g. `smollm2-135m`) or the path of a config.json",
    )


def _all_model_names() -> list:
    names = []
    for name, entry in load_models().items():
        names.append(name)
        names.extend(entry["hub_ids"])
    return names


def _catalog_hint() -> str:
    return "known architectures: " + ", ".join(sorted(load_models()))


def _catalog_entry(name: str) -> Optional[dict]:
    """Catalog entry by its name or one of its hub ids, case-insensitively."""
    wanted = name.lower()
    for entry_name, entry in load_models().items():
        if entry_name == wanted or wanted in (h.lower() for h in entry["hub_ids"]):
            arch = {k: v for k, v in entry.items() if k != "hub_ids"}
            arch["name"] = entry_name
            arch.setdefault("num_local_experts", None)
            arch.setdefault("num_experts_per_tok", None)
            arch.setdefault("expert_parameters", [])
            arch.setdefault("router", None)
            return arch
    return None


def _from_config_file(path: pathlib.Path, spec_path: SpecPath) -> dict:
    if not path.exists():
        raise SpecError(f"no config.json at `{path}`", path=spec_path)
    arch = normalise_config(model_config.read_config(path, spec_path), spec_path)
    arch["source"] = str(path)
    return arch


def normalise_config(config: dict, spec_path: SpecPath = ("model", "architecture")) -> dict:
    """Catalog-shaped architecture from a Hugging Face config.json dict."""
    model_type = config.get("model_type")
    if model_type not in _SUPPORTED_MODEL_TYPES:
        raise SpecError(
            f"model_type `{model_type}` is not one tunespec can plan for",
            path=spec_path,
            hint="supported model types: " + ", ".join(_SUPPORTED_MODEL_TYPES),
        )
    model_config.check_shape(config, spec_path)
    first = _first_present(config)
    hidden = first("hidden_size", "n_embd")
    heads = first("num_attention_heads", "n_head")
    arch = {
        "name": config.get("_name_or_path") or f"local-{model_type}",
        "model_type": model_type,
        "num_hidden_layers": first("num_hidden_layers", "n_layer"),
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "head_dim": config.get("head_dim") or hidden // heads,
        "vocab_size": config["vocab_size"],
        "max_position_embeddings": config.get("max_position_embeddings", 2048),
        "num_local_experts": config.get("num_local_experts"),
        "num_experts_per_tok": config.get("num_experts_per_tok"),
        "expert_parameters": [],
        "router": None,
    }
    if model_type == "falcon":
        new_arch = config.get("new_decoder_architecture", False)
        if new_arch:
            kv_heads = first("num_kv_heads", "n_head_kv")
        elif config.get("multi_query", True):
            kv_heads = 1
        else:
            kv_heads = heads
        bias = config.get("bias", False)
        arch.update(
            num_key_value_heads=kv_heads,
            intermediate_size=config.get("ffn_hidden_size") or 4 * hidden,
            tie_word_embeddings=config.get("tie_word_embeddings", True),
            new_decoder_architecture=new_arch,
            multi_query=config.get("multi_query", True),
            parallel_attn=config.get("parallel_attn", True),
            bias=bias,
            norm="layernorm",
            # The new architecture has ln_attn and ln_mlp; the old one one input_layernorm (plus
            # post_attention_layernorm when attention and MLP run in sequence).
            norms_per_layer=2 if (new_arch and config.get("num_ln_in_parallel_attn", 2) == 2)
            or not config.get("parallel_attn", True) else 1,
            mlp="plain",
            qkv_bias=bias,
            o_bias=bias,
            mlp_bias=bias,
            linear_modules=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
        )
        return arch
    attention_bias = config.get("attention_bias", False)
    arch.update(
        num_key_value_heads=config.get("num_key_value_heads") or heads,
        intermediate_size=config["intermediate_size"],
        tie_word_embeddings=config.get("tie_word_embeddings", False),
        norm="rmsnorm",
        norms_per_layer=2,
        mlp="gated",
        # Qwen2 puts a bias on q, k and v (and nowhere else) without saying so in its config.
        qkv_bias=True if model_type == "qwen2" else attention_bias,
        o_bias=False if model_type == "qwen2" else attention_bias,
        mlp_bias=config.get("mlp_bias", False),
    )
    if model_type == "mixtral":
        arch.update(
            linear_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            expert_parameters=["experts.gate_up_proj", "experts.down_proj"],
            router="gate",
        )
    else:
        arch["linear_modules"] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return arch


def _first_present(config: dict):
    def first(*keys):
        for key in keys:
            if config.get(key) is not None:
                return config[key]
        raise KeyError(keys[0])

    return first


# --------------------------------------------------------------------------------------------------
# Parameter counts


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


def _expert_alias(arch: dict, name: str) -> Optional[tuple]:
    """The fused expert parameters `name` means on this architecture, or None."""
    if not arch.get("expert_parameters"):
        return None
    key = name[name.index("experts"):] if "experts" in name else name.rsplit(".", 1)[-1]
    return _EXPERT_ALIASES.get(key)


def resolve_target_modules(arch: dict, target_modules, path: SpecPath = ("method", "lora", "target_modules")) -> list:
    """Linear module names LoRA adapts. `all-linear` is every linear layer of the decoder layers (PEFT
    leaves out the output layer); named modules must exist in the architecture (`lm_head` may be named).
    Names of an MoE model's fused experts are left to `resolve_target_parameters`."""
    known = list(arch["linear_modules"])
    if target_modules == ALL_LINEAR:
        return known
    resolved = []
    for name in target_modules:
        short = name.rsplit(".", 1)[-1]
        if short in known or short == _LM_HEAD:
            resolved.append(short)
            continue
        if _expert_alias(arch, name):
            continue
        hint = _did_you_mean(short, known + [_LM_HEAD] + (["experts"] if arch.get("expert_parameters") else []))
        if arch.get("expert_parameters") and short in _TRANSFORMERS4_EXPERT_NAMES + ("gate_proj", "up_proj"):
            hint = ("in transformers 5 the MoE experts are fused parameters (w1 and w3 in experts.gate_up_proj, "
                    "w2 in experts.down_proj): name `experts` (or `experts.gate_up_proj` / `experts.down_proj`)")
        elif arch.get("expert_parameters") and short == arch.get("router"):
            hint = "the MoE router is not adapted (a LoRA on it destabilises routing); name `experts` for the experts"
        raise SpecError(
            f"`{name}` is not a linear module of {arch['name']} (it has {', '.join(known)}"
            + (", and the fused `experts`" if arch.get("expert_parameters") else "") + ")",
            path=path,
            hint=hint,
        )
    return list(dict.fromkeys(resolved))


def resolve_target_parameters(arch: dict, lora: dict, method_type: str) -> list:
    """The fused MoE expert parameters LoRA adapts through PEFT's `target_parameters`.

    `include_experts` unset follows `target_modules`: `all-linear` means attention and experts (the
    router excluded), as it did when Mixtral's experts were linear modules; a list adapts the
    experts it names. DoRA cannot adapt fused parameters: unset, it leaves them out; set, it is refused.
    """
    expert_parameters = list(arch.get("expert_parameters") or [])
    include = lora.get("include_experts")
    target_modules = lora.get("target_modules", ALL_LINEAR)
    if target_modules == ALL_LINEAR:
        named = list(expert_parameters)
    else:
        named = [p for name in target_modules for p in (_expert_alias(arch, name) or ())]
    path = ("method", "lora", "include_experts")
    if include and not expert_parameters:
        raise SpecError(f"{arch['name']} has no MoE experts to adapt", path, hint="remove `include_experts`")
    if include is False and named and target_modules != ALL_LINEAR:
        raise SpecError("`include_experts: false` but target_modules names the experts", path,
                        hint="remove `include_experts`, or the expert names from target_modules")
    dora = method_type == "dora" or lora.get("use_dora", False)
    if include and dora:
        raise SpecError("PEFT's DoRA cannot adapt fused MoE expert parameters", path,
                        hint="use `type: lora` or set `include_experts: false`")
    if include is False or dora:
        return []
    chosen = expert_parameters if include else named
    return [p for p in expert_parameters if p in chosen]


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
    shapes[_LM_HEAD] = (arch["hidden_size"], arch["vocab_size"])
    targets = resolve_target_modules(arch, lora.get("target_modules", ALL_LINEAR))
    layers = arch["num_hidden_layers"]

    groups = {"attention": 0, "mlp": 0, "experts": 0, "lm_head": 0, "biases": 0}
    for name in targets:
        fan_in, fan_out = shapes[name]
        adapter = r * (fan_in + fan_out) + (fan_out if use_dora else 0)  # DoRA: one magnitude per output
        if name == _LM_HEAD:
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


# --------------------------------------------------------------------------------------------------
# Hardware


def instance_names() -> list:
    """Every name lookup_instance accepts: SageMaker `ml.` names, plain EC2 names, local accelerators."""
    hardware = load_hardware()
    names = list(hardware["instances"])
    names += [name[len("ml."):] for name in hardware["instances"]]
    names += list(hardware["local"])
    return names


def lookup_instance(name: str, path: SpecPath = ("backend", "instance_type")) -> dict:
    """Hardware facts of an instance type (or local accelerator), with the accelerator's facts merged in.

    A plain EC2 name (`p4d.24xlarge`) is the same machine as its `ml.` name, priced at the EC2 rate.
    """
    hardware = load_hardware()
    instances = hardware["instances"]
    if name in hardware["local"]:
        entry = dict({"interconnect": None, **hardware["local"][name]}, accelerators_per_instance=1, vcpus=None,
                     host_memory_gib=None, on_demand_usd_per_hour=None, market="local")
    elif name in instances:
        entry = dict(instances[name], market="sagemaker")
        if entry["on_demand_usd_per_hour"] is None and entry.get("ec2_on_demand_usd_per_hour"):
            # No SageMaker list price on record: the same machine's EC2 rate, labelled as such, is a
            # better cost floor than none (SageMaker's rate is higher, by about 15% where both are known).
            entry.update(on_demand_usd_per_hour=entry["ec2_on_demand_usd_per_hour"], market="ec2-rate")
    elif f"ml.{name}" in instances:
        entry = dict(instances[f"ml.{name}"], market="ec2")
        entry["on_demand_usd_per_hour"] = entry["ec2_on_demand_usd_per_hour"]
    else:
        raise SpecError(
            f"unknown instance type `{name}`",
            path=path,
            hint=_did_you_mean(name, instance_names()) or "see compiler/catalog/hardware.yaml for the known types",
        )
    accelerator = hardware["accelerators"][entry["accelerator"]]
    entry.pop("ec2_on_demand_usd_per_hour", None)
    entry.update(
        name=name,
        accelerator_name=accelerator["name"],
        kind=accelerator["kind"],
        memory_gib=accelerator["memory_gib"],
        peak_bf16_tflops=accelerator["peak_bf16_tflops"],
        peak_fp32_tflops=accelerator["peak_fp32_tflops"],
        supports_bf16=accelerator["supports_bf16"],
        supports_fp8=accelerator.get("supports_fp8", False),
        memory_bandwidth_gbps=accelerator["memory_bandwidth_gbps"],
        neuron_cores=accelerator.get("neuron_cores"),  # per chip
        price_source=hardware["price_source"].get("ec2" if entry["market"] == "ec2-rate" else entry["market"]),
        price_date=hardware["price_date"] if entry["market"] != "local" else None,
    )
    return entry
