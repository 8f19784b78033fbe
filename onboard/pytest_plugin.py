"""pytest plugin: gate a model inside a repository's own test suite.

`pytest --onboard MODEL` adds one test per check (`onboard[MODEL]::PACK001 packing`). The model loads once,
the checklist runs once, and each check's result becomes a pytest outcome: PASS and WARN pass (a WARN also
as a warning), a FAIL or WARN fixed by a verified patch passes (fails with --onboard-strict), a FAIL fails with
the diagnosis and measurements, a check that crashed (ERROR) or a model that cannot load is an error,
SKIP is skipped. `--onboard-config PATH` reads onboard.toml / pyproject / axolotl.yml as `onboard check
--config` does. For tests of your own, the `onboard_check` fixture returns the RunReport of a model.

Loaded through the `pytest11` entry point when onboard is installed; nothing heavy is imported unless
an option or the fixture is used.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

_REPORTS = pytest.StashKey[dict]()


class OnboardWarning(UserWarning):
    """A check's WARN: a finding worth reading that does not stop training."""


class CheckFailed(Exception):
    """A check found that the model would train wrongly."""


class CheckCrashed(Exception):
    """The check itself, or loading the model, failed: it says nothing about the model's readiness."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("onboard", "onboard: is a model ready to fine-tune")
    group.addoption("--onboard", action="append", default=[], metavar="MODEL",
                    help="run onboard's checks on MODEL, one test per check (repeatable)")
    group.addoption("--onboard-config", metavar="PATH", default=None,
                    help="onboard.toml, pyproject.toml or axolotl .yml (its base_model when no --onboard)")
    group.addoption("--onboard-strict", action="store_true", default=False,
                    help="a check that needed a fix fails, as `onboard check --strict` exits 1")
    group.addoption("--onboard-device", default="auto", help="auto, cpu, cuda, cuda:N")
    group.addoption("--onboard-unsafe-fixes", action="store_true", default=False,
                    help="also apply patches that change what is trained")


def _models(config: pytest.Config) -> list[str]:
    models = list(config.getoption("onboard"))
    if not models and config.getoption("onboard_config"):
        models = [""]  # the config file names the model
    return models


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselect, so they can select onboard's tests too
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    models = _models(config)
    if not models:
        return
    from onboard.checks import CHECKS

    for model in models:
        name = f"onboard[{model or 'config'}]"
        parent = OnboardModel.from_parent(session, name=name, nodeid=name, model=model)
        added = [OnboardCheck.from_parent(parent, name=f"{c.code} {c.name}", code=c.code) for c in CHECKS]
        items.extend(added)
        # the terminal's "collected N items" counted the files' tests before these were made: count them too
        # (else it prints "collected 1 item" and, with -k, a negative number selected)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and isinstance(getattr(reporter, "_numcollected", None), int):
            reporter._numcollected += len(added)


class OnboardModel(pytest.Collector):
    def __init__(self, *, model: str, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def collect(self):  # items are made by the collection hook
        return []


class OnboardCheck(pytest.Item):
    def __init__(self, *, code: str, **kwargs):
        super().__init__(**kwargs)
        self.code = code
        self.add_marker(pytest.mark.onboard)

    def _result(self):
        report = _report_for(self.config, self.parent.model)
        return next(c for c in report.checks if c.code == self.code)

    def setup(self) -> None:
        from onboard.harness.result import Status

        result = self._result()  # loading the model, once per session; failure: an error, as pytest means it
        if result.status is Status.ERROR:
            raise CheckCrashed(f"{self.code} crashed: {result.message}\n{result.evidence.get('traceback', '')}")

    def runtest(self) -> None:
        from onboard.harness.result import Status

        r = self._result()
        if r.status is Status.SKIP:
            pytest.skip(r.message)
        if r.status is Status.FAIL and (not r.fixed or self.config.getoption("onboard_strict")):
            raise CheckFailed(_explain(r))
        if r.status is Status.WARN and r.fixed and self.config.getoption("onboard_strict"):
            raise CheckFailed(_explain(r))  # strict: a finding that needed a fix fails, as --strict's exit 1
        if r.status is Status.WARN:
            warnings.warn(OnboardWarning(f"{r.code} {r.diagnosis or ''} {r.message}".replace("  ", " ")))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, (CheckFailed, CheckCrashed)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return Path(str(self.config.rootpath)), None, f"onboard {self.parent.model} {self.name}"


def _explain(r) -> str:
    lines = [f"{r.code} {r.name}: {r.message}"]
    if r.diagnosis:
        lines.append(f"diagnosis: {r.diagnosis} (onboard explain {r.code})")
    if r.fix is not None:
        lines.append(f"fix {r.fix.patch_id}: " + ("verified (failing because of --onboard-strict)" if r.fix.verified
                                                  else f"not verified: {r.fix.message_after or r.fix.error}"))
    elif r.proposed_patch:
        lines.append(f"proposed fix {r.proposed_patch}: not applied")
    for name, m in r.measurements.items():
        lines.append(f"  {name} = {m.value} {m.unit}".rstrip() + (f"  ({m.threshold})" if m.threshold else ""))
    return "\n".join(lines)


def _report_for(config: pytest.Config, model: str):
    reports = config.stash.setdefault(_REPORTS, {})
    if model not in reports:
        try:
            reports[model] = run_onboard(model or None, config.getoption("onboard_config"),
                                         device=config.getoption("onboard_device"),
                                         unsafe_fixes=config.getoption("onboard_unsafe_fixes"))
        except Exception as exc:  # noqa: BLE001 - every check of this model reports the same load error
            reports[model] = exc
    found = reports[model]
    if isinstance(found, Exception):
        raise CheckCrashed(f"onboard could not check {model or 'the config model'}: {found}")
    return found


def run_onboard(model: str | None = None, config: str | Path | None = None, **options: Any):
    """Load `model` once and run the checklist (onboard.check), with a config file's options and thresholds;
    options given here (device, dtype, lora_targets, ...: the Setup's fields) win over the file."""
    from onboard.api import check

    return check(model, config=config, **options)


@pytest.fixture(scope="session")
def onboard_check():
    """A function model -> RunReport (keyword options as `run_onboard`), cached per model and options:

        def test_my_model_trains(onboard_check):
            report = onboard_check("./checkpoints/my-model", device="cpu")
            assert report.verdict.value != "NOT_READY", [c.message for c in report.checks if c.blocking]
    """
    cache: dict[tuple, Any] = {}

    def check(model: str | None = None, config: str | Path | None = None, **options: Any):
        key = (model, str(config), tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = run_onboard(model, config, **options)
        return cache[key]

    return check


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "onboard: a check of onboard's checklist, added by --onboard")
