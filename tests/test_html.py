"""The HTML page of one run: self-contained, its table and plots drawn from the run's measurements, and
rendered by a real headless browser (Debian's chromium), checked on the screenshot's pixels."""

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onboard.checks.cce import CceCheck
from onboard.checks.packing import PACK_SERIES
from onboard.cli import app
from onboard.harness.result import CheckResult, RunReport, Status
from onboard.reports import html as html_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_page(tmp_path_factory):
    """tiny:llama through `onboard check --html`: PACK001 finds the leak and the fix, so all plots have data."""
    folder = tmp_path_factory.mktemp("html")
    out = CliRunner().invoke(app, ["check", "tiny:llama", "--trainer", "custom", "--html", str(folder / "run.html"),
                                   "--json", str(folder / "run.json")])
    assert out.exit_code == 0, out.output
    return folder / "run.html", json.loads((folder / "run.json").read_text())


def test_page_is_self_contained_and_shows_each_check(run_page):
    path, data = run_page
    page = path.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched: no CDN, no web font
    for check in data["checks"]:
        assert f"<td>{check['code']}</td>" in page
    assert page.count("<svg") == 3  # packed vs alone, the gap, loss by token kind (no CUDA: memory is a note)
    assert "FAIL → fixed" in page and "packing.no_cache_no_mask" in page
    assert "measured on CUDA only" in page and "Thresholds used" in page
    # the bars are the measurements: sample 0's unpacked loss is the first bar's title
    alone = next(c for c in data["checks"] if c["code"] == "PACK001")["evidence"]["per_sample_unpacked_loss"]
    first = min(alone, key=int)
    assert f"alone {first}: {alone[first]:.3g} nats" in page


def test_memory_plot_when_the_run_measured_peak_memory():
    """On CUDA, CCE001 records peak memory with and without the fused loss; the page plots those numbers."""
    cce = CheckResult("CCE001", "cce", Status.PASS, "ok")
    for name, value in (("peak_plain", 13.0), ("peak_fused", 8.59), ("saving_predicted", 3.75)):
        cce.measure(name, value, "GiB")
    cce.figures = CceCheck().figures(cce, "cuda:0")  # the check draws its own numbers; the page renders them
    report = RunReport(model={"id": "m", "device": "cuda:0"}, environment={}, checks=[cce], seed=0)
    page = html_report.render(report)
    assert page.count("<svg") == 1 and "plain loss peak: 13 GiB" in page and "CCE peak: 8.59 GiB" in page


def _screenshot(page: Path, png: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--hide-scrollbars", f"--screenshot={png}", "--window-size=1300,1500",
             page.as_uri()],
            capture_output=True, timeout=120, check=False)


def _colour_counts(png: Path) -> dict[tuple[int, int, int], int]:
    from PIL import Image

    with Image.open(png) as img:
        return {rgb: n for n, rgb in img.convert("RGB").getcolors(maxcolors=1 << 20)}


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_browser_renders_the_table_and_the_plots(run_page, tmp_path):
    path, _ = run_page
    png = tmp_path / "page.png"
    _screenshot(path, png)
    assert png.is_file(), "chromium wrote no screenshot"
    colours = _colour_counts(png)
    area = sum(colours.values())
    assert area == 1300 * 1500

    def share(hex_colour: str) -> float:
        return colours.get(_rgb(hex_colour), 0) / area

    # the check table: PASS cells in green, the fixed PACK001 cell in light green, LOSS001's SKIP in grey
    assert share(html_report.STATUS_COLOR["PASS"]) > 0.005
    assert share(html_report.STATUS_COLOR["FIXED"]) > 0.001
    assert share(html_report.STATUS_COLOR["SKIP"]) > 0.001
    # the plots: the "alone" bars (blue, also the loss-by-kind bars) and the packed-row bars (orange, pink)
    assert share(PACK_SERIES["alone"][1]) > 0.01
    assert share(PACK_SERIES["no_mask_default_cache"][1]) > 0.002
    assert share(PACK_SERIES["ones_mask_no_cache"][1]) > 0.002

    # and the check can fail: the same page with its charts removed has none of the plot colours
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"<svg.*?</svg>", "", path.read_text(), flags=re.S))
    _screenshot(bare, tmp_path / "bare.png")
    bare_colours = _colour_counts(tmp_path / "bare.png")
    assert bare_colours.get(_rgb(PACK_SERIES["no_mask_default_cache"][1]), 0) == 0
    assert bare_colours.get(_rgb(html_report.STATUS_COLOR["PASS"]), 0) > 0
