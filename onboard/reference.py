"""The reference documentation, rendered from the registries rather than written by hand.

Four tables come from the objects onboard runs: the checks (`onboard.checks.CHECKS`), the patches
(`onboard.patches.PATCHES`), the thresholds (`onboard.harness.thresholds.DEFAULTS`) and the failure-mode index
(each check's "Failure modes:" documentation and the fault catalog, `onboard.fixtures.faults.FAULTS`). What a check
can report, which thresholds it judges against and which patches it proposes are read from its module's source
(string constants and `ids.NAME` references), the way tests/test_registry.py reads them, so no number or id is
copied by hand.

The README carries each table between markers (`<!-- generated:NAME -->` ... `<!-- /generated:NAME -->`):

    python -m onboard.reference --write README.md   # regenerate the sections in place
    python -m onboard.reference --check README.md   # exit 1 naming each stale section
    python -m onboard.reference [SECTION ...]       # print sections to stdout

`onboard explain` prints a check's documentation with its thresholds and failure modes through
`explain_check`, and a failure mode through `failure_mode`. Import-light: only the standard library at import;
the registries (which import torch) are imported when a function needs them.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import re
import sys
from pathlib import Path

SECTIONS = ("checks", "patches", "thresholds", "failure-modes")
FM = re.compile(r"FM-[A-Z]+(?:-[A-Z]+)*")
WRITE_COMMAND = "python -m onboard.reference --write README.md"


def _start(section: str) -> str:
    return f"<!-- generated:{section} -->"


def _end(section: str) -> str:
    return f"<!-- /generated:{section} -->"


# ---- what a check's source and documentation say ------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _tree(check) -> ast.Module:
    return ast.parse(inspect.getsource(inspect.getmodule(check)))


def _constants(check) -> list[str]:
    """String constants of the check's module, in source order."""
    return [node.value for node in ast.walk(_tree(check)) if isinstance(node, ast.Constant)
            and isinstance(node.value, str)]


def _failure_section(check) -> str:
    doc = check.documentation()
    if "Failure modes:" not in doc:
        return ""
    return doc.split("Failure modes:", 1)[1].split("\n\nFix:", 1)[0]


def documented_failure_modes(check) -> list[str]:
    """The failure modes under the check's "Failure modes:" heading, in the order written."""
    return list(dict.fromkeys(FM.findall(_failure_section(check))))


def emitted_failure_modes(check) -> list[str]:
    """The failure modes the check's code can set: string constants of its module that are one FM id (prose that
    mentions one does not count), in the order its documentation lists them."""
    emitted = {value for value in _constants(check) if FM.fullmatch(value)}
    documented = documented_failure_modes(check)
    return [m for m in documented if m in emitted] + sorted(emitted - set(documented))


def thresholds_of(check) -> list[str]:
    """The named thresholds the check judges against (string constants of its module naming one), in the order
    of the thresholds table."""
    from onboard.harness.thresholds import DEFAULTS

    used = set(_constants(check))
    return [name for name in DEFAULTS if name in used]


def patches_of(check) -> list[str]:
    """The patches the check proposes, tries, verifies or enables: `ids.NAME` references in its module, leaving out
    those only compared against (`ids.X in session.applied` asks what an earlier check did)."""
    from onboard.patches import PATCHES, ids

    compared = set()
    tree = _tree(check)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            compared.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ids"
                and id(node) not in compared):
            value = getattr(ids, node.attr, None)
            if value in PATCHES and value not in found:
                found.append(value)
    return [p for p in PATCHES if p in found]


def _entries(check, mode: str) -> list[str]:
    """What the check's "Failure modes:" section says of `mode`: every entry that starts with the id (they are
    listed in lines or within a sentence)."""
    section = " ".join(_failure_section(check).split())
    entries = re.split(r"(?<![\w-])(?=FM-[A-Z])", section)
    return [e.strip().rstrip(",;").strip() for e in entries if re.match(re.escape(mode) + r"(?![A-Z-])", e)]


