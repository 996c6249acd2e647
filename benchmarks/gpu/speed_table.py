"""Print the speed benchmark (issue 4 "Speed"): tunespec's compiled LoRA run against the seed recipe's
naive setup, same Llama-3-8B-shaped model, ViGGO data, sequence length 2048, one H100.

    python3 benchmarks/gpu/speed_table.py [benchmarks/gpu/results-h100-2026-11-24.json]

Tokens are real (non-padding) tokens: the trainer counts them with include_num_input_tokens_seen=
"non_padding" (attention-mask sum; padding-free packed batches have no padding at all).
"""
import json
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent / "results-h100-2026-11-24.json"
ROWS = [("naive-padded", "naive: rows padded to 2048, checkpointing, micro batch 4"),
        ("naive-dynamic", "naive, kinder: rows padded to the longest in the batch"),
        ("lora", "tunespec compiled: packing, Liger, no checkpointing, micro batch 2 x 2")]


def table(state: dict) -> str:
    cases = state["cases"]
    compiled = cases["lora"]["measured"]
    lines = ["| run | real tokens/s, steady (steps 9-24) | real tokens/s, `tunespec apply` (all 24 steps) "
             "| real tokens per step | peak allocated GiB | compiled is faster by (steady / apply) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, label in ROWS:
        m = cases[name]["measured"]
        ratio = (f"{compiled['steady_tokens_per_s'] / m['steady_tokens_per_s']:.2f}x / "
                 f"{compiled['tokens_per_s'] / m['tokens_per_s']:.2f}x") if name != "lora" else "—"
        lines.append(f"| {label} | {m['steady_tokens_per_s']:,.0f} | {m['tokens_per_s']:,.0f} | "
                     f"{m['train_tokens'] / m['global_step']:,.0f} | {m['peak_memory_gib']} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    print(table(json.loads(path.read_text())))
