"""`tunespec status` / `tunespec cancel`: act on the job(s) or run a plan launched."""
from .console import out
from .plan_source import load_plan_argument


def add_parser(subparsers) -> None:
    for verb, help_text in (("status", "show the state of a plan's job(s) or run"),
                            ("cancel", "stop a plan's job(s)")):
        parser = subparsers.add_parser(verb, help=help_text)
        parser.add_argument("target", nargs="?", help="spec file or plan folder (default: the embedded spec)")
        parser.set_defaults(run=run, verb=verb)


def run(args) -> int:
    plan, _ = load_plan_argument(args.target)
    backend = plan["backend"]["type"]
    cancel = args.verb == "cancel"
    if backend == "sagemaker":
        from ..runtime.sagemaker import cancel_sagemaker, status_sagemaker

        return (cancel_sagemaker if cancel else status_sagemaker)(plan, out)
    if backend == "hyperpod-slurm":
        from ..runtime.slurm import cancel_slurm, status_slurm

        return (cancel_slurm if cancel else status_slurm)(plan, out)
    from ..runtime.local import cancel_local, status_local

    return (cancel_local if cancel else status_local)(plan, out)
