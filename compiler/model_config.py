"""A local model's config.json, read and checked before its shape is computed from it.

The file is named by the spec (`model.architecture`, or the folder in `model.source`), so it may be
anything: a list, Latin-1 text, a folder, /dev/zero, zero heads, floats for sizes. Each is refused
with a SpecError at the field that named the file, never a traceback.
"""
import json
from pathlib import Path

from .errors import SpecError, SpecPath
from .files import read_text

MAX_CONFIG_BYTES = 1 << 20
# Sizes of real models stay far below this (vocabularies of 256k, hidden sizes of 16k, 128 experts).
MAX_SIZE = 1 << 24
# (alternative names of one setting, required); the first present name is the one read.
SHAPE_FIELDS = [
    (("num_hidden_layers", "n_layer"), True),
    (("hidden_size", "n_embd"), True),
    (("num_attention_heads", "n_head"), True),
    (("vocab_size",), True),
    (("intermediate_size",), "not falcon"),
    (("num_key_value_heads",), False),
    (("num_kv_heads", "n_head_kv"), False),
    (("head_dim",), False),
    (("ffn_hidden_size",), False),
    (("max_position_embeddings",), False),
    (("num_local_experts",), False),
    (("num_experts_per_tok",), False),
]


def read_config(path: Path, field_path: SpecPath) -> dict:
    """The JSON object in `path` (a regular UTF-8 file of at most 1 MiB)."""
    shown = f"`{path}`"
    text = read_text(path, field_path, shown, MAX_CONFIG_BYTES)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{shown} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                        field_path) from None
    except RecursionError:
        raise SpecError(f"{shown} nests too deeply to be a model config", field_path) from None
    if not isinstance(config, dict):
        raise SpecError(f"{shown} holds a JSON {type(config).__name__}, not an object of settings", field_path,
                        hint="point to a Hugging Face config.json")
    return config


def check_shape(config: dict, field_path: SpecPath) -> None:
    """Every size the shape is computed from is a positive whole number, and the heads divide evenly."""
    for names, required in SHAPE_FIELDS:
        present = [name for name in names if config.get(name) is not None]
        if not present:
            if required is True or (required == "not falcon" and config.get("model_type") != "falcon"):
                raise SpecError(f"the model's config.json has no `{names[0]}`", field_path,
                                hint="a Hugging Face config.json of a supported model type has it")
            continue
        value = config[present[0]]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SIZE:
            raise SpecError(f"`{present[0]}` in the model's config.json must be a whole number from 1 to {MAX_SIZE}; "
                            f"got {json.dumps(value)[:40]}", field_path)
    heads = config.get("num_attention_heads") or config.get("n_head")
    hidden = config.get("hidden_size") or config.get("n_embd")
    if not config.get("head_dim") and hidden % heads:
        raise SpecError(f"the model's config.json has {heads} attention heads, which do not divide its hidden size "
                        f"{hidden}", field_path, hint="set `head_dim` in the config, or fix the head count")
    kv_heads = config.get("num_key_value_heads") or config.get("num_kv_heads") or config.get("n_head_kv")
    if kv_heads and heads % kv_heads:
        raise SpecError(f"the model's config.json has {kv_heads} key/value heads, which do not divide its "
                        f"{heads} attention heads", field_path)
    experts, per_token = config.get("num_local_experts"), config.get("num_experts_per_tok")
    if per_token and experts and per_token > experts:
        raise SpecError(f"the model's config.json routes each token to {per_token} of only {experts} experts",
                        field_path)
