"""Plan → Slurm job chain for SageMaker HyperPod (or plain Slurm) clusters.

Pure text generation: the same plan always gives byte-identical sbatch scripts. `runtime/slurm.py`
submits them in chain order, each with `--dependency=afterok:` on the jobs it depends on.

GPU/CPU: one job, one torchrun per node over `srun`, rendezvous on the allocation's first node.
Trainium (seed 003's flow): [download] → compile (`neuron_parallel_compile` over a few steps) →
train → [consolidate] → [merge].
"""
import re
import shlex
from typing import Dict, List, Optional

from ..schema.contract import PLAN_FILE, SLURM_SCRIPT_DIR, slurm_done_marker, slurm_log
from . import instances
from .errors import SpecError
from .supports import BackendSupport

# sbatch scripts run torchrun per node (GPU, CPU) or seed 003's neuron_parallel_compile flow (Trainium);
# SMP v2 exists only in SageMaker's images. No trainer trains in fp8.
SUPPORTS = BackendSupport(strategies=("none", "ddp", "fsdp", "device_map", "neuron"),
                          devices=("cpu", "cuda", "trainium"), precisions=("fp32", "bf16", "fp16"))
# Torch's rendezvous port, offset by the job id so that two jobs sharing a node do not collide.
RDZV_BASE_PORT = 29500
# Values written into the scripts. `#SBATCH` lines are read by sbatch, not by a shell, so quoting
# cannot protect them: every such value must match a strict pattern (no spaces, quotes, `$`, `;`, line
# breaks). Values in shell lines are quoted as well.
PATH_PATTERN = r"/[A-Za-z0-9._+/-]*"
SLURM_VALUE_PATTERNS = {
    ("backend", "shared_dir"): (PATH_PATTERN, "an absolute path of letters, digits and `._+-/`, e.g. /fsx"),
    ("backend", "partition"): (r"[A-Za-z0-9][A-Za-z0-9_.-]*(,[A-Za-z0-9][A-Za-z0-9_.-]*)*",
                               "a Slurm partition name (letters, digits, `_.-`; several separated by commas)"),
    ("backend", "time_limit"): (r"(\d+-)?\d{1,2}:\d{2}(:\d{2})?", "days-hours:minutes:seconds, e.g. 2-00:00:00"),
    ("backend", "environment", "venv"): (PATH_PATTERN, "an absolute path of letters, digits and `._+-/`"),
    ("backend", "environment", "container_image"): (r"[A-Za-z0-9/][A-Za-z0-9._/:@#+-]*",
                                                    "an image reference such as nvcr.io#nvidia/pytorch:24.07-py3"),
    ("backend", "environment", "container_mounts"): (r"/[A-Za-z0-9._+/:,-]*",
                                                     "SRC:DST[,SRC:DST] of absolute paths, e.g. /fsx:/fsx"),
}


def run_dir_of(plan: dict, shared_dir: str) -> str:
    """Run folder on the shared filesystem: one per spec content, so a changed spec never reuses it."""
    return f"{shared_dir.rstrip('/')}/tunespec/runs/{plan['spec']['name']}-{plan['spec']['hash'][:12]}"


def compile_slurm(plan: dict, backend: dict) -> dict:
    """The plan's `backend` section for `type: hyperpod-slurm`: the job chain and its sbatch scripts."""
    refuse_unsafe_values(plan, backend)
    job = _JobWriter(plan, backend)
    chain: List[dict] = []

    def add(name: str, text: str) -> None:
        chain.append({"name": name, "script": f"{SLURM_SCRIPT_DIR}/{name}.sbatch",
                      "depends_on": [chain[-1]["name"]] if chain else []})
        job.files[chain[-1]["script"]] = text

    model = plan["model"]
    if model["source_kind"] == "hub" and not model["offline"]:
        add("download", job.download())
    if plan["devices"]["kind"] == "trainium":
        compile_steps = plan["parallel"]["settings"]["compile_steps"]
        add("compile", job.neuron_train("compile", compile_steps))
        add("train", job.neuron_train("train", None))
        outputs = plan["outputs"]
        if outputs["consolidate_neuron_checkpoint"] or outputs["merged_model"]:
            add("consolidate", job.neuron_tool("consolidate"))
        if outputs["merged_model"] and plan["method"]["type"] != "full":
            add("merge", job.neuron_tool("merge"))
    else:
        add("train", job.train())
    return {
        "type": "hyperpod-slurm",
        "cluster_flavour": backend["cluster_flavour"],
        "run_dir": job.run_dir,
        "chain": chain,
        "files": job.files,
    }


