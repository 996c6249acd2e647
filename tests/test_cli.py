"""The CLI as a user runs it: exit codes, what the terminal shows, what the plan folder holds."""
import json
import subprocess
import sys

from conftest import REPO

SEED_000 = "specs/mixtral-8x7b-viggo-qlora-fsdp.yaml"
SEED_000_SPOT = "specs/mixtral-8x7b-viggo-qlora-p4de-spot.yaml"


def tunespec(*args, cwd=REPO, **env):
    return subprocess.run([sys.executable, "-m", "tunespec.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", **env})


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
                     "10 micro × 1 accumulation × 8 data-parallel = 80 sequences",
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


# ---- the first hour of a new user: the embedded default, runs, missing extras ------------------------

DEFAULT = "cli/defaults/smollm2-viggo-lora.yaml"
SAGEMAKER_SPEC = "specs/mixtral-8x7b-sst2-smp-expert-parallel.yaml"


def tunespec_without(module, *args, cwd=REPO, **env):
    """The CLI on a machine where `module` is not installed (an import of it fails as it would there)."""
    code = (f"import sys; sys.modules[{module!r}] = None; from tunespec.cli.main import main; "
            "sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", **env})


def test_the_embedded_default_validates_and_plans_for_this_machine(tmp_path):
    done = tunespec("validate", DEFAULT, ATEN_CPU_CAPABILITY="avx2")
    assert done.returncode == 0 and done.stdout.strip().endswith(": ok"), done.stdout + done.stderr
    assert "training.precision" not in done.stdout  # `auto`: nothing to warn about on any CPU
    done = tunespec("plan", DEFAULT, "-o", str(tmp_path / "p"), ATEN_CPU_CAPABILITY="avx2")
    assert done.returncode == 0, done.stderr
    assert "cores, avx2" in done.stdout and "fp32 (auto: this CPU (avx2) has no native bf16" in done.stdout
    plan = json.loads((tmp_path / "p" / "plan.json").read_text())
    trainer_args = json.loads((tmp_path / "p" / "trainer_args.json").read_text())
    assert trainer_args["bf16"] is False and plan["estimates"]["memory"]["verdict"] == "fits"


def test_explicit_bf16_on_a_cpu_without_it_warns_at_plan_and_is_refused_at_apply(tmp_path):
    spec = tmp_path / "bf16.yaml"
    spec.write_text(f"apiVersion: tunespec/v1\nname: bf16-on-avx2\nextends: {REPO / DEFAULT}\n"
                    f"training:\n  precision: bf16\nbackend: {{type: local, device: cpu, run_dir: {tmp_path / 'run'}}}\n")
    done = tunespec("validate", str(spec), ATEN_CPU_CAPABILITY="avx2")
    assert done.returncode == 0
    assert f"{spec}:5:14: warning: training.precision: this CPU (avx2) has no native bf16" in done.stdout, done.stdout
    done = tunespec("apply", str(spec), ATEN_CPU_CAPABILITY="avx2")
    assert done.returncode == 2 and "only emulates" in done.stdout and "allow_emulated_bf16" in done.stdout
    assert not (tmp_path / "run" / "console.log").exists()  # refused before any trainer started
    spec.write_text(spec.read_text().replace("precision: bf16", "precision: bf16\n  allow_emulated_bf16: true"))
    done = tunespec("validate", str(spec), ATEN_CPU_CAPABILITY="avx2")
    assert done.returncode == 0 and "warning: training.precision" not in done.stdout


