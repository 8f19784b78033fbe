"""ModelSpec: what the user named, resolved to one of the ways a model can be loaded."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from onboard.harness.errors import BadInput


class SourceKind(str, enum.Enum):
    EMBEDDED = "embedded"  # a GGUF shipped in a PyPI package (onboard.fixtures.models.EMBEDDED)
    GGUF = "gguf"  # a local .gguf file
    LOCAL = "local"  # a local folder in Hugging Face layout
    HUB = "hub"  # org/model on the Hugging Face hub (or its local cache)
    TINY = "tiny"  # tiny:ARCH, a real architecture at test size with random weights
    FAULT = "fault"  # fault:NAME, a model of onboard's fault catalog (onboard.fixtures.faults)
    CONFIG = "config"  # config:NAME or config:PATH.json, a real model's shape with random weights


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelSpec:
    kind: SourceKind
    target: str  # embedded name, file or folder path, hub id, or model_type
    revision: str | None = None
    trust_remote_code: bool = False
    random_weights: bool = False

    @property
    def display(self) -> str:
        if self.kind in (SourceKind.TINY, SourceKind.FAULT):
            return f"{self.kind.value}:{self.target}"
        if self.kind is SourceKind.CONFIG:
            from onboard.fixtures.models import CONFIGS

            name = Path(self.target).name.removesuffix(".json")
            return f"config:{name}" if Path(self.target).parent == CONFIGS else f"config:{self.target}"
        return self.target

    @classmethod
    def parse(
        cls,
        text: str | None,
        *,
        revision: str | None = None,
        trust_remote_code: bool = False,
        random_weights: bool = False,
    ) -> ModelSpec:
        from onboard.fixtures.models import DEFAULT_MODEL, EMBEDDED

        text = (text or DEFAULT_MODEL).strip()
        extra = dict(revision=revision, trust_remote_code=trust_remote_code)
        if text.startswith("tiny:"):
            arch = text.removeprefix("tiny:")
            if not arch:
                raise BadInput("tiny: needs an architecture, e.g. tiny:llama")
            return cls(SourceKind.TINY, arch, random_weights=True, **extra)
        if text.startswith("fault:"):
            from onboard.fixtures.faults import get_fault

            fault = get_fault(text.removeprefix("fault:"))
            return cls(SourceKind.FAULT, fault.name, random_weights=fault.random_weights, **extra)
        if text.startswith("config:"):
            from onboard.fixtures.models import config_path

            return cls(SourceKind.CONFIG, str(config_path(text.removeprefix("config:"))), random_weights=True, **extra)
        if text in EMBEDDED:
            return cls(SourceKind.EMBEDDED, text, random_weights=random_weights, **extra)
        path = Path(text).expanduser()
        if path.suffix.lower() == ".gguf":
            if not path.is_file():
                raise BadInput(f"GGUF file not found: {text}")
            return cls(SourceKind.GGUF, str(path.resolve()), random_weights=random_weights, **extra)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise BadInput(f"{text} is a folder without a config.json: not a Hugging Face model folder")
            return cls(SourceKind.LOCAL, str(path.resolve()), random_weights=random_weights, **extra)
        if path.exists():
            raise BadInput(f"{text} is a file, but not a .gguf: give a model folder, a .gguf file or a hub id")
        if _HUB_ID.match(text):
            return cls(SourceKind.HUB, text, random_weights=random_weights, **extra)
        names = ", ".join(sorted(EMBEDDED))
        raise BadInput(
            f"unknown model {text!r}: not a folder, a .gguf file, a hub id (org/name), tiny:ARCH, fault:NAME, config:NAME, "
            f"or one of {names}"
        )
