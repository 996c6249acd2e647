"""Every broken spec in tests/broken_specs/ gets one clear, located error from the real CLI.

Each file there is a complete spec with exactly one problem. `expected.yaml` says, per file, the line
the error points at, the field it names, and substrings of its message and hint. Files under `files/`
are what the specs point to (bad config.json files, data files, a .env file).

Every refusal: exit 2, one located error, no traceback, no secret echoed, and under 2 s of the
command's own CPU time (hostile specs once made it run for minutes; CPU time, not wall-clock, so a
busy machine does not fail the test).
"""
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

CORPUS = REPO / "tests" / "broken_specs"
SPECS = sorted(CORPUS.glob("[0-9]*-*.yaml"))
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
# FILE:LINE:COLUMN: error: FIELD: MESSAGE   (FILE: error: ... for problems with the file as a whole)
ERROR_LINE = re.compile(r"^(?P<file>.+?)(?::(?P<line>\d+):(?P<column>\d+))?: error: (?P<field>\S+): (?P<message>.+)$")
# The secrets the corpus writes (in specs and in the files they name); none may be printed back.
SECRET_FIXTURES = re.compile(r"ThisIsNotARealToken|NotARealKey|NotARealToken|wJalrXUtnFEMI|hunter2pass|"
                             r"Zx8Kq2Lm9Vb4Tr7Wp3Nd6Hs1Yf5|3f13ebcc58a8a718f8ba0073a9dd94bd278aa4b1")
MAX_CPU_SECONDS = 2.0


def validate(spec: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunespec.cli.main", "validate", spec], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check_refusal(spec: str, expected: dict) -> None:
    before = children_cpu_seconds()
    done = validate(spec)
    cpu_seconds = children_cpu_seconds() - before
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == 2, output
    assert not SECRET_FIXTURES.search(output), f"a secret is printed back: {output}"
    assert cpu_seconds < MAX_CPU_SECONDS, f"{cpu_seconds:.1f} s of CPU time"
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, done.stderr
    match = ERROR_LINE.match(errors[0])
    assert match, f"not FILE:LINE:COLUMN: error: FIELD: MESSAGE: {errors[0]!r}"
    assert match["file"] == spec, errors[0]
    if expected["line"] is None:
        assert match["line"] is None, errors[0]
    else:
        assert match["line"] is not None and match["column"] is not None, f"no line:column in {errors[0]!r}"
        assert int(match["line"]) == expected["line"], errors[0]
    assert match["field"] == expected["field"], errors[0]
    assert expected["message"] in match["message"], errors[0]
    if "hint" in expected:
        hints = [line.strip()[len("hint: "):] for line in done.stderr.splitlines() if line.strip().startswith("hint:")]
        assert hints and expected["hint"] in hints[0], done.stderr


def test_corpus_is_large_and_fully_described():
    assert len(SPECS) >= 40
    assert sorted(EXPECTED) == [spec.name for spec in SPECS]


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
def test_broken_spec_is_refused_with_one_located_error(spec: Path):
    check_refusal(str(spec.relative_to(REPO)), EXPECTED[spec.name])


def test_oversized_file_is_refused_before_parsing(tmp_path):
    # A spec with a megabyte of padding: generated here rather than committed.
    base = (CORPUS / "01-typo-top-level-key.yaml").read_text(encoding="utf-8").replace("trainig:", "training:")
    big = tmp_path / "oversized.yaml"
    big.write_text(base + ("# " + "x" * 1022 + "\n") * 1100, encoding="utf-8")
    assert big.stat().st_size > 1 << 20
    check_refusal(str(big), {"line": None, "field": "(spec)", "message": "the file is larger than 1024 KiB",
                             "hint": "keep data out of it"})


def test_missing_file_is_refused():
    check_refusal("tests/broken_specs/no-such-spec.yaml", {"line": None, "field": "(spec)", "message": "no such file"})
