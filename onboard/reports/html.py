"""One run as a self-contained HTML page: the check table, plots of the measurements a person would
rather look at than read, every measurement with its threshold, and the thresholds used."""

from __future__ import annotations

from html import escape
from pathlib import Path
from onboard.harness.result import Measurement, RunReport, Verdict
from onboard.reports import svg

STATUS_COLOR = {"PASS": "#1f883d", "FIXED": "#8ddb8c", "WARN": "#d4a72c", "FAIL": "#cf222e", "ERROR": "#8250df",
                "SKIP": "#afb8c1"}
VERDICT_COLOR = {Verdict.READY: "#1f883d", Verdict.READY_WITH_FIXES: "#8ddb8c", Verdict.NOT_READY: "#cf222e",
                 Verdict.INCONCLUSIVE: "#8250df", Verdict.NOT_APPLICABLE: "#afb8c1"}
CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #24292f; margin: 24px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
.meta { color: #57606a; margin-bottom: 12px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff; font-weight: 600; }
table { border-collapse: collapse; margin: 4px 0 12px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.status { font-weight: 600; color: #fff; white-space: nowrap; text-align: center; }
td.status.light { color: #24292f; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots { display: flex; flex-wrap: wrap; }
.note { color: #57606a; font-style: italic; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
code { background: #f6f8fa; padding: 0 3px; border-radius: 3px; }
""" + svg.CSS


def status_key(status: str, fixed: bool) -> str:
    return "FIXED" if fixed else status


def status_cell(status: str, fixed: bool, text: str | None = None, title: str = "") -> str:
    key = status_key(status, fixed)
    light = " light" if key in ("FIXED", "WARN", "SKIP") else ""
    label = text if text is not None else (f"{status} → fixed" if fixed else status)
    return (f'<td class="status{light}" style="background:{STATUS_COLOR[key]}" title="{escape(title)}">'
            f"{escape(label)}</td>")


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def _value(m: Measurement) -> str:
    v = m.value
    if isinstance(v, float):
        v = f"{v:.4g}"
    return f"{v} {m.unit}".strip()


def check_table(report: RunReport) -> str:
    rows = []
    for r in report.checks:
        fix = ""
        if r.fix is not None:
            fix = "".join(f"<code>{escape(t['patch_id'])}</code> not verified; " for t in r.fix.tried)
            fix += (("fallback " if r.fix.fallback else "") + f"<code>{escape(r.fix.patch_id)}</code> "
                    + ("verified" if r.fix.verified else "not verified")
                    + (f" (cost: {escape(r.fix.cost)})" if r.fix.cost else ""))
        elif r.proposed_patch:
            fix = f"<code>{escape(r.proposed_patch)}</code> proposed, not applied"
        diagnosis = f" <code>{escape(r.diagnosis)}</code>" if r.diagnosis else ""
        rows.append(f"<tr><td>{r.code}</td><td>{escape(r.name)}</td>{status_cell(r.status.value, r.fixed)}"
                    f"<td>{escape(r.ran_on or '')}</td><td>{escape(r.message)}{diagnosis}</td><td>{fix}</td></tr>")
    where = f'<p class="note">{escape(report.slice_text)}</p>' if report.slice_text else ""
    return ('<table class="checks"><tr><th>code</th><th>check</th><th>status</th><th>ran on</th><th>message</th>'
            '<th>fix</th></tr>' + "".join(rows) + "</table>" + where)


def measurement_tables(report: RunReport) -> str:
    out = []
    for r in report.checks:
        if not r.measurements:
            continue
        rows = "".join(f"<tr><td>{escape(name)}</td><td class=num>{escape(_value(m))}</td>"
                       f"<td>{escape(m.threshold or '')}</td></tr>" for name, m in r.measurements.items())
        after = ""
        if r.fix is not None and r.fix.measurements_after:
            after = (f"<p>after <code>{escape(r.fix.patch_id)}</code>: {escape(r.fix.message_after)}</p><table>"
                     + "".join(f"<tr><td>{escape(n)}</td><td class=num>{escape(_value(m))}</td>"
                               f"<td>{escape(m.threshold or '')}</td></tr>"
                               for n, m in r.fix.measurements_after.items()) + "</table>")
        trace = r.evidence.get("traceback")
        trace = f"<pre>{escape(trace)}</pre>" if isinstance(trace, str) else ""
        out.append(f"<details><summary>{r.code} {escape(r.name)}</summary><table>"
                   f"<tr><th>measurement</th><th>value</th><th>threshold</th></tr>{rows}</table>{after}{trace}</details>")
    return "".join(out)


def thresholds_table(report: RunReport) -> str:
    if not report.thresholds:
        return ""
    rows = "".join(f"<tr><td>{escape(n)}</td><td class=num>{t['value']:g}</td><td>{escape(t['unit'])}</td>"
                   f"<td>{'config' if t.get('overridden') else 'default'}</td><td>{escape(t.get('meaning', ''))}</td></tr>"
                   for n, t in report.thresholds.items())
    source = f" (overrides from <code>{escape(report.config['path'])}</code>)" if report.config else ""
    return (f"<h2>Thresholds used{source}</h2><table><tr><th>threshold</th><th>value</th><th>unit</th>"
            f"<th>set by</th><th>meaning</th></tr>{rows}</table>")


# ---- plots: each check gives its own (CheckResult.figures); the page draws whatever it was given -------

PALETTE = ("#0969da", "#fb8f44", "#bf3989", "#6e7781", "#1f883d", "#8250df")


def figures(report: RunReport) -> tuple[list[str], list[str]]:
    """(charts, notes) from every check's figures, in check order."""
    charts, notes = [], []
    for r in report.checks:
        for fig in r.figures:
            if fig.get("kind") == "bars":
                colors = dict(fig.get("colors") or {})
                for i, name in enumerate(k for k in fig["series"] if k not in colors):
                    colors[name] = PALETTE[i % len(PALETTE)]
                charts.append(svg.bar_chart(fig["title"], fig["groups"], fig["series"], colors, fig["unit"],
                                            fig.get("lines") or None))
            elif fig.get("kind") == "note":
                notes.append(fig["text"])
    return charts, notes


def render(report: RunReport) -> str:
    m, env = report.model, report.environment
    verdict = report.verdict
    plots, notes = figures(report)
    config = f"; config <code>{escape(report.config['path'])}</code>" if report.config else ""
    patches = ", ".join(f"<code>{escape(p)}</code>" for p in report.verified_patches) or "none"
    body = [
        f'<h1>onboard check {escape(str(m.get("id")))} '
        f'<span class="badge" style="background:{VERDICT_COLOR[verdict]};'
        f'{"color:#24292f" if verdict is Verdict.READY_WITH_FIXES else ""}">{verdict.value}</span></h1>',
        f'<div class="meta">{escape(str(m.get("class")))} ({escape(str(m.get("model_type")))}), '
        f'{escape(str(m.get("dtype")))} on {escape(str(m.get("device")))}; torch {escape(str(env.get("torch")))}, '
        f'transformers {escape(str(env.get("transformers")))}, peft {escape(str(env.get("peft")))}; '
        f"{report.duration_s:.1f} s{config}</div>",
        check_table(report),
        f"<p>Patches for training: {patches}</p>",
        "<h2>Measurements as plots</h2>",
        f'<div class="plots">{"".join(plots)}</div>' if plots else '<p class="note">no plottable measurements</p>',
        "".join(f'<p class="note">{escape(note)}</p>' for note in notes),
        "<h2>Measurements</h2>",
        measurement_tables(report),
        thresholds_table(report),
    ]
    return page(f"onboard check {m.get('id')}: {verdict.value}", "\n".join(body))


def write(report: RunReport, path: str | Path) -> None:
    Path(path).write_text(render(report), encoding="utf-8")
