"""The trainer for real on the CPU, driven as a user drives it: the embedded default (SmolLM2-135M-Instruct
+ LoRA on the ViGGO slice), shortened; `tunespec apply` killed with SIGKILL after a checkpoint, applied
again and stopped with `tunespec cancel`, applied a third time to the end; `status` at each stage; then
its outputs, generations (`generate`) and scores (`eval`) checked. Plus fast checks of the pieces around it.

The tests wait for the run's own events (progress.jsonl, checkpoints), each with a generous timeout that
fails with the log; no deadline is put on how fast training goes. Every process a test starts is ended
with its process group (and the trainer's) whatever the outcome.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rich.console import Console

from tunespec.compiler.plan import build_plan
from tunespec.schema.contract import canonical_json
from tunespec.compiler.spec_loader import load_spec
from tunespec.schema.package_files import package_file
from tunespec.runtime import run_layout
from tunespec.runtime.local import apply_local, trainer_command
from tunespec.runtime.progress import read_events

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = REPO / "cli" / "defaults" / "smollm2-viggo-lora.yaml"
DATA = "pkg://tunespec/tunespec/cli/defaults/data/"
MAX_STEPS, SAVE_EVERY, KILL_AFTER_STEP = 12, 4, 6
# How long to wait for one awaited event (a step, a checkpoint, the end of a session) before failing:
# far above what a slow 2-core machine needs, so only a hang reaches it.
EVENT_TIMEOUT_S = 1800
VALID_SENTENCES = [
    "I wanted to like Grimlore Games' 2017 entry, but in SpellForce 3 they just didn't get anything right.",
    "Have you ever played a game developed by EA Canada, like FIFA 12?",
]


def write_test_spec(root: Path) -> Path:
    """The default spec, extended: fewer steps and eval rows, so the whole file runs in minutes. The run
    folder is relative (`run`), as the default's is: it lies under the folder apply runs in."""
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: smollm2-viggo-cpu-test
        extends: {DEFAULT_SPEC}
        data:
          train: {{path: {package_file(DATA + "viggo_train.csv")}}}
          eval: {{path: {package_file(DATA + "viggo_valid.csv")}, limit: 16}}
        training:
          max_steps: {MAX_STEPS}
          checkpoint_every_steps: {SAVE_EVERY}
          eval_every_steps: {MAX_STEPS}
        outputs:
          merged_model: true
        backend: {{type: local, device: cpu, run_dir: run}}
        """))
    return spec


def compile_test_plan(root: Path) -> dict:
    return build_plan(load_spec(write_test_spec(root)), cwd=root)


def console() -> Console:
    return Console(record=True, width=200)


def step_losses(events: list) -> dict:
    return {e["step"]: e["loss"] for e in events if e["event"] == "loss"}


def tunespec_command(*args) -> list:
    return [sys.executable, "-m", "tunespec.cli.main", *args]


def tunespec(*args, cwd: Path) -> subprocess.CompletedProcess:
    """Run a verb to its end (a whole training session at most)."""
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(tunespec_command(*args), cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=EVENT_TIMEOUT_S)


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


@contextlib.contextmanager
def started(*args, cwd: Path, log: Path, run_dir: Path):
    """`tunespec ARGS` in the background, in a process group of its own; on leaving, whatever happened,
    that group and the trainer's own group (RUN/trainer.json) are killed."""
    with log.open("w") as output:
        process = subprocess.Popen(tunespec_command(*args), cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, COLUMNS="200"), start_new_session=True)
    try:
        yield process
    finally:
        _kill_group(process.pid)
        with contextlib.suppress(OSError, ValueError, KeyError):
            _kill_group(json.loads((run_dir / run_layout.TRAINER_PROCESS).read_text())["process_group"])
        process.wait()


