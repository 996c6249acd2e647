"""`tunespec apply [SPEC | PLAN_DIR | RUN_DIR]`: run a plan on its backend (the embedded default with no argument)."""
from ..schema import exit_codes
from .console import out
from .lock import refuse_drift
from .plan_source import (DEFAULT_SPEC, CommandLineError, load_target, refuse_run_dir_off_local,
                          rendered_plan_folder)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("apply", help="run a spec, a saved plan folder or a local run folder on its backend")
    parser.add_argument("target", nargs="?",
                        help=f"spec file, plan folder or run folder (default: the embedded {DEFAULT_SPEC})")
    parser.add_argument("--run-dir", help="local backend: folder of the run (default from the plan)")
    parser.add_argument("--replace", action="store_true",
                        help="SageMaker: stop the running job of another plan of this spec, then launch "
                             f"(without it, apply refuses with exit code {exit_codes.JOB_CONFLICT})")
    parser.add_argument("--retry", action="store_true",
                        help="SageMaker: launch the plan's failed or stopped job again under a new name "
                             "(resuming from the plan's checkpoints)")
    parser.set_defaults(run=run)


def run(args) -> int:
    target = load_target(args.target, args.run_dir)
    refuse_run_dir_off_local(target, "apply")
    plan = target.plan
    refuse_drift(plan, args.target)
    backend = plan["backend"]["type"]
    if (args.replace or args.retry) and backend != "sagemaker":
        raise CommandLineError(f"--replace and --retry act on SageMaker jobs; this plan runs on {backend}")
    out.print(f"Applying plan [bold]{plan['spec']['name']}[/] (spec {plan['spec']['hash'][:12]}) on {backend}")
    if backend == "local":
        from ..runtime.local import apply_local

        return apply_local(plan, target.run_dir or plan["backend"]["run_dir"], out)
    if backend == "sagemaker":
        from ..runtime.sagemaker import apply_sagemaker

        with rendered_plan_folder(target) as plan_dir:
            return apply_sagemaker(plan, plan_dir, out, replace=args.replace, retry=args.retry)
    from ..runtime.slurm import apply_slurm

    with rendered_plan_folder(target) as plan_dir:
        return apply_slurm(plan, plan_dir, out)
