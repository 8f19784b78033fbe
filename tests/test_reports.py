"""Every report of a run with an unfixed failure says so: a NOT_READY run through the command line, read back
from each file it wrote. The exit codes are the documented numbers."""

import json
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from onboard.cli import app


@pytest.fixture(scope="module")
def not_ready(tmp_path_factory):
    """fault:train-loss: TRAIN001 fails with no patch (the loss sums when given num_items_in_batch)."""
    out = tmp_path_factory.mktemp("reports")
    done = CliRunner().invoke(app, ["check", "fault:train-loss", "--json", str(out / "r.json"), "--junit",
                                    str(out / "r.xml"), "--markdown", str(out / "r.md"), "--html", str(out / "r.html")])
    return done, out


def test_every_report_shows_an_unfixed_failure(not_ready):
    done, out = not_ready
    assert done.exit_code == 1, done.output  # NOT_READY, as documented
    data = json.loads((out / "r.json").read_text())
    assert data["verdict"] == "NOT_READY"
    step = next(c for c in data["checks"] if c["code"] == "TRAIN001")
    assert step["status"] == "FAIL" and step["diagnosis"] == "FM-TRAIN-LOSS" and step["fix"] is None
    assert data["patches"] == ["cce.fused_loss", "speed.packed_attention"]  # only what was verified

    suite = ET.parse(out / "r.xml").getroot()
    assert suite.get("failures") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["TRAIN001 train_step"]
    assert failed[0].find("failure").get("type") == "FM-TRAIN-LOSS"
    assert next(p.get("value") for p in suite.find("properties") if p.get("name") == "verdict") == "NOT_READY"

    md = (out / "r.md").read_text()
    assert "**NOT_READY**" in md and "| TRAIN001 | train_step | FAIL |" in md and "FM-TRAIN-LOSS" in md

    page = (out / "r.html").read_text()
    assert "NOT_READY" in page and "FM-TRAIN-LOSS" in page

    text = " ".join(done.output.split())
    assert "NOT_READY" in text and "TRAIN001" in text


def test_a_fixed_failure_passes_without_strict_and_fails_with_it(tmp_path):
    ok = CliRunner().invoke(app, ["check", "tiny:llama", "--trainer", "custom", "--junit", str(tmp_path / "a.xml")])
    strict = CliRunner().invoke(app, ["check", "tiny:llama", "--trainer", "custom", "--strict", "--junit",
                                      str(tmp_path / "b.xml")])
    assert ok.exit_code == 0 and strict.exit_code == 1
    assert ET.parse(tmp_path / "a.xml").getroot().get("failures") == "0"
    assert ET.parse(tmp_path / "b.xml").getroot().get("failures") == "1"


def test_a_fix_that_was_applied_but_did_not_verify_reads_so_in_every_report(tmp_path):
    """Bloom: packing.block_mask is applied and its re-check fails (the model takes no 4D mask), so does
    packing.sample_boundaries (ALiBi over the row); the fallback, unpacked training, is verified. Every report
    says which fix was tried and not verified, and that training falls back, at what cost."""
    done = CliRunner().invoke(app, ["check", "tiny:bloom", "--html", str(tmp_path / "r.html"), "--json",
                                    str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    assert done.exit_code == 0, done.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["verdict"] == "READY_WITH_FIXES" and "packing.unpacked" in data["patches"]
    pack = next(c for c in data["checks"] if c["code"] == "PACK001")
    assert pack["fix"]["patch_id"] == "packing.unpacked" and pack["fix"]["verified"] and pack["fix"]["fallback"]
    assert [t["patch_id"] for t in pack["fix"]["tried"]] == ["packing.block_mask", "packing.sample_boundaries",
                                                             "packing.segment_conv"]
    assert "padding" in pack["fix"]["cost"]
    page = (tmp_path / "r.html").read_text()
    assert "<code>packing.block_mask</code> not verified" in page and "fallback <code>packing.unpacked</code>" in page
    assert "`packing.block_mask` tried, not verified" in (tmp_path / "r.md").read_text()
    text = " ".join(done.output.split())
    assert "packing.block_mask not verified" in text and "fallback packing.unpacked verified" in text