def wait_for(what: str, condition, process: subprocess.Popen, log: Path):
    """Poll `condition()` until it returns something true; fail clearly if the process ends first or
    the event does not come within EVENT_TIMEOUT_S."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(f"waiting for {what}: `tunespec` exited with {process.returncode}\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"waiting for {what}: nothing after {EVENT_TIMEOUT_S} s\n{log.read_text()[-3000:]}")


def session_events(run_dir: Path, resumed_from: int):
    """This session's events, once its trainer has started (an earlier session's file is replaced)."""
    events, _ = read_events(run_dir / run_layout.PROGRESS)
    starts = [e for e in events if e["event"] == "start"]
    return events if starts and starts[0]["resumed_from_step"] == resumed_from else None


def last_step(events) -> int:
    return max([e["step"] for e in events if e["event"] == "step"], default=0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Session 1: apply, SIGKILL after step 6 (checkpoint-4 written); a checkpoint cut short mid-save is
    faked. Session 2: apply again, `tunespec cancel` after its first step. Session 3: apply the run
    folder (from another directory) to the end."""
    root = tmp_path_factory.mktemp("cpu-train")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    spec = write_test_spec(root)
    run_dir = root / "run"
    statuses = {}

    log = root / "session-1.log"
    with started("apply", str(spec), cwd=root, log=log, run_dir=run_dir) as first:
        def killable():
            events = session_events(run_dir, 0)
            complete = run_layout.last_complete_checkpoint(run_dir)
            return (events and last_step(events) >= KILL_AFTER_STEP and complete is not None
                    and complete.name == f"checkpoint-{SAVE_EVERY}")

        wait_for(f"step {KILL_AFTER_STEP} and checkpoint-{SAVE_EVERY}", killable, first, log)
        statuses["live"] = tunespec("status", str(spec), cwd=root)
        trainer = json.loads((run_dir / run_layout.TRAINER_PROCESS).read_text())
        os.killpg(first.pid, signal.SIGKILL)
        os.killpg(trainer["process_group"], signal.SIGKILL)
    killed_session, _ = read_events(run_dir / run_layout.PROGRESS)
    # A kill during a save leaves a checkpoint folder without trainer_state.json: resume must skip it.
    partial = run_dir / run_layout.CHECKPOINTS / f"checkpoint-{SAVE_EVERY + 1}"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"cut short")
    statuses["killed"] = tunespec("status", "--run-dir", "run", str(spec), cwd=root)

    log = root / "session-2.log"
    with started("apply", str(spec), "--run-dir", "run", cwd=root, log=log, run_dir=run_dir) as second:
        def stepped():
            events = session_events(run_dir, SAVE_EVERY)
            return events and last_step(events) > SAVE_EVERY

        wait_for("the first step after resuming", stepped, second, log)
        statuses["cancel"] = tunespec("cancel", "--run-dir", "run", str(spec), cwd=root)
        second.wait(timeout=EVENT_TIMEOUT_S)
    statuses["cancelled_apply"] = (second.returncode, log.read_text())
    resumed_from = run_layout.checkpoint_step(run_layout.last_complete_checkpoint(run_dir))

    final = tunespec("apply", str(run_dir), cwd=elsewhere)
    assert final.returncode == 0, final.stdout + final.stderr + (run_dir / run_layout.CONSOLE_LOG).read_text()[-3000:]
    return {"plan": json.loads((run_dir / run_layout.PLAN).read_text()), "root": root, "elsewhere": elsewhere,
            "spec": spec, "run_dir": run_dir, "killed_session": killed_session, "resumed_from": resumed_from,
            "report": final.stdout, "statuses": statuses,
            "resumed_session": read_events(run_dir / run_layout.PROGRESS)[0]}


def test_eval_loss_falls(run):
    metrics = json.loads((run["run_dir"] / run_layout.METRICS).read_text())
    assert metrics["eval_loss_history"][0]["step"] == 0  # measured before any training
    assert metrics["final_eval_loss"] < 0.6 * metrics["initial_eval_loss"], metrics["eval_loss_history"]
    assert metrics["best_eval_loss"] == min(e["eval_loss"] for e in metrics["eval_loss_history"])
    assert metrics["tokens_per_s"] > 0 and metrics["peak_memory_bytes"] > 2**28
    assert "eval loss" in run["report"] and str(run["run_dir"] / "adapter") in run["report"]


