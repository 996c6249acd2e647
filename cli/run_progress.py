"""Progress of `eval` and `generate` on the terminal: a spinner while the models load, a bar over the
prompts while they answer (on stderr, so the table on stdout stays clean)."""
from contextlib import contextmanager
from typing import Iterator, Optional

from ..runtime.progress_view import ProgressView


@contextmanager
def reporting(console) -> Iterator:
    with ProgressView(console) as view:
        def report(phase: str, done: int, total: Optional[int]) -> None:
            view.begin(phase, total)
            if total is not None:
                view.advance(phase, done, total)

        yield report
        view.finish_all()
