"""Specs at git revisions, for `diff`: each revision's tree is unpacked once, so a spec's `extends`
bases, data files and lock are all read as they were at that revision."""
import atexit
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from ..compiler import lock
from ..compiler.errors import SpecError
from ..compiler.spec_loader import load_spec
from ..schema.contract import data_source_kind

SPEC_LINE = re.compile(r"^apiVersion:\s*[\"']?tunespec/v1\b", re.M)
SPEC_SUFFIXES = (".yaml", ".yml")
_TREES: Dict[str, Path] = {}


def git(*args: str, cwd: Optional[Path] = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SpecError(f"`git {' '.join(args)}` failed: {done.stderr.strip()}", ())
    return done.stdout


def toplevel() -> Path:
    return Path(git("rev-parse", "--show-toplevel").strip())


def tree(revision: str) -> Path:
    """The files of `revision`, unpacked into a folder removed when the process ends."""
    if revision not in _TREES:
        folder = Path(tempfile.mkdtemp(prefix="tunespec-rev-"))
        atexit.register(shutil.rmtree, folder, True)
        archive = subprocess.run(["git", "archive", "--format=tar", revision], cwd=toplevel(), capture_output=True)
        if archive.returncode != 0:
            raise SpecError(f"cannot read git revision {revision}: {archive.stderr.decode().strip()}", ())
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
        _TREES[revision] = folder
    return _TREES[revision]


def split_argument(argument: str) -> Optional[Tuple[str, str]]:
    """`REV:path` → (REV, path from the repository root), or None for a path on disk."""
    if Path(argument).exists() or ":" not in argument or argument.startswith(("/", ".")):
        return None
    revision, _, relative = argument.partition(":")
    return revision, relative


def changed_paths(base: str, head: Optional[str]) -> Tuple[Set[str], Dict[str, str]]:
    """Every path that differs between `base` and `head` (the working tree when None), and renames new → old."""
    top = toplevel()
    listing = git("diff", "--name-status", "-M", "-z", base, *([head] if head else []), cwd=top).split("\0")
    changed: Set[str] = set()
    renames: Dict[str, str] = {}
    index = 0
    while index < len(listing) - 1:
        status = listing[index]
        if status.startswith(("R", "C")):
            old, new = listing[index + 1], listing[index + 2]
            changed |= {old, new}
            if status.startswith("R"):
                renames[new] = old
            index += 3
        else:
            changed.add(listing[index + 1])
            index += 2
    if head is None:
        changed |= set(git("ls-files", "--others", "--exclude-standard", "-z", cwd=top).split("\0")) - {""}
    return changed, renames


def spec_files(root: Path, revision: Optional[str], pathspecs: List[str]) -> List[str]:
    """Spec files (YAML starting a `tunespec/v1` document) under `pathspecs` at a revision or in the working tree."""
    top = toplevel()
    if revision:
        names = git("ls-tree", "-r", "-z", "--name-only", revision, "--", *pathspecs, cwd=top).split("\0")
    else:
        names = git("ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *pathspecs, cwd=top).split("\0")
    found = []
    for name in sorted(set(names) - {""}):
        path = root / name
        if name.endswith(SPEC_SUFFIXES) and path.is_file() and SPEC_LINE.search(path.read_text(encoding="utf-8",
                                                                                                 errors="replace")):
            found.append(name)
    return found


def dependencies(root: Path, relative: str) -> Set[str]:
    """Files (and folders) a spec's plan reads, relative to the root: the spec, its bases, local data and
    model files, its lock. A spec that does not load depends on itself only."""
    spec_dir = os.path.dirname(relative)
    found = {relative, os.path.normpath(os.path.join(spec_dir, lock.LOCK_FILE))}
    try:
        loaded = load_spec(root / relative, display=relative)
    except SpecError:
        return found
    found |= {os.path.normpath(position[0]) for position in loaded.positions.values() if position}
    spec = loaded.spec
    named = [source.path for source in (spec.data.train, spec.data.eval) if source is not None]
    named += [spec.model.source] + ([spec.model.architecture] if spec.model.architecture else [])
    found |= {os.path.normpath(os.path.join(spec_dir, path)) for path in named
              if data_source_kind(path) == "local"}
    return found


def touches(changed: Set[str], dependencies_: Set[str]) -> Set[str]:
    return {path for path in changed for dep in dependencies_ if path == dep or path.startswith(dep + "/")}
