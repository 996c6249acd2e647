"""Reviewing fine-tunes in pull requests, in a real git repository with two commits: the PR comment
script (golden body), diff exit codes, renamed/deleted/extends-chain specs, the lock and the budget."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

GOLDEN_COMMENT = REPO / "tests" / "golden" / "ci" / "pr_comment.md"
TRAIN_ROWS = (REPO / "cli" / "defaults" / "data" / "viggo_train.csv").read_text().splitlines()

BASE_SPEC = """\
apiVersion: tunespec/v1
name: {name}
model: {{source: HuggingFaceTB/SmolLM2-135M-Instruct, architecture: smollm2-135m}}
method:
  type: lora
  lora: {{r: 16, alpha: 32, target_modules: all-linear}}
data:
  train: {{path: data/train.csv}}
  num_examples: 200000
  tokens_per_example: 250
  format: {{type: template, prompt: "Sentence: {{ref}}\\nMR: ", completion: "{{mr}}"}}
  max_seq_length: 512
training:
  epochs: 1
  micro_batch_size: 10
  gradient_accumulation: 1
  precision: bf16
backend: {{type: local, device: cuda, hardware: ml.g5.xlarge}}
"""
CHILD_SPEC = """\
apiVersion: tunespec/v1
extends: base.yaml
name: child
training:
  learning_rate: 1.0e-4
budget:
  max_cost_usd: {max_cost}
  max_hours: 10
