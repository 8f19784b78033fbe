"""Meta-tests of the registries (in the spirit of ruff's rule tests): the checks, their documentation and failure
modes, the patch ids, the one Setup and the layering. They read onboard's own source and objects: when a check
gains a failure mode without documenting it, a docstring loses a heading, a patch id is typed by hand, or a CLI
default drifts from the Setup's, one of these fails."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import onboard
from onboard.checks import CHECKS, FixAvailability
from onboard.harness.setup import DEFAULT, FIELDS, TRAINED_WITH
from onboard.patches import PATCHES, ids

ROOT = Path(onboard.__file__).parent
FM = re.compile(r"FM-[A-Z]+(?:-[A-Z]+)*")
HEADINGS = ("What it does:", "Why it matters:", "Failure modes:", "Fix:")


def emitted(check) -> set[str]:
    """The failure modes a check's code can set as a diagnosis: string constants of its module that are one FM id
    (prose in docstrings, comments and messages that mention one does not count)."""
    tree = ast.parse(inspect.getsource(inspect.getmodule(check)))
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and FM.fullmatch(node.value)}


def test_codes_and_names_are_unique_and_requires_name_earlier_checks():
    codes = [c.code for c in CHECKS]
    assert len(set(codes)) == len(codes) and len({c.name for c in CHECKS}) == len(CHECKS)
    assert all(re.fullmatch(r"[A-Z]+\d{3}", c) for c in codes)
    for i, check in enumerate(CHECKS):
        earlier = set(codes[:i])
        assert set(check.requires) <= earlier, f"{check.code} requires {set(check.requires) - earlier}, not earlier"


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.code)
def test_every_check_documents_itself_under_the_headings(check):
    doc = check.documentation()
    for heading in HEADINGS:
        assert heading in doc, f"{check.code}'s docstring (onboard explain) lacks {heading!r}"
    positions = [doc.index(h) for h in HEADINGS]
    assert positions == sorted(positions), f"{check.code}: headings out of order"


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.code)
def test_every_failure_mode_a_check_emits_is_documented(check):
    documented = set(FM.findall(check.documentation().split("Failure modes:")[1].split("Fix:")[0]))
    missing = emitted(check) - documented
    assert not missing, f"{check.code} can emit {sorted(missing)}, not under 'Failure modes:' (onboard explain)"
    assert emitted(check), f"{check.code} emits no failure mode"


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.code)
def test_fix_availability_matches_what_the_check_can_propose(check):
    source = inspect.getsource(inspect.getmodule(check))
    proposes = re.search(r"proposed_patch\s*=", source) is not None
    if check.fix_availability is FixAvailability.NONE:
        assert not proposes, f"{check.code} says no fix but its code proposes or applies one"
    else:
        assert proposes, f"{check.code} says {check.fix_availability.value} but never proposes a patch"


def test_patch_ids_are_constants_and_every_one_is_registered():
    assert tuple(PATCHES) == ids.ALL
    assert all(getattr(ids, name) in PATCHES for name in dir(ids) if name.isupper() and name != "ALL")
    literal = re.compile("|".join(re.escape(f'"{p}"') for p in PATCHES))
    typed = []
    for path in ROOT.rglob("*.py"):
        if path.name == "ids.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if literal.search(line):
                typed.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not typed, "patch ids typed by hand (use onboard.patches.ids):\n" + "\n".join(typed)


def test_every_patch_states_its_contract():
    for patch in PATCHES.values():
        assert patch.id and patch.summary and patch.applicability
        assert callable(patch.applies_to)
        assert callable(getattr(patch, "apply", None)) != callable(getattr(patch, "configure", None)), \
            f"{patch.id}: a patch applies to the model or configures LoRA, not both and not neither"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles_between_modules():
    """Module-level imports (those run at import time) form no cycle; imports inside functions are lazy."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("onboard"):
                targets.add(node.module)
                targets.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("onboard"))
        # a module's own parent packages are imported before it by Python itself: not an edge of a cycle
        edges[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}

    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in modules:
        if module not in state:
            visit(module, [module])


