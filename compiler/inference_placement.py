"""Where the model goes when the run answers prompts or merges its adapter (the merge job, the sample
answers, `tunespec generate` and `tunespec eval`): over every device the job has, as the seed's merge
script does (device_map "auto" with offloading), within memory caps decided here, not at run time.

The caps leave room beside the weights: on a GPU for generation's activations and KV cache, in host
memory for the process itself, the tokenizer and the file system cache. What does not fit in them
goes to the offload folder in the run folder.
"""
import math
from typing import Optional

from ..schema.host import Host
from . import instances

GPU_SHARE = 0.9
HOST_SHARE = 0.8
OFFLOAD_FOLDER = "offload"


def _gib(total: float, share: float) -> str:
    return f"{max(1, math.floor(total * share))}GiB"


def _host_memory_gib(devices: dict, backend_type: str, host: Host) -> Optional[float]:
    """RAM of the machine that runs the job: the instance's, else this machine's for a local plan."""
    if devices["kind"] == "cpu" and devices["memory_gib"]:
        return devices["memory_gib"]
    hardware = devices.get("hardware") or devices.get("instance_type")
    if hardware:
        known = instances.lookup_instance(hardware, ("backend",)).get("host_memory_gib")
        if known:
            return known
    return host.memory_gib if backend_type == "local" else None


def inference_section(devices: dict, precision: str, backend_type: str, host: Host) -> dict:
    """The plan's `inference` section: from_pretrained's device_map, max_memory and dtype."""
    max_memory = {}
    if devices["kind"] == "cuda":
        max_memory.update({str(gpu): _gib(devices["memory_gib"], GPU_SHARE) for gpu in range(devices["per_node"])})
    host_memory = _host_memory_gib(devices, backend_type, host)
    if host_memory:
        max_memory["cpu"] = _gib(host_memory, HOST_SHARE)
    # Half precision where a GPU computes; a CPU (Trainium's host included) generates in fp32, where
    # half-precision matmuls are slow.
    dtype = ("bf16" if precision == "fp8" else precision) if devices["kind"] == "cuda" else "fp32"
    return {"device_map": "auto", "max_memory": max_memory or None, "offload_folder": OFFLOAD_FOLDER,
            "dtype": dtype}
