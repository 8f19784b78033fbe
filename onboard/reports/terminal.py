"""The human report. By default short: a line per check as it finishes (with a second line for a finding: its
diagnosis and fix), the counts, the verdict, the patches training applies, what to run next and where the
report files went. With --verbose also the table of checks, each check's measurements, diagnosis and fix, and
the thresholds (`render`); the HTML report has all of it too."""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Iterable

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from onboard.harness.result import CheckResult, Measurement, RunReport, Status, Verdict

STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "red", Status.ERROR: "magenta", Status.SKIP: "dim"}
VERDICT_STYLE = {Verdict.READY: "bold green", Verdict.READY_WITH_FIXES: "bold yellow", Verdict.NOT_READY: "bold red",
                 Verdict.INCONCLUSIVE: "bold magenta", Verdict.NOT_APPLICABLE: "bold blue"}


def status_text(result: CheckResult) -> Text:
    text = Text(result.status.value, style=STYLE[result.status])
    if result.fix is not None:
        verified = result.fix.verified
        label = " → fallback" if verified and result.fix.fallback else " → fixed" if verified else " → not fixed"
        text.append(label, style="green" if verified else "red")
    return text


def format_value(m: Measurement) -> str:
    v = m.value
    if isinstance(v, float):
        v = f"{v:.4g}"
    elif isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10_000:
        v = f"{v:,}"
    return f"{v} {m.unit}".strip()


def measurement_table(ms: dict[str, Measurement]) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 1))
    table.add_column(style="cyan")
    table.add_column()
    table.add_column(style="dim")
    for name, m in ms.items():
        table.add_row(name, format_value(m), m.threshold or "")
    return table


INDENT = 6  # a finding's second line, under the check's code


def _one_line(text: str) -> str:
    return " ".join(text.split())


def check_line(result: CheckResult, n: int | None = None, total: int | None = None) -> Text:
    """One line as a check finishes: n/total, code, name, status (and how its fix ended), seconds, message."""
    line = Text()
    if n is not None and total is not None:
        line.append(f"{n:>{len(str(total))}}/{total} ", style="dim")
    line.append(f"{result.code + ' ' + result.name:<20} ", style="bold")
    line.append_text(status_text(result))
    line.append(f" {result.duration_s:>5.1f}s  ", style="dim")
    if result.ran_on == "slice":
        line.append("slice · ", style="dim")
    line.append(_one_line(result.message))
    return line


def detail_line(result: CheckResult, message: bool = False) -> Text | None:
    """The second line of a check that did not pass, in short: its diagnosis and how its fix ended (or the command
    that explains it); None for one that passed or was skipped. `message`: lead with the check's whole message
    (the check line cut it) where the finding is not fixed: that message is why the model is not ready."""
    if result.status in (Status.PASS, Status.SKIP) and result.fix is None:
        return None
    parts = [result.diagnosis] if result.diagnosis else []
    if message and not result.fixed:
        parts = [f"{result.diagnosis}: {_one_line(result.message)}" if result.diagnosis else _one_line(result.message)]
    f = result.fix
    if f is not None:
        parts += [f"{t['patch_id']} not verified" for t in f.tried]
        kind = "fallback" if f.fallback else "fix"
        if not f.applied:
            parts.append(f"{kind} {f.patch_id} could not be applied: {f.error}")
        elif f.verified:
            parts.append(f"{kind} {f.patch_id} verified" + (f"; cost {f.cost}" if f.cost else ""))
        else:
            parts.append(f"{kind} {f.patch_id} NOT verified: {f.message_after or f.error or ''}".rstrip(": "))
    elif result.proposed_patch or result.fallback_patch:
        why = result.evidence.get("unapplied_fix")
        parts.append(f"proposed fix {result.proposed_patch or result.fallback_patch}, not applied"
                     + (f": {why}" if isinstance(why, str) else ""))
    if not result.fixed:
        parts.append(f"onboard explain {result.code}")
    return Text(_one_line("; ".join(parts)), style="green" if result.fixed else STYLE[result.status])