"""


def run(*args, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "COLUMNS": "200", "HF_HUB_CACHE": str(cwd / ".hf-empty"),
           "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z",
           "GIT_AUTHOR_NAME": "Reviewer", "GIT_AUTHOR_EMAIL": "r@example.com",
           "GIT_COMMITTER_NAME": "Reviewer", "GIT_COMMITTER_EMAIL": "r@example.com",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert not check or done.returncode == 0, done.stdout + done.stderr
    return done


def tunespec(*args, cwd: Path, check: bool = False) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "tunespec.cli.main", *args, cwd=cwd, check=check)


def commit(repo: Path, message: str) -> None:
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-q", "-m", message, cwd=repo)


@pytest.fixture
def repo(tmp_path) -> Path:
    """Commit 1: a base spec, a spec extending it (locked, with a budget), one to rename, one to delete.
    Commit 2: the base's micro batch 10 → 5 with accumulation 1 → 2, a re-exported data file, the
    rename, the deletion."""
    repo = tmp_path / "repo"
    specs = repo / "specs"
    (specs / "data").mkdir(parents=True)
    run("git", "init", "-q", "-b", "main", cwd=repo)
    (specs / "data" / "train.csv").write_text("\n".join(TRAIN_ROWS[:30]) + "\n")
    (specs / "base.yaml").write_text(BASE_SPEC.format(name="base"))
    (specs / "child.yaml").write_text(CHILD_SPEC.format(max_cost=20))
    (specs / "old-name.yaml").write_text(BASE_SPEC.format(name="renamed"))
    (specs / "retired.yaml").write_text(BASE_SPEC.format(name="retired"))
    tunespec("lock", "specs/child.yaml", cwd=repo, check=True)
    commit(repo, "specs")
    (specs / "base.yaml").write_text(BASE_SPEC.format(name="base").replace(
        "micro_batch_size: 10\n  gradient_accumulation: 1", "micro_batch_size: 5\n  gradient_accumulation: 2"))
    (specs / "data" / "train.csv").write_text("\n".join(TRAIN_ROWS[:31]) + "\n")
    run("git", "mv", "specs/old-name.yaml", "specs/new-name.yaml", cwd=repo)
    run("git", "rm", "-q", "specs/retired.yaml", cwd=repo)
    commit(repo, "smaller micro batch, more data")
    return repo


def test_pr_comment_script_writes_the_golden_comment(repo, update_golden):
    done = run(sys.executable, str(REPO / "examples" / "ci" / "pr_comment.py"), "--base-ref", "HEAD~1",
               "--output", "comment.md", "specs", cwd=repo)
    # The commits' ids depend on the lock's package versions: the golden body names them BASE and HEAD.
    base, head = (run("git", "rev-parse", "--short", ref, cwd=repo).stdout.strip() for ref in ("HEAD~1", "HEAD"))
    body = (repo / "comment.md").read_text().replace(f"{base} → {head}", "BASE → HEAD")
    if update_golden:
        GOLDEN_COMMENT.write_text(body)
    assert body == GOLDEN_COMMENT.read_text(), "refresh with --update-golden if intended"
    assert done.returncode == 0
    # What a reviewer reads first: the spec lines that changed, then the estimates with deltas.
    base_section = body.split("### `specs/base.yaml`")[1].split("###")[0]
    assert base_section.index("| `training.micro_batch_size` | `10` | `5` | specs/base.yaml:15 |") \
        < base_section.index("| memory per device") < base_section.index("<details>")
    child_section = body.split("### `specs/child.yaml`")[1].split("###")[0]
    assert "*changed through `specs/base.yaml`, `specs/data/train.csv`*" in child_section
    assert "| `training.micro_batch_size` | `10` | `5` | specs/base.yaml:15 |" in child_section
    assert "budget `max_cost_usd`" in child_section
    assert "**drift**: data.train.sha256" in child_section
    assert "*renamed from `specs/old-name.yaml`*" in body and "### `specs/retired.yaml`\n\n*deleted*" in body


def test_diff_exit_codes_unchanged_changed_invalid(repo):
    unchanged = tunespec("diff", "--base", "HEAD", "--exit-code", "specs", cwd=repo)
    assert unchanged.returncode == 0, unchanged.stderr
    assert "No spec's plan changes." in tunespec("diff", "--base", "HEAD", "--format", "markdown", cwd=repo).stdout
    changed = tunespec("diff", "HEAD~1:specs/base.yaml", "specs/base.yaml", "--exit-code", cwd=repo)
    assert changed.returncode == 3, changed.stderr
    (repo / "specs" / "base.yaml").write_text(BASE_SPEC.format(name="base").replace("epochs: 1", "epochs: one"))
    invalid = tunespec("diff", "--base", "HEAD", "--exit-code", "specs", cwd=repo)
    assert invalid.returncode == 2
    assert "specs/base.yaml:14:11: error: training.epochs: expected a number" in invalid.stderr


def test_budget_exceeded_is_a_located_error_and_the_diff_shows_it(repo):
    (repo / "specs" / "child.yaml").write_text(CHILD_SPEC.format(max_cost=1))
    done = tunespec("plan", "specs/child.yaml", "-o", "plan", cwd=repo)
    assert done.returncode == 2
    assert done.stderr.startswith("specs/child.yaml:7:17: error: budget.max_cost_usd: the plan's estimate exceeds "
                                  "the budget: $")
    shown = tunespec("diff", "--base", "HEAD", "--format", "markdown", "specs", cwd=repo)
    assert shown.returncode == 2
    assert "— over budget |" in shown.stdout and "**Invalid spec (head):**" in shown.stdout


def test_lock_drift_is_refused_by_check_lock_and_apply(repo):
    check = tunespec("plan", "specs/child.yaml", "--check-lock", "-o", "plan", cwd=repo)
    assert check.returncode == 4
    assert "drifted: data.train.sha256: locked " in check.stderr
    assert "not verified: model.commit: the revision is not a commit and is not in the local Hugging Face cache" \
        in check.stderr
    applied = tunespec("apply", "plan", cwd=repo)  # the plan folder carries the spec's lock entry
    assert applied.returncode == 4 and "the lock no longer matches" in applied.stderr
    assert not (repo / "runs").exists()
    tunespec("lock", "specs/child.yaml", cwd=repo, check=True)
    again = tunespec("plan", "specs/child.yaml", "--check-lock", "-o", "plan", cwd=repo)
    assert again.returncode == 0, again.stderr
    assert "inputs match, 2 not verifiable here" in again.stderr  # the hub model's commit and config
    unlocked = tunespec("plan", "specs/base.yaml", "--check-lock", "-o", "plan", cwd=repo)
    assert unlocked.returncode == 4 and "has no entry for base.yaml" in unlocked.stderr


def test_validate_checks_every_spec_it_is_given(repo):
    (repo / "specs" / "bad.yaml").write_text(BASE_SPEC.format(name="Bad Name"))
    done = tunespec("validate", "specs/base.yaml", "specs/bad.yaml", "specs/child.yaml", cwd=repo)
    assert done.returncode == 2
    assert "specs/base.yaml: ok" in done.stdout and "specs/child.yaml: ok" in done.stdout
    assert done.stderr.startswith("specs/bad.yaml:2:7: error: name:")
