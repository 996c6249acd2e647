"""What `apply`, `status` and `cancel` act on: a spec (compiled now), a saved plan folder, a run folder,
or the embedded default; and the folder of a local run (`--run-dir`, the run folder given, or the plan's)."""
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator, Optional

from ..compiler.errors import SpecError
from ..compiler.plan import build_plan
from ..compiler.render import write_plan_folder
from ..runtime.run_layout import is_run_dir
from ..schema.contract import PLAN_FILE
from ..schema.plan import PlanFormatError, read_plan
from .loading import load_spec_argument

DEFAULT_SPEC = "smollm2-viggo-lora.yaml"


def default_spec_path() -> Path:
    return Path(str(resources.files("tunespec.cli") / "defaults" / DEFAULT_SPEC))


class CommandLineError(Exception):
    """Arguments that do not go together (exit code 2, like argparse's own errors)."""


@dataclass
class Target:
    plan: dict
    plan_dir: Optional[Path]   # a folder holding the plan's rendered files, when one was given
    run_dir: Optional[Path]    # the run folder the command line named (used as given), if any


def load_target(target: Optional[str], run_dir: Optional[str] = None) -> Target:
    """The plan to act on. A run folder given as the target is the run: it is not looked up again
    through the plan's own (relative) run_dir."""
    if target and Path(target).is_dir():
        folder = Path(target)
        plan_file = folder / PLAN_FILE
        if not plan_file.is_file():
            raise SpecError(f"{target} is a folder without {PLAN_FILE}", (), file=target,
                            hint="give a spec file, a folder written by `tunespec plan -o`, or a run folder")
        try:
            plan = read_plan(plan_file)
        except PlanFormatError as error:
            raise SpecError(str(error), (), file=str(plan_file),
                            hint="compile it again with this tunespec: `tunespec plan SPEC -o FOLDER`") from None
        if is_run_dir(folder):
            if run_dir and Path(run_dir) != folder:
                raise CommandLineError(f"{target} is a run folder and --run-dir {run_dir} names another: give one")
            return Target(plan, None, folder)
        return Target(plan, folder, Path(run_dir) if run_dir else None)
    plan = build_plan(load_spec_argument(target or str(default_spec_path())))
    return Target(plan, None, Path(run_dir) if run_dir else None)


def refuse_run_dir_off_local(target: Target, verb: str) -> None:
    backend = target.plan["backend"]["type"]
    if target.run_dir is not None and backend != "local":
        raise CommandLineError(f"--run-dir names the folder of a local run; this plan runs on {backend}, which keeps "
                               f"its runs where the plan says: `tunespec {verb}` without --run-dir")


@contextmanager
def rendered_plan_folder(target: Target) -> Iterator[Path]:
    """The plan folder of the target: the one given, or a temporary one removed afterwards."""
    if target.plan_dir is not None:
        yield target.plan_dir
        return
    with tempfile.TemporaryDirectory(prefix=f"tunespec-plan-{target.plan['spec']['name']}-") as folder:
        write_plan_folder(target.plan, Path(folder))
        yield Path(folder)
