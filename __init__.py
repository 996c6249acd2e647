"""tunespec: one YAML spec per fine-tune, compiled into a reviewable plan."""
from .schema.contract import VERSION as __version__

__all__ = ["__version__"]
