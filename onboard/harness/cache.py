"""Where onboard keeps downloaded and converted models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$ONBOARD_CACHE or ~/.cache/onboard, created when missing."""
    path = Path(os.environ.get("ONBOARD_CACHE") or Path.home() / ".cache" / "onboard")
    path.mkdir(parents=True, exist_ok=True)
    return path