def refuse_unsafe_values(plan: dict, backend: dict) -> None:
    """Values the scripts cannot hold safely (compiler/checks.py runs this with the other checks; the
    compile runs it too, so that no caller gets a script from them)."""
    for path, (pattern, expected) in SLURM_VALUE_PATTERNS.items():
        value = backend
        for key in path[1:]:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and not re.fullmatch(pattern, value):
            shown = value if len(value) <= 60 else value[:57] + "..."
            raise SpecError(f"{shown!r} cannot go into an sbatch script: `{path[-1]}` must be {expected}", path,
                            hint="spaces, quotes, `$`, `;`, backquotes and line breaks would change the script")


class _JobWriter:
    """Renders one sbatch script per job; all share the header, environment and run folder."""

    def __init__(self, plan: dict, backend: dict):
        self.plan = plan
        self.backend = backend
        self.run_dir = run_dir_of(plan, backend["shared_dir"])
        self.hyperpod = backend["cluster_flavour"] == "hyperpod"
        self.container = backend["environment"].get("container_image")
        self.files: Dict[str, str] = {}
        hardware = instances.lookup_instance(backend["instance_type"])
        self.efa = plan["devices"]["kind"] != "cpu" and bool((hardware["interconnect"] or {}).get("efa"))

    # ---- jobs -----------------------------------------------------------------------------------

    def download(self) -> str:
        model = self.plan["model"]
        lines = self._header("download", nodes=1, whole_nodes=False, time_limit=None, uses_plan=False)
        lines += self._environment() + self._hf_token()
        # snapshot_download, not the `hf`/`huggingface-cli` commands: each exists only in some hub versions.
        fetch = "import sys, huggingface_hub; huggingface_hub.snapshot_download(sys.argv[1], revision=sys.argv[2] or None)"
        lines += ["", "# Into the shared Hugging Face cache, once, before the jobs that read it.",
                  _command(*self._srun(1), ["python", "-c", shlex.quote(fetch)],
                           [shlex.quote(model["source"]), shlex.quote(model["revision"] or "")])]
        return self._finish("download", lines)

    def train(self) -> str:
        launch = self.plan["launch"]
        lines = self._header("train", nodes=launch["nnodes"], whole_nodes=True,
                             time_limit=self.backend["time_limit"])
        lines += self._environment() + self._network()
        entry = ["-m", launch["module"], "--plan", '"$PLAN"', "--run-dir", '"$RUN_DIR"']
        if launch["launcher"] == "python":
            lines += ["", _command(*self._srun(1, resume=True), ["python"] + entry)]
        else:
            lines += self._rendezvous() + ["", _command(*self._srun_per_node(), *self._torchrun(), entry)]
        return self._finish("train", lines)

    def neuron_train(self, step: str, max_steps: Optional[int]) -> str:
        """The training job, or (with max_steps) its graph-extraction run under neuron_parallel_compile."""
        launch, parallel, batch = self.plan["launch"], self.plan["parallel"], self.plan["batch"]
        lines = self._header(step, nodes=launch["nnodes"], whole_nodes=True, time_limit=self.backend["time_limit"])
        lines += [
            "",
            f"# {launch['nnodes']} node(s) x {launch['processes_per_node']} NeuronCores: tensor parallel "
            f"{parallel['tensor_parallel']}, pipeline {parallel['pipeline_stages']}, data parallel "
            f"{parallel['data_parallel']}; micro batch {batch['micro_batch_size']} x gradient accumulation "
            f"{batch['gradient_accumulation']} -> global batch {batch['global_batch_size']}.",
        ]
        lines += self._environment() + self._network() + self._neuron_environment(step)
        lines += self._rendezvous()
        run_dir = '"$RUN_DIR/compile"' if max_steps else '"$RUN_DIR"'
        entry = ["-m", launch["module"], "--plan", '"$PLAN"', "--run-dir", run_dir]
        lines.append("")
        prefix: List[str] = []  # neuron_parallel_compile wraps torchrun in the compile job
        if max_steps:
            entry += ["--max-steps", str(max_steps)]
            prefix = ["neuron_parallel_compile"]
            lines.append(f"# Extract and compile the graphs of {max_steps} steps into the shared cache; the "
                         "train job then runs on cache hits.")
        lines.append(_command(*self._srun_per_node(), prefix, *self._torchrun(), entry))
        return self._finish(step, lines)

    def neuron_tool(self, step: str) -> str:
        """Consolidation of the tensor-parallel shards, or the LoRA merge: one process, on the host CPU."""
        lines = self._header(step, nodes=1, whole_nodes=True, time_limit=None)
        lines += self._environment()
        lines += ["", _command(*self._srun(1), ["python", "-m", self.plan["launch"]["module"], step,
                                                "--plan", '"$PLAN"', "--run-dir", '"$RUN_DIR"'])]
        return self._finish(step, lines)

    # ---- parts ----------------------------------------------------------------------------------

    def _header(self, step: str, nodes: int, whole_nodes: bool, time_limit: Optional[str],
                uses_plan: bool = True) -> List[str]:
        spec = self.plan["spec"]
        lines = [
            "#!/bin/bash",
            f"# tunespec: {step} job of `{spec['name']}` (spec {spec['hash'][:12]}). Generated; edit the spec instead.",
            f"#SBATCH --job-name={spec['name']}-{step}",
            f"#SBATCH --nodes={nodes}",
            "#SBATCH --ntasks-per-node=1",
        ]
        if whole_nodes:
            lines.append("#SBATCH --exclusive")
        if self.backend["partition"]:
            lines.append(f"#SBATCH --partition={self.backend['partition']}")
        if time_limit:
            lines.append(f"#SBATCH --time={time_limit}")
        lines += [
            f"#SBATCH --output={slurm_log(self.run_dir, step, '%j')}",
            # A requeued (auto-resumed) job appends to its log instead of wiping the first attempt's.
            "#SBATCH --open-mode=append",
            # A job whose dependency failed is removed instead of pending forever.
            "#SBATCH --kill-on-invalid-dep=yes",
            "set -euo pipefail",
            "",
            f"RUN_DIR={shlex.quote(self.run_dir)}",
        ]
        if uses_plan:
            lines.append(f'PLAN="$RUN_DIR/{PLAN_FILE}"')
        return lines

    def _finish(self, step: str, lines: List[str]) -> str:
        lines += ["", f'echo "$SLURM_JOB_ID" >"{slurm_done_marker("$RUN_DIR", step)}"']
        return "\n".join(lines) + "\n"

    def _environment(self) -> List[str]:
        lines = [""]
        if not self.container:
            venv = self.backend["environment"]["venv"]
            lines += ["# shellcheck source=/dev/null", f"source {shlex.quote(venv.rstrip('/') + '/bin/activate')}"]
        hf_home = f"{self.backend['shared_dir'].rstrip('/')}/tunespec/hf"
        lines.append(f'export HF_HOME="${{HF_HOME:-{hf_home}}}"')
        return lines

    def _hf_token(self) -> List[str]:
        secret = self.plan["secrets"].get("hf_token")
        if not secret:
            return []
        if "env" in secret:
            var = secret["env"]
            check = f'HF_TOKEN="${{{var}:?set {var} (the Hugging Face token) before tunespec apply}}"'
            return [check, "export HF_TOKEN"]
        arn = shlex.quote(secret["secrets_manager_arn"])
        return [f"HF_TOKEN=\"$(aws secretsmanager get-secret-value --secret-id {arn} --query SecretString "
                "--output text)\"", "export HF_TOKEN"]

    def _network(self) -> List[str]:
        kind = self.plan["devices"]["kind"]
        lines: List[str] = []
        if kind == "cuda":
            lines += ["# NCCL's bootstrap on the real network interfaces, not loopback or container bridges.",
                      "export NCCL_SOCKET_IFNAME=^docker,lo,veth"]
        if self.efa:
            lines += ["# Collectives over EFA.", "export FI_PROVIDER=efa", "export FI_EFA_FORK_SAFE=1"]
            if kind == "trainium":
                lines.append("export FI_EFA_USE_DEVICE_RDMA=1")
        return [""] + lines if lines else []

    def _neuron_environment(self, step: str) -> List[str]:
        cache = f"{self.backend['shared_dir'].rstrip('/')}/tunespec/neuron-cache"
        flags = " ".join(self.plan["parallel"]["settings"]["compiler_flags"] + [f"--cache_dir={cache}"])
        lines = [
            "",
            "# The planned neuronx-cc flags; compiled graphs are shared by the compile and train jobs (and by",
            "# later runs of the same shapes).",
            f"export NEURON_CC_FLAGS={shlex.quote(flags)}",
            # The rest as seed 003's recipe sets them: one OpenMP thread per process (32 share a host),
            # the fused softmax kernel, 5 executions in flight, host allocator arenas capped.
            "export OMP_NUM_THREADS=1",
            "export NEURON_FUSE_SOFTMAX=1",
            "export NEURON_RT_ASYNC_EXEC_MAX_INFLIGHT_REQUESTS=5",
            "export MALLOC_ARENA_MAX=70",
        ]
        if self.plan["precision"]["resolved"] == "bf16":
            lines += ["# torch.float tensors become bfloat16 on the NeuronCores, rounded stochastically (the recipe's).",
                      "export XLA_USE_BF16=1", "export NEURON_RT_STOCHASTIC_ROUNDING_EN=1"]
        if step == "train":
            lines += ["# A real run: no graph extraction.", "export NEURON_EXTRACT_GRAPHS_ONLY=0"]
        return lines

    def _rendezvous(self) -> List[str]:
        return [
            "",
            "# Rendezvous on the allocation's first node, by the address slurmd listens on (names may not resolve).",
            'HEAD_NODE="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)"',
            'HEAD_ADDR="$(scontrol show node "$HEAD_NODE" | sed -n \'s/.*NodeAddr=\\([^ ]*\\).*/\\1/p\')"',
            f"RDZV_PORT=$(({RDZV_BASE_PORT} + SLURM_JOB_ID % 1000))",
        ]

    def _srun(self, nodes: int, resume: bool = False) -> List[List[str]]:
        return [["srun", f"--nodes={nodes}", f"--ntasks={nodes}"] + self._auto_resume(resume), self._container()]

    def _srun_per_node(self) -> List[List[str]]:
        """One task per node: torchrun starts the node's processes itself."""
        srun = ["srun", '--nodes="$SLURM_NNODES"', '--ntasks="$SLURM_NNODES"', "--ntasks-per-node=1",
                "--kill-on-bad-exit=1"]
        return [srun + self._auto_resume(True), self._container()]

    # HyperPod's srun extensions below; plain Slurm rejects them (`unrecognized option`).

    def _auto_resume(self, resume: bool) -> List[str]:
        """HyperPod replaces a faulty node and reruns the step; the trainer resumes from its last checkpoint."""
        return ["--auto-resume=1"] if self.hyperpod and resume and self.backend["auto_resume"] else []

    def _container(self) -> List[str]:
        if not (self.hyperpod and self.container):
            return []
        shared = self.backend["shared_dir"].rstrip("/")
        mounts = self.backend["environment"].get("container_mounts") or f"{shared}:{shared}"
        return [f"--container-image={shlex.quote(self.container)}", f"--container-mounts={shlex.quote(mounts)}"]

    def _torchrun(self) -> List[List[str]]:
        """torchrun on one node: its processes, and the rendezvous that joins the nodes."""
        return [["torchrun", '--nnodes="$SLURM_NNODES"', f"--nproc_per_node={self.plan['launch']['processes_per_node']}"],
                ['--rdzv_id="$SLURM_JOB_ID"', "--rdzv_backend=c10d", '--rdzv_endpoint="$HEAD_ADDR:$RDZV_PORT"']]


def _command(*segments: List[str]) -> str:
    """One command over several lines: each segment (program and its options) on a line of its own."""
    return " \\\n    ".join(" ".join(words) for words in segments if words)
