"""Patch causal-conv1d 1.7.0's sdist: sm_90 only, and fwd/bwd split into one translation unit per
(input, weight) dtype pair so a parallel build (MAX_JOBS) is not bound by one huge .cu file."""
import re, sys, pathlib
root = pathlib.Path(sys.argv[1]); csrc = root / "csrc"
srcs = ["csrc/causal_conv1d.cpp", "csrc/causal_conv1d_update.cu"]
for part in ("fwd", "bwd"):
    text = (csrc / f"causal_conv1d_{part}.cu").read_text().splitlines(keepends=True)
    first = next(i for i, l in enumerate(text) if l.startswith("template void "))
    body, inst = text[:first], [l for l in text[first:] if l.startswith("template void ")]
    assert all(l.strip() == "" for l in text[first:] if not l.startswith("template void ")), part
    (csrc / f"causal_conv1d_{part}_body.cuh").write_text("".join(body))
    pairs = {}
    for l in inst:
        m = re.match(r"template void \w+<([^>]+)>", l); pairs.setdefault(m.group(1), []).append(l)
    assert len(pairs) == 9 and all(len(v) == 2 for v in pairs.values()), (part, pairs)
    for i, (k, ls) in enumerate(pairs.items()):
        name = f"causal_conv1d_{part}_{i}.cu"
        (csrc / name).write_text(f'#include "causal_conv1d_{part}_body.cuh"\n\n' + "".join(ls))
        srcs.append(f"csrc/{name}")
s = (root / "setup.py").read_text()
old = '''                "csrc/causal_conv1d.cpp",
                "csrc/causal_conv1d_fwd.cu",
                "csrc/causal_conv1d_bwd.cu",
                "csrc/causal_conv1d_update.cu",
'''
assert old in s
s = s.replace(old, "".join(f'                "{x}",\n' for x in srcs))
a = "    # HACK: The compiler flag"
assert a in s
s = s.replace(a, "    cc_flag = ['-gencode', 'arch=compute_90,code=sm_90']  # H100/H200 only\n" + a, 1)
s = s.replace("from wheel.bdist_wheel import bdist_wheel as _bdist_wheel",
              "try:\n    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel\nexcept ImportError:\n"
              "    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel")
(root / "setup.py").write_text(s)
print("split into", len(srcs), "sources")
