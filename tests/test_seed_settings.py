"""Each example spec against its seed recipe: the plan holds every setting the seed states
(tests/seed_settings.yaml), and every deliberate difference is said in a comment of the spec."""
from pathlib import Path

import pytest
import yaml

from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec
from tunespec.schema.trainer_arguments import trainer_arguments

TABLES = yaml.safe_load((Path(__file__).with_name("seed_settings.yaml")).read_text())


def field(plan: dict, dotted: str):
    """A plan field; `trainer.*` as the trainer receives it (TrainingArguments names, as the seeds write them)."""
    value = dict(plan, trainer=trainer_arguments(plan))
    for key in dotted.split("."):
        value = value[key]
    return value


@pytest.mark.parametrize("seed", sorted(TABLES))
def test_plan_holds_the_seed_settings_and_the_spec_comments_each_difference(seed, repo_cwd):
    table = TABLES[seed]
    spec = Path("specs") / table["spec"]
    plan = build_plan(load_spec(spec))
    mismatched = {path: (field(plan, path), wanted) for path, wanted in table["same"].items()
                  if field(plan, path) != wanted}
    assert not mismatched, f"plan value vs seed {seed}'s: {mismatched}"
    comments = " ".join(line.split("#", 1)[1].strip() for line in spec.read_text().splitlines() if "#" in line)
    for difference in table["differs"]:
        for path, value in (difference.get("plan") or {}).items():
            assert field(plan, path) == value, (difference["seed"], path)
        assert difference["comment"] in " ".join(comments.split()), (seed, difference["comment"])
