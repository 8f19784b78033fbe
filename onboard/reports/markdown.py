"""Markdown: the check table and each check's measurements, for PR comments and step summaries."""

from __future__ import annotations

from pathlib import Path

from onboard.harness.result import RunReport


def render(report: RunReport) -> str:
    m = report.model
    lines = [f"## onboard check `{m['id']}`: **{report.verdict.value}**", "",
             f"{m['class']} ({m['model_type']}), {m['dtype']} on {m['device']}; "
             f"torch {report.environment['torch']}, transformers {report.environment['transformers']}, "
             f"peft {report.environment['peft']}", "",
             "| code | check | status | ran on | message |", "|---|---|---|---|---|"]
    for r in report.checks:
        status = r.status.value + (" → fixed" if r.fixed else "")
        lines.append(f"| {r.code} | {r.name} | {status} | {r.ran_on or ''} | {r.message.replace('|', '/')} |")
    if report.slice_text:
        lines += ["", report.slice_text]
    for r in report.checks:
        if not r.measurements:
            continue
        lines += ["", f"### {r.code} {r.name}", ""]
        if r.diagnosis:
            lines.append(f"Diagnosis: `{r.diagnosis}`" + (f"; {'fallback' if r.fix.fallback else 'fix'} `{r.fix.patch_id}` "
                                                          f"verified: {r.fix.verified}" if r.fix else "")
                         + "".join(f"; `{t['patch_id']}` tried, not verified" for t in (r.fix.tried if r.fix else []))
                         + (f"; cost: {r.fix.cost}" if r.fix and r.fix.cost else ""))
            lines.append("")
        lines += ["| measurement | value | threshold |", "|---|---|---|"]
        for name, meas in r.measurements.items():
            lines.append(f"| {name} | {meas.value} {meas.unit} | {meas.threshold or ''} |")
    if report.verified_patches:
        lines += ["", "Patches for training: " + ", ".join(f"`{p}`" for p in report.verified_patches)]
    lines += thresholds_table(report)
    return "\n".join(lines) + "\n"


def thresholds_table(report: RunReport) -> list[str]:
    if not report.thresholds:
        return []
    source = f" (overrides from `{report.config['path']}`)" if report.config else ""
    lines = ["", f"<details><summary>Thresholds used{source}</summary>", "",
             "| threshold | value | unit | set by |", "|---|---|---|---|"]
    for name, t in report.thresholds.items():
        lines.append(f"| {name} | {t['value']:g} | {t['unit']} | {'config' if t.get('overridden') else 'default'} |")
    return lines + ["", "</details>"]


def write(report: RunReport, path: str | Path) -> None:
    Path(path).write_text(render(report))
