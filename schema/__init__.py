"""The typed model of a tunespec spec and its published JSON Schema."""
from .spec import API_VERSION, Spec

__all__ = ["API_VERSION", "Spec"]
