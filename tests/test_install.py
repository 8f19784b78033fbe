"""What `pip install onboard` brings, and what onboard says when an optional library is absent.

The base install leaves out the test stack and cut-cross-entropy (which requires triton on Linux, about 1 GB);
CCE001 then reports the missing library with the line that installs it, and nothing about the model. Absence
is simulated in a child process whose `sys.modules` blocks the import, so the model path runs for real."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from onboard.patches.cce import CCE_INSTALL, CCE_REQUIREMENT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
TEST_STACK = {"pytest", "pillow", "trl", "datasets", "pyarrow", "pandas"}
HEAVY = {"triton", "cut-cross-entropy", "flash-attn", "nvidia-ml-py", "matplotlib"}  # triton ~1 GB, matplotlib ~100 MB


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _closure(roots: list[str], skip: set[str]) -> set[str]:
    """Every distribution the installed metadata pulls in from `roots` on this machine (markers evaluated
    here, extras not followed), not descending into `skip`."""
    env = {**default_environment(), "extra": ""}
    seen: set[str] = set()
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate(env)):
            continue
        seen.add(name)
        if name in skip:
            continue
        try:
            todo += [Requirement(r) for r in metadata.requires(req.name) or []]
        except metadata.PackageNotFoundError:
            pass
    return seen


def test_the_base_install_has_no_test_stack_and_no_triton():
    base = _names(PYPROJECT["dependencies"])
    assert not base & (TEST_STACK | HEAVY), base & (TEST_STACK | HEAVY)
    # what the base dependencies pull in, as installed: torch's own requirements are the build's (a CUDA build
    # of torch requires triton itself), so only what onboard adds is judged
    pulled = _closure(PYPROJECT["dependencies"], skip={"torch"})
    assert not pulled & ({"triton", "cut-cross-entropy", "trl", "datasets", "pyarrow", "pandas", "pytest",
                          "matplotlib"}), pulled


def test_the_extras_carry_what_was_left_out():
    extras = {name: _names(reqs) for name, reqs in PYPROJECT["optional-dependencies"].items()}
    assert CCE_REQUIREMENT in PYPROJECT["optional-dependencies"]["cce"]  # the line CCE001 prints installs the extra
    assert "cut-cross-entropy" in extras["test"]  # the suite covers CCE001 on the CPU
    assert {"pytest", "trl", "datasets"} <= extras["test"]
    assert "matplotlib" in extras["plot"] and "matplotlib" in extras["test"]  # onboard train's loss.png, tested


def test_training_without_matplotlib_says_how_to_draw_the_curve():
    """The loss curve is the [plot] extra: without matplotlib, drawing it raises ImportError (training catches it
    and writes the install line into its report instead of loss.png)."""
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from onboard.train.plot import loss_curve, PLOT_INSTALL\n"
            "try:\n    loss_curve([{'step': 1, 'loss': 1.0, 'tokens_per_s': 1.0}], 'x.png')\n"
            "except ImportError:\n    print('missing', PLOT_INSTALL)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("missing pip install") and "matplotlib" in out


@pytest.mark.skipif(platform.system() != "Linux", reason="the triton requirement is Linux's")
def test_cut_cross_entropy_requires_triton_on_linux():
    """Why cut-cross-entropy is an extra: installed on Linux it brings triton, CPU machine or not."""
    try:
        requires = metadata.requires("cut-cross-entropy") or []
    except metadata.PackageNotFoundError:
        pytest.skip("cut-cross-entropy is not installed (pip install -e '.[test]')")
    env = {**default_environment(), "extra": ""}
    assert any(Requirement(r).name == "triton" and (Requirement(r).marker is None or Requirement(r).marker.evaluate(env))
               for r in requires), requires


CHILD = r"""
import json, sys
model = sys.argv[2]
for name in sys.argv[3:]:
    sys.modules[name] = None  # the import fails as for a package that is not there
from onboard.checks import CceCheck, LoadCheck, LoraCheck
from onboard.harness.runner import run_checks
from onboard.harness.session import ModelSession
from onboard.patches import get_patch, ids

session = ModelSession(model=model, device="cpu")
report = run_checks(session, [LoadCheck, LoraCheck, CceCheck])
cce = next(c for c in report.checks if c.code == "CCE001")
try:
    get_patch(ids.CCE_FUSED_LOSS).apply(session.train_model, session.patch_context())
    applied = "applied"
except ImportError as exc:
    applied = f"ImportError: {exc}"
json.dump({"status": cce.status.value, "message": cce.message, "diagnosis": cce.diagnosis, "evidence": cce.evidence,
           "verdict": report.verdict.value, "apply": applied,
           "fix": [cce.fix.patch_id, cce.fix.verified] if cce.fix else None}, open(sys.argv[1], "w"))
"""


def _run_without(tmp_path, *blocked: str, model: str = "tiny:llama") -> dict:
    out = tmp_path / "cce.json"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out), model, *blocked], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_cce001_without_cut_cross_entropy_names_the_install_line(tmp_path):
    cce = _run_without(tmp_path, "cut_cross_entropy")
    assert cce["status"] == "SKIP" and cce["diagnosis"] is None, cce  # nothing about the model
    assert "cut-cross-entropy is not installed" in cce["message"] and CCE_INSTALL in cce["message"], cce["message"]
    assert cce["evidence"]["needs_dependency"]["install"] == CCE_INSTALL
    assert cce["verdict"] == "READY"  # a library the machine lacks keeps no model from being ready
    assert cce["apply"].startswith("ImportError: cce.fused_loss needs cut-cross-entropy") and CCE_INSTALL in cce["apply"]


def test_without_cut_cross_entropy_an_unshifted_loss_is_still_found(tmp_path):
    """The fused loss is the library's; whether the model's own loss (what training uses without it) is the
    next-token cross-entropy of its logits is the model's. BartForCausalLM trains position t on token t: without
    the library that stays a finding (it was caught only by the fused-loss comparison before the library became
    an extra), and labels.shift is verified on the model's own loss."""
    cce = _run_without(tmp_path, "cut_cross_entropy", model="tiny:bart")
    assert cce["status"] == "FAIL" and cce["diagnosis"] == "FM-CCE-MATH", cce
    assert "does not shift labels" in cce["message"] and "not installed" in cce["message"], cce["message"]
    assert cce["fix"] == ["labels.shift", True] and cce["verdict"] == "READY_WITH_FIXES", cce


@pytest.mark.skipif(platform.system() != "Linux", reason="cut_cross_entropy imports triton on Linux only")
def test_cce001_with_cut_cross_entropy_but_no_triton_says_so(tmp_path):
    """cut-cross-entropy installed without its triton (`pip install --no-deps`): found, but it does not import."""
    try:
        metadata.version("cut-cross-entropy")
    except metadata.PackageNotFoundError:
        pytest.skip("cut-cross-entropy is not installed (pip install -e '.[test]')")
    cce = _run_without(tmp_path, "triton")
    assert cce["status"] == "SKIP" and cce["diagnosis"] is None, cce
    assert "does not import" in cce["message"] and "triton" in cce["message"] and CCE_INSTALL in cce["message"], cce
