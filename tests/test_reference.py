"""The reference documentation is rendered from the registries (onboard.reference): the README's generated sections
are current, every patch, threshold and failure mode is in them, and `onboard explain` prints a check's thresholds
and failure modes with their values."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onboard import reference
from onboard.checks import CHECKS
from onboard.cli import app
from onboard.fixtures.faults import FAULTS
from onboard.harness.thresholds import DEFAULTS
from onboard.patches import PATCHES

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"


def invoke(*args):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def rendered():
    return {section: reference.render(section) for section in reference.SECTIONS}


def _rows(table: str) -> list[list[str]]:
    """The body rows of a Markdown table, cells stripped, the first one unquoted."""
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in table.splitlines()[2:]]
    return [[row[0].strip("`"), *row[1:]] for row in rows]


def test_the_readme_is_current(rendered):
    """The README's generated sections are what the registries render now; regenerate with
    `python -m onboard.reference --write README.md`."""
    stale = reference.stale_sections(README.read_text(), rendered)
    assert not stale, f"README.md: generated sections {stale} are stale: run {reference.WRITE_COMMAND}"


def test_check_names_the_stale_section_and_write_repairs_it(tmp_path, rendered):
    """--check exits 1 naming the stale section (and 0 on a current file); --write regenerates it in place."""
    text = reference.updated(README.read_text())
    target = tmp_path / "README.md"
    target.write_text(text.replace("`packing.unpacked` | safe", "`packing.unpacked` | unsafe", 1))
    done = subprocess.run([sys.executable, "-m", "onboard.reference", "--check", str(target)], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 1 and "'patches' is stale" in done.stderr and "'thresholds'" not in done.stderr
    assert reference.main(["--write", str(target)]) == 0
    assert target.read_text() == text and reference.main(["--check", str(target)]) == 0
    target.write_text(text.replace(reference._start("thresholds"), ""))  # a section's markers lost
    assert reference.stale_sections(target.read_text(), rendered) == ["thresholds"]
    assert reference.main(["--write", str(target)]) == 1


def test_every_check_patch_threshold_and_failure_mode_is_in_the_generated_text(rendered):
    checks = {row[0]: row for row in _rows(rendered["checks"])}
    assert list(checks) == [c.code for c in CHECKS]
    for check in CHECKS:
        row = checks[check.code]
        assert row[1] == check.name and row[3] == check.fix_availability.value and row[5] == check.summary
        assert row[4] == check.runs_on
        assert row[2] == (", ".join(check.requires) or "-")

    patches = {row[0]: row for row in _rows(rendered["patches"])}
    assert list(patches) == list(PATCHES)
    for pid, patch in PATCHES.items():
        assert patches[pid][1] == patch.applicability.value and patches[pid][4] == patch.summary
    # which checks propose a patch is read from their code: PACK001 and TRAIN001 fall back to unpacked training
    assert patches["packing.unpacked"][3] == "PACK001, TRAIN001"
    assert patches["speed.compiled_layers"][3] == "KERN001, COMPILE001"
    assert all(row[3] != "-" for row in patches.values()), "a registered patch that no check proposes"

    thresholds = {row[0]: row for row in _rows(rendered["thresholds"])}
    assert list(thresholds) == list(DEFAULTS)
    assert thresholds["packing.tolerance"][1:3] == ["1e-5", "1e-3"]
    assert thresholds["cce.loss_rtol"][1:3] == ["1e-4", "0.01 / 5e-3"]  # bf16 and fp16 differ
    assert thresholds["kernels.rounding_factor"][4] == "KERN001, MOE001, COMPILE001"
    assert all(row[4] != "-" for row in thresholds.values()), "a threshold no check judges against"

    modes = {row[0]: row for row in _rows(rendered["failure-modes"])}
    documented = {m for c in CHECKS for m in reference.emitted_failure_modes(c)}
    assert documented <= set(modes), documented - set(modes)
    for fault in FAULTS.values():
        row = modes[fault.failure_mode]
        assert fault.check in row[1].split(", "), (fault.name, row)
        assert f"`fault:{fault.name}` ({fault.patch or 'no fix'})" in row[3]
    assert all(row[2] for row in modes.values()), "a failure mode without what its check says of it"


def test_explain_prints_a_checks_thresholds_with_values_and_its_failure_modes():
    out = invoke("explain", "PACK001")
    assert out.exit_code == 0, out.output
    assert "What it does:" in out.output and "Thresholds (defaults" in out.output
    lines = {line.split()[0]: line for line in out.output.splitlines() if line.startswith("  packing.")}
    assert set(lines) == {"packing.tolerance", "packing.harm_tolerance", "packing.row_noise",
                          "packing.control_factor"}
    assert "fp32 1e-5, bf16 1e-3, fp16 1e-3 nats" in lines["packing.tolerance"]
    assert "fp32 1e-3, bf16 0.05" in lines["packing.harm_tolerance"]
    assert "4 (every dtype)" in lines["packing.control_factor"]
    reports = next(line for line in out.output.splitlines() if line.startswith("Failure modes it reports"))
    assert FM_IDS(reports) == ["FM-PACK-CACHE", "FM-PACK-MASK", "FM-PACK-ISOLATION", "FM-PACK-POSITIONS",
                               "FM-PACK-ROWINDEX"]
    # a check that judges with another check's thresholds lists them too
    compile_out = invoke("explain", "COMPILE001").output
    assert "kernels.rounding_factor" in compile_out and "compile.max_graph_breaks" in compile_out
    assert "cce.min_saving_ratio" in invoke("explain", "thresholds").output


def FM_IDS(text: str) -> list[str]:
    return re.findall(r"FM-[A-Z]+(?:-[A-Z]+)*", text)


def test_explain_takes_the_failure_mode_ids_the_output_prints():
    """Every FM id that `onboard explain PACK001` prints can be explained; FM-PACK-CACHE names its check and the
    fault model that shows it with the fix; an unknown id is one line and exit 2."""
    printed = FM_IDS(invoke("explain", "PACK001").output)
    for mode in dict.fromkeys(printed):
        out = invoke("explain", mode)
        assert out.exit_code == 0 and out.output.startswith(mode), (mode, out.output)
    out = invoke("explain", "FM-PACK-CACHE")
    assert "PACK001 packing:" in out.output
    assert "fault:pack-cache (PACK001, fix: packing.no_cache_no_mask)" in out.output
    bad = invoke("explain", "FM-NO-SUCH")
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1 and "FM-NO-SUCH" in bad.output


def test_the_reference_module_imports_no_registry_until_asked():
    """Import-light: importing onboard.reference pulls neither torch nor the registries."""
    code = ("import sys, onboard.reference; "
            "print(sorted(m for m in ('torch', 'transformers', 'onboard.checks', 'onboard.patches') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
