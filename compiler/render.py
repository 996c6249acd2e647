"""Plan → plan folder: the same plan always gives byte-identical files."""
import shutil
from pathlib import Path

from ..schema.contract import PLAN_FILE, canonical_json
from ..schema.trainer_arguments import trainer_arguments
from .errors import SpecError
from .summary import summary_markdown


def plan_files(plan: dict) -> dict:
    """Every file of the plan folder, by relative path."""
    files = {
        PLAN_FILE: canonical_json(plan),
        "trainer_args.json": canonical_json(trainer_arguments(plan)),
        "launch.json": canonical_json({"launch": plan["launch"], "parallel": plan["parallel"]}),
        "summary.md": summary_markdown(plan),
    }
    if plan["trainer"]["fsdp"]:
        files["fsdp_config.json"] = canonical_json({"fsdp": plan["trainer"]["fsdp"],
                                                    "fsdp_config": plan["trainer"]["fsdp_config"]})
    files.update(plan["backend"].get("files", {}))
    return files


def write_plan_folder(plan: dict, out_dir: Path) -> list:
    """Write the plan folder, replacing an earlier plan folder there. Returns the files written."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / PLAN_FILE).is_file():
        raise SpecError(f"{out_dir} exists and is not a plan folder", (),
                        hint="choose another `-o` folder; tunespec only replaces folders it wrote")
    files = plan_files(plan)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for relative, text in sorted(files.items()):
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        if text.startswith("#!"):
            target.chmod(0o755)
    return sorted(files)
