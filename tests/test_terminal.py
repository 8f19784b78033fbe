"""The terminal output of `onboard check`: by default a line per check, the counts, a verdict line that fits 80
columns, the patches training applies (not the fused CCE loss on the CPU), what to run next; the table, the
measurement panels and the thresholds behind --verbose. One real run of a fault model with one verified fix
(fault:pack-cache under a training loop of one's own), through the command line at 80 columns, rendered again
several ways."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest
from rich.console import Console

from onboard.checks import CHECKS
from onboard.harness.result import RunReport, Verdict
from onboard.reports import terminal
from onboard.train.run import left_out_by_training

MODEL = "fault:pack-cache"
CHECK_LINE = re.compile(rf"^\s*\d+/{len(CHECKS)} [A-Z]+\d{{3}} ")


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """`COLUMNS=80 onboard check fault:pack-cache --trainer custom --json r.json`: its output and its report."""
    folder = tmp_path_factory.mktemp("terminal")  # the working folder too: no onboard.toml of this checkout's
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-m", "onboard.cli", "check", MODEL, "--trainer", "custom",
                           "--json", "r.json"], capture_output=True, text=True, env=env, cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr, RunReport.from_dict(json.loads((folder / "r.json").read_text())), "r.json"


def _console(width: int = 80) -> Console:
    return Console(file=io.StringIO(), width=width)


def test_the_default_output_is_short_and_fits_80_columns(run):
    out, report, path = run
    lines = out.splitlines()
    assert report.verdict is Verdict.READY_WITH_FIXES and [c.code for c in report.checks if c.fixed] == ["PACK001"]
    assert len(lines) <= 40, out
    assert all(len(line) <= 80 for line in lines), "\n".join(line for line in lines if len(line) > 80)
    check_lines = [line for line in lines if CHECK_LINE.match(line)]
    assert [line.split()[1] for line in check_lines] == [c.code for c in CHECKS], out
    assert f" 5/{len(CHECKS)} PACK001 packing      FAIL → fixed " in out
    assert "      FM-PACK-CACHE; fix packing.no_cache_no_mask verified" in lines  # the finding's second line
    verdict = [line for line in lines if line.startswith("verdict:")]
    assert verdict == [f"verdict: READY_WITH_FIXES · 2 patches for training · {report.duration_s:.1f} s"], out
    after = lines[lines.index(verdict[0]) + 1:]
    assert after[0] == "patches for training: packing.no_cache_no_mask, speed.packed_attention", out
    assert f"next: onboard train {MODEL} --from {path}" in after and f"reports: JSON {path}" in after, out
    # the details are --verbose's: no table, no panels, no thresholds
    assert "┏" not in out and "╭─" not in out and "thresholds (" not in out


def test_training_on_the_cpu_leaves_the_fused_loss_out_and_the_verdict_says_so(run):
    out, report, _ = run
    assert "cce.fused_loss" in report.verified_patches and report.model["device"] == "cpu"
    left_out = left_out_by_training(report.verified_patches, report.model["device"])
    assert set(left_out) == {"cce.fused_loss"}
    assert "cce.fused_loss" not in terminal.training_patches(report, left_out)
    line = next(line for line in out.splitlines() if line.startswith("patches for training:"))
    assert "cce.fused_loss" not in line
    assert "  cce.fused_loss left out: GPU only (--cce on forces it)" in out.splitlines()
    # the rule itself: what `onboard train` applies where
    ids = ["packing.no_cache_no_mask", "cce.fused_loss"]
    assert left_out_by_training(ids, "cuda") == left_out_by_training(ids, "cuda:0") == {}
    assert left_out_by_training(ids, "cpu", cce="on") == {}
    assert left_out_by_training(ids, "cuda", cce="off") == {"cce.fused_loss": "--cce off"}
    assert left_out_by_training(["packing.no_cache_no_mask"], "cpu") == {}


def test_quiet_to_a_non_terminal_prints_a_line_per_check(run):
    """What `check -q` prints where no spinner shows (CI logs): each check's line as it finishes, then the
    findings and the verdict; the lines keep their whole message when no width was given (COLUMNS unset)."""
    _, report, _ = run
    console = _console(width=200)
    progress = terminal.Progress(CHECKS, console, lines=True, details=False, cut=False)
    for result in report.checks:
        progress.done(result)
    terminal.render_short(report, console, left_out=left_out_by_training(report.verified_patches, "cpu"), cut=False)
    lines = console.file.getvalue().splitlines()
    assert len([line for line in lines if CHECK_LINE.match(line)]) == len(CHECKS)
    pack = next(r for r in report.checks if r.code == "PACK001")
    assert any(line.endswith(pack.message) for line in lines if f"5/{len(CHECKS)} PACK001" in line)  # not cut
    assert any(line.startswith("PACK001 packing FAIL → fixed") for line in lines)
    assert lines[-3].startswith("verdict: READY_WITH_FIXES") and lines[-2].startswith("patches for training:")
    assert lines[-1] == "  cce.fused_loss left out: GPU only (--cce on forces it)"


def test_verbose_prints_the_table_the_measurements_and_the_thresholds(run):
    _, report, _ = run
    console = _console()
    terminal.render(report, console, left_out=left_out_by_training(report.verified_patches, "cpu"))
    out = console.file.getvalue()
    assert "┃ code" in out and "╭─ PACK001 packing" in out and "leak_no_mask_default_cache" in out
    assert "fix packing.no_cache_no_mask applied, re-check PASS: verified" in out
    assert "thresholds (float32): " in out
    assert out.splitlines()[-3].startswith("verdict: READY_WITH_FIXES · 2 patches for training")
    from typer.testing import CliRunner

    from onboard.cli import app

    assert "--verbose" in CliRunner().invoke(app, ["check", "-h"]).output


def test_the_spinner_names_the_check_its_place_and_the_time():
    progress = terminal.Progress(CHECKS, _console())
    assert str(progress.__rich__()) == "Running checks (0 s)"
    progress.start(CHECKS[4]())
    assert str(progress.__rich__()) == f"Running PACK001 packing (5/{len(CHECKS)}, 0 s)"
