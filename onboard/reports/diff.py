"""Two matrices side by side: what changed per architecture and check between an old and a new set of runs
(two transformers releases, or two onboard versions). The gate a team runs before upgrading."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from html import escape

from onboard.reports import html as html_report
from onboard.reports.matrix import Row, cell_text, check_codes

# better outcomes first: a move down this list is a regression
RANK = ["READY", "READY_WITH_FIXES", "NOT_APPLICABLE", "INCONCLUSIVE", "NEEDS_DEPENDENCY", "BUILD_ERROR", "TIMEOUT", "CRASH", "NOT_READY"]


@dataclass
class Change:
    name: str
    old: str | None  # outcome in the old runs; None: the architecture is new
    new: str | None  # None: the architecture is gone
    cells: dict[str, tuple[str, str]] = field(default_factory=dict)  # check code -> (old cell, new cell)
    old_reason: str = ""
    new_reason: str = ""

    @property
    def regression(self) -> bool:
        if self.old is None or self.new is None:
            return False
        return _rank(self.new) > _rank(self.old)

    @property
    def kind(self) -> str:
        if self.old is None:
            return "added"
        if self.new is None:
            return "removed"
        if self.old != self.new:
            return "regressed" if self.regression else "improved" if _rank(self.new) < _rank(self.old) else "changed"
        return "checks changed"


def _rank(outcome: str) -> int:
    return RANK.index(outcome) if outcome in RANK else len(RANK)


def versions(rows: list[Row]) -> str:
    env = next((r.report.environment for r in rows if r.report), {})
    return ", ".join(f"{k} {env[k]}" for k in ("onboard", "transformers", "torch", "peft") if env.get(k))


def diff(old: list[Row], new: list[Row]) -> list[Change]:
    """Every architecture whose outcome or any check's cell differs, in name order."""
    before, after = {r.name: r for r in old}, {r.name: r for r in new}
    codes = check_codes(old + new)
    changes = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        change = Change(name, a.outcome if a else None, b.outcome if b else None,
                        old_reason=a.reason if a else "", new_reason=b.reason if b else "")
        if a and b:
            ca = {c.code: c for c in a.report.checks} if a.report else {}
            cb = {c.code: c for c in b.report.checks} if b.report else {}
            for code in codes:
                x, y = cell_text(ca.get(code)), cell_text(cb.get(code))
                if x != y:
                    change.cells[code] = (x or "—", y or "—")
            if a.outcome == b.outcome and not change.cells and (a.report or b.report or a.reason == b.reason):
                continue
        changes.append(change)
    return changes


def render_markdown(old: list[Row], new: list[Row], old_label: str, new_label: str) -> str:
    changes = diff(old, new)
    counts_old, counts_new = Counter(r.outcome for r in old), Counter(r.outcome for r in new)
    kinds = Counter(c.kind for c in changes)
    lines = [f"## onboard: {old_label} → {new_label}", "",
             f"- old: {len(old)} runs ({versions(old) or 'versions unknown'})",
             f"- new: {len(new)} runs ({versions(new) or 'versions unknown'})",
             "- " + (", ".join(f"{k} **{v}**" for k, v in kinds.most_common()) or "no change"), "",
             "| outcome | old | new |", "|---|---|---|"]
    for outcome in sorted(set(counts_old) | set(counts_new), key=_rank):
        lines.append(f"| {outcome} | {counts_old.get(outcome, 0)} | {counts_new.get(outcome, 0)} |")
    for kind in ("regressed", "improved", "changed", "checks changed", "added", "removed"):
        group = [c for c in changes if c.kind == kind]
        if not group:
            continue
        lines += ["", f"### {kind} ({len(group)})", "", "| architecture | old | new | what changed |", "|---|---|---|---|"]
        for c in group:
            what = "; ".join(f"{code}: {x} → {y}" for code, (x, y) in c.cells.items())
            if not what:
                what = c.new_reason if c.new else c.old_reason
            lines.append(f"| {c.name} | {c.old or '—'} | {c.new or '—'} | {_cell(what)} |")
    return "\n".join(lines) + "\n"


def render_html(old: list[Row], new: list[Row], old_label: str, new_label: str) -> str:
    changes = diff(old, new)
    body = [f"<h1>onboard: {escape(old_label)} → {escape(new_label)}</h1>",
            f"<p class=meta>old: {escape(versions(old))}<br>new: {escape(versions(new))}</p>"]
    for kind in ("regressed", "improved", "changed", "checks changed", "added", "removed"):
        group = [c for c in changes if c.kind == kind]
        if not group:
            continue
        rows = "".join(
            f"<tr><td>{escape(c.name)}</td><td>{escape(c.old or '—')}</td><td>{escape(c.new or '—')}</td><td>"
            + escape("; ".join(f"{code}: {x} → {y}" for code, (x, y) in c.cells.items())
                     or (c.new_reason if c.new else c.old_reason)) + "</td></tr>" for c in group)
        body.append(f"<h2>{escape(kind)} ({len(group)})</h2><table class=matrix><tr><th>architecture</th><th>old</th>"
                    f"<th>new</th><th>what changed</th></tr>{rows}</table>")
    if not changes:
        body.append("<p>No architecture changed.</p>")
    return html_report.page(f"onboard diff: {old_label} → {new_label}", "".join(body))


def _cell(text: str) -> str:
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= 300 else text[:299] + "…"
