"""The sweep checked both ways (issue 27): the code-path checks on the layer-complete slice, and every check on
the whole model. Row by row: the verdict, each check's status, diagnosis and fix, and the verified patches must
be equal; where the slice was refused, why; and the time of each side.
Run: python bench/sweep_cpu.py S.jsonl --layers 6; python bench/sweep_cpu.py W.jsonl --layers 6 --slice off;
     python bench/audit/slice_vs_whole.py S.jsonl W.jsonl [--md OUT.md]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def rows(path: Path) -> dict[str, dict]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            out[record["arch"]] = record
    return out


def summary(record: dict) -> tuple:
    report = record.get("report") or {}
    checks = tuple((c["code"], c["status"], c.get("diagnosis"), bool(c.get("fix") and c["fix"].get("verified")))
                   for c in report.get("checks", []))
    return record["outcome"], checks, tuple(report.get("patches", []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sliced", type=Path)
    parser.add_argument("whole", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    sliced, whole = rows(args.sliced), rows(args.whole)
    both = sorted(set(sliced) & set(whole))
    with_slice = [a for a in both if "kept" in (((sliced[a].get("report") or {}).get("model") or {}).get("slice") or {})]
    differ = [a for a in both if summary(sliced[a]) != summary(whole[a])]
    refused = Counter()
    for a in both:
        info = ((sliced[a].get("report") or {}).get("model") or {}).get("slice") or {}
        if "reason" in info:
            reason = info["reason"]
            key = ("keeps every layer" if "keeps every layer" in reason else
                   "encoder-decoder" if "encoder-decoder" in reason else
                   "a layer's kind or a tensor differs" if "kind" in reason or "tensor" in reason or "differ" in reason
                   else reason[:90])
            refused[key] += 1
    t_s = sum(sliced[a]["seconds"] for a in with_slice)
    t_w = sum(whole[a]["seconds"] for a in with_slice)
    lines = [f"# The sweep on the slice and whole (tiny models of 6 layers, {len(both)} architectures)", "",
             f"- sliced: `{args.sliced}`; whole: `{args.whole}`",
             f"- rows with a slice: {len(with_slice)}; without: {len(both) - len(with_slice)} "
             f"({', '.join(f'{k}: {v}' for k, v in refused.most_common())})",
             f"- rows whose verdict, checks (status, diagnosis, fix verified) or verified patches differ: {len(differ)}",
             f"- outcomes (sliced): {dict(Counter(sliced[a]['outcome'] for a in both).most_common())}",
             f"- time of the rows with a slice, summed per architecture: sliced {t_s:.0f} s, whole {t_w:.0f} s "
             "(two sweeps run side by side on the 2-core box: ratios only)"]
    for a in differ:
        s, w = summary(sliced[a]), summary(whole[a])
        lines += ["", f"## {a}: {s[0]} sliced, {w[0]} whole", ""]
        for x, y in zip(s[1], w[1]):
            if x != y:
                lines.append(f"- sliced {x} / whole {y}")
        if s[2] != w[2]:
            lines.append(f"- patches sliced {list(s[2])} / whole {list(w[2])}")
    # the judged numbers of the checks that ran on the slice, side by side: how far from its limit each side was
    pairs = []
    for a in with_slice:
        s_checks = {c["code"]: c for c in sliced[a]["report"]["checks"]}
        w_checks = {c["code"]: c for c in (whole[a].get("report") or {}).get("checks", [])}
        for code, c in s_checks.items():
            if c.get("ran_on") != "slice" or code not in w_checks:
                continue
            for name, m in c.get("measurements", {}).items():
                other = w_checks[code].get("measurements", {}).get(name)
                if (m.get("limit") and other and isinstance(m.get("value"), (int, float))
                        and isinstance(other.get("value"), (int, float)) and not isinstance(m["value"], bool)):
                    pairs.append((a, code, name, m["value"], other["value"], m["limit"], m.get("compare")))
    judged = len(pairs)
    ops = {"<=": lambda v, lim: v <= lim, "<": lambda v, lim: v < lim, ">=": lambda v, lim: v >= lim,
           ">": lambda v, lim: v > lim}
    opposite = [p for p in pairs if p[6] in ops and ops[p[6]](p[3], p[5]) != ops[p[6]](p[4], p[5])]
    moved = sorted(pairs, key=lambda p: -abs(p[3] - p[4]) / abs(p[5]))[:15]
    lines += ["", f"## Judged measurements of the checks that ran on the slice, side by side ({judged} pairs)", "",
              f"Pairs on opposite sides of their limit: {len(opposite)}"
              + "".join(f"; {p[0]} {p[1]} {p[2]} {p[3]:.3g} sliced, {p[4]:.3g} whole" for p in opposite[:10]) + ".", "",
              "The 15 pairs whose difference is the largest share of their limit (a leak is smaller two layers deep "
              "than six, and far above its limit both ways):", "",
              "| architecture | check | measurement | sliced | whole | limit |", "|---|---|---|---|---|---|"]
    lines += [f"| {a} | {code} | {name} | {sv:.3g} | {wv:.3g} | {lim:.3g} |" for a, code, name, sv, wv, lim, _ in moved]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        args.md.write_text(text)


if __name__ == "__main__":
    main()
