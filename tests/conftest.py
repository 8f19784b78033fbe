"""Shared fixtures: one loaded session (and one full run) per real model, tiny models built per test."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make_session(model: str, **kwargs):
    from onboard.harness.session import ModelSession

    return ModelSession(model=model, device="cpu", **kwargs)


def run_all(session, **kwargs):
    from onboard.checks import CHECKS
    from onboard.harness.runner import run_checks

    return run_checks(session, CHECKS, **kwargs)


def by_code(report):
    return {c.code: c for c in report.checks}


@pytest.fixture(scope="session")
def smollm2_report():
    """The default model through the whole checklist, once per test session."""
    return run_all(make_session("smollm2"))


@pytest.fixture(scope="session")
def gemma_session():
    return make_session("gemma3-270m")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
