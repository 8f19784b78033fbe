"""Many runs as one matrix, architecture × check: Markdown, and a self-contained HTML page whose rows link
to each run's details. Inputs are `onboard check --json` files and `onboard sweep` JSONL files."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from html import escape
from pathlib import Path

from onboard.harness.errors import BadInput
from onboard.harness.result import CheckResult, RunReport, Status
from onboard.reports import html as html_report

OUTCOME_COLOR = {"READY": "#1f883d", "READY_WITH_FIXES": "#8ddb8c", "NOT_READY": "#cf222e", "INCONCLUSIVE": "#a475f9",
                 "BUILD_ERROR": "#8250df",
                 "NEEDS_DEPENDENCY": "#afb8c1", "TIMEOUT": "#d4a72c", "CRASH": "#8250df"}


@dataclass
class Row:
    name: str  # the architecture, or the model id of a single run
    task: str
    outcome: str  # a verdict, or why the checks did not run (BUILD_ERROR, TIMEOUT, ...)
    reason: str
    report: RunReport | None
    source: str  # the file it came from


def load_rows(paths: list[Path]) -> list[Row]:
    rows: list[Row] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"cannot read {path}: {exc.strerror}") from None
        if path.suffix == ".jsonl":  # a sweep: its architectures in name order, not in the order they finished
            sweep = [_sweep_row(_json(line, f"{path}:{number}"), path, number)
                     for number, line in enumerate(text.splitlines(), 1) if line.strip()]
            rows += sorted(sweep, key=lambda r: r.name)
        else:
            rows.append(_run_row(_json(text, str(path)), path))
    if not rows:
        raise BadInput("no runs in " + ", ".join(map(str, paths)))
    return rows


def _json(text: str, where: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{where}: not an onboard report")
    return data


def _report(data: dict, where: str) -> RunReport:
    try:
        return RunReport.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{where}: not an onboard check report ({type(exc).__name__}: {exc})") from None


def _sweep_row(data: dict, path: Path, number: int) -> Row:
    if "arch" not in data or "outcome" not in data:
        raise BadInput(f"{path}:{number}: not an onboard sweep record")
    report = _report(data["report"], f"{path}:{number}") if data.get("report") else None
    return Row(data["arch"], data.get("task", ""), data["outcome"], data.get("reason", ""), report, str(path))


def _run_row(data: dict, path: Path) -> Row:
    report = _report(data, str(path))
    return Row(str(report.model.get("id")), str(report.model.get("model_type", "")), report.verdict.value, report.reason,
               report, str(path))


def check_codes(rows: list[Row]) -> list[str]:
    codes: list[str] = []
    for row in rows:
        for c in row.report.checks if row.report else []:
            if c.code not in codes:
                codes.append(c.code)
    return codes


def cell_text(c: CheckResult | None) -> str:
    if c is None:
        return ""
    if c.fixed:
        return f"fixed: {c.fix.patch_id}"
    if c.status in (Status.FAIL, Status.WARN) and c.diagnosis:
        return f"{c.status.value} {c.diagnosis}"
    return c.status.value


def counts(rows: list[Row]) -> Counter:
    return Counter(r.outcome for r in rows)


def reasons(rows: list[Row]) -> dict[str, list[str]]:
    """Why runs are not ready: each blocking finding (or build problem) -> the runs that have it."""
    why: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if row.outcome in ("READY", "READY_WITH_FIXES"):
            continue
        if row.report is None:
            why[f"{row.outcome}: {row.reason}"].append(row.name)
            continue
        for c in row.report.checks:
            if c.blocking:
                why[f"{c.code} {c.diagnosis or c.status.value}"].append(row.name)
    return dict(sorted(why.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def render_markdown(rows: list[Row]) -> str:
    codes = check_codes(rows)
    total = counts(rows)
    lines = [f"## onboard: {len(rows)} runs", "",
             ", ".join(f"{k} **{v}**" for k, v in total.most_common()), "",
             "| architecture | outcome | " + " | ".join(codes) + " | reason |",
             "|---|---|" + "---|" * len(codes) + "---|"]
    for row in rows:
        checks = {c.code: c for c in row.report.checks} if row.report else {}
        cells = [cell_text(checks.get(code)) or "—" for code in codes]
        reason = row.reason.replace("|", "/").replace("\n", " ")
        lines.append(f"| {row.name} | {row.outcome} | " + " | ".join(cells) + f" | {reason} |")
    why = reasons(rows)
    if why:
        lines += ["", "### Why runs are not ready", ""]
        lines += [f"- {reason.replace('|', '/')}: {len(names)} ({', '.join(names)})" for reason, names in why.items()]
    return "\n".join(lines) + "\n"


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _anchor(name: str) -> str:
    return "run-" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def render_html(rows: list[Row]) -> str:
    codes = check_codes(rows)
    total = counts(rows)
    summary = " ".join(
        f'<span class="badge" style="background:{OUTCOME_COLOR.get(k, "#6e7781")};'
        f'{"color:#24292f" if k in ("READY_WITH_FIXES", "NEEDS_DEPENDENCY", "TIMEOUT") else ""}">{escape(k)} {v}</span>'
        for k, v in total.most_common())
    head = "<tr><th>architecture</th><th>outcome</th>" + "".join(f"<th>{c}</th>" for c in codes) + "<th>reason</th></tr>"
    body_rows = []
    for row in rows:
        checks = {c.code: c for c in row.report.checks} if row.report else {}
        cells = [] if row.report else [f'<td colspan="{len(codes)}" class="note">did not run: {escape(row.reason)}</td>']
        for code in codes if row.report else ():
            c = checks.get(code)
            cells.append(html_report.status_cell(c.status.value, c.fixed, cell_text(c), c.message) if c
                         else "<td></td>")
        color = OUTCOME_COLOR.get(row.outcome, "#6e7781")
        dark = row.outcome in ("READY_WITH_FIXES", "NEEDS_DEPENDENCY", "TIMEOUT")
        body_rows.append(
            f'<tr><td><a href="#{_anchor(row.name)}">{escape(row.name)}</a></td>'
            f'<td class="status{" light" if dark else ""}" style="background:{color}">{escape(row.outcome)}</td>'
            + "".join(cells) + f'<td title="{escape(row.reason)}">{escape(_short(row.reason)) if row.report else ""}</td></tr>')
    why = reasons(rows)
    why_html = ("<h2>Why runs are not ready</h2><ul>" + "".join(
        f"<li><b>{escape(r)}</b>: {len(n)} ({escape(', '.join(n))})</li>" for r, n in why.items()) + "</ul>") if why else ""
    details = []
    for row in rows:
        inner = [f'<p class="meta">{escape(row.task)}; from <a href="{escape(row.source)}">{escape(row.source)}</a>; '
                 f"{escape(row.reason)}</p>"]
        if row.report:
            inner += [html_report.check_table(row.report), html_report.measurement_tables(row.report)]
        details.append(f'<section id="{_anchor(row.name)}"><h2>{escape(row.name)}: {escape(row.outcome)}</h2>'
                       + "".join(inner) + "</section>")
    env = next((r.report.environment for r in rows if r.report), {})
    versions = ", ".join(f"{k} {env[k]}" for k in ("torch", "transformers", "peft") if env.get(k))
    body = (f"<h1>onboard support matrix: {len(rows)} runs</h1><div class=meta>{escape(versions)}</div>"
            f"<p>{summary}</p><table class=matrix>{head}{''.join(body_rows)}</table>{why_html}"
            "<h2>Details</h2>" + "".join(details))
    return html_report.page(f"onboard support matrix ({len(rows)} runs)", body)
