"""The machine report: RunReport as JSON, to a path or '-' for stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from onboard.harness.result import RunReport


def write(report: RunReport, target: str) -> None:
    text = json.dumps(report.to_dict(), indent=2, default=str) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        Path(target).write_text(text)


def read(path: str | Path) -> RunReport:
    return RunReport.from_dict(json.loads(Path(path).read_text()))
