"""What changes between two specs and their plans, in the order a reviewer reads it.

First the spec keys that changed (old → new, with the line that sets them), then the estimates that
decide whether the run is worth it (verdict, memory per device, tokens/s, time, cost, GPU-hours) with
deltas, the budget, the lock; last every changed plan leaf. Values are shown as YAML/JSON, whole.
"""
import json
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from . import budget, lock

Change = Tuple[str, object, object]
SKIPPED = {("backend", "files")}  # rendered text, compared as whole files below
# Sections whose changes matter most to a reviewer come first in the plan-leaf table.
SECTION_ORDER = ["devices", "parallel", "batch", "estimates", "method", "model", "trainer", "data", "launch",
                 "backend", "outputs", "tracking", "secrets", "warnings", "tuning", "spec"]


@dataclass
class SpecChange:
    key: str
    old: object
    new: object
    where: Optional[str]  # file:line of the key (the new file's, or the old one's for a removed key)


@dataclass
class Headline:
    label: str
    old: Optional[str]
    new: Optional[str]
    change: str = ""


@dataclass
class Side:
    """One side of a diff: the spec as loaded, its plan, its lock entry and check, or why it failed."""
    name: Optional[str] = None  # as shown (path, or REV:path); None: the spec does not exist on this side
    data: Optional[dict] = None  # merged YAML as written (after `extends`)
    positions: dict = field(default_factory=dict)
    plan: Optional[dict] = None
    files: dict = field(default_factory=dict)
    lock_entry: Optional[dict] = None
    lock_check: Optional[lock.LockCheck] = None
    error: Optional[str] = None


@dataclass
class SpecDiff:
    old: Side
    new: Side
    reason: str = ""  # why this spec is in the diff: renamed, deleted, a base it extends changed...
    spec: List[SpecChange] = field(default_factory=list)
    headline: List[Headline] = field(default_factory=list)
    budget: List[Headline] = field(default_factory=list)
    lock: List[Change] = field(default_factory=list)
    plan: List[Change] = field(default_factory=list)
    files: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def title(self) -> str:
        return self.new.name or self.old.name or "?"

    @property
    def changed(self) -> bool:
        return bool(self.spec or self.plan or self.files or self.lock or _path(self.old.name) != _path(self.new.name)
                    or self.new.error or (self.new.lock_check and self.new.lock_check.drift))


def _path(name: Optional[str]) -> Optional[str]:
    """The spec's path without a `REV:` prefix: the same file at a git ref and in the tree is no rename."""
    return name.split(":", 1)[1] if name and ":" in name else name


# ---- comparing ------------------------------------------------------------------------------------

def flatten(value: object, prefix: Tuple = (), skipped=frozenset()) -> dict:
    """Leaves by path; lists of mappings are entered (`suggestions.0.message`), lists of scalars are leaves."""
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            if prefix + (key,) not in skipped:
                flat.update(flatten(item, prefix + (key,), skipped))
        return flat or {prefix: {}}
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        flat = {}
        for index, item in enumerate(value):
            flat.update(flatten(item, prefix + (index,), skipped))
        return flat
    return {prefix: value}


def _rows(old: Optional[dict], new: Optional[dict], skipped=frozenset()) -> List[Tuple[tuple, object, object]]:
    a, b = flatten(old or {}, skipped=skipped), flatten(new or {}, skipped=skipped)
    return [(k, a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)]


def dotted(path: tuple) -> str:
    return ".".join(map(str, path))


def changes(old: Optional[dict], new: Optional[dict]) -> List[Change]:
    """Changed plan leaves, the sections a reviewer weighs first."""
    def order(row):
        top = str(row[0][0]) if row[0] else ""
        return (SECTION_ORDER.index(top) if top in SECTION_ORDER else len(SECTION_ORDER), dotted(row[0]))

    return [(dotted(k), o, n) for k, o, n in sorted(_rows(old, new, SKIPPED), key=order) if k[:1] != ("spec",)]


def spec_changes(old: Side, new: Side) -> List[SpecChange]:
    """Changed keys of the specs as written (after `extends`), in file order, with where each is set."""
    rows = []
    for path, was, now in _rows(old.data, new.data):
        position = new.positions.get(path) if now is not None else old.positions.get(path)
        where = f"{position[0]}:{position[1]}" + (" (old)" if now is None else "") if position else None
        rows.append((position or ("", 0, 0), SpecChange(dotted(path), was, now, where)))
    return [row for _, row in sorted(rows, key=lambda item: (item[0][0] != (new.name or ""), item[0][:2],
                                                             item[1].key))]


