"""Files a spec names (specs, bases, config.json, data): regular files only, of bounded size.

A spec is untrusted input: `/dev/zero`, a FIFO or a folder given as a file would hang or crash the
reader, and a huge file would make `plan` run for minutes. Every file tunespec reads at plan time is
checked here first, and refused with a SpecError at the field that names it.
"""
import stat
from pathlib import Path
from typing import Optional

from .errors import SpecError, SpecPath


def _size_text(size: int) -> str:
    return f"{size >> 20} MiB" if size > 1 << 20 else f"{size >> 10} KiB"


def regular_file_size(path: Path, field_path: SpecPath, what: str, file: Optional[str] = None) -> int:
    """The size of `path`, which must be a regular file (symbolic links are followed)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SpecError(f"no such file: {what}" if file is None else "no such file", field_path, file=file) from None
    except OSError as error:
        raise SpecError(f"cannot read {what}: {error.strerror}", field_path, file=file) from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(f"{what} is a folder, not a file", field_path, file=file)
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(f"{what} is not a regular file (a device, pipe or socket)", field_path, file=file,
                        hint="name a file on disk")
    return info.st_size


def read_text(path: Path, field_path: SpecPath, what: str, max_bytes: int, file: Optional[str] = None,
              hint: Optional[str] = None) -> str:
    """The UTF-8 text of a regular file of at most `max_bytes` (a byte-order mark is dropped)."""
    if regular_file_size(path, field_path, what, file) > max_bytes:
        raise SpecError(f"{what} is larger than {_size_text(max_bytes)}", field_path, file=file, hint=hint)
    try:
        # Read at most one byte more than allowed: the file may grow between stat() and here.
        with path.open("rb") as handle:
            content = handle.read(max_bytes + 1)
    except OSError as error:
        raise SpecError(f"cannot read {what}: {error.strerror or error}", field_path, file=file) from None
    if len(content) > max_bytes:
        raise SpecError(f"{what} is larger than {_size_text(max_bytes)}", field_path, file=file, hint=hint)
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = content[:error.start].count(b"\n") + 1
        raise SpecError(f"{what} is not UTF-8 text (byte 0x{content[error.start]:02x} on line {line})",
                        field_path, file=file, hint="save the file as UTF-8") from None