def test_memory_estimate_is_what_the_trainer_held(run):
    # CPU plans estimate the trainer process's resident set (host RAM), not tensor bytes alone.
    held = json.loads((run["run_dir"] / run_layout.METRICS).read_text())["peak_memory_bytes"]
    estimated = run["plan"]["estimates"]["memory"]["total_bytes"]
    assert abs(estimated / held - 1) < 0.25, (estimated / 2**30, held / 2**30)


def test_resume_after_kill_continues_from_the_last_complete_checkpoint(run):
    killed, resumed, resumed_from = run["killed_session"], run["resumed_session"], run["resumed_from"]
    [start] = [e for e in resumed if e["event"] == "start"]
    assert start["resumed_from_step"] == resumed_from >= SAVE_EVERY
    assert [e["step"] for e in resumed if e["event"] == "step"] == list(range(resumed_from + 1, MAX_STEPS + 1))
    metrics = json.loads((run["run_dir"] / run_layout.METRICS).read_text())
    assert (metrics["global_step"], metrics["resumed_from_step"]) == (MAX_STEPS, resumed_from)
    history = {e["step"]: e["loss"] for e in metrics["train_loss_history"]}
    assert sorted(history) == list(range(1, MAX_STEPS + 1))
    before_kill = step_losses(killed)
    # The steps up to the checkpoint are the first session's own (carried in the checkpoint) ...
    assert all(history[step] == before_kill[step] for step in range(1, SAVE_EVERY + 1))
    # ... and the redone ones repeat them: same data order, same weights and optimizer state.
    for step in range(SAVE_EVERY + 1, KILL_AFTER_STEP + 1):
        assert history[step] == pytest.approx(before_kill[step], abs=2e-3), (step, history[step], before_kill[step])
    assert run["report"].count(f"Resuming from step {resumed_from}") == 1, run["report"]


def test_status_reads_the_live_and_the_interrupted_run(run):
    live, killed = run["statuses"]["live"], run["statuses"]["killed"]
    assert live.returncode == 0, live.stderr
    assert "run: running (pid " in live.stdout
    assert f"of {MAX_STEPS}, loss " in live.stdout and "ETA " in live.stdout, live.stdout
    assert killed.returncode == 0, killed.stderr
    assert "interrupted (no trainer running)" in killed.stdout
    assert f"last complete checkpoint: checkpoint-{SAVE_EVERY}" in killed.stdout, killed.stdout


def test_cancel_stops_the_trainer_and_apply_says_so(run):
    cancel = run["statuses"]["cancel"]
    assert cancel.returncode == 0, cancel.stderr
    assert "Stopped the trainer (pid " in cancel.stdout and "`tunespec apply` resumes it" in cancel.stdout
    code, output = run["statuses"]["cancelled_apply"]
    assert code == 1 and "stopped (SIGTERM, e.g. by `tunespec cancel`)" in output, output


def test_progress_names_each_phase(run):
    phases = [e["name"] for e in run["killed_session"] if e["event"] == "phase"]
    # the files and tokenizer, the data, then the weights (the long part on large models) under their own name
    assert phases[:3] == ["loading the model", "reading the data", "loading the model"]
    evaluation = [e for e in run["killed_session"] if e["event"] == "eval_progress"]
    assert evaluation[0]["step"] == 0 and evaluation[-1]["done"] == evaluation[-1]["total"] == 4  # 16 rows / 4
    after = [e["name"] for e in run["resumed_session"] if e["event"] == "phase"]
    assert after[-3:] == ["writing the outputs", "merging the adapter", "generating samples"], after
    assert "saving the adapter" in after