def changed_files(old_files: dict, new_files: dict) -> List[Tuple[str, str]]:
    names = sorted(set(old_files) | set(new_files))
    return [(n, "added" if n not in old_files else "removed" if n not in new_files else "changed")
            for n in names if old_files.get(n) != new_files.get(n)]


def _get(plan: Optional[dict], *path: str) -> object:
    value = plan
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _gpu_hours(plan: Optional[dict]) -> Optional[float]:
    total_s = _get(plan, "estimates", "time", "total_s")
    return None if plan is None or total_s is None else total_s / 3600 * budget.accelerators(plan["devices"])


def _hours(plan: Optional[dict]) -> Optional[float]:
    total_s = _get(plan, "estimates", "time", "total_s")
    return None if total_s is None else total_s / 3600


# (label, value of a plan, how it reads, how a difference reads)
MEASURES: List[Tuple[str, Callable, Callable, Callable]] = [
    ("memory per device", lambda p: _get(p, "estimates", "memory", "total_gib"),
     lambda v: f"{v:,.1f} GiB", lambda d: f"{d:+,.1f} GiB"),
    ("tokens/s", lambda p: _get(p, "estimates", "throughput", "tokens_per_s_total"),
     lambda v: f"{v:,.0f}", lambda d: f"{d:+,.0f}"),
    ("time", _hours, lambda v: f"{v:,.2f} h", lambda d: f"{d:+,.2f} h"),
    ("cost", lambda p: _get(p, "estimates", "cost", "usd"),
     lambda v: f"${v:,.2f}", lambda d: ("+" if d >= 0 else "-") + f"${abs(d):,.2f}"),
    ("GPU-hours", _gpu_hours, lambda v: f"{v:,.2f}", lambda d: f"{d:+,.2f}"),
]


def headline(old: Optional[dict], new: Optional[dict]) -> List[Headline]:
    """Verdict and the estimates, old → new with the difference and its percentage."""
    rows = [Headline("verdict", _get(old, "estimates", "memory", "verdict"), _get(new, "estimates", "memory", "verdict"))]
    capacity = _get(new, "estimates", "memory", "capacity_gib") or _get(old, "estimates", "memory", "capacity_gib")
    for label, value, shown, delta in MEASURES:
        was, now = value(old), value(new)
        if was is None and now is None:
            continue
        change = ""
        if was is not None and now is not None and shown(was) != shown(now):
            percent = (now - was) / was * 100 if was else None
            change = delta(now - was) + ("" if percent is None else
                                         f" ({percent:+.1f}%)" if abs(percent) < 10 else f" ({percent:+.0f}%)")
        if label == "memory per device" and capacity:
            label += f" (of {capacity:g} GiB)"
        rows.append(Headline(label, shown(was) if was is not None else None, shown(now) if now is not None else None,
                             change))
    return rows


def budget_rows(old: Optional[dict], new: Optional[dict]) -> List[Headline]:
    """Each limit of either side's budget: its use on each side; `over budget` where exceeded."""
    rows = []
    statuses = (_get(old, "estimates", "budget"), _get(new, "estimates", "budget"))
    for limit, _, _ in budget.LIMITS:
        shown = [budget.describe(s, limit) + (" — over budget" if limit in s["exceeded"] else "")
                 if s and limit in s else None for s in statuses]
        if any(shown):
            rows.append(Headline(limit, shown[0], shown[1]))
    return rows


def compare(old: Side, new: Side, reason: str = "") -> SpecDiff:
    result = SpecDiff(old=old, new=new, reason=reason)
    if old.name is not None and new.name is not None:  # a new or deleted spec is all change: its estimates say it
        result.spec = spec_changes(old, new)
    if old.plan is not None or new.plan is not None:
        result.headline = headline(old.plan, new.plan)
        result.budget = budget_rows(old.plan, new.plan)
    if old.plan is not None and new.plan is not None:
        result.plan = changes(old.plan, new.plan)
        result.files = changed_files(old.files, new.files)
    if old.plan is not None and new.plan is not None:  # a spec that failed to plan has no lock entry to compare
        result.lock = [(dotted(k), o, n) for k, o, n in sorted(_rows(old.lock_entry, new.lock_entry),
                                                               key=lambda r: dotted(r[0]))
                       if k and k[-1] not in lock.NOT_COMPARED]
    return result


# ---- values ---------------------------------------------------------------------------------------

def show(value: object) -> str:
    """A value as it would be written in YAML/JSON: whole, never a Python repr."""
    if value is None:
        return "(unset)"
    if isinstance(value, str):
        plain = value and value.strip() == value and "\n" not in value and not value.startswith(("{", "[", '"'))
        return value if plain else json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


def short(value: object) -> str:
    """Lock values: a content hash reads as its first 12 characters."""
    text = show(value)
    return text[:12] if lock.HASH.match(text) else text


