"""Build the GPU benchmarks' model folder skeleton on this machine (no weights): a byte-level BPE
tokenizer trained on the ViGGO text (the device has no model hub) and the Llama-3-8B config.

    python3 benchmarks/gpu/make_tokenizer.py .gpu/viggo .gpu/llama3-8b-skeleton

The device run (benchmarks/gpu/device_setup.sh) adds random bf16 weights of that config.
"""
import csv
import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, PreTrainedTokenizerFast

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"]


def texts(data: Path):
    for name in ("train.csv", "valid.csv"):
        with (data / name).open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                yield row["ref"]
                yield row["mr"]


def main(data: Path, target: Path, vocab: int = 4096) -> None:
    target.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts(data), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS[0], eos_token=SPECIALS[1],
                                   pad_token=SPECIALS[2])
    fast.save_pretrained(target)
    # Llama-3-8B's shape (meta-llama/Meta-Llama-3-8B config.json); the embedding keeps 128256 rows.
    config = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
                         tie_word_embeddings=False, bos_token_id=fast.bos_token_id,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, dtype="bfloat16")
    config.save_pretrained(target)
    print(json.dumps({"vocab": fast.vocab_size, "eos": fast.eos_token_id, "pad": fast.pad_token_id}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *(int(a) for a in sys.argv[3:]))
