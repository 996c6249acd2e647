"""A model's shape (catalog-shaped architecture) from a catalog name, a hub id or a local config.json."""
import pathlib
from typing import Optional

from . import model_config
from .catalog import did_you_mean, load_models
from .errors import SpecError, SpecPath

# model_type values whose layer layout count_parameters knows exactly.
_SUPPORTED_MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "falcon")


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
            hint=did_you_mean(architecture, _all_model_names()) or _catalog_hint(),
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
            hint=" ".join(filter(None, (did_you_mean(hub_id, _all_model_names()),
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
