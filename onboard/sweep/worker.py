"""What runs in a sweep's child process: one architecture, built tiny, through the checks."""

from __future__ import annotations

import time
from typing import Any


def check_architecture(arch: str, layers: int | None = None, slice: str = "auto") -> dict[str, Any]:
    """Build tiny:ARCH (with `layers` layers: tiny:ARCH:N) and run the checklist, the code-path checks on its
    layer-complete slice or (`slice="off"`) every check on the whole model. An architecture that cannot be built
    tiny is reported as such (missing dependency, build error) with the error's first line, not hidden."""
    from onboard.checks import CHECKS
    from onboard.harness.errors import OnboardError
    from onboard.harness.runner import run_checks
    from onboard.harness.session import ModelSession

    start = time.perf_counter()
    try:
        # rows of 256 tokens hold 4-6 of the built-in samples: enough for PACK001's exact test, half the cost
        session = ModelSession(model=f"tiny:{arch}" + (f":{layers}" if layers else ""), device="cpu", pack_length=256,
                               slice=slice)
    except (ImportError, ModuleNotFoundError) as exc:
        return {"outcome": "NEEDS_DEPENDENCY", "reason": _first_line(exc), "report": None}
    except OnboardError as exc:
        return {"outcome": "BUILD_ERROR", "reason": _first_line(exc), "report": None}
    except MemoryError:
        return {"outcome": "BUILD_ERROR", "reason": "out of memory building it (the sweep's per-process limit)",
                "report": None}
    except Exception as exc:  # noqa: BLE001 - the sweep reports why an architecture does not build
        text = _first_line(exc)
        if "can't allocate memory" in text:  # torch's allocator under the sweep's per-process limit
            return {"outcome": "BUILD_ERROR", "reason": "out of memory building it (the sweep's per-process limit)",
                    "report": None}
        if ("requires the" in text and "librar" in text) or "pip install" in text:
            return {"outcome": "NEEDS_DEPENDENCY", "reason": text, "report": None}
        return {"outcome": "BUILD_ERROR", "reason": f"{type(exc).__name__}: {text}", "report": None}
    build = time.perf_counter() - start
    report = run_checks(session, CHECKS)
    report.timings["build"] = build
    return {"outcome": report.verdict.value, "reason": report.reason, "report": report.to_dict()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
