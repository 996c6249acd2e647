"""The wheel of the tunespec that is running, for jobs that run it elsewhere (the SageMaker source archive).

What the wheel holds is defined once, by pyproject.toml: from a source checkout (an editable install, or
the repository itself) the wheel is built by the project's own build backend; from a regular install it
is the installed distribution's files as its RECORD lists them, packed back into a wheel. Either way
the bytes depend only on the files (fixed timestamps, sorted entries), so the same tunespec gives the
same wheel and the same source archive.
"""
import base64
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Iterable, Tuple

DISTRIBUTION = "tunespec"
# 1980-01-01, the earliest time a zip entry can hold: the wheel's bytes then depend on its files only.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# The installer's bookkeeping in .dist-info, never shipped; RECORD is written anew for the entries packed.
INSTALL_ONLY = ("INSTALLER", "REQUESTED", "direct_url.json", "RECORD")


class WheelError(RuntimeError):
    """tunespec's wheel cannot be built from what is installed."""


def source_checkout() -> Path | None:
    """The project folder when tunespec runs from its source (its pyproject.toml beside the package)."""
    import tunespec

    root = Path(tunespec.__file__).resolve().parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and f'name = "{DISTRIBUTION}"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def tunespec_wheel() -> Tuple[str, bytes]:
    """(file name, bytes) of the running tunespec's wheel."""
    root = source_checkout()
    return build_from_source(root) if root else repack_installed()


def build_from_source(root: Path) -> Tuple[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="tunespec-wheel-") as out:
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
             "-w", out, str(root)],
            capture_output=True, text=True)
        wheels = sorted(Path(out).glob(f"{DISTRIBUTION}-*.whl"))
        if built.returncode != 0 or len(wheels) != 1:
            raise WheelError(f"building tunespec's wheel from {root} failed: {built.stderr.strip()[-2000:]}")
        return wheels[0].name, normalized(wheels[0].read_bytes())


def repack_installed() -> Tuple[str, bytes]:
    distribution = metadata.distribution(DISTRIBUTION)
    files = [f for f in distribution.files or ()
             if not f.parts[0].startswith("..") and "__pycache__" not in f.parts and not _install_only(f.as_posix())]
    if not files:
        raise WheelError("tunespec is installed without a RECORD of its files: reinstall it with pip")
    dist_info = next(f.parts[0] for f in files if f.parts[0].endswith(".dist-info"))
    entries = [(f.as_posix(), Path(str(distribution.locate_file(f))).read_bytes()) for f in files]
    name = f"{dist_info[:-len('.dist-info')]}-py3-none-any.whl"
    return name, zipped(entries, dist_info)


def normalized(wheel: bytes) -> bytes:
    """The wheel's entries re-written sorted with the fixed timestamp (build tools differ on both)."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()
                   if not _install_only(info.filename)]
        dist_info = next(name.split("/")[0] for name, _ in entries if name.split("/")[0].endswith(".dist-info"))
    return zipped(entries, dist_info)


def zipped(entries: Iterable[Tuple[str, bytes]], dist_info: str) -> bytes:
    """A wheel of `entries` plus the RECORD that lists them with their hashes (PEP 376/427)."""
    entries = sorted(entries)
    record_lines = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in entries]
    record = "\n".join(record_lines + [f"{dist_info}/RECORD,,"]) + "\n"
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in [*entries, (f"{dist_info}/RECORD", record.encode())]:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return raw.getvalue()


def _install_only(name: str) -> bool:
    folder, _, file = name.partition("/")
    return folder.endswith(".dist-info") and file in INSTALL_ONLY


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
