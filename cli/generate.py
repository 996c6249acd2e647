"""`tunespec generate RUN_DIR --prompt ...`: the base model's and the fine-tuned model's answers side by side."""
from pathlib import Path

from rich.table import Table

from .console import err, out
from .run_progress import reporting


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="compare base and fine-tuned answers for prompts")
    parser.add_argument("run_dir", type=Path, help="folder of a finished local run")
    parser.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..runtime.local import finished_run_plan

    plan = finished_run_plan(args.run_dir)  # before the models load: a run that is not done says so now
    from ..runtime.generate import generate

    with reporting(err) as report:
        answers = generate(args.run_dir, args.prompt, max_new_tokens=args.max_new_tokens, plan=plan, report=report)
    table = Table(show_lines=True)
    for column in ("prompt", "base model", "fine-tuned"):
        table.add_column(column, overflow="fold")
    for prompt, base, tuned in answers:
        table.add_row(prompt, base, tuned)
    out.print(table)
    return 0
