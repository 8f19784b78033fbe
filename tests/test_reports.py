"""Every report of a run with an unfixed failure says so: a NOT_READY run through the command line, read back
from each file it wrote. The exit codes are the documented numbers."""

import json
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from onboard.cli import app


@pytest.fixture(scope="module")
def not_ready(tmp_path_factory):
    """fault:cce-math: CCE001 fails with no patch (a bias added outside the output layer); the rest is fixed."""
    out = tmp_path_factory.mktemp("reports")
    done = CliRunner().invoke(app, ["check", "fault:cce-math", "--json", str(out / "r.json"), "--junit",
                                    str(out / "r.xml"), "--markdown", str(out / "r.md"), "--html", str(out / "r.html")])
    return done, out


def test_every_report_shows_an_unfixed_failure(not_ready):
    done, out = not_ready
    assert done.exit_code == 1, done.output  # NOT_READY, as documented
    data = json.loads((out / "r.json").read_text())
    assert data["verdict"] == "NOT_READY"
    cce = next(c for c in data["checks"] if c["code"] == "CCE001")
    assert cce["status"] == "FAIL" and cce["diagnosis"] == "FM-CCE-MATH" and cce["fix"] is None
    assert "cce.fused_loss" not in data["patches"]  # training must not use what failed
    assert data["patches"] == ["packing.no_cache_no_mask", "speed.packed_attention"]  # only what was verified

    suite = ET.parse(out / "r.xml").getroot()
    assert suite.get("failures") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["CCE001 cce"]
    assert failed[0].find("failure").get("type") == "FM-CCE-MATH"
    assert next(p.get("value") for p in suite.find("properties") if p.get("name") == "verdict") == "NOT_READY"

    md = (out / "r.md").read_text()
    assert "**NOT_READY**" in md and "| CCE001 | cce | FAIL |" in md and "FM-CCE-MATH" in md

    page = (out / "r.html").read_text()
    assert "NOT_READY" in page and "FM-CCE-MATH" in page

    text = " ".join(done.output.split())
    assert "NOT_READY" in text and "CCE001" in text


def test_a_fixed_failure_passes_without_strict_and_fails_with_it(tmp_path):
    ok = CliRunner().invoke(app, ["check", "tiny:llama", "--junit", str(tmp_path / "a.xml")])
    strict = CliRunner().invoke(app, ["check", "tiny:llama", "--strict", "--junit", str(tmp_path / "b.xml")])
    assert ok.exit_code == 0 and strict.exit_code == 1
    assert ET.parse(tmp_path / "a.xml").getroot().get("failures") == "0"
    assert ET.parse(tmp_path / "b.xml").getroot().get("failures") == "1"


def test_a_fix_that_was_applied_but_did_not_verify_reads_so_in_every_report(tmp_path):
    """Bloom: packing.block_mask is applied and its re-check fails (the model takes no 4D mask). The HTML and the
    JSON must say "not verified"; an applied fix is not a verified one."""
    done = CliRunner().invoke(app, ["check", "tiny:bloom", "--html", str(tmp_path / "r.html"), "--json",
                                    str(tmp_path / "r.json")])
    assert done.exit_code == 1, done.output
    pack = next(c for c in json.loads((tmp_path / "r.json").read_text())["checks"] if c["code"] == "PACK001")
    assert pack["fix"]["applied"] and not pack["fix"]["verified"]
    page = (tmp_path / "r.html").read_text()
    assert "<code>packing.block_mask</code> not verified" in page
