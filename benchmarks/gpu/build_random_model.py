"""A model folder of a catalog architecture with random bf16 weights, for measuring real shapes on the
GPU machine (no model hub there). Built on the GPU, saved with the skeleton's ViGGO tokenizer:

    python3 benchmarks/gpu/build_random_model.py mixtral-8x7b /tmp/tunespec-gpu/mixtral-8x7b [--layers N]

Shapes, memory and speed are the real model's; loss values are not. Skips the work when TARGET is
already complete (a warm machine keeps /tmp between calls).
"""
import argparse
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.initialization import no_init_weights

from tunespec.compiler import architecture

SKELETON = Path(__file__).resolve().parents[2] / ".gpu" / "llama3-8b-skeleton"
# The catalog's shape fields that are also Hugging Face config fields of the same name.
CONFIG_FIELDS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
                 "num_local_experts", "num_experts_per_tok", "tie_word_embeddings")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("architecture")
    parser.add_argument("target", type=Path)
    parser.add_argument("--layers", type=int, help="build fewer decoder layers than the architecture has")
    args = parser.parse_args()
    done = args.target / ".complete"
    if done.is_file():
        print(f"{args.target}: already built")
        return 0
    arch = architecture.resolve_architecture(args.architecture, args.architecture, Path("."))
    fields = {name: arch[name] for name in CONFIG_FIELDS if arch.get(name) is not None}
    if args.layers:
        fields["num_hidden_layers"] = args.layers
    tokenizer = AutoTokenizer.from_pretrained(SKELETON)
    config = AutoConfig.for_model(arch["model_type"], **fields, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    started = time.time()
    torch.manual_seed(0)
    # transformers' own initialisation builds fp32 temporaries (a 32-layer Mixtral then needs more than
    # an H200): allocate uninitialised bf16 weights and fill them in place.
    torch.set_default_dtype(torch.bfloat16)  # from_config's dtype alone still allocates some weights in fp32
    with torch.device("cuda"), no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02)
    # Saving converts fused MoE experts back to the checkpoint layout with copies: from host memory,
    # where they fit beside the model.
    model.to("cpu")
    args.target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.target, max_shard_size="5GB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SKELETON / name, args.target / name)
    params = sum(p.numel() for p in model.parameters())
    done.touch()
    print(f"built {args.target}: {params / 1e9:.2f} B parameters in {config.num_hidden_layers} layers, "
          f"random bf16 weights, {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
