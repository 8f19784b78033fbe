"""JUnit XML: one testcase per check. FAIL -> failure, ERROR -> error, SKIP -> skipped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from onboard.harness.result import RunReport, Status


def write(report: RunReport, path: str | Path) -> None:
    suite = ET.Element("testsuite", name=f"onboard {report.model['id']}", tests=str(len(report.checks)),
                       time=f"{report.duration_s:.3f}")
    counts = {"failures": 0, "errors": 0, "skipped": 0}
    suite_props = ET.SubElement(suite, "properties")
    ET.SubElement(suite_props, "property", name="verdict", value=report.verdict.value)
    if report.config:
        ET.SubElement(suite_props, "property", name="config", value=report.config["path"])
    for name, t in report.thresholds.items():
        ET.SubElement(suite_props, "property", name=f"threshold.{name}", value=f"{t['value']:g} {t['unit']}".strip())
    for r in report.checks:
        case = ET.SubElement(suite, "testcase", classname=f"onboard.{report.model['id']}",
                             name=f"{r.code} {r.name}", time=f"{r.duration_s:.3f}")
        props = ET.SubElement(case, "properties")
        for name, m in r.measurements.items():
            ET.SubElement(props, "property", name=name, value=f"{m.value} {m.unit}".strip())
            if m.threshold:
                ET.SubElement(props, "property", name=f"{name}.threshold", value=m.threshold)
        if r.diagnosis:
            ET.SubElement(props, "property", name="diagnosis", value=r.diagnosis)
        if r.fix is not None:
            ET.SubElement(props, "property", name="fix", value=f"{r.fix.patch_id} verified={r.fix.verified}")
        if r.status is Status.FAIL and (not r.fixed or report.options.get("strict")):  # --strict: a fix fails too
            ET.SubElement(case, "failure", message=r.message, type=r.diagnosis or "FAIL")
            counts["failures"] += 1
        elif r.status is Status.ERROR:
            ET.SubElement(case, "error", message=r.message).text = r.evidence.get("traceback", "")
            counts["errors"] += 1
        elif r.status is Status.SKIP:
            ET.SubElement(case, "skipped", message=r.message)
            counts["skipped"] += 1
        else:
            ET.SubElement(case, "system-out").text = r.message
    for k, v in counts.items():
        suite.set(k, str(v))
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
