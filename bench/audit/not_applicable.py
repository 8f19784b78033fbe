"""Every NOT_APPLICABLE row of a sweep, reproduced in plain transformers: does a text-only training step fail the
way the row says, and for the reason it gives?

For each row: the same tiny model and chat data (onboard's session loads them; no check code runs), a right-padded
labelled batch of the two shortest samples, then in plain torch:
  - the labelled forward and backward (what a Trainer's step does): its error, or a loss of None;
  - the forward without labels (does the model run on text at all?);
  - where the row names pixel_values and the config states an image size: the labelled forward with random pixels
    of that size, and whether its loss is then the next-token cross-entropy of the text logits.
TRUE: the plain step fails (or has no loss) and the named input or config field is what the model's own error,
signature or pixel run points at. ARTIFACT: the plain step trains on text after all. LIMIT: not reproduced here.

Run: python bench/audit/not_applicable.py SWEEP.jsonl [--out bench/audit/not_applicable]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def audit(arch: str, needs: str) -> dict:
    import torch

    from onboard.harness.forward import batch_tensors
    from onboard.harness.session import ModelSession

    session = ModelSession(model=f"tiny:{arch}", device="cpu")
    model = session.model
    examples = sorted([ex for ex in session.examples if ex.n_trained], key=len)[:2]
    batch = batch_tensors(examples, session.device, session.pad_id)
    out = {"arch": arch, "needs": needs, "class": type(model).__name__}
    model.train()
    try:
        loss = model(**batch, use_cache=False).loss
        if loss is None:
            out["labelled_step"] = "no loss given labels"
        else:
            loss.backward()
            out["labelled_step"] = f"runs, loss {loss.item():.4f}"
    except Exception as exc:  # noqa: BLE001 - the failure is what is audited
        out["labelled_step"] = first_line(exc)
    model.eval()
    unlabelled = {k: v for k, v in batch.items() if k != "labels"}
    try:
        with torch.no_grad():
            model(**unlabelled, use_cache=False)
        out["unlabelled_forward"] = "runs"
    except Exception as exc:  # noqa: BLE001
        out["unlabelled_forward"] = first_line(exc)
    required = [n for n, p in inspect.signature(type(model).forward).parameters.items()
                if p.default is inspect.Parameter.empty and n != "self"
                and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    out["required_arguments"] = required
    vision = getattr(model.config, "vision_config", None)
    size = getattr(vision, "image_size", None)
    if needs.startswith("pixel_values") and isinstance(size, int):
        pixels = torch.randn(batch["input_ids"].shape[0], getattr(vision, "num_channels", 3), size, size)
        try:
            with torch.no_grad():
                run = model(**batch, pixel_values=pixels, use_cache=False)
            text = run.logits[:, -batch["input_ids"].shape[1]:].float()
            ce = torch.nn.functional.cross_entropy(text[:, :-1].reshape(-1, text.shape[-1]),
                                                   batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
            out["with_pixels"] = f"loss {run.loss.item():.6f}, next-token CE of the text logits {ce.item():.6f}"
        except Exception as exc:  # noqa: BLE001
            out["with_pixels"] = first_line(exc)
    trains = out["labelled_step"].startswith("runs")
    named = needs.split(":")[0].split(" or ")[0].split(", ")[0]
    if "its config's " in needs:  # a config field the error names (Reformer's axial_pos_shape)
        named = needs.split("its config's ", 1)[1].split()[0].rstrip(",")
    points = (named in required or named.lower() in out["labelled_step"].lower()
              or named.lower() in out["unlabelled_forward"].lower() or "with_pixels" in out
              or needs.startswith(("labels of another kind", "an objective other")))
    out["verdict"] = "ARTIFACT" if trains else "TRUE" if points else "LIMIT"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/audit/not_applicable"))
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.sweep.read_text().splitlines() if line.strip()]
    wanted = [(r["arch"], next(c["needs"] for c in r["report"]["checks"] if c.get("needs")))
              for r in rows if r["outcome"] == "NOT_APPLICABLE"]
    start = time.perf_counter()
    results = []
    for arch, needs in wanted:
        try:
            results.append(audit(arch, needs))
        except Exception as exc:  # noqa: BLE001 - one architecture's failure is its own row
            results.append({"arch": arch, "needs": needs, "verdict": "LIMIT", "labelled_step": first_line(exc)})
        print(f"{results[-1]['verdict']:<8} {arch:<26} {results[-1].get('labelled_step', '')[:90]}", flush=True)
    seconds = time.perf_counter() - start
    args.out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    counts = {v: sum(r["verdict"] == v for r in results) for v in ("TRUE", "ARTIFACT", "LIMIT")}
    lines = [f"# NOT_APPLICABLE rows reproduced in plain transformers ({args.sweep.name})", "",
             f"`python bench/audit/not_applicable.py {args.sweep}`: {len(results)} rows in {seconds:.0f} s on "
             f"{os.cpu_count()} CPU cores; " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".", "",
             "| architecture | class | what the row says it needs | plain labelled step | without labels | "
             "required arguments | with pixels | verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        cells = [r["arch"], r.get("class", ""), r["needs"][:120], r.get("labelled_step", "")[:120],
                 r.get("unlabelled_forward", "")[:80], ", ".join(r.get("required_arguments", [])),
                 r.get("with_pixels", ""), r["verdict"]]
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"{counts} in {seconds:.0f} s -> {args.out}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