def _gist(entry: str, mode: str, limit: int = 170) -> str:
    """The first clause an entry gives its failure mode: the parenthesis after the id, or the sentence after its
    colon; cut at a word boundary past `limit` characters."""
    rest = entry[len(mode):].strip()
    if rest.startswith("("):
        depth = 0
        for i, ch in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                rest = rest[1:i]
                break
    else:
        rest = rest.lstrip(":").strip()
        for end in re.finditer(r"(?<=[\w)])\. ", rest):  # the first full stop that does not end "e.g." or "i.e."
            if not re.search(r"(?:\be\.g|\bi\.e|\bvs)$", rest[:end.start()]):
                rest = rest[:end.start()]
                break
        rest = rest.rstrip(".")
    rest = " ".join(rest.split())
    if len(rest) > limit:
        rest = rest[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return rest


def failure_mode_index() -> dict[str, dict]:
    """Every documented failure mode: {FM: {"checks": [code, ...], "gist": str, "faults": [Fault, ...]}}, in
    the order of the checklist and of each check's documentation."""
    from onboard.checks import CHECKS
    from onboard.harness.sources import faults

    catalog = faults()

    index: dict[str, dict] = {}
    for check in CHECKS:
        for mode in documented_failure_modes(check):
            said = _entries(check, mode)
            if not said:  # named only in passing, within another mode's entry
                continue
            entry = index.setdefault(mode, {"checks": [], "gist": _gist(said[0], mode), "faults": []})
            entry["checks"].append(check.code)
    for fault in catalog.values():
        index.setdefault(fault.failure_mode, {"checks": [], "gist": "", "faults": []})["faults"].append(fault)
    return index


def failure_mode(mode: str) -> str | None:
    """What the checks' own documentation says of a failure mode (the id the reports print), which checks report
    it, and the fault-catalog models that show it with their fix; None when no check names it."""
    from onboard.checks import CHECKS
    from onboard.harness.sources import faults

    catalog = faults()

    parts = []
    for check in CHECKS:
        said = _entries(check, mode)
        if said:
            parts.append(f"{check.code} {check.name}: " + " ".join(said))
    if not parts:
        return None
    shown = [f"  fault:{f.name} ({f.check}, fix: {f.patch or 'none'}): {f.description}" for f in catalog.values()
              if f.failure_mode == mode]
    return "\n\n".join([mode, *parts] + (["the fault catalog shows it on:\n" + "\n".join(shown)] if shown else []))


# ---- values ---------------------------------------------------------------------------------------------------


def _num(value: float) -> str:
    """1e-05 -> 1e-5, 0.001 -> 1e-3, 1e+09 -> 1e9, 0.02 -> 0.02, 4.0 -> 4."""
    text = f"{value:e}" if value and not 1e-2 <= abs(value) < 1e4 else f"{value:g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{float(mantissa):g}e{int(exponent)}"
    return text


def threshold_values(name: str) -> dict[str, str]:
    """A threshold's default for fp32, bf16, fp16 and other dtypes, formatted (1e9 and above: not judged)."""
    from onboard.harness.thresholds import DEFAULTS

    default = DEFAULTS[name].default
    values = default if isinstance(default, dict) else {"other": default}
    out = {}
    for dtype in ("float32", "bfloat16", "float16", "other"):
        value = values.get(dtype, values["other"])
        out[dtype] = _num(value) + (" (not judged)" if value >= 1e9 else "")
    return out


def _users() -> dict[str, list[str]]:
    """threshold name -> codes of the checks that judge against it."""
    from onboard.checks import CHECKS
    from onboard.harness.thresholds import DEFAULTS

    users: dict[str, list[str]] = {name: [] for name in DEFAULTS}
    for check in CHECKS:
        for name in thresholds_of(check):
            users[name].append(check.code)
    return users


def _proposers() -> dict[str, list[str]]:
    from onboard.checks import CHECKS
    from onboard.patches import PATCHES

    by_patch: dict[str, list[str]] = {p: [] for p in PATCHES}
    for check in CHECKS:
        for patch in patches_of(check):
            by_patch[patch].append(check.code)
    return by_patch


# ---- explain ------------------------------------------------------------------------------------------------


def threshold_lines(names, indent: str = "  ") -> list[str]:
    from onboard.harness.thresholds import DEFAULTS

    lines = []
    width = max((len(n) for n in names), default=0)
    for name in names:
        t = DEFAULTS[name]
        v = threshold_values(name)
        values = (f"fp32 {v['float32']}, bf16 {v['bfloat16']}, fp16 {v['float16']}"
                  + (f", other {v['other']}" if v["other"] != v["bfloat16"] else "")
                  if isinstance(t.default, dict) else f"{v['float32']} (every dtype)")
        lines.append(f"{indent}{name:<{width}}  {values} {t.unit}; {t.meaning}")
    return lines


def explain_check(check) -> str:
    """`onboard explain CODE`: the check's documentation, the thresholds it judges against with their defaults,
    the failure modes it can report and the patches it proposes."""
    text = [f"{check.code} {check.name}: {check.summary}", "", check.documentation()]
    names = thresholds_of(check)
    text += ["", "Thresholds (defaults; a config file's [thresholds] table overrides them):"]
    text += threshold_lines(names) if names else ["  none"]
    modes = emitted_failure_modes(check)
    text += ["", "Failure modes it reports (onboard explain FM-... for each): " + (", ".join(modes) or "none")]
    patches = patches_of(check)
    text += ["Patches it proposes or verifies (onboard explain PATCH_ID): " + (", ".join(patches) or "none")]
    return "\n".join(text)


def explain_patch(patch_id: str) -> str:
    from onboard.patches import PATCHES

    patch = PATCHES[patch_id]
    doc = inspect.cleandoc(type(patch).__doc__ or "")
    by = _proposers()[patch_id]
    text = f"{patch.id} ({patch.applicability.value}): {patch.summary}" + (f"\n\n{doc}" if doc else "")
    return text + (f"\n\nProposed or verified by: {', '.join(by)}" if by else "")


def explain_thresholds() -> str:
    from onboard.harness.thresholds import DEFAULTS

    return "\n".join(["Thresholds (defaults; a config file's [thresholds] table overrides them):",
                      *threshold_lines(list(DEFAULTS))])


# ---- the Markdown sections ----------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_checks() -> str:
    from onboard.checks import CHECKS

    rows = [[c.code, c.name, ", ".join(c.requires) or "-", c.fix_availability.value, c.runs_on, c.summary,
             ", ".join(emitted_failure_modes(c))] for c in CHECKS]
    return _table(["code", "check", "requires", "fix", "runs on", "what it checks", "failure modes"], rows)


def render_patches() -> str:
    from onboard.harness.sources import faults

    catalog = faults()
    from onboard.patches import PATCHES, is_lora_transform

    by = _proposers()
    rows = []
    for pid, patch in PATCHES.items():
        fixes = list(dict.fromkeys(f.failure_mode for f in catalog.values() if f.patch == pid))
        rows.append([f"`{pid}`", patch.applicability.value, "LoRA config" if is_lora_transform(patch) else "model",
                     ", ".join(by[pid]) or "-", patch.summary, ", ".join(fixes) or "-"])
    return _table(["patch", "applicability", "changes", "checks", "what it does",
                   "fixes (fault catalog)"], rows)


def render_thresholds() -> str:
    from onboard.harness.thresholds import DEFAULTS

    users = _users()
    rows = []
    for name, t in DEFAULTS.items():
        v = threshold_values(name)
        low = v["bfloat16"] if v["bfloat16"] == v["float16"] else f"{v['bfloat16']} / {v['float16']}"
        low += f" (other dtypes {v['other']})" if v["other"] != v["bfloat16"] else ""
        meaning = t.meaning[len(users[name][0]) + 2:] if users[name] and t.meaning.startswith(users[name][0] + ": ") \
            else t.meaning
        rows.append([f"`{name}`", v["float32"], low, t.unit, ", ".join(users[name]) or "-", meaning])
    return _table(["threshold", "fp32", "bf16 / fp16", "unit", "checks", "what it bounds"], rows)


def render_failure_modes() -> str:
    rows = []
    for mode, entry in failure_mode_index().items():
        faults = ", ".join(f"`fault:{f.name}` ({f.patch or 'no fix'})" for f in entry["faults"]) or "-"
        rows.append([mode, ", ".join(entry["checks"]) or "-", entry["gist"], faults])
    return _table(["failure mode", "check", "what the check says", "fault-catalog models (their fix)"], rows)


RENDERERS = {"checks": render_checks, "patches": render_patches, "thresholds": render_thresholds,
             "failure-modes": render_failure_modes}


def render(section: str) -> str:
    return RENDERERS[section]()


def _span(text: str, section: str) -> tuple[int, int] | None:
    """(start, end) of what lies between the section's markers, or None when the markers are missing."""
    start, end = text.find(_start(section)), text.find(_end(section))
    if start < 0 or end < start:
        return None
    return start + len(_start(section)), end


def stale_sections(text: str, rendered: dict[str, str] | None = None) -> list[str]:
    """The sections whose text between markers is not what the registries render now (a missing section counts)."""
    rendered = rendered or {s: render(s) for s in SECTIONS}
    out = []
    for section in SECTIONS:
        span = _span(text, section)
        if span is None or text[span[0]:span[1]].strip("\n") != rendered[section]:
            out.append(section)
    return out


def updated(text: str) -> str:
    """`text` with every generated section replaced by what the registries render now."""
    for section in SECTIONS:
        span = _span(text, section)
        if span is None:
            raise KeyError(f"no {_start(section)} ... {_end(section)} markers")
        text = text[:span[0]] + "\n" + render(section) + "\n" + text[span[1]:]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onboard.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"print these sections ({', '.join(SECTIONS)}); all by default")
    parser.add_argument("--write", metavar="FILE", type=Path, help="regenerate the marked sections of FILE")
    parser.add_argument("--check", metavar="FILE", type=Path, help="exit 1 if a marked section of FILE is stale")
    args = parser.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; known: {', '.join(SECTIONS)}")
    path = args.write or args.check
    if path is None:
        print("\n\n".join(render(s) for s in (args.sections or SECTIONS)))
        return 0
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return 2
    text = path.read_text()
    if args.write:
        try:
            new = updated(text)
        except KeyError as exc:
            print(f"error: {path}: {exc.args[0]}", file=sys.stderr)
            return 1
        if new != text:
            path.write_text(new)
        print(f"{path}: {', '.join(SECTIONS)} {'rewritten' if new != text else 'already current'}")
        return 0
    stale = stale_sections(text)
    for section in stale:
        what = "missing" if _span(text, section) is None else "stale"
        print(f"{path}: generated section {section!r} is {what} (run {WRITE_COMMAND})", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
