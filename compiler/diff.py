"""What changes between two plans (and the specs behind them), as rows for a terminal or a PR comment."""
from typing import List, Tuple

Change = Tuple[str, object, object]

# Sections whose changes matter most to a reviewer come first.
SECTION_ORDER = ["devices", "parallel", "batch", "estimates", "method", "model", "trainer", "data", "launch",
                 "backend", "outputs", "tracking", "secrets", "warnings", "spec"]
SKIPPED = {("backend", "files")}  # rendered text, compared as whole files below


def flatten(value: object, prefix: Tuple = ()) -> dict:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            if prefix + (key,) in SKIPPED:
                continue
            flat.update(flatten(item, prefix + (key,)))
        return flat or {prefix: {}}
    return {prefix: value}


def changes(old: dict, new: dict) -> List[Change]:
    a, b = flatten(old), flatten(new)
    rows = [(".".join(map(str, k)), a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)]

    def order(row: Change):
        top = row[0].split(".")[0]
        return (SECTION_ORDER.index(top) if top in SECTION_ORDER else len(SECTION_ORDER), row[0])

    return sorted(rows, key=order)


def changed_files(old_files: dict, new_files: dict) -> List[Tuple[str, str]]:
    names = sorted(set(old_files) | set(new_files))
    return [(n, "added" if n not in old_files else "removed" if n not in new_files else "changed")
            for n in names if old_files.get(n) != new_files.get(n)]


def show(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10000:
        return f"{value:,}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def markdown(title: str, spec_changes: List[Change], plan_changes: List[Change], files: list) -> str:
    lines = [f"### {title}", ""]
    if not spec_changes and not plan_changes:
        return "\n".join(lines + ["No changes.", ""])
    for heading, rows in (("Plan", plan_changes), ("Spec", spec_changes)):
        if rows:
            lines += [f"**{heading}** ({len(rows)} changed)", "", "| field | old | new |", "|---|---|---|"]
            lines += [f"| `{k}` | {show(o).replace('|', '/')} | {show(n).replace('|', '/')} |" for k, o, n in rows]
            lines.append("")
    if files:
        lines += ["**Plan files**", ""] + [f"- `{name}` {state}" for name, state in files] + [""]
    return "\n".join(lines)
