"""Facts about this machine: the compiler plans local runs for it, and local apply checks it again.

A local CPU plan is made for this machine: its precision (`precision: auto`), memory capacity and
speed come from what this CPU computes natively. Tests pass a fixed `Host` so golden plans do not
depend on the machine that runs them. Light: stdlib only, read from /proc on Linux.
"""
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

# CPU flags (/proc/cpuinfo) of instructions that compute bfloat16 natively. Without them PyTorch
# emulates bf16 matmuls, measured ~100x slower than fp32 on an AVX2 core.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# ATEN_CPU_CAPABILITY values that keep PyTorch's kernels below AVX-512 on any CPU.
CAPABILITIES_WITHOUT_BF16 = ("default", "avx2", "zvector", "vsx")


@dataclass(frozen=True)
class Host:
    cores: int
    capability: str        # the widest vector extension PyTorch uses here: amx, avx512_bf16, avx512, avx2, ...
    native_bf16: bool
    memory_gib: Optional[float]
    cpu_model: str = ""

    def describe(self) -> str:
        return f"{self.cores} cores, {self.capability}" + ("" if self.native_bf16 else " (no native bf16)")


def _cpu_info() -> tuple:
    """(model name, set of flags) of the first processor in /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def _memory_gib() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _capability(flags: set) -> str:
    forced = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    if forced in CAPABILITIES_WITHOUT_BF16:
        return forced
    for flag, name in (("amx_bf16", "amx"), ("avx512_bf16", "avx512_bf16"), ("avx512f", "avx512"),
                       ("avx2", "avx2"), ("bf16", "arm-bf16"), ("asimd", "neon")):
        if flag in flags:
            return name
    return "default"


@lru_cache(maxsize=1)
def detect_host() -> Host:
    model, flags = _cpu_info()
    capability = _capability(flags)
    native = capability not in CAPABILITIES_WITHOUT_BF16 and any(flag in flags for flag in NATIVE_BF16_FLAGS)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Host(cores=cores, capability=capability, native_bf16=native, memory_gib=_memory_gib(), cpu_model=model)
