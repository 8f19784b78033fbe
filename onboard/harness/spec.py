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
            from onboard.harness.sources import shipped_configs

            name = Path(self.target).name.removesuffix(".json")
            return f"config:{name}" if Path(self.target).parent == shipped_configs() else f"config:{self.target}"
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
        from onboard.harness import sources

        embedded = sources.embedded_models()
        text = (text or sources.default_model()).strip()
        extra = dict(revision=revision, trust_remote_code=trust_remote_code)
        if text.startswith("tiny:"):
            target = text.removeprefix("tiny:")
            arch, _, layers = target.partition(":")  # tiny:llama:6, six layers instead of two
            if not arch:
                raise BadInput("tiny: needs an architecture, e.g. tiny:llama")
            if layers and (not layers.isdigit() or int(layers) < 1):
                raise BadInput(f"tiny:{arch}:{layers}: the layer count after the architecture must be a positive integer")
            sources.check_architecture(arch)  # a typo fails here, before anything is built
            return cls(SourceKind.TINY, target, random_weights=True, **extra)
        if text.startswith("fault:"):
            name = text.removeprefix("fault:")
            close = _close(name, sources.faults())
            if name not in sources.faults() and close:
                raise BadInput(f"unknown fault {name!r}; did you mean {_either('fault:', close)}?")
            fault = sources.fault(name)
            return cls(SourceKind.FAULT, fault.name, random_weights=fault.random_weights, **extra)
        if text.startswith("config:"):
            name = text.removeprefix("config:")
            close = _close(name, _shipped_configs())
            if name not in _shipped_configs() and not Path(name).expanduser().exists() and close:
                raise BadInput(f"unknown config {name!r}; did you mean {_either('config:', close)}?")
            return cls(SourceKind.CONFIG, str(sources.config_path(name)), random_weights=True, **extra)
        if text in embedded:
            return cls(SourceKind.EMBEDDED, text, random_weights=random_weights, **extra)
        path = Path(text).expanduser()
        if path.suffix.lower() == ".gguf":
            if not path.is_file():
                raise BadInput(_no_such_path(text, "GGUF file not found"))
            return cls(SourceKind.GGUF, str(path.resolve()), random_weights=random_weights, **extra)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise BadInput(f"{text} is a folder without a config.json: not a Hugging Face model folder")
            return cls(SourceKind.LOCAL, str(path.resolve()), random_weights=random_weights, **extra)
        if path.exists():
            raise BadInput(f"{text} is a file, but not a .gguf: give a model folder, a .gguf file or a hub id")
        if _HUB_ID.match(text):
            return cls(SourceKind.HUB, text, random_weights=random_weights, **extra)
        if _looks_like_path(text):
            raise BadInput(_no_such_path(text))
        close = _close(text, embedded) or _other_namespaces(text)
        if close:
            raise BadInput(f"unknown model {text!r}; did you mean {_either('', close)}?")
        names = ", ".join(sorted(embedded))
        raise BadInput(
            f"unknown model {text!r}: not a folder, a .gguf file, a hub id (org/name), tiny:ARCH, fault:NAME, config:NAME, "
            f"or one of {names}"
        )


# ---- "did you mean": the names a typo was probably meant to be -----------------------------------------


def _close(word: str, names, n: int = 3) -> list[str]:
    """The names closest to `word` (case aside), best first; none when nothing is close."""
    import difflib

    by_lower: dict[str, str] = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)
    return [by_lower[m] for m in difflib.get_close_matches(word.lower(), list(by_lower), n=n, cutoff=0.75)]


def _either(prefix: str, names: list[str]) -> str:
    names = [prefix + n for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _shipped_configs() -> list[str]:
    from onboard.harness.sources import shipped_configs

    return sorted(p.stem for p in shipped_configs().glob("*.json"))


def _other_namespaces(text: str) -> list[str]:
    """A bare name that is a fault, a shipped config or an architecture: the same name with its prefix
    (`llama` -> tiny:llama, as `onboard sweep` names its rows); else the close names of those kinds."""
    from onboard.harness.sources import faults, known_architectures

    kinds = (("fault:", list(faults())), ("config:", _shipped_configs()), ("tiny:", sorted(known_architectures())))
    exact = [prefix + text for prefix, names in kinds if text in names]
    if exact:
        return exact
    return [prefix + name for prefix, names in kinds for name in _close(text, names, n=2)][:3]


def _looks_like_path(text: str) -> bool:
    """A name only a path has: relative or absolute, home-based, several folders deep, or a model file's suffix."""
    return (text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1
            or Path(text).suffix.lower() in (".json", ".safetensors", ".bin", ".pt", ".gguf"))


def _no_such_path(text: str, what: str = "") -> str:
    """'no such path: TEXT', with the close names in its folder where that folder exists."""
    base = text.rstrip("/\\") or text
    name = Path(base).name
    line = f"no such path: {text}" + (f" ({what})" if what else "")
    parent = Path(base).expanduser().parent
    try:
        entries = [p.name for p in parent.iterdir()] if name and parent.is_dir() else []
    except OSError:
        entries = []
    close = _close(name, entries[:5000])
    if close:
        line += f"; did you mean {_either(base[: len(base) - len(name)], close)}?"
    return line
