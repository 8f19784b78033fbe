"""What a check is: a rule with a stable code, prerequisites, a fix ability, and its documentation.

The docstring of a check class is its user documentation (`onboard explain CODE`), under the headings
What it does / Why it matters / Failure modes / Fix / Fix safety.
"""

from __future__ import annotations

import enum
import inspect
from typing import ClassVar, TYPE_CHECKING

from onboard.harness.result import CheckResult, Status

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession


# KERN001, MOE001 and COMPILE001 measure packed decoder-only rows; an encoder-decoder trains right-padded with its
# labels as the decoder's input: onboard's limit, said so, not a finding
SEQ2SEQ_NOT_PROBED = ("not probed for seq2seq: the check's probes are packed decoder-only rows, and an encoder-decoder "
                      "trains right-padded (onboard's limit, not the model's)")


class FixAvailability(str, enum.Enum):
    ALWAYS = "always"
    SOMETIMES = "sometimes"
    NONE = "none"


class Check:
    code: ClassVar[str]
    name: ClassVar[str]
    summary: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()  # codes of checks that must not have failed
    fix_availability: ClassVar[FixAvailability] = FixAvailability.NONE
    # compares losses: with no labelled token in the data it cannot judge, and the runner says so (SKIP)
    needs_labels: ClassVar[bool] = False
    # bumped whenever a change to the check can move a verdict (what it measures, a limit, a fix it proposes):
    # reports record it, and `onboard train --from` refuses a report whose checks have changed since.
    # tests/check_versions.json holds each check's source digest; a source change without a bump fails the tests
    version: ClassVar[int] = 1
    # where the check runs when the session has a layer-complete slice (onboard.harness.slice): "slice" for a check
    # of code paths (one layer of each kind runs the same code as thirty), "whole" for one that needs the depth or
    # the weights of the whole model (the pretrained loss, the last training step)
    runs_on: ClassVar[str] = "whole"
    # needs the whole model itself (its pretrained loss, the step training takes): SKIP, with the memory it needs,
    # where the whole model does not fit the device; a "whole" check that is not whole_only runs on the slice then
    whole_only: ClassVar[bool] = False

    def run(self, session: ModelSession) -> CheckResult:  # pragma: no cover - interface
        raise NotImplementedError

    def figures(self, result: CheckResult, device: str) -> list[dict]:
        """The check's own plots of `result` (onboard.harness.result.bar_figure / note_figure) for the HTML
        report; none by default."""
        return []

    def result(self, status: Status, message: str, **fields) -> CheckResult:
        return CheckResult(code=self.code, name=self.name, status=status, message=message, version=self.version,
                           **fields)

    @classmethod
    def documentation(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")
