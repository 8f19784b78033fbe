"""`onboard sweep` and `onboard report` on a few architectures: isolation, time limit, resume, matrix."""

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from onboard.cli import app
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
    assert llama.outcome == "READY" and llama.reason == ""  # the HF Trainer's conventions: nothing to fix
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
    done = runner.invoke(app, ["sweep", "--arch", "opt,not_an_arch", "--out", str(out), "--timeout", "120"])
    assert done.exit_code == 0, done.output
    records = read_records(out)
    assert records["opt"].outcome == "READY_WITH_FIXES"
    assert records["not_an_arch"].outcome == "BUILD_ERROR" and "unknown architecture" in records["not_an_arch"].reason
    summary = " ".join(done.output.split())
    assert "READY_WITH_FIXES 1" in summary and "BUILD_ERROR 1" in summary

    md, html = tmp_path / "m.md", tmp_path / "m.html"
    shown = runner.invoke(app, ["report", str(out), "--markdown", str(md), "--html", str(html)])
    assert shown.exit_code == 0, shown.output
    text = md.read_text()
    assert "| opt | READY_WITH_FIXES |" in text and "packing.block_mask" in text
    assert "| not_an_arch | BUILD_ERROR |" in text and "unknown architecture" in text
    page = html.read_text()
    assert 'href="#run-opt"' in page and 'id="run-opt"' in page and "<script src" not in page


def test_report_diff_shows_what_changed_per_architecture_and_check(tmp_path):
    """`onboard report --diff OLD NEW`: the gate before an upgrade. NEW is a real sweep; OLD is the same sweep
    as an onboard that lacked the packing fix would have written it, plus an architecture NEW does not have."""
    new = tmp_path / "new.jsonl"
    done = runner.invoke(app, ["sweep", "--arch", "opt", "--out", str(new), "--timeout", "120"])
    assert done.exit_code == 0, done.output
    record = json.loads(new.read_text())
    old_record = json.loads(json.dumps(record))
    pack = next(c for c in old_record["report"]["checks"] if c["code"] == "PACK001")
    pack["fix"] = None
    old_record["outcome"], old_record["reason"] = "NOT_READY", "PACK001 FM-PACK-ISOLATION"
    gone = {"arch": "gone_arch", "task": "causal-lm", "outcome": "BUILD_ERROR", "reason": "x", "seconds": 0, "report": None}
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps(old_record) + "\n" + json.dumps(gone) + "\n")

    md = tmp_path / "diff.md"
    shown = runner.invoke(app, ["report", "--diff", str(old), str(new), "--markdown", str(md), "--html",
                                str(tmp_path / "diff.html")])
    assert shown.exit_code == 0, shown.output
    text = md.read_text()
    assert "### improved (1)" in text and "| opt | NOT_READY | READY_WITH_FIXES | PACK001: FAIL FM-PACK-ISOLATION → " \
        "fixed: packing.block_mask |" in text, text
    assert "### removed (1)" in text and "| gone_arch | BUILD_ERROR | — |" in text
    assert "transformers" in text  # each side's versions
    # the other way round it is a regression, and --fail-on-regression gates on it
    back = runner.invoke(app, ["report", "--diff", str(new), str(old), "--fail-on-regression"])
    assert back.exit_code == 1 and "### regressed (1)" in back.stdout
    assert runner.invoke(app, ["report", "--diff", str(new)]).exit_code == 2


def test_report_of_a_file_that_is_not_a_run_is_one_line(tmp_path):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    (tmp_path / "y.jsonl").write_text('{"arch": "llama"}\n')
    for name, words in (("x.json", "not an onboard check report"), ("y.jsonl", "y.jsonl:1: not an onboard sweep record"),
                        ("missing.json", "cannot read")):
        out = runner.invoke(app, ["report", str(tmp_path / name)])
        assert out.exit_code == 2 and words in " ".join(out.output.split()), out.output
        assert "Traceback" not in out.output


def test_the_sweep_checks_deeper_tiny_models_on_their_slice_or_whole(tmp_path):
    """bench/sweep_cpu.py --layers N --slice auto|off: the worker builds tiny:ARCH:N and passes the slice choice on,
    through the pool's task options, to the child process."""
    records = {}
    for mode in ("auto", "off"):
        out = tmp_path / f"{mode}.jsonl"
        records[mode] = run_sweep({"llama": "causal-lm"}, out, workers=1, timeout=120,
                                  task_options={"layers": 4, "slice": mode})[0]
    sliced, whole = records["auto"].report, records["off"].report
    assert sliced["model"]["id"] == whole["model"]["id"] == "tiny:llama:4"
    assert sliced["model"]["slice"]["kept"] == [0, 1] and "--slice off" in whole["model"]["slice"]["reason"]
    assert records["auto"].outcome == records["off"].outcome
