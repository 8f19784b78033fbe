"""Many runs as one matrix, architecture × check: Markdown, and a self-contained HTML page whose rows link
to each run's details. Inputs are `onboard check --json` files and `onboard sweep` JSONL files."""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter, defaultdict
from dataclasses import dataclass
from html import escape
from pathlib import Path

from onboard.harness.errors import BadInput
from onboard.harness.result import CheckResult, RunReport, Status
from onboard.reports import html as html_report

OUTCOME_COLOR = {"READY": "#1f883d", "READY_WITH_FIXES": "#8ddb8c", "NOT_READY": "#cf222e", "INCONCLUSIVE": "#a475f9",
                 "BUILD_ERROR": "#8250df",
                 "NEEDS_DEPENDENCY": "#afb8c1", "NOT_APPLICABLE": "#d0d7de", "TIMEOUT": "#d4a72c", "CRASH": "#8250df"}


@dataclass
class Row:
    name: str  # the architecture, or the model id of a single run
    task: str
    outcome: str  # a verdict, or why the checks did not run (BUILD_ERROR, TIMEOUT, ...)
    reason: str
    report: RunReport | None
    source: str  # the file it came from
    model: str = ""  # what `onboard check` takes for it: tiny:llama for the sweep's row llama

    def __post_init__(self):
        if not self.model:
            self.model = str(self.report.model.get("id")) if self.report and self.report.model.get("id") else self.name

    @property
    def command(self) -> str:
        """The `onboard check` command line that runs this row again: the model, and the options the run set
        that differ from the defaults (a sweep's --pack-length 256, its --device cpu)."""
        return check_command(self.model, self.report.options if self.report else {})


def check_command(model: str, options: dict) -> str:
    from onboard.harness.data import BUILTIN_CHATS
    from onboard.harness.setup import DEFAULT

    words = ["onboard", "check", model]
    device = str(options.get("device") or "")
    if device:
        words += ["--device", device.split(":")[0] if device == "cuda:0" else device]
    gpu = device.startswith("cuda")
    if options.get("dtype") and options["dtype"] != ("bfloat16" if gpu else "float32"):  # what auto became
        words += ["--dtype", str(options["dtype"])]
    targets = options.get("lora_targets")
    if targets and targets != "all-linear":
        words += ["--lora-targets", ",".join(targets) if isinstance(targets, list) else str(targets)]
    for name in ("trainer", "attn", "lora_rank", "lora_alpha", "max_length", "pack_length", "row_tokens", "seed"):
        value = options.get(name)
        if value is not None and value != getattr(DEFAULT, name):
            words += ["--" + name.replace("_", "-"), str(value)]
    if options.get("data") and options["data"] != str(BUILTIN_CHATS):
        words += ["--data", str(options["data"])]
    if options.get("chat_template") not in (None, "inline"):
        words += ["--chat-template", str(options["chat_template"])]
    ckpt = options.get("gradient_checkpointing")
    if ckpt is not None and bool(ckpt) != gpu:  # the default: on with CUDA
        words.append("--gradient-checkpointing" if ckpt else "--no-gradient-checkpointing")
    if options.get("torch_compile") is not None:
        words.append("--torch-compile" if options["torch_compile"] else "--no-torch-compile")
    return " ".join(shlex.quote(w) for w in words)


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
    model = str(report.model.get("id")) if report and report.model.get("id") else f"tiny:{data['arch']}"
    return Row(data["arch"], data.get("task", ""), data["outcome"], data.get("reason", ""), report, str(path), model)


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
             "| architecture | outcome | " + " | ".join(codes) + " | reason | check it again |",
             "|---|---|" + "---|" * len(codes) + "---|---|"]
    for row in rows:
        checks = {c.code: c for c in row.report.checks} if row.report else {}
        cells = [cell_text(checks.get(code)) or "—" for code in codes]
        reason = row.reason.replace("|", "/").replace("\n", " ")
        command = row.command.replace("|", "\\|")
        lines.append(f"| {row.name} | {row.outcome} | " + " | ".join(cells) + f" | {reason} | `{command}` |")
    why = reasons(rows)
    if why:
        lines += ["", "### Why runs are not ready", ""]
        lines += [f"- {reason.replace('|', '/')}: {len(names)} ({', '.join(names)})" for reason, names in why.items()]
    return "\n".join(lines) + "\n"


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _anchor(name: str) -> str:
    return "run-" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# The matrix fits a 1280-pixel window: fixed column widths (the checks share what the model, outcome and
# reason columns leave), text that wraps anywhere (patch ids and paths have no spaces), and a scroll box with
# the model column sticky where many checks make the table wider than the window.
MATRIX_CSS = """
body { overflow-wrap: anywhere; }
.matrix-box { overflow-x: auto; max-width: 100%; }
table.matrix { table-layout: fixed; width: 100%; font-size: 12px; }
table.matrix th, table.matrix td { padding: 3px 4px; overflow-wrap: anywhere; }
table.matrix th.code { font-size: 11px; text-align: center; }
table.matrix td.status { white-space: normal; }
table.matrix .model { position: sticky; left: 0; z-index: 1; background: #fff; }
table.matrix th.model { background: #f6f8fa; }
section table { max-width: 100%; } section td { overflow-wrap: anywhere; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; }
"""
MODEL_WIDTH, OUTCOME_WIDTH, REASON_WIDTH = 12, 9, 22  # percent of the table
CHECK_MIN_PX, OTHERS_MIN_PX = 52, 480  # below these the table scrolls in its box instead of squeezing


