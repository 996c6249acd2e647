"""`tunespec status` / `tunespec cancel`: act on the job(s) or run a plan launched."""
from .console import out
from .plan_source import load_target, refuse_run_dir_off_local


def add_parser(subparsers) -> None:
    for verb, help_text in (("status", "show the state of a plan's job(s) or run"),
                            ("cancel", "stop a plan's job(s) or run")):
        parser = subparsers.add_parser(verb, help=help_text)
        parser.add_argument("target", nargs="?",
                            help="spec file, plan folder or run folder (default: the embedded spec)")
        parser.add_argument("--run-dir", help="local backend: folder of the run (default from the plan)")
        parser.set_defaults(run=run, verb=verb)


def run(args) -> int:
    target = load_target(args.target, args.run_dir)
    refuse_run_dir_off_local(target, args.verb)
    plan = target.plan
    backend = plan["backend"]["type"]
    cancel = args.verb == "cancel"
    if backend == "sagemaker":
        from ..runtime.sagemaker import cancel_sagemaker, status_sagemaker

        return (cancel_sagemaker if cancel else status_sagemaker)(plan, out)
    if backend == "hyperpod-slurm":
        from ..runtime.slurm import cancel_slurm, status_slurm

        return (cancel_slurm if cancel else status_slurm)(plan, out)
    from ..runtime.local import cancel_local, status_local

    return (cancel_local if cancel else status_local)(plan, out, target.run_dir)
