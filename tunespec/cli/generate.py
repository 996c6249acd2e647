"""`tunespec generate RUN_DIR --prompt ...`: the base model's and the fine-tuned model's answers side by side."""
from pathlib import Path

from rich.table import Table

from .console import out


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="compare base and fine-tuned answers for prompts")
    parser.add_argument("run_dir", type=Path, help="folder of a finished local run")
    parser.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..runtime.generate import generate

    table = Table(show_lines=True)
    for column in ("prompt", "base model", "fine-tuned"):
        table.add_column(column, overflow="fold")
    for prompt, base, tuned in generate(args.run_dir, args.prompt, max_new_tokens=args.max_new_tokens):
        table.add_row(prompt, base, tuned)
    out.print(table)
    return 0
