import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite golden files from the current output instead of comparing")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden") or os.environ.get("TUNESPEC_UPDATE_GOLDEN") == "1"


@pytest.fixture
def repo_cwd(monkeypatch) -> Path:
    """Plans write local paths relative to the current directory: golden plans are made from the root."""
    monkeypatch.chdir(REPO)
    return REPO
