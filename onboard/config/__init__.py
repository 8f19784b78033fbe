"""Run configuration from a file: onboard's own TOML (`onboard.toml`, or `[tool.onboard]` in
pyproject.toml) or an axolotl YAML config, turned into the options of `onboard check`.

The command line wins over the file; the file wins over the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onboard.harness.errors import BadInput
from onboard.config.runconfig import RunConfig
from onboard.harness.setup import FIELDS, check_value

__all__ = ["RunConfig", "OPTION_TYPES", "load_config", "discover_config"]

# what a config file may set: the Setup's fields by name (onboard.harness.setup), but the inline template
OPTION_TYPES: dict[str, tuple[type, ...]] = {name: f.metadata["types"] for name, f in FIELDS.items()
                                             if name not in ("chat_template_text", "thresholds")}


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
    """The value of one option, type-checked against the Setup; paths made relative to the config file."""
    import difflib

    if name not in OPTION_TYPES:
        close = difflib.get_close_matches(name, [*OPTION_TYPES, "thresholds"], n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(OPTION_TYPES)}, thresholds"
        raise BadInput(f"{path}: unknown option {name!r}{hint}")
    value = check_value(str(path), name, value)
    if FIELDS[name].metadata["path"]:
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