def test_outputs_are_written(run):
    run_dir = run["run_dir"]
    adapter = run_dir / run_layout.ADAPTER
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= {p.name for p in adapter.iterdir()}
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
    assert (run_dir / run_layout.MERGED / "model.safetensors").is_file()
    assert (run_dir / run_layout.LOSS_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run_dir / run_layout.TENSORBOARD).rglob("events.out.tfevents.*"))
    assert "resuming from" in (run_dir / run_layout.TRAIN_LOG).read_text()
    [sample] = json.loads((run_dir / run_layout.SAMPLES).read_text())
    assert sample["base"] != sample["tuned"]


def test_adapter_loads_back_and_changes_generations(run):
    from tunespec.runtime.generate import generate

    answers = generate(run["run_dir"], VALID_SENTENCES, max_new_tokens=40)
    assert [prompt for prompt, _, _ in answers] == VALID_SENTENCES
    for _, base, tuned in answers:
        assert base != tuned
    acts = ("inform", "request", "give_opinion", "confirm", "verify_attribute", "suggest",
            "request_explanation", "recommend", "request_attribute")
    assert any(tuned.startswith(tuple(act + "(" for act in acts)) for _, _, tuned in answers), answers


def test_generate_command_answers_with_progress(run):
    done = tunespec("generate", str(run["run_dir"]), "--prompt", VALID_SENTENCES[1], "--max-new-tokens", "24",
                    cwd=run["elsewhere"])
    assert done.returncode == 0, done.stderr
    assert "fine-tuned" in done.stdout and "EA Canada" in done.stdout
    assert "loading the base and the fine-tuned model" in done.stderr and "generating answers" in done.stderr


def test_eval_command_scores_the_tuned_model_better(run):
    done = tunespec("eval", str(run["run_dir"]), "--limit", "4", cwd=run["elsewhere"])
    assert done.returncode == 0, done.stderr
    assert "generating answers" in done.stderr and "evaluation.json" in done.stdout
    result = json.loads((run["run_dir"] / run_layout.EVALUATION).read_text())
    assert result["tuned"]["rows"] == 4
    assert result["tuned"]["slot_f1"] > result["base"]["slot_f1"], result


def test_apply_and_status_of_a_finished_run_report_without_training(run):
    run_dir = run["run_dir"]
    before = (run_dir / run_layout.PROGRESS).read_text()
    again = tunespec("apply", str(run["spec"]), cwd=run["root"])
    assert again.returncode == 0, again.stderr
    assert "holds a finished run" in again.stdout
    assert (run_dir / run_layout.PROGRESS).read_text() == before
    # The run folder given from elsewhere is the run: not the plan's relative `run` under this directory.
    status = tunespec("status", str(run_dir), cwd=run["elsewhere"])
    assert status.returncode == 0 and "eval loss" in status.stdout and str(run_dir / "adapter") in status.stdout
    cancel = tunespec("cancel", str(run_dir), cwd=run["elsewhere"])
    assert cancel.returncode == 0 and "finished; nothing to stop" in cancel.stdout
    assert not (run["elsewhere"] / "run").exists()


# ---- fast checks ------------------------------------------------------------------------------------

def test_last_complete_checkpoint_skips_checkpoints_cut_short(tmp_path):
    folder = tmp_path / run_layout.CHECKPOINTS
    for step, state in ((5, '{"global_step": 5}'), (10, '{"global_step": 10}'), (15, '{"global_st')):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (folder / "checkpoint-20").mkdir()
    assert run_layout.last_complete_checkpoint(tmp_path).name == "checkpoint-10"
    assert run_layout.last_complete_checkpoint(tmp_path / "nothing") is None