def _print(console: Console, text: Text, cut: bool) -> None:
    """One line: cut to the console's width (an ellipsis at the end), or whole where the output is not a
    terminal of known width (piped without COLUMNS: CI logs keep every word)."""
    if cut:
        console.print(text, no_wrap=True, overflow="ellipsis", crop=True)
    else:
        console.print(text, soft_wrap=True)


def print_check(console: Console, result: CheckResult, n: int | None = None, total: int | None = None, *,
                details: bool = True, cut: bool = True) -> None:
    """A finished check: its line, and for a finding the second line, indented. A fixed finding's fits one line
    (cut); one not fixed is given whole, wrapped under the check (its message is the reason it is not ready)."""
    _print(console, check_line(result, n, total), cut)
    detail = detail_line(result, message=cut) if details else None
    if detail is None:
        return
    if cut and not result.fixed:
        for line in detail.wrap(console, max(console.width - INDENT, 20)):
            line.rstrip()
            console.print(Text(" " * INDENT) + line, no_wrap=True, crop=True)
    else:
        _print(console, Text(" " * INDENT) + detail, cut)



class Progress:
    """A check run as it goes, for `onboard check` and `onboard train`: a renderable for the spinner (which check,
    n of the total, seconds since the checks began: redrawn on each refresh) and `start`/`done` for run_checks's
    on_start/on_result. `lines`: print each check's line as it finishes; `details`: and a finding's second line."""

    def __init__(self, checks: Iterable[type], console: Console, *, lines: bool = True, details: bool = True,
                 cut: bool = True) -> None:
        self.position = {c.code: i for i, c in enumerate(checks, 1)}
        self.total = len(self.position)
        self.console, self.lines, self.details, self.cut = console, lines, details, cut
        self.current = None
        self.began = time.perf_counter()

    def __rich__(self) -> Text:
        elapsed = time.perf_counter() - self.began
        c = self.current
        if c is None:
            return Text(f"Running checks ({elapsed:.0f} s)")
        return Text(f"Running {c.code} {c.name} ({self.position.get(c.code, '?')}/{self.total}, {elapsed:.0f} s)")

    def start(self, check) -> None:
        self.current = check

    def done(self, result: CheckResult) -> None:
        self.current = None
        if self.lines:
            print_check(self.console, result, self.position.get(result.code), self.total, details=self.details,
                        cut=self.cut)


def render(report: RunReport, console: Console, *, left_out: dict[str, str] | None = None, cut: bool = True) -> None:
    """--verbose: the table, each check's measurements, diagnosis and fix, the thresholds; then the summary."""
    render_details(report, console)
    render_summary(report, console, left_out=left_out, cut=cut)


