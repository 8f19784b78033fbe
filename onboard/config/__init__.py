"""Run configuration from a file: onboard's own TOML (`onboard.toml`, or `[tool.onboard]` in
pyproject.toml) or an axolotl YAML config, turned into the options of `onboard check`.

The command line wins over the file; the file wins over the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onboard.harness.errors import BadInput

__all__ = ["RunConfig", "OPTION_TYPES", "load_config", "discover_config"]

# what a config file may set: `onboard check`'s options by name, plus a few with no command-line form
OPTION_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": str, "device": str, "dtype": str, "attn": str, "revision": str, "trust_remote_code": bool,
    "random_weights": bool, "lora_targets": (list, str), "lora_rank": int, "lora_alpha": int,
    "max_length": int, "pack_length": int, "seed": int, "data": str, "chat_template": str, "no_fix": bool,
    "unsafe_fixes": bool, "strict": bool, "skip": dict, "gradient_checkpointing": bool,
}
PATH_OPTIONS = ("data", "chat_template")  # relative to the config file's folder


@dataclass
class RunConfig:
    path: Path
    kind: str  # "onboard" or "axolotl"
    options: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)  # check code -> why the setup does not use it
    notes: list[str] = field(default_factory=list)  # what was read differently from the file, and why
    template_text: str | None = None  # a chat template given inline (axolotl's chat_template_jinja)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "not_applicable": self.not_applicable,
                "notes": self.notes}


def discover_config(cwd: Path) -> Path | None:
    """./onboard.toml, else ./pyproject.toml when it has a [tool.onboard] table."""
    own = cwd / "onboard.toml"
    if own.is_file():
        return own
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file() and "onboard" in _read_toml(pyproject).get("tool", {}):
        return pyproject
    return None


def load_config(path: Path) -> RunConfig:
    if not path.is_file():
        raise BadInput(f"config file not found: {path}")
    if path.suffix.lower() in (".yml", ".yaml"):
        from onboard.config.axolotl import read_axolotl

        return read_axolotl(path)
    if path.suffix.lower() != ".toml":
        raise BadInput(f"{path}: a config is onboard.toml, pyproject.toml ([tool.onboard]) or an axolotl .yml")
    data = _read_toml(path)
    if path.name == "pyproject.toml":
        if "onboard" not in data.get("tool", {}):
            raise BadInput(f"{path} has no [tool.onboard] table")
        data = data["tool"]["onboard"]
    return _from_table(path, dict(data))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path}: not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {path}: {exc}") from exc


def _from_table(path: Path, table: dict[str, Any]) -> RunConfig:
    from onboard.harness.thresholds import Thresholds

    thresholds = table.pop("thresholds", {})
    if not isinstance(thresholds, dict):
        raise BadInput(f"{path}: thresholds must be a table, e.g. [thresholds] packing.tolerance = 1e-3")
    Thresholds(thresholds, str(path))  # unknown names and bad values fail now, with the file's name
    options = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        options[name] = check_option(path, name, value)
    skip = options.pop("skip", {})
    return RunConfig(path, "onboard", options, thresholds, not_applicable=_check_codes(path, skip))


def check_option(path: Path, name: str, value: Any) -> Any:
    """The value of one option, type-checked; paths made relative to the config file."""
    import difflib

    if name not in OPTION_TYPES:
        close = difflib.get_close_matches(name, [*OPTION_TYPES, "thresholds"], n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(OPTION_TYPES)}, thresholds"
        raise BadInput(f"{path}: unknown option {name!r}{hint}")
    want = OPTION_TYPES[name]
    if not isinstance(value, want) or (isinstance(value, bool) and want is int):
        names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
        raise BadInput(f"{path}: {name} must be a {names}, not {value!r}")
    if name == "lora_targets":
        targets = value.split(",") if isinstance(value, str) else value
        if not all(isinstance(t, str) and t.strip() for t in targets):
            raise BadInput(f"{path}: lora_targets must be module names, not {value!r}")
        return ",".join(t.strip() for t in targets)
    if name in PATH_OPTIONS:
        return str((path.parent / value).resolve())
    return value


def _check_codes(path: Path, skip: dict[str, Any]) -> dict[str, str]:
    from onboard.checks import find_check

    out = {}
    for code, reason in skip.items():
        try:
            check = find_check(code)
        except KeyError as exc:
            raise BadInput(f"{path}: skip: {exc.args[0]}") from None
        out[check.code] = str(reason) or f"skipped by {path.name}"
    return out
