"""`tunespec plan SPEC [-o DIR] [--format text|json|markdown]`: compile a spec into a plan folder."""
import sys
from pathlib import Path

from ..compiler.errors import SpecError
from ..compiler.plan import build_plan
from ..schema.contract import canonical_json
from ..compiler.render import write_plan_folder
from ..compiler.summary import summary_markdown, summary_sections
from ..compiler.tune import tuned_plan
from ..schema import exit_codes
from .console import out, print_sections
from .lock import check_lock, copy_entry, write_lock
from .loading import load_spec_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("plan", help="compile a spec into a reviewable plan folder")
    parser.add_argument("spec")
    parser.add_argument("-o", "--output", help="plan folder (default: plans/NAME)")
    parser.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    parser.add_argument("--tune", action="store_true",
                        help="apply the estimator's fastest suggestion that fits (settings only, same hardware)")
    parser.add_argument("--write-lock", action="store_true",
                        help="record the plan's inputs (model revision, data hashes, image, versions) in tunespec.lock")
    parser.add_argument("--check-lock", action="store_true",
                        help="exit 4 when tunespec.lock beside the spec is missing or drifted (no network used)")
    parser.set_defaults(run=run)


def run(args) -> int:
    loaded = load_spec_argument(args.spec)
    plan = tuned_plan(loaded) if args.tune else build_plan(loaded)
    out_dir = Path(args.output or f"plans/{plan['spec']['name']}")
    files = write_plan_folder(plan, out_dir)
    spec_file = Path(args.spec)
    if (args.write_lock or args.check_lock) and not spec_file.is_file():
        raise SpecError("a lock is kept beside a spec file; this spec is not a file here", (), file=args.spec,
                        hint="lock the spec in a checkout of that revision")
    if args.write_lock:
        write_lock(plan, spec_file)
    if spec_file.is_file():
        copy_entry(spec_file, out_dir)
    if args.format == "json":
        sys.stdout.write(canonical_json(plan))
    elif args.format == "markdown":
        sys.stdout.write(summary_markdown(plan))
    else:
        print_sections(f"Plan {plan['spec']['name']}  (spec {plan['spec']['hash'][:12]})", summary_sections(plan))
        out.print(f"Wrote {len(files)} files to {out_dir}/: " + ", ".join(files))
    return check_lock(plan, spec_file, required=True) if args.check_lock else exit_codes.OK
