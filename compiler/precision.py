"""The precision a plan trains in: `training.precision` resolved for the devices it runs on.

`auto` picks bf16 only where the device computes it natively and fast (CUDA GPUs with bf16, Trainium,
CPUs with AMX), fp16 on older GPUs, fp32 on other CPUs (AVX512-BF16 without AMX included: native, but
slower than fp32 there). An explicit bf16 on a local CPU
that only emulates it is kept (with a located warning; `apply` refuses it unless
`training.allow_emulated_bf16` insists), since it trains many times slower than fp32 there.
"""
from . import instances

# CPUs on which bf16 training beats fp32: AMX's tile matmuls. AVX512-BF16 alone computes bf16 natively
# (no emulation) but measured slower than fp32 (2-core Sapphire Rapids VM without AMX, torch 2.13).
FASTER_BF16_CAPABILITIES = ("amx",)


def resolve_precision(requested: str, allow_emulated_bf16: bool, devices: dict) -> dict:
    """plan["precision"] without the k-bit upcast (compiler/layout.py adds it): training.precision
    (`requested`) resolved for the devices, and why."""
    resolved, reason = requested, None
    if requested == "auto":
        resolved, reason = _auto(devices)
    return {"requested": requested, "resolved": resolved, "reason": reason,
            "allow_emulated_bf16": allow_emulated_bf16}


def _auto(devices: dict) -> tuple:
    kind = devices["kind"]
    if kind == "trainium":
        return "bf16", "Trainium computes bf16 natively"
    if kind == "cuda":
        hardware = instances.lookup_instance(devices["hardware"], ("backend",))
        gpu = hardware.get("accelerator_name") or hardware["accelerator"]
        if hardware.get("supports_bf16"):
            return "bf16", f"{gpu} computes bf16 natively"
        return "fp16", f"{gpu} has no bf16: fp16 mixed precision"
    cpu = devices.get("cpu")
    if cpu is None:
        return "fp32", "the nodes' CPUs are not known when planning: fp32 runs at full speed on any of them"
    if cpu["capability"] in FASTER_BF16_CAPABILITIES:
        return "bf16", f"this CPU ({cpu['capability']}) computes bf16 natively, faster than fp32"
    if cpu["native_bf16"]:
        return "fp32", (f"this CPU ({cpu['capability']}) computes bf16 natively but without AMX, slower than fp32 "
                        "(measured: oneDNN bf16 matmuls at 0.4-0.9x of fp32 on AVX512-BF16)")
    return "fp32", f"this CPU ({cpu['capability']}) has no native bf16 (AVX512-BF16/AMX): fp32 is faster"


def emulated_bf16(plan: dict) -> bool:
    """Whether the plan trains in bf16 on a local CPU that only emulates it."""
    cpu = plan["devices"].get("cpu")
    return bool(cpu) and plan["precision"]["resolved"] == "bf16" and not cpu["native_bf16"]
