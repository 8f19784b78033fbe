from onboard.harness.result import CheckResult, FixRecord, RunReport, Status, Verdict


def report(*checks):
    return RunReport(model={"id": "m"}, environment={}, checks=list(checks), seed=0)


def check(status, fix=None):
    return CheckResult(code="X001", name="x", status=status, message="m", fix=fix)


def test_verdicts_and_exit_codes():
    fixed = check(Status.FAIL, FixRecord("p", applied=True, verified=True, status_after=Status.PASS))
    unfixed = check(Status.FAIL, FixRecord("p", applied=True, verified=False, status_after=Status.FAIL))
    assert report(check(Status.PASS), check(Status.WARN), check(Status.SKIP)).verdict is Verdict.READY
    assert report(check(Status.PASS), fixed).verdict is Verdict.READY_WITH_FIXES
    assert report(fixed, unfixed).verdict is Verdict.NOT_READY
    assert report(check(Status.ERROR)).verdict is Verdict.INCONCLUSIVE  # a crash says nothing of the model
    assert report(check(Status.ERROR), unfixed).verdict is Verdict.NOT_READY  # a finding still does
    assert report(check(Status.ERROR)).exit_code() == 3
    assert report(fixed).exit_code() == 0
    assert report(fixed).exit_code(strict=True) == 1
    assert report(unfixed).exit_code() == 1


def test_json_round_trip_keeps_everything():
    c = check(Status.FAIL, FixRecord("packing.no_cache_no_mask", True, True, Status.PASS, "ok"))
    c.measure("diff", 1.5, "nats", "<= 0.001")
    c.diagnosis, c.proposed_patch, c.evidence = "FM-PACK-CACHE", "packing.no_cache_no_mask", {"a": [1]}
    r = report(c, CheckResult(code="C", name="c", status=Status.PASS, message="", enables="cce.fused_loss"))
    data = r.to_dict()
    assert data["patches"] == ["packing.no_cache_no_mask", "cce.fused_loss"]
    assert RunReport.from_dict(data).to_dict() == data


def test_only_verified_fixes_are_patches_for_training():
    tried = check(Status.FAIL, FixRecord("packing.block_mask", applied=True, verified=False, status_after=Status.FAIL))
    worked = check(Status.FAIL, FixRecord("packing.no_cache_no_mask", applied=True, verified=True,
                                          status_after=Status.PASS))
    assert report(worked, tried).verified_patches == ["packing.no_cache_no_mask"]
    assert report(tried).verified_patches == []


def test_measured_bounds_are_numbers_that_agree_with_the_verdicts():
    """Thresholds are numbers with a comparison (limit, compare), not text parsed back: a passing check's
    bounded measurements are all within their bounds, and they survive the JSON round trip."""
    from conftest import make_session, run_all
    from onboard.harness.result import RunReport, Status

    report = run_all(make_session("tiny:llama"))
    bounded = 0
    for r in report.checks:
        for name, m in r.measurements.items():
            if m.compare is not None:
                bounded += 1
                assert isinstance(m.limit, (int, float)) and m.threshold.startswith(m.compare)
                if r.status is Status.PASS:
                    assert m.within, (r.code, name, m)
        if r.fix is not None and r.fix.verified:
            assert all(m.within is not False for m in r.fix.measurements_after.values()
                       if m.compare is not None), r.code
    assert bounded >= 8
    again = RunReport.from_dict(report.to_dict())
    assert [c.measurements for c in again.checks] == [c.measurements for c in report.checks]
