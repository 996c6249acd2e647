"""Terminal output shared by the verbs (rich)."""
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..compiler.errors import SpecError

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_spec_error(error: SpecError) -> None:
    # Plain text: the message must read the same in a CI log as in a terminal.
    print(error.format(), file=sys.stderr)


def print_sections(title: str, sections) -> None:
    """Rows as a table; labels and values are plain text (a spec value may hold `[/]`, not markup)."""
    table = Table(title=Text(title), show_header=False, title_justify="left", expand=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for index, (section, rows) in enumerate(sections):
        if index:
            table.add_section()
        table.add_row(f"[underline]{section}[/]", "")
        for label, value in rows:
            table.add_row(Text(label), Text(value))
    out.print(table)
