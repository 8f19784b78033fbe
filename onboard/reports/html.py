"""One run as a self-contained HTML page: the check table, plots of the measurements a person would
rather look at than read, every measurement with its threshold, and the thresholds used."""

from __future__ import annotations

from html import escape
from pathlib import Path
from onboard.harness.result import CheckResult, Measurement, RunReport, Status, Verdict
from onboard.reports import svg

STATUS_COLOR = {"PASS": "#1f883d", "FIXED": "#8ddb8c", "WARN": "#d4a72c", "FAIL": "#cf222e", "ERROR": "#8250df",
                "SKIP": "#afb8c1"}
VERDICT_COLOR = {Verdict.READY: "#1f883d", Verdict.READY_WITH_FIXES: "#8ddb8c", Verdict.NOT_READY: "#cf222e",
                 Verdict.INCONCLUSIVE: "#8250df"}
PACK_SERIES = {  # evidence key of PACK001 -> legend, colour
    "alone": ("alone", "#0969da"),
    "no_mask_default_cache": ("packed, default cache", "#fb8f44"),
    "ones_mask_no_cache": ("packed, all-ones mask", "#bf3989"),
    "no_mask_no_cache": ("packed, no mask, no cache", "#6e7781"),
}
KIND_COLOR = "#0969da"
MEMORY_COLORS = {"plain loss": "#fb8f44", "CCE": "#0969da"}

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
            fix = f"<code>{escape(r.fix.patch_id)}</code> " + ("verified" if r.fix.verified else "not verified")
        elif r.proposed_patch:
            fix = f"<code>{escape(r.proposed_patch)}</code> proposed, not applied"
        diagnosis = f" <code>{escape(r.diagnosis)}</code>" if r.diagnosis else ""
        rows.append(f"<tr><td>{r.code}</td><td>{escape(r.name)}</td>{status_cell(r.status.value, r.fixed)}"
                    f"<td>{escape(r.message)}{diagnosis}</td><td>{fix}</td></tr>")
    return ('<table class="checks"><tr><th>code</th><th>check</th><th>status</th><th>message</th><th>fix</th></tr>'
            + "".join(rows) + "</table>")


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


# ---- plots ----------------------------------------------------------------------------------------

def _by_code(report: RunReport) -> dict[str, CheckResult]:
    return {c.code: c for c in report.checks}


def packing_plots(pack: CheckResult | None) -> list[str]:
    """Each sample's loss alone and in its packed row, per convention; then the gap against the tolerance."""
    if pack is None or "per_sample_diff" not in pack.evidence:
        return []
    alone = pack.evidence.get("per_sample_unpacked_loss", {})
    if isinstance(alone, list):  # reports written before onboard 0.2 list every sample
        alone = {str(i): v for i, v in enumerate(alone)}
    diffs: dict[str, dict[str, float]] = pack.evidence["per_sample_diff"]
    samples = sorted({int(s) for d in diffs.values() for s in d})
    if not samples or not alone:
        return []
    series = {PACK_SERIES["alone"][0]: [alone.get(str(s)) for s in samples]}
    gaps = {}
    for conv, per in diffs.items():
        legend = PACK_SERIES.get(conv, (conv, "#6e7781"))[0]
        series[legend] = [alone[str(s)] + per[str(s)] if str(s) in per and alone.get(str(s)) is not None else None
                          for s in samples]
        gaps[legend] = [abs(per[str(s)]) if str(s) in per else None for s in samples]
    colors = {legend: color for legend, color in PACK_SERIES.values()} | {k: "#6e7781" for k in series
                                                                          if k not in {v[0] for v in PACK_SERIES.values()}}
    labels = [str(s) for s in samples]
    return [svg.bar_chart("PACK001: per-sample loss, alone vs packed (sample index)", labels, series, colors, "nats"),
            svg.bar_chart("PACK001: |packed − alone| per sample (the harm a leak does)", labels, gaps, colors, "nats")]


def loss_kind_plot(loss: CheckResult | None) -> list[str]:
    if loss is None or "loss" not in loss.measurements:
        return []
    ms = loss.measurements
    groups = [g for g in ("loss", "loss_content", "loss_template") if g in ms]
    labels = {"loss": "all assistant tokens", "loss_content": "content", "loss_template": "template"}
    lines = {}
    if "ln_vocab" in ms:
        lines["ln V"] = float(ms["ln_vocab"].value)
    title = "LOSS001: loss by token kind" + (" (random weights: not judged)" if loss.status is Status.SKIP else "")
    return [svg.bar_chart(title, [labels[g] for g in groups], {"mean loss": [float(ms[g].value) for g in groups]},
                          {"mean loss": KIND_COLOR}, "nats", lines)]


def memory_plot(cce: CheckResult | None, device: str) -> tuple[list[str], str]:
    if cce is None:
        return [], ""
    ms = cce.measurements
    if "peak_plain" in ms and "peak_fused" in ms:
        lines = {}
        if "saving_predicted" in ms:
            lines["plain − predicted saving"] = float(ms["peak_plain"].value) - float(ms["saving_predicted"].value)
        batch = ms["memory_batch"].value if "memory_batch" in ms else ""
        chart = svg.bar_chart(f"CCE001: peak memory of a training step {batch}", ["peak"],
                              {"plain loss": [float(ms["peak_plain"].value)], "CCE": [float(ms["peak_fused"].value)]},
                              MEMORY_COLORS, "GiB", lines)
        return [chart], ""
    return [], f"Peak memory with and without CCE is measured on CUDA only; this run was on {device}."


def render(report: RunReport) -> str:
    m, env = report.model, report.environment
    checks = _by_code(report)
    verdict = report.verdict
    memory, memory_note = memory_plot(checks.get("CCE001"), str(m.get("device", "")))
    plots = packing_plots(checks.get("PACK001")) + loss_kind_plot(checks.get("LOSS001")) + memory
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
        f'<p class="note">{escape(memory_note)}</p>' if memory_note else "",
        "<h2>Measurements</h2>",
        measurement_tables(report),
        thresholds_table(report),
    ]
    return page(f"onboard check {m.get('id')}: {verdict.value}", "\n".join(body))


def write(report: RunReport, path: str | Path) -> None:
    Path(path).write_text(render(report), encoding="utf-8")