def _breakable(text: str) -> str:
    """Escaped text that may wrap after . _ / : and between letters and digits (PACK<wbr>001)."""
    out = escape(text)
    out = re.sub(r"([._/:])(?=\S)", r"\1<wbr>", out)
    return re.sub(r"(?<=[A-Z])(?=\d)", "<wbr>", out)


def _cell(c: CheckResult) -> str:
    key = html_report.status_key(c.status.value, c.fixed)
    light = " light" if key in ("FIXED", "WARN", "SKIP") else ""
    return (f'<td class="status{light}" style="background:{html_report.STATUS_COLOR[key]}" title="{escape(c.message)}">'
            f"{_breakable(cell_text(c))}</td>")


def render_html(rows: list[Row]) -> str:
    codes = check_codes(rows)
    total = counts(rows)
    summary = " ".join(
        f'<span class="badge" style="background:{OUTCOME_COLOR.get(k, "#6e7781")};'
        f'{"color:#24292f" if k in ("READY_WITH_FIXES", "NEEDS_DEPENDENCY", "NOT_APPLICABLE", "TIMEOUT") else ""}">{escape(k)} {v}</span>'
        for k, v in total.most_common())
    share = (100 - MODEL_WIDTH - OUTCOME_WIDTH - REASON_WIDTH) / max(1, len(codes))
    cols = (f'<colgroup><col style="width:{MODEL_WIDTH}%"><col style="width:{OUTCOME_WIDTH}%">'
            + f'<col style="width:{share:.2f}%">' * len(codes) + f'<col style="width:{REASON_WIDTH}%"></colgroup>')
    head = ('<tr><th class="model" title="what onboard check takes">model</th><th>outcome</th>'
            + "".join(f'<th class="code">{_breakable(c)}</th>' for c in codes) + '<th class="reason">reason</th></tr>')
    body_rows = []
    for row in rows:
        checks = {c.code: c for c in row.report.checks} if row.report else {}
        cells = [] if row.report else [f'<td colspan="{len(codes)}" class="note">did not run: {escape(row.reason)}</td>']
        for code in codes if row.report else ():
            c = checks.get(code)
            cells.append(_cell(c) if c else "<td></td>")
        color = OUTCOME_COLOR.get(row.outcome, "#6e7781")
        dark = row.outcome in ("READY_WITH_FIXES", "NEEDS_DEPENDENCY", "NOT_APPLICABLE", "TIMEOUT")
        body_rows.append(
            f'<tr><td class="model" title="{escape(row.command)}">'
            f'<a href="#{_anchor(row.name)}">{_breakable(row.model)}</a></td>'
            f'<td class="status{" light" if dark else ""}" style="background:{color}">{_breakable(row.outcome)}</td>'
            + "".join(cells) + f'<td class="reason" title="{escape(row.reason)}">'
            f'{escape(_short(row.reason, 300)) if row.report else ""}</td></tr>')
    why = reasons(rows)
    why_html = ("<h2>Why runs are not ready</h2><ul>" + "".join(
        f"<li><b>{escape(r)}</b>: {len(n)} ({escape(', '.join(n))})</li>" for r, n in why.items()) + "</ul>") if why else ""
    details = []
    for row in rows:
        inner = [f'<p class="meta">{escape(row.task)}; from <a href="{escape(row.source)}">{escape(row.source)}</a>; '
                 f"{escape(row.reason)}</p>", f"<p>check it again: <code>{escape(row.command)}</code></p>"]
        if row.report:
            inner += [html_report.check_table(row.report), html_report.measurement_tables(row.report)]
        details.append(f'<section id="{_anchor(row.name)}"><h2>{escape(row.model)}: {escape(row.outcome)}</h2>'
                       + "".join(inner) + "</section>")
    env = next((r.report.environment for r in rows if r.report), {})
    versions = ", ".join(f"{k} {env[k]}" for k in ("torch", "transformers", "peft") if env.get(k))
    min_width = CHECK_MIN_PX * len(codes) + OTHERS_MIN_PX
    body = (f"<h1>onboard support matrix: {len(rows)} runs</h1><div class=meta>{escape(versions)}</div>"
            f'<p>{summary}</p><div class="matrix-box"><table class=matrix style="min-width:{min_width}px">{cols}{head}'
            f"{''.join(body_rows)}</table></div>{why_html}"
            "<h2>Details</h2>" + "".join(details))
    page = html_report.page(f"onboard support matrix ({len(rows)} runs)", body)
    return page.replace("</style>", MATRIX_CSS + "</style>", 1)