# ---- one Setup -------------------------------------------------------------------------------------


def _command(name):
    import typer.main

    from onboard.cli import app

    group = typer.main.get_command(app)
    return group.commands[name]


@pytest.mark.parametrize("command", ["check", "train"])
def test_cli_options_are_the_setups_with_its_defaults_and_help(command):
    params = {p.name: p for p in _command(command).params}
    cli_fields = [n for n, f in FIELDS.items() if f.metadata["cli"]]
    wanted = cli_fields if command == "check" else [n for n in cli_fields if not FIELDS[n].metadata["check_only"]]
    for name in wanted:
        assert name in params, f"onboard {command} has no option for Setup.{name}"
        param = params[name]
        default = getattr(DEFAULT, name)
        if default is not None:
            assert param.default == default, f"onboard {command} --{name} defaults to {param.default!r}, Setup to {default!r}"
        assert param.help == FIELDS[name].metadata["help"], f"--{name}'s help is not the Setup field's"
    for name in TRAINED_WITH:
        assert name in params, f"onboard {command} cannot set {name}, which training must share with the check"


def test_train_options_are_the_declared_training_options():
    """onboard train's own options are TrainOptions' fields, with their defaults and help, and what is typed
    reaches the TrainOptions the run trains with."""
    from onboard.train.options import TRAIN_FIELDS, TrainOptions

    params = {p.name: p for p in _command("train").params}
    for name, f in TRAIN_FIELDS.items():
        if not f.metadata["cli"]:
            continue
        assert name in params, f"onboard train has no option for TrainOptions.{name}"
        assert params[name].default == f.default and params[name].help == f.metadata["help"], name
    ctx = _command("train").make_context("train", ["tiny:llama", "--epochs", "2", "--batch-size", "3", "--no-packing",
                                                   "--cce", "off", "--lr", "0.01", "--out", "elsewhere"])
    built = TrainOptions(**{n: ctx.params[n] for n in TRAIN_FIELDS if n in ctx.params})
    assert (built.epochs, built.batch_size, built.packing, built.cce, built.lr, str(built.out)) == \
        (2.0, 3, False, "off", 0.01, "elsewhere")


@pytest.mark.parametrize("command", ["check", "train"])
def test_every_setup_option_a_user_types_reaches_the_setup(command):
    """Each Setup field's option, typed with a value other than its default, arrives in what the command builds its
    Setup from (onboard.cli._given): no option is declared and then dropped on the way (issue 25)."""
    import click

    from onboard.cli import _given

    cmd = _command(command)
    args, wanted = ["tiny:llama"], {}
    for param in cmd.params:
        if param.name not in FIELDS or param.name == "model" or not isinstance(param, click.Option):
            continue
        if param.is_flag:
            flag = param.opts[0] if not param.default else (param.secondary_opts or param.opts)[0]
            args.append(flag)
            wanted[param.name] = not bool(param.default)
        else:
            value = "7" if param.type.name == "integer" else "custom"
            args += [param.opts[0], value]
            wanted[param.name] = 7 if value == "7" else value
    ctx = cmd.make_context(command, args)
    given = _given(ctx)
    assert given["model"] == "tiny:llama"
    for name, value in wanted.items():
        assert str(given[name]) == str(value), (name, given[name], value)


def test_config_files_set_exactly_the_setups_fields():
    from onboard.config import OPTION_TYPES

    assert set(OPTION_TYPES) == set(FIELDS) - {"chat_template_text", "thresholds"}


def test_check_help_names_every_check():
    from typer.testing import CliRunner

    from onboard.cli import app

    out = CliRunner().invoke(app, ["check", "--help"], env={"COLUMNS": "200"}).output
    for check in CHECKS:
        assert check.code in out, f"onboard check --help does not name {check.code}"
    assert "[tool.onboard]" in out and "fault:NAME" in out and "config:NAME" in out
