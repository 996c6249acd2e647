"""Failures of a backend at run time (not of the spec): reported in one line, exit code 1."""


class BackendError(Exception):
    """A backend command or service failed, or this machine cannot reach the backend."""
