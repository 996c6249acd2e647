"""`tunespec eval RUN_DIR`: exact match and slot F1 of generated meaning representations, base vs fine-tuned."""
from pathlib import Path

from rich.table import Table

from .console import err, out
from .run_progress import reporting


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="score base and fine-tuned generations on the eval data")
    parser.add_argument("run_dir", type=Path, help="folder of a finished local run")
    parser.add_argument("--data", help="data file to score (default: the plan's eval source)")
    parser.add_argument("--limit", type=int, help="score only the first N rows")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..runtime.local import finished_run_plan

    finished_run_plan(args.run_dir)  # before the models load: a run that is not done says so now
    from ..runtime.evaluate import evaluate, write_evaluation

    with reporting(err) as report:
        result = evaluate(args.run_dir, data_path=args.data, limit=args.limit, report=report)
    table = Table(title=f"evaluation on {result['data']}", title_justify="left")
    metrics = [key for key, value in result["base"].items() if isinstance(value, float)]
    table.add_column("model")
    for key in metrics:
        table.add_column(key)
    for name in ("base", "tuned"):
        table.add_row(name, *(f"{result[name][key]:.3f}" for key in metrics))
    out.print(table)
    out.print(f"Wrote {write_evaluation(args.run_dir, result)}")
    return 0