def render_details(report: RunReport, console: Console) -> None:
    """The table of checks, a panel per check (measurements, diagnosis, fix, tracebacks), the thresholds."""
    model = report.model
    table = Table(title=f"onboard check {model['id']}  ({model['class']}, {model['dtype']}, {model['device']})")
    table.add_column("code")
    table.add_column("check")
    table.add_column("status")
    table.add_column("ran on")
    table.add_column("message", overflow="fold")
    for r in report.checks:
        table.add_row(r.code, r.name, status_text(r), r.ran_on or "", r.message)
    console.print(table)
    if report.slice_text:
        console.print(Text(report.slice_text, style="dim"))
    for r in report.checks:
        if r.status is Status.SKIP and not r.measurements:
            continue
        parts = [measurement_table(r.measurements)] if r.measurements else []
        if r.diagnosis:
            parts.append(Text(f"diagnosis: {r.diagnosis}  (onboard explain {r.code})", style="bold"))
        if r.fix is not None:
            f = r.fix
            for tried in f.tried:  # the fixes tried first, each re-checked and reverted
                parts.append(Text(f"fix {tried['patch_id']} tried, NOT verified: {tried['why_not']}", style="red"))
            if f.fallback:
                parts.append(Text(f"fallback {f.patch_id}: the optimisation is left off, training stays correct"
                                  + (f" (cost: {f.cost})" if f.cost else ""), style="yellow"))
            if not f.applied:
                parts.append(Text(f"fix {f.patch_id}: could not be applied: {f.error}", style="red"))
            else:
                outcome = "verified" if f.verified else "NOT verified"
                parts.append(Text(f"fix {f.patch_id} applied, re-check {f.status_after.value}: {outcome}",
                                  style="green" if f.verified else "red"))
                parts.append(Text(f"  {f.message_after}"))
                changed = {k: m for k, m in f.measurements_after.items() if r.measurements.get(k) != m}
                if changed:
                    parts.append(measurement_table(changed))
        elif r.proposed_patch:
            parts.append(Text(f"proposed fix: {r.proposed_patch} (not applied)", style="yellow"))
        for heading in ("skipped", "traceback"):
            if heading in r.evidence:
                body = r.evidence[heading]
                parts.append(Text(f"{heading}:\n" + (body if isinstance(body, str) else "\n".join(body)), style="dim"))
        if parts:
            console.print(Panel(Group(*parts), title=f"{r.code} {r.name}", title_align="left",
                                border_style=STYLE[r.status]))
    if report.thresholds:
        console.print(thresholds_line(report))


def render_short(report: RunReport, console: Console, *, left_out: dict[str, str] | None = None,
                 cut: bool = True) -> None:
    """--quiet: one line per finding (a check that did not pass, and how it ended), then the verdict."""
    for r in report.checks:
        if r.status in (Status.PASS, Status.SKIP) and r.fix is None:
            continue
        line = Text(f"{r.code} {r.name} ", style="bold")
        line.append_text(status_text(r))
        line.append(f"  {r.diagnosis + ': ' if r.diagnosis else ''}{_one_line(r.message)}")
        if r.fix is not None:
            line.append(f"  [{'fallback ' if r.fix.fallback else ''}{r.fix.patch_id}]", style="dim")
        _print(console, line, cut)
    _verdict(report, console, left_out or {})


ORDER = (Status.PASS, Status.WARN, Status.FAIL, Status.ERROR, Status.SKIP)


def counts_line(report: RunReport) -> Text:
    """The checks counted by how they ended, naming those that did not pass:
    `11 checks: 7 PASS · 1 FAIL → fixed (PACK001) · 3 SKIP`."""
    groups: dict[tuple[int, str], list[CheckResult]] = {}
    for r in report.checks:
        groups.setdefault((ORDER.index(r.status), status_text(r).plain), []).append(r)
    line = Text(f"{len(report.checks)} checks: ")
    for i, (_, results) in enumerate(sorted(groups.items())):
        r = results[0]
        line.append(" · " if i else "", style="dim")
        line.append(f"{len(results)} ")
        line.append_text(status_text(r))
        if r.status in (Status.WARN, Status.FAIL, Status.ERROR):
            line.append(f" ({', '.join(x.code for x in results)})")
    return line


def training_patches(report: RunReport, left_out: dict[str, str] | None = None) -> list[str]:
    """The verified patches a training run applies: those it leaves out (left_out: id -> why) are not among them."""
    return [p for p in report.verified_patches if p not in (left_out or {})]


def verdict_line(report: RunReport, left_out: dict[str, str] | None = None) -> Text:
    """`verdict: READY_WITH_FIXES · 2 patches for training · 41.3 s`: short enough for 80 columns."""
    verdict = report.verdict
    line = Text(f"verdict: {verdict.value}", style=VERDICT_STYLE[verdict])
    n = len(training_patches(report, left_out))
    needs = next((c.needs for c in report.checks if c.needs), None)
    if needs and verdict is Verdict.NOT_APPLICABLE:
        line.append(f" · needs {needs.split(':')[0]}")
    elif n:
        line.append(f" · {n} patch{'es' if n > 1 else ''} for training")
    line.append(f" · {report.duration_s:.1f} s", style="dim")
    return line