def test_apply_refuses_a_run_folder_of_another_spec(tmp_path):
    plan = compile_test_plan(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other = dict(plan, spec=dict(plan["spec"], hash="0" * 64))
    (run_dir / run_layout.PLAN).write_text(canonical_json(other))
    out = console()
    assert apply_local(plan, run_dir, out) == 2
    assert "holds a run of another spec" in out.export_text()


def test_several_processes_start_under_torchrun(tmp_path):
    plan = compile_test_plan(tmp_path)
    plan["launch"] = dict(plan["launch"], launcher="torchrun", processes_per_node=2)
    command = trainer_command(plan, Path("p.json"), Path("r"))
    assert command[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert command[6:] == ["-m", "tunespec.runtime.train", "--plan", "p.json", "--run-dir", "r"]


def test_trainer_config_refuses_unknown_keys_and_maps_warmup_ratio(tmp_path):
    from tunespec.runtime.train import PlanError, trainer_config

    plan = compile_test_plan(tmp_path)
    plan["trainer"]["warmup_ratio"] = 0.1
    config = trainer_config(plan, tmp_path, has_eval=True, resuming=True)
    assert config.warmup_steps == 0.1 and config.eval_on_start is False and config.use_cpu
    plan["trainer"]["learning_rat"] = 1e-4
    with pytest.raises(PlanError, match="learning_rat"):
        trainer_config(plan, tmp_path, has_eval=True, resuming=False)


def test_lora_adapts_fused_moe_experts_when_asked():
    from peft import get_peft_model
    from transformers import MixtralConfig, MixtralForCausalLM

    from tunespec.runtime.model_loading import lora_config

    model = MixtralForCausalLM(MixtralConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                             num_local_experts=4, num_experts_per_tok=2))
    lora = {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj"], "include_experts": True,
            "target_parameters": ["experts.gate_up_proj", "experts.down_proj"], "bias": "none", "use_dora": False}
    config = lora_config({"method": {"type": "lora", "lora": lora}}, model)
    assert sorted(config.target_parameters) == ["experts.down_proj", "experts.gate_up_proj"]
    trainable = [n for n, p in get_peft_model(model, config).named_parameters() if p.requires_grad]
    assert any("experts" in name and "lora_A" in name for name in trainable)


def test_viggo_scores():
    from tunespec.runtime.evaluate_mr import parse_mr, score

    reference = "inform(name[FIFA 12], genres[sport, simulation], rating[good])"
    assert parse_mr(reference) == ("inform", {("name", "fifa 12"), ("genres", "sport, simulation"),
                                              ("rating", "good")})
    result = score([reference, "confirm(name[FIFA 12], rating[poor])"], [reference, "confirm(name[FIFA 12])"])
    assert result["exact_match"] == 0.5 and result["act_accuracy"] == 1.0
    assert result["slot_precision"] == 0.8 and result["slot_recall"] == 1.0
    assert result["slot_f1"] == pytest.approx(0.8889, abs=1e-4)


def test_eta_comes_from_the_plan_until_steps_are_measured():
    from tunespec.runtime.progress_state import RunState

    state = RunState()
    state.update({"event": "start", "time": 100.0, "total_steps": 30, "resumed_from_step": 0})
    assert state.eta(2.0) == (60.0, "plan estimate") and state.eta(None) == (None, "")
    state.update({"event": "eval_progress", "time": 101.0, "step": 0, "done": 0, "total": None})
    assert (state.phase, state.eval_total) == ("evaluating", None)
    state.update({"event": "step", "time": 130.0, "step": 1, "total_steps": 30, "tokens_per_s": 100.0,
                  "step_s": 5.0, "elapsed_s": 30.0})
    assert state.phase == "training" and state.eta(2.0) == (145.0, "measured")


def test_progress_rows_are_labelled(tmp_path):
    from tunespec.runtime.progress_state import RunState
    from tunespec.runtime.progress_view import ProgressView

    out, state = console(), RunState()
    with ProgressView(out) as view:
        for event in ({"event": "phase", "time": time.time(), "name": "converting the model (once)"},
                      {"event": "start", "time": time.time(), "total_steps": 30, "resumed_from_step": 10}):
            state.update(event)
            view.show_run(state, 2.0)
    text = out.export_text()
    assert "✓ converting the model (once)" in text and "took 0:0" in text
    assert "10/30" in text and "elapsed 0:00 · ETA 0:40 (plan estimate)" in text, text
