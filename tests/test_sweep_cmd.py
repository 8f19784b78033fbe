"""`onboard sweep` and `onboard report` on a few architectures: isolation, time limit, resume, matrix."""

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from onboard.cli import app
from onboard.harness.result import ExitCode
from onboard.sweep import read_records, run_sweep
from onboard.sweep.archs import CAUSAL_LM, IMAGE_TEXT_TO_TEXT, architectures

runner = CliRunner()


def test_architectures_come_from_the_auto_mappings():
    archs = architectures()
    assert archs["llama"] == CAUSAL_LM and archs["llava"] == IMAGE_TEXT_TO_TEXT
    assert "vit" not in archs and "bert" in archs  # bert has a causal-LM head (BertLMHeadModel)


def test_a_hang_and_a_crash_cost_only_their_architecture_and_the_sweep_resumes(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))  # the fork server imports sweep_tasks from here
    out = tmp_path / "sweep.jsonl"
    archs = {"hang": CAUSAL_LM, "crash": CAUSAL_LM, "llama": CAUSAL_LM}
    records = run_sweep(archs, out, workers=2, timeout=20, task="sweep_tasks:faulty")
    by_arch = {r.arch: r for r in records}
    assert by_arch["hang"].outcome == "TIMEOUT" and 20 <= by_arch["hang"].seconds < 30
    assert by_arch["crash"].outcome == "CRASH" and "SIGSEGV" in by_arch["crash"].reason
    llama = by_arch["llama"]
    assert llama.outcome == "READY_WITH_FIXES" and llama.reason == "packing.no_cache_no_mask"
    assert [c["code"] for c in llama.report["checks"]][:2] == ["LOAD001", "ATTN001"]
    assert set(read_records(out)) == set(archs)

    # resume: nothing left to run; a line cut off by a killed sweep is dropped, and only that one reruns
    assert run_sweep(archs, out, task="sweep_tasks:faulty") == []
    lines = out.read_text().splitlines(keepends=True)
    keep = [ln for ln in lines if json.loads(ln)["arch"] != "crash"]
    out.write_text("".join(keep) + next(ln for ln in lines if '"crash"' in ln)[:40])
    again = run_sweep(archs, out, task="sweep_tasks:faulty")
    assert [r.arch for r in again] == ["crash"] and set(read_records(out)) == set(archs)


def test_sweep_then_report_matrix(tmp_path):
    out = tmp_path / "sweep.jsonl"
    done = runner.invoke(app, ["sweep", "--arch", "llama,not_an_arch", "--out", str(out), "--timeout", "120"])
    assert done.exit_code == ExitCode.OK, done.output
    records = read_records(out)
    assert records["llama"].outcome == "READY_WITH_FIXES"
    assert records["not_an_arch"].outcome == "BUILD_ERROR" and "unknown architecture" in records["not_an_arch"].reason
    summary = " ".join(done.output.split())
    assert "READY_WITH_FIXES 1" in summary and "BUILD_ERROR 1" in summary

    md, html = tmp_path / "m.md", tmp_path / "m.html"
    shown = runner.invoke(app, ["report", str(out), "--markdown", str(md), "--html", str(html)])
    assert shown.exit_code == ExitCode.OK, shown.output
    text = md.read_text()
    assert "| llama | READY_WITH_FIXES |" in text and "packing.no_cache_no_mask" in text
    assert "| not_an_arch | BUILD_ERROR |" in text and "unknown architecture" in text
    page = html.read_text()
    assert 'href="#run-llama"' in page and 'id="run-llama"' in page and "<script src" not in page


def test_report_of_a_file_that_is_not_a_run_is_one_line(tmp_path):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    (tmp_path / "y.jsonl").write_text('{"arch": "llama"}\n')
    for name, words in (("x.json", "not an onboard check report"), ("y.jsonl", "y.jsonl:1: not an onboard sweep record"),
                        ("missing.json", "cannot read")):
        out = runner.invoke(app, ["report", str(tmp_path / name)])
        assert out.exit_code == ExitCode.USAGE_ERROR and words in " ".join(out.output.split()), out.output
        assert "Traceback" not in out.output
