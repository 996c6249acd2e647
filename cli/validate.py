"""`tunespec validate SPEC...`: exit 0 when every spec compiles into a plan, 2 with one clear error per bad spec."""
from ..compiler.errors import SpecError
from ..compiler.plan import build_plan
from .console import print_spec_error
from .loading import load_spec_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("validate", help="check a spec (schema and cross-field rules)")
    parser.add_argument("specs", nargs="+", metavar="SPEC")
    parser.set_defaults(run=run)


def run(args) -> int:
    """Every spec is checked (a pre-commit hook passes all staged ones); 2 when any is refused."""
    refused = False
    for spec in args.specs:
        try:
            validate(spec)
        except SpecError as error:
            print_spec_error(error)
            refused = True
    return 2 if refused else 0


def validate(spec: str) -> None:
    plan = build_plan(load_spec_argument(spec))
    for warning in plan["warnings"]:
        # A warning about a field reads like an error: file:line:column and the field's name.
        where, subject = warning.get("location", spec), warning.get("field", warning["code"])
        print(f"{where}: warning: {subject}: {warning['message']}")
    print(f"{spec}: ok")
