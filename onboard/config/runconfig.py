"""A run configuration read from a file: its options as Setup fields, thresholds, the checks it skips.

Its own module so that both readers (onboard's TOML in onboard.config, axolotl's YAML in onboard.config.axolotl)
build it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunConfig:
    path: Path
    kind: str  # "onboard" or "axolotl"
    options: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)  # check code -> why the setup does not use it
    notes: list[str] = field(default_factory=list)  # what was read differently from the file, and why
    template_text: str | None = None  # a chat template given inline (axolotl's chat_template_jinja)

    def setup_options(self) -> dict[str, Any]:
        """The file as Setup fields: its options, thresholds, the checks it says the setup does not use, an
        inline chat template."""
        out = dict(self.options)
        if self.thresholds:
            out["thresholds"] = self.thresholds
        if self.not_applicable:
            out["skip"] = self.not_applicable
        if self.template_text and "chat_template" not in out:
            out["chat_template_text"] = self.template_text
        return out

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "not_applicable": self.not_applicable,
                "notes": self.notes}
