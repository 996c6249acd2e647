"""Fetch Axolotl 0.19 and the packages its training path imports that the GPU image lacks, as wheels for
Python 3.12 / x86-64, into .whl-axolotl/ (git-ignored), for packed_apply.py's `axolotl` case. Run once, on this
machine, from the repository root:

    python3 benchmarks/gpu/axolotl_wheels.py

The list was found by running `python -m axolotl.cli.train` on a CPU with Axolotl installed --no-deps and adding
each missing module's package until training ran (the rest of the import chain is on the image or in .whl/:
pydantic, dill, multiprocess, liger-kernel). Axolotl's own pins are kept where it pins (trl, peft, datasets: its
code imports trl.experimental.prm, gone from tunespec's trl 1.16); transformers, accelerate and torch stay the
image's, as for tunespec. bitsandbytes is here because Axolotl imports it unconditionally (loaders/model.py).

Three wheels exceed what the carried tree (64 MiB in all) leaves room for, so they are rewritten, same version,
same name, valid RECORD, installed by pip as any wheel:
  llvmlite     (numba's compiler, 60 MB): recompressed with LZMA, contents unchanged (about 40 MB)
  wandb        (imported at Axolotl's import, never started here): without wandb/bin/, the service binaries
               a run starts only when it logs to W&B
  bitsandbytes: the CUDA 13.0 and CPU libraries only (the image's torch is built for CUDA 13.0)
Every other wheel is rewritten with LZMA as well (contents unchanged), which saves a few more MB.
"""
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / ".whl-axolotl"
WHEELS = [
    "axolotl==0.19.0",
    # imported on the way to training (cli, config, telemetry, data, samplers, trainer builder)
    "addict==2.4.0", "fire==0.7.1", "termcolor==3.3.0", "colorama==0.4.6", "fastcore==2.2.41",
    "posthog==6.7.11", "backoff==2.2.1", "distro==1.9.0", "evaluate==0.4.1",
    "numba==0.68.1", "llvmlite==0.50.0",  # numba 0.68 is the first that accepts the image's NumPy 2.5
    "wandb==0.27.2", "platformdirs==4.14.9",  # the newest wandb whose import needs no OpenTelemetry; protobuf 4-7
    "trl==1.9.0", "peft==0.20.0", "datasets==4.8.4",  # Axolotl 0.19's pins
    "bitsandbytes==0.50.2",
]
SOURCE_ONLY = ["axolotl-contribs-lgpl==0.0.7", "axolotl-contribs-mit==0.0.6"]  # sdists on PyPI: built here
PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
            *[arg for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                              "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any") for arg in ("--platform", tag)]]
LEFT_OUT = {
    "wandb": lambda name: name.startswith("wandb/bin/"),
    "bitsandbytes": lambda name: name.startswith("bitsandbytes/libbitsandbytes_")
    and name.rsplit("/", 1)[1] not in ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so"),
}


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def present(requirement: str) -> bool:
    """Whether an earlier run left this pinned wheel here (pip would fetch it again: a rewritten one differs)."""
    name, version = requirement.split("==")
    return any(TARGET.glob(f"{name.replace('-', '_')}-{version}-*.whl"))


def rewritten(wheel: Path) -> None:
    """The wheel again with LZMA compression, less the files LEFT_OUT names for its project (RECORD to match)."""
    project = wheel.name.split("-", 1)[0].lower()
    leave_out = LEFT_OUT.get(project, lambda name: False)
    packed = wheel.with_suffix(".lzma")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_LZMA) as target:
        for entry in source.infolist():
            if leave_out(entry.filename):
                continue
            data = source.read(entry)
            if entry.filename.endswith(".dist-info/RECORD"):
                kept = [line for line in data.decode().splitlines() if not leave_out(line.split(",", 1)[0])]
                data = ("\n".join(kept) + "\n").encode()
            entry.compress_type = zipfile.ZIP_LZMA
            target.writestr(entry, data)
    packed.replace(wheel)


def main() -> int:
    TARGET.mkdir(exist_ok=True)
    exclude = ROOT / ".git" / "info" / "exclude"
    if "/.whl-axolotl/" not in exclude.read_text().splitlines():
        with exclude.open("a") as handle:
            handle.write("/.whl-axolotl/\n")
    for requirement in [r for r in WHEELS if not present(r)]:
        pip("download", "-q", "--no-deps", *PLATFORM, "-d", str(TARGET), requirement)
    with tempfile.TemporaryDirectory() as sdists:
        for requirement in [r for r in SOURCE_ONLY if not present(r)]:
            pip("download", "-q", "--no-deps", "--no-binary=:all:", "-d", sdists, requirement)
        for sdist in Path(sdists).glob("*.tar.gz"):
            pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(TARGET), str(sdist))
    for wheel in sorted(TARGET.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            if all(entry.compress_type == zipfile.ZIP_LZMA for entry in archive.infolist()):
                continue
        rewritten(wheel)
    sizes = {wheel.name: wheel.stat().st_size for wheel in sorted(TARGET.glob("*.whl"))}
    for name, size in sizes.items():
        print(f"{size / 2**20:8.2f} MiB  {name}")
    print(f"{sum(sizes.values()) / 2**20:8.2f} MiB  in {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
