"""The engine's import structure, read from the source (every import, the lazy ones inside functions too):
packages import only the layers below them, the fault catalog and the tiny builder are reached through one
seam, and importing the engine loads neither."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "onboard"
# bottom to top: a package may import itself and the packages before it, never one after it
# ("onboard" is the top package: its __init__ hands out the API)
LAYERS = ("patches", "harness", "checks", "config", "reports", "train", "sweep", "reference", "api", "onboard",
          "pytest_plugin", "cli")
SEAM = "onboard.harness.sources"  # the only engine module that imports onboard.fixtures


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module != "onboard":
                found.append(node.module)
            else:  # `from onboard import api` is the module; `from onboard import __version__` the top package
                found += [f"onboard.{a.name}" if (ROOT / a.name).is_dir() or (ROOT / f"{a.name}.py").is_file()
                          else "onboard" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return [name for name in found if name == "onboard" or name.startswith("onboard.")]


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "onboard"


MODULES = {_module(p): _imports(p) for p in sorted(ROOT.rglob("*.py"))}


def test_packages_import_only_the_layers_below():
    up = []
    for module, imported in MODULES.items():
        here = _package(module)
        if here not in LAYERS:
            continue
        for name in imported:
            there = _package(name)
            if there in LAYERS and LAYERS.index(there) > LAYERS.index(here):
                up.append(f"{module} ({here}) imports {name} ({there}), a layer above it")
    assert not up, "\n".join(up)


def test_reports_render_results_only():
    """The renderers read a RunReport; what a check or a patch is, they do not need to know."""
    reaching = [f"{module} imports {name}" for module, imported in MODULES.items() if _package(module) == "reports"
                for name in imported if _package(name) in ("checks", "patches", "train", "config", "sweep")]
    assert not reaching, "\n".join(reaching)


def test_only_the_seam_reaches_the_fault_catalog_and_the_tiny_builder():
    crossing = [f"{module} imports {name}" for module, imported in MODULES.items()
                if _package(module) != "fixtures" and module != SEAM
                for name in imported if name.startswith("onboard.fixtures")]
    assert not crossing, "\n".join(crossing)


def test_no_two_modules_import_each_other():
    """A pair of modules importing each other (even lazily) has no order of layers: one of them holds what both
    need, in a third module."""
    pairs = sorted({tuple(sorted((a, b))) for a, names in MODULES.items() for b in names
                    if b in MODULES and a != b and a in MODULES.get(b, ()) and not b.startswith(a + ".")
                    and not a.startswith(b + ".")})
    assert not pairs, pairs


def test_importing_the_engine_loads_no_fault_catalog():
    code = ("import sys, onboard.api, onboard.train, onboard.checks, onboard.harness.session, onboard.config, "
            "onboard.reports.terminal\n"
            "print(sorted(m for m in sys.modules if m.startswith('onboard.fixtures.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_every_onboard_name_a_script_or_module_imports_exists():
    """bench/ scripts run rarely (some only on a GPU): a name they import from onboard that no longer exists is
    found here, not on the GPU machine."""
    import importlib

    missing = []
    for path in sorted([*ROOT.rglob("*.py"), *(ROOT.parent / "bench").rglob("*.py"), *(ROOT.parent / "examples").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("onboard"):
                module = importlib.import_module(node.module)
                missing += [f"{path.relative_to(ROOT.parent)}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name) and not _is_module(f"{node.module}.{a.name}")]
    assert not missing, "\n".join(missing)


def _is_module(name: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(name) is not None
    except ModuleNotFoundError:
        return False
