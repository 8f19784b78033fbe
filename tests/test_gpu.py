"""The checklist on CUDA (skipped without it): bf16 tolerances, the cce kernel, the memory probe."""

import pytest

from conftest import by_code
from onboard.checks import CHECKS
from onboard.harness.result import Status, Verdict
from onboard.harness.runner import run_checks
from onboard.harness.session import ModelSession
from onboard.harness.spec import ModelSpec

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_checklist_on_cuda_bf16(arch):
    session = ModelSession(ModelSpec.parse(f"tiny:{arch}"), device="cuda")
    report = run_checks(session, CHECKS)
    checks = by_code(report)
    assert report.verdict is Verdict.READY_WITH_FIXES
    assert checks["PACK001"].diagnosis == "FM-PACK-CACHE" and checks["PACK001"].fix.verified
    cce = checks["CCE001"]
    assert cce.status in (Status.PASS, Status.WARN), cce.message
    assert cce.measurements["impl"].value == "cce"
    assert cce.measurements["peak_fused"].value < cce.measurements["peak_plain"].value
