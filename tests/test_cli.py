"""The CLI as a user runs it: exit codes, what the terminal shows, what the plan folder holds."""
import json
import subprocess
import sys

from .conftest import REPO

SEED_000 = "specs/mixtral-8x7b-viggo-qlora-fsdp.yaml"
SEED_000_SPOT = "specs/mixtral-8x7b-viggo-qlora-p4de-spot.yaml"


def tunespec(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "tunespec.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_validate_accepts_every_example():
    for spec in sorted((REPO / "specs").glob("*.yaml")):
        done = tunespec("validate", str(spec.relative_to(REPO)))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith(": ok")


def test_plan_prints_summary_and_writes_folder(tmp_path):
    done = tunespec("plan", SEED_000, "-o", str(tmp_path / "p"))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for expected in ("46.70B total", "12.88B", "trainable", "8 × NVIDIA A100-SXM4-40GB",
                     "10 micro × 1 accumulation × 8 data-parallel = 80 sequences", "moe-experts-not-quantized",
                     "plan.json", "trainer_args.json"):
        assert expected in text, expected
    plan = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert plan["trainer"]["fsdp"] == "full_shard auto_wrap"
    # Read in the container from Secrets Manager: no token value reaches the request.
    assert plan["secrets"] == {"hf_token": {"secrets_manager_arn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:hf-token-AbCdEf"}}


def test_plan_json_format_is_the_plan_file(tmp_path):
    done = tunespec("plan", SEED_000, "-o", str(tmp_path / "p"), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (tmp_path / "p" / "plan.json").read_text()


def test_plan_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    done = tunespec("plan", SEED_000, "-o", str(tmp_path))
    assert done.returncode == 2 and "not a plan folder" in done.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_diff_markdown_shows_changed_plan_fields():
    done = tunespec("diff", SEED_000, SEED_000_SPOT, "--format", "markdown")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "| `training.micro_batch_size` | `10` | `16` | specs/mixtral-8x7b-viggo-qlora-p4de-spot.yaml:9 |" in text
    assert "| `devices.accelerator` | `NVIDIA A100-SXM4-40GB` | `NVIDIA A100-SXM4-80GB` |" in text
    assert "| `batch.global_batch_size` | `80` | `128` |" in text
    assert "sagemaker/create_training_job.json` changed" in text
    # The spec keys and the estimates come before the folded table of plan fields.
    assert text.index("| spec key |") < text.index("| memory per device") < text.index("<details>")


def test_diff_of_a_spec_with_itself_says_no_changes():
    done = tunespec("diff", SEED_000, SEED_000)
    assert done.returncode == 0 and "No changes." in done.stdout


def test_schema_verb_prints_the_published_schema():
    done = tunespec("schema")
    assert done.returncode == 0
    assert done.stdout == (REPO / "schema" / "tunespec-v1.schema.json").read_text()


def test_diff_reads_a_spec_at_a_git_ref():
    done = tunespec("diff", f"HEAD:{SEED_000}", SEED_000, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert [item["changed"] for item in json.loads(done.stdout)] == [False]
