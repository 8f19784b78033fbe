"""The human report: a table of checks, then each check's measurements, diagnosis and fix."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from onboard.harness.result import CheckResult, Measurement, RunReport, Status, Verdict

STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "red", Status.ERROR: "magenta", Status.SKIP: "dim"}
VERDICT_STYLE = {Verdict.READY: "bold green", Verdict.READY_WITH_FIXES: "bold yellow", Verdict.NOT_READY: "bold red",
                 Verdict.INCONCLUSIVE: "bold magenta"}


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


def check_line(result: CheckResult) -> Text:
    """One line while a check finishes, for progress."""
    line = Text(f"{result.code} {result.name:<13}", style="bold")
    line.append_text(status_text(result))
    line.append(f"  {result.message}  ({result.duration_s:.1f} s)", style="default")
    return line


def render(report: RunReport, console: Console) -> None:
    model = report.model
    table = Table(title=f"onboard check {model['id']}  ({model['class']}, {model['dtype']}, {model['device']})")
    table.add_column("code")
    table.add_column("check")
    table.add_column("status")
    table.add_column("message", overflow="fold")
    for r in report.checks:
        table.add_row(r.code, r.name, status_text(r), r.message)
    console.print(table)
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
    verdict = report.verdict
    console.print(Text(f"verdict: {verdict.value}", style=VERDICT_STYLE[verdict]), end="")
    if report.verified_patches:
        console.print(Text(f"   patches for training: {', '.join(report.verified_patches)}"), end="")
    console.print(Text(f"   ({report.duration_s:.1f} s)", style="dim"))


def render_short(report: RunReport, console: Console) -> None:
    """--quiet: one line per finding (a check that did not pass, and how it ended), then the verdict."""
    for r in report.checks:
        if r.status in (Status.PASS, Status.SKIP) and r.fix is None:
            continue
        line = Text(f"{r.code} {r.name} ", style="bold")
        line.append_text(status_text(r))
        line.append(f"  {r.diagnosis + ': ' if r.diagnosis else ''}{r.message}")
        if r.fix is not None:
            line.append(f"  [{'fallback ' if r.fix.fallback else ''}{r.fix.patch_id}]", style="dim")
        console.print(line)
    verdict = report.verdict
    console.print(Text(f"verdict: {verdict.value}", style=VERDICT_STYLE[verdict]), end="")
    if report.verified_patches:
        console.print(Text(f"   patches for training: {', '.join(report.verified_patches)}"), end="")
    console.print(Text(f"   ({report.duration_s:.1f} s)", style="dim"))


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
