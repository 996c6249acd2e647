"""`tunespec validate SPEC`: exit 0 when the spec compiles into a plan, 2 with one clear error otherwise."""
from ..compiler.plan import build_plan
from .loading import load_spec_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("validate", help="check a spec (schema and cross-field rules)")
    parser.add_argument("spec")
    parser.set_defaults(run=run)


def run(args) -> int:
    plan = build_plan(load_spec_argument(args.spec))
    for warning in plan["warnings"]:
        print(f"{args.spec}: warning: {warning['code']}: {warning['message']}")
    print(f"{args.spec}: ok")
    return 0
