"""Plan → the local backend: this machine runs the trainer (runtime/local.py)."""
from .supports import BackendSupport
from .templates import placeholders

# runtime/local.py starts `python -m` or a one-machine torchrun; Trainium needs the Slurm flow's
# neuron_parallel_compile. No trainer trains in fp8 (it would run bf16 under an fp8 plan).
SUPPORTS = BackendSupport(strategies=("none", "ddp", "fsdp", "device_map"), devices=("cpu", "cuda"),
                          precisions=("fp32", "bf16", "fp16"))


def refuse_run_dir_placeholders(plan: dict, backend: dict) -> None:
    """`run_dir` names the run by `{name}` only (compiler/checks.py runs this with the other checks)."""
    placeholders(backend["run_dir"], ("backend", "run_dir"), allowed=("name",))


def compile_local(plan: dict, backend: dict) -> dict:
    """The plan's `backend` section for `type: local`: where the run folder is."""
    refuse_run_dir_placeholders(plan, backend)
    run_dir = backend["run_dir"].format(name=plan["spec"]["name"])
    return {"type": "local", "device": backend["device"], "run_dir": run_dir, "files": {}}
