"""Each check's version against its source. A report records the version of every check that made it, and
`onboard train --from` refuses a report whose checks have changed since; that only works when a change to a
check bumps its version. tests/check_versions.json holds, per check, the version and the digest of its module's
source: a source change without a new version fails here. A change that cannot move a verdict (a comment, a
message's wording) keeps the version: refresh the digests with `python tests/test_check_versions.py --refresh`."""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from pathlib import Path

LOCK = Path(__file__).with_name("check_versions.json")


def current() -> dict[str, dict]:
    from onboard.checks import CHECKS

    return {c.code: {"version": c.version,
                     "source_sha256": hashlib.sha256(inspect.getsource(inspect.getmodule(c if isinstance(c, type) else type(c))).encode()).hexdigest()}
            for c in CHECKS}


def test_a_changed_check_has_a_new_version():
    locked, now = json.loads(LOCK.read_text()), current()
    assert set(locked) == set(now), "a check was added or removed: run python tests/test_check_versions.py --refresh"
    stale = []
    for code, entry in now.items():
        old = locked[code]
        if entry["source_sha256"] != old["source_sha256"] and entry["version"] == old["version"]:
            stale.append(f"{code}: its source changed and its version is still {old['version']}: bump "
                         f"{code}'s `version` if the change can move a verdict, then refresh the digests")
        elif entry["version"] != old["version"] and entry["source_sha256"] == old["source_sha256"]:
            stale.append(f"{code}: version {entry['version']} with the digest of version {old['version']}: refresh")
        elif entry["version"] < old["version"]:
            stale.append(f"{code}: version went down ({old['version']} -> {entry['version']})")
    assert not stale, "\n".join(stale) + "\n(python tests/test_check_versions.py --refresh)"


def test_a_report_records_each_checks_version(smollm2_report):
    from onboard.checks import CHECKS

    versions = {c.code: c.version for c in CHECKS}
    assert {r.code: r.version for r in smollm2_report.checks} == versions
    data = smollm2_report.to_dict()
    assert all(c["version"] == versions[c["code"]] for c in data["checks"])


def test_train_from_refuses_a_report_whose_checks_changed(smollm2_report, tmp_path):
    from onboard.harness.errors import BadInput
    from onboard.train import load_check_report

    data = smollm2_report.to_dict()
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    assert load_check_report(path).checks  # the report as written loads
    data["checks"][4]["version"] = 0  # made by an onboard whose PACK001 was another
    path.write_text(json.dumps(data))
    try:
        load_check_report(path)
    except BadInput as exc:
        assert data["checks"][4]["code"] in str(exc) and "onboard check" in str(exc)
    else:
        raise AssertionError("a report from changed checks was accepted")


if __name__ == "__main__" and sys.argv[1:] == ["--refresh"]:
    LOCK.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {LOCK}")