def patches_lines(report: RunReport, left_out: dict[str, str] | None = None) -> list[Text]:
    """The patches training applies, by id; then a line for each verified patch it leaves out (the fused CCE
    loss on the CPU), with why."""
    applies = training_patches(report, left_out)
    out = {k: why for k, why in (left_out or {}).items() if k in report.verified_patches}
    if not applies and not out:
        return []
    line = Text("patches for training: ")
    line.append(", ".join(applies) or "none", style="bold")
    return [line] + [Text(f"  {k} left out: {why}", style="dim") for k, why in out.items()]


def _verdict(report: RunReport, console: Console, left_out: dict[str, str]) -> None:
    console.print(verdict_line(report, left_out), no_wrap=True, overflow="ellipsis", crop=True)
    for line in patches_lines(report, left_out):
        console.print(line)  # wrapped at the width, never cut: every id is one to pass on


def render_summary(report: RunReport, console: Console, *, left_out: dict[str, str] | None = None,
                   cut: bool = True) -> None:
    """After the check lines: the counts, the verdict, the patches training applies (and leaves out)."""
    _print(console, counts_line(report), cut)
    overridden = overrides_line(report)
    if overridden is not None:  # a verdict judged against limits of the user's own is said so with it
        console.print(overridden)
    _verdict(report, console, left_out or {})


def overrides_line(report: RunReport) -> Text | None:
    """The thresholds a config file set (marked * as in the full list), or None when every one is onboard's."""
    set_by_file = {name: t for name, t in report.thresholds.items() if t.get("overridden")}
    if not set_by_file:
        return None
    source = f" from {Path(report.config['path']).name}" if report.config else ""
    return Text(f"thresholds{source}: " + ", ".join(f"{name} {t['value']:g}*" for name, t in set_by_file.items()),
                style="bold")


def next_line(report: RunReport, json_path: str | None = None) -> Text:
    """What to run next: train (from the JSON report when one was written), or what explains the blocking check."""
    model = report.model.get("id", "MODEL")
    blocking = [c for c in report.checks if c.blocking]
    needs = next((c for c in report.checks if c.needs), None)
    if not blocking and needs is not None:  # nothing to train from text: what the model needs is the check's
        return Text(f"next: onboard explain {needs.code} (the text probes do not fit {model})")
    if not blocking:
        source = f" --from {json_path}" if json_path and json_path != "-" else ""
        return Text(f"next: onboard train {model}{source}")
    failed = next((c for c in blocking if c.status is Status.FAIL), blocking[0])
    if failed.status is Status.ERROR:
        return Text(f"next: onboard explain {failed.code}; onboard check {model} -v shows the traceback")
    return Text(f"next: onboard explain {failed.code}")


def render_next(report: RunReport, console: Console, *, json_path: str | None = None,
                files: dict[str, object] | None = None) -> None:
    """The last lines: what to run next, and where the report files went (kind -> path, those given)."""
    # not broken by the console: a command and paths to copy whole (a long one is left to the terminal to wrap)
    console.print(next_line(report, json_path), highlight=False, soft_wrap=True)
    written = {kind: path for kind, path in (files or {}).items() if path and str(path) != "-"}
    if written:
        console.print("reports: " + " · ".join(f"{kind} {path}" for kind, path in written.items()), highlight=False,
                      soft_wrap=True)


def thresholds_line(report: RunReport) -> Text:
    """The thresholds the run judged against, on one line; those a config file set are marked *."""
    line = Text(f"thresholds ({report.model.get('dtype', '')}): ", style="dim")
    for i, (name, t) in enumerate(report.thresholds.items()):
        line.append(", " if i else "", style="dim")
        line.append(f"{name} {t['value']:g}" + ("*" if t.get("overridden") else ""),
                    style="bold" if t.get("overridden") else "dim")
    if any(t.get("overridden") for t in report.thresholds.values()) and report.config:
        line.append(f"   (* from {report.config['path']})", style="dim")
    return line