# ---- markdown -------------------------------------------------------------------------------------

def _cell(text: Optional[str], code: bool = True) -> str:
    if text is None or text == "":
        return "—"
    text = text.replace("|", "\\|")
    if not code:
        return text
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def status(item: SpecDiff) -> str:
    """Why the spec is listed, beyond its own edits: deleted, new, renamed, changed through a base."""
    old, new = item.old, item.new
    if new.name is None:
        return "deleted"
    if old.name is None:
        return "new spec"
    parts = [f"renamed from `{old.name}`"] if item.reason == "renamed" else []
    if item.reason.startswith("via "):
        parts.append(f"changed through {item.reason[4:]}")
    return "; ".join(parts)


def markdown_section(item: SpecDiff) -> str:
    lines = [f"### `{item.title}`", ""]
    why = status(item)
    if why:
        lines += [f"*{why}*", ""]
    for side, label in ((item.old, "base"), (item.new, "head")):
        if side.error:
            lines += [f"**Invalid spec ({label}):**", "", "```", side.error, "```", ""]
    if not item.changed:
        return "\n".join(lines + ["No changes.", ""])
    if item.spec:
        lines += ["| spec key | old | new | line |", "|---|---|---|---|"]
        lines += [f"| `{row.key}` | {_cell(show(row.old))} | {_cell(show(row.new))} | {_cell(row.where, code=False)} |"
                  for row in item.spec]
        lines.append("")
    if item.headline or item.budget:
        lines += ["| estimate | old | new | change |", "|---|---|---|---|"]
        lines += [f"| {row.label} | {_cell(row.old, False)} | {_cell(row.new, False)} | {_cell(row.change, False)} |"
                  for row in item.headline]
        lines += [f"| budget `{row.label}` | {_cell(row.old, False)} | {_cell(row.new, False)} | |" for row in item.budget]
        lines.append("")
    lines += _lock_markdown(item)
    if item.plan or item.files:
        lines += ["<details>", f"<summary>Plan: {len(item.plan)} fields changed"
                  + (f", {len(item.files)} file{'s' if len(item.files) != 1 else ''}" if item.files else "") + "</summary>", ""]
        if item.plan:
            lines += ["| plan field | old | new |", "|---|---|---|"]
            lines += [f"| `{key}` | {_cell(show(old))} | {_cell(show(new))} |" for key, old, new in item.plan]
            lines.append("")
        if item.files:
            lines += [f"- `{name}` {state}" for name, state in item.files] + [""]
        lines += ["</details>", ""]
    return "\n".join(lines)


def lock_summary(item: SpecDiff) -> List[str]:
    """The lock in a few lines: entries that changed, drift of the head's lock, what was not verifiable."""
    check = item.new.lock_check
    lines = [f"`{key}`: {short(old)} → {short(new)}" for key, old, new in item.lock]
    if check is None:
        return lines
    if check.missing:
        lines.append(f"not locked: {check.missing}")
    lines += [f"**drift**: {line}" for line in check.drift_lines()]
    if check.unverified:
        lines.append("not verifiable here: " + ", ".join(f"`{key}`" for key, _ in check.unverified))
    if not check.missing and not check.drift:
        lines.append(f"head: {len(check.verified)} locked inputs match")
    return lines


def _lock_markdown(item: SpecDiff) -> List[str]:
    lines = lock_summary(item)
    return (["**Lock**", ""] + [f"- {line}" for line in lines] + [""]) if lines else []


def markdown(items: List[SpecDiff], title: str) -> str:
    changed = [item for item in items if item.changed]
    lines = [f"## {title}", ""]
    if not changed:
        return "\n".join(lines + ["No spec's plan changes.", ""])
    lines += [f"{len(changed)} spec{'s' if len(changed) != 1 else ''} changed.", ""]
    return "\n".join(lines + [markdown_section(item) for item in changed])


def as_json(item: SpecDiff) -> dict:
    def side(s: Side) -> dict:
        return {"name": s.name, "error": s.error,
                "lock": None if s.lock_check is None else {
                    "missing": s.lock_check.missing, "drift": [list(d) for d in s.lock_check.drift],
                    "unverified": [list(u) for u in s.lock_check.unverified]}}

    return {"old": side(item.old), "new": side(item.new), "reason": item.reason, "changed": item.changed,
            "spec": [{"key": r.key, "old": r.old, "new": r.new, "where": r.where} for r in item.spec],
            "estimates": [vars(h) for h in item.headline], "budget": [vars(h) for h in item.budget],
            "lock": [list(r) for r in item.lock], "plan": [list(r) for r in item.plan],
            "files": [list(f) for f in item.files]}