def _interrupted_run(folder):
    """A run folder as a kill -9 after step 3 leaves it: its plan, events and checkpoint-2."""
    from tunespec.compiler.plan import build_plan
    from tunespec.schema.contract import canonical_json
    from tunespec.compiler.spec_loader import load_spec

    folder.mkdir()
    (folder / "plan.json").write_text(canonical_json(build_plan(load_spec(REPO / DEFAULT))))
    (folder / "console.log").write_text("")
    events = [{"event": "phase", "time": 1.0, "name": "loading the model"},
              {"event": "start", "time": 2.0, "total_steps": 30, "resumed_from_step": 0},
              *({"event": "step", "time": 2.0 + step, "step": step, "total_steps": 30, "tokens_per_s": 150.0,
                 "step_s": 6.5, "elapsed_s": step} for step in (1, 2, 3)),
              {"event": "loss", "time": 5.0, "step": 3, "loss": 1.5}]
    (folder / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (folder / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    return folder


def test_status_cancel_generate_eval_of_an_interrupted_run(tmp_path):
    run = _interrupted_run(tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = tunespec("status", str(run), cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert f"{run}: interrupted (no trainer running)" in done.stdout and "step 3 of 30, loss 1.5" in done.stdout
    assert "`tunespec apply` again resumes it from checkpoint-2" in done.stdout
    done = tunespec("cancel", str(run), cwd=elsewhere)
    assert done.returncode == 0 and "not running; nothing to stop" in done.stdout
    for verb in (["generate", str(run), "--prompt", "hi"], ["eval", str(run)]):
        done = tunespec(*verb, cwd=elsewhere)
        assert done.returncode == 1, done.stderr
        assert done.stderr == (f"error: {run} holds an unfinished run (stopped at step 3 of 30): `tunespec apply` "
                               f"finishes it (`tunespec apply {run}`)\n")
    done = tunespec("apply", str(run), "--run-dir", str(tmp_path / "other"), cwd=elsewhere)
    assert done.returncode == 2 and "is a run folder and --run-dir" in done.stderr


def test_missing_runs_are_one_message_and_exit_code_1(tmp_path):
    for verb in (["status", "--run-dir", "nowhere"], ["cancel", "--run-dir", "nowhere"], ["eval", "nowhere"],
                 ["generate", "nowhere", "--prompt", "hi"]):
        done = tunespec(*verb, cwd=tmp_path)  # status and cancel: of the embedded default
        assert done.returncode == 1, (verb, done.stderr)
        assert done.stderr == "error: no run in nowhere: `tunespec apply` starts one (the folder does not exist)\n"


def test_a_missing_extra_is_named_with_its_install_and_no_plan_folder_is_left(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    for verb in ("apply", "status", "cancel"):
        done = tunespec_without("boto3", verb, SAGEMAKER_SPEC, TMPDIR=str(temp))
        assert done.returncode == 5, done.stderr
        assert done.stderr == (f"error: `tunespec {verb}` needs `boto3`, which is not installed here; it comes with "
                               "tunespec's [sagemaker] extra: pip install 'tunespec[sagemaker]'\n")
    done = tunespec_without("peft", "apply", "--run-dir", str(tmp_path / "fresh"), TMPDIR=str(temp))
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr == ("error: training on this machine needs `peft`, which is not installed here; it comes with "
                           "tunespec's [train] extra: pip install 'tunespec[train]'\n")
    assert not (tmp_path / "fresh").exists()
    done = tunespec_without("torch", "eval", str(_interrupted_run(tmp_path / "run")))
    assert done.returncode == 1  # the run is reported before anything needs torch
    assert tunespec("status", cwd=tmp_path, TMPDIR=str(temp)).returncode == 1  # the default, never applied here
    assert list(temp.iterdir()) == []


def test_run_dir_is_refused_where_the_backend_keeps_its_own_runs():
    done = tunespec("status", SAGEMAKER_SPEC, "--run-dir", "somewhere")
    assert done.returncode == 2
    assert done.stderr.startswith("tunespec status: error: --run-dir names the folder of a local run; this plan runs "
                                  "on sagemaker")



def test_python_dash_m_tunespec_is_the_cli():
    done = subprocess.run([sys.executable, "-m", "tunespec", "validate", DEFAULT], cwd=REPO, capture_output=True,
                          text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "ATEN_CPU_CAPABILITY": "avx2"})
    assert done.returncode == 0 and done.stdout.strip().endswith(": ok"), done.stdout + done.stderr


def test_a_plan_folder_this_tunespec_did_not_write_is_refused_before_anything_runs(tmp_path):
    """An older tunespec's plan (here: without the inference section), or one edited by hand, is checked
    against the plan model where it is read: the CLI says which field, exit 2; the trainer exits 6."""
    folder = tmp_path / "old-plan"
    done = tunespec("plan", DEFAULT, "-o", str(folder))
    assert done.returncode == 0, done.stderr
    plan = json.loads((folder / "plan.json").read_text())
    del plan["inference"]
    (folder / "plan.json").write_text(json.dumps(plan))
    refused = tunespec("apply", str(folder), "--run-dir", str(tmp_path / "run"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "plan.json is not a tunespec-plan/v1 plan tunespec" in refused.stderr and "inference" in refused.stderr
    assert "tunespec plan SPEC -o FOLDER" in refused.stderr
    assert not (tmp_path / "run").exists()
    trainer = subprocess.run([sys.executable, "-m", "tunespec.runtime.train", "--plan", str(folder / "plan.json"),
                              "--run-dir", str(tmp_path / "run")], capture_output=True, text=True)
    assert trainer.returncode == 6 and "inference: Field required" in trainer.stderr
    assert "Traceback" not in trainer.stderr
