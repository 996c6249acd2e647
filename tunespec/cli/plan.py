"""`tunespec plan SPEC [-o DIR] [--format text|json|markdown]`: compile a spec into a plan folder."""
import sys
from pathlib import Path

from ..compiler.plan import build_plan, canonical_json
from ..compiler.render import write_plan_folder
from ..compiler.summary import summary_markdown, summary_sections
from ..compiler.tune import tuned_plan
from .console import out, print_sections
from .loading import load_spec_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("plan", help="compile a spec into a reviewable plan folder")
    parser.add_argument("spec")
    parser.add_argument("-o", "--output", help="plan folder (default: plans/NAME)")
    parser.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    parser.add_argument("--tune", action="store_true",
                        help="apply the estimator's fastest suggestion that fits (settings only, same hardware)")
    parser.set_defaults(run=run)


def run(args) -> int:
    loaded = load_spec_argument(args.spec)
    plan = tuned_plan(loaded) if args.tune else build_plan(loaded)
    out_dir = Path(args.output or f"plans/{plan['spec']['name']}")
    files = write_plan_folder(plan, out_dir)
    if args.format == "json":
        sys.stdout.write(canonical_json(plan))
    elif args.format == "markdown":
        sys.stdout.write(summary_markdown(plan))
    else:
        print_sections(f"Plan {plan['spec']['name']}  (spec {plan['spec']['hash'][:12]})", summary_sections(plan))
        out.print(f"Wrote {len(files)} files to {out_dir}/: " + ", ".join(files))
    return 0
