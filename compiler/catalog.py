"""The model and hardware catalogs (package data under catalog/), loaded once; near-miss hints for unknown names."""
import difflib
import functools
from importlib import resources
from typing import Iterable, Optional

import yaml


@functools.lru_cache(maxsize=None)
def load_models() -> dict:
    return _load_yaml("models.yaml")


@functools.lru_cache(maxsize=None)
def load_hardware() -> dict:
    return _load_yaml("hardware.yaml")


def _load_yaml(name: str) -> dict:
    text = resources.files("tunespec.compiler").joinpath("catalog", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def did_you_mean(name: str, choices: Iterable[str]) -> Optional[str]:
    choices = list(choices)
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)
    if not close:
        return None
    return "did you mean " + " or ".join(f"`{by_lower[c]}`" for c in close) + "?"
