"""`tunespec status` / `tunespec cancel`: act on the job(s) a plan launched."""
from pathlib import Path

from .console import out
from .plan_source import load_plan_argument


def add_parser(subparsers) -> None:
    for verb, help_text in (("status", "show the state of a plan's job(s)"), ("cancel", "stop a plan's job(s)")):
        parser = subparsers.add_parser(verb, help=help_text)
        parser.add_argument("target", nargs="?", help="spec file or plan folder")
        parser.set_defaults(run=run, verb=verb)


def run(args) -> int:
    plan, _ = load_plan_argument(args.target)
    backend = plan["backend"]["type"]
    if backend == "sagemaker":
        from ..runtime import sagemaker as module
    elif backend == "hyperpod-slurm":
        from ..runtime import slurm as module
    else:
        from ..runtime import local as module
    action = getattr(module, f"{args.verb}_{module.BACKEND_NAME}")
    return action(plan, out)
