"""What `apply`, `status` and `cancel` act on: a spec (compiled now), a saved plan folder, or the default."""
import json
import tempfile
from importlib import resources
from pathlib import Path
from typing import Optional, Tuple

from ..compiler.errors import SpecError
from ..compiler.plan import build_plan
from ..compiler.render import PLAN_FILE, write_plan_folder
from .loading import load_spec_argument

DEFAULT_SPEC = "smollm2-viggo-lora.yaml"


def default_spec_path() -> Path:
    return Path(str(resources.files("tunespec") / "defaults" / DEFAULT_SPEC))


def load_plan_argument(target: Optional[str]) -> Tuple[dict, Path]:
    """The plan to act on and the plan folder holding its rendered files."""
    if target and Path(target).is_dir():
        plan_file = Path(target) / PLAN_FILE
        if not plan_file.is_file():
            raise SpecError(f"{target} is a folder without {PLAN_FILE}", (), file=target,
                            hint="give a spec file, or a folder written by `tunespec plan -o`")
        return json.loads(plan_file.read_text()), Path(target)
    spec_path = target or str(default_spec_path())
    plan = build_plan(load_spec_argument(spec_path))
    plan_dir = Path(tempfile.mkdtemp(prefix=f"tunespec-plan-{plan['spec']['name']}-"))
    write_plan_folder(plan, plan_dir)
    return plan, plan_dir
