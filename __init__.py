"""tunespec: one YAML spec per fine-tune, compiled into a reviewable plan."""
__version__ = "0.1.0"
