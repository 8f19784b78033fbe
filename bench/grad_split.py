"""Why do runs that claim the same math learn apart? One real Trainer step's adapter gradients, per setting.

Issue 28: on an H100 the run without gradient checkpointing was 0.05 nats lower at step 2 than every checkpointed
run, while step 1 agreed to 1e-4. This script runs `onboard train` (the real Trainer, collator, LoRA and patches)
for three steps under each setting on one model shape and keeps, at step 1, the gradient of every adapter weight
as the optimizer receives it (on_pre_optimizer_step, after clipping) and the logged pre-clip norm. Each setting is
compared with the fp32 run without checkpointing or levers (the reference) by:
  grad_rel     ||g / |g| - r / |r||| : the direction of the gradient, clipping's scale taken out
  norm_rel     the pre-clip gradient norm against the reference's
  update_rel   ||u - u_ref|| / ||u_ref|| with u = g / (|g| + eps): Adam's first update, elementwise; it is what
               step 2's loss sees, and it gives every element the same size whatever its gradient
  sign_flip    share of elements whose first update has the other sign
  dloss        the losses of steps 1-3 minus the reference's
Reruns of one setting (suffix _b) give the spread of each measure that nothing but nondeterminism makes.

Run (GPU): python bench/grad_split.py --out DIR [--model config:llama3-8b] [--layers 8] [--deep 32]
A layer count below the model's is written as a config file (config:PATH); --deep N repeats the bf16 settings
with levers at N layers (no fp32 reference there: the bf16 runs are compared with each other).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_vs_trl import make_chats  # noqa: E402

ADAM_EPS = 1e-8  # TrainingArguments' adam_epsilon
PA, CL, CCE, BA = "speed.packed_attention", "speed.compiled_layers", "cce.fused_loss", "speed.bf16_adapters"
# name: (checkpointing, reentrant, patches beyond packing.no_cache_no_mask)
SETTINGS = {
    "fp32": {
        "ref": (False, False, ()), "ref_b": (False, False, ()),
        "ckpt": (True, False, ()), "ckpt_re": (True, True, ()),
        "pa": (False, False, (PA,)), "pa_ckpt": (True, False, (PA,)),
        "pa_cl": (False, False, (PA, CL)), "pa_cl_ckpt": (True, False, (PA, CL)),
    },
    "bf16": {
        "plain": (False, False, ()), "plain_b": (False, False, ()),
        "ckpt": (True, False, ()), "ckpt_b": (True, False, ()), "ckpt_re": (True, True, ()),
        "pa": (False, False, (PA,)), "pa_ckpt": (True, False, (PA,)),
        "pa_cl": (False, False, (PA, CL)), "pa_cl_b": (False, False, (PA, CL)),
        "pa_cl_ckpt": (True, False, (PA, CL)), "pa_cl_ckpt_b": (True, False, (PA, CL)),
        "pa_cl_cce": (False, False, (PA, CL, CCE)), "pa_cl_ckpt_cce": (True, False, (PA, CL, CCE)),
        "ckpt_cce": (True, False, (CCE,)),
        "ba": (False, False, (BA,)), "pa_ba_ckpt": (True, False, (PA, BA)),
    },
    "deep": {
        "pa_cl_cce": (False, False, (PA, CL, CCE)), "pa_cl_cce_b": (False, False, (PA, CL, CCE)),
        "pa_cl_ckpt_cce": (True, False, (PA, CL, CCE)), "pa_cl_ckpt_cce_b": (True, False, (PA, CL, CCE)),
        "ckpt_cce": (True, False, (CCE,)), "plain_cce": (False, False, (CCE,)),
    },
}


def layered_config(model: str, layers: int, folder: Path) -> str:
    """config:NAME with `layers` decoder layers, as a config file next to the data."""
    if not model.startswith("config:") or not layers:
        return model
    from onboard.harness.sources import config_path

    config = json.loads(config_path(model.split(":", 1)[1]).read_text())
    config["num_hidden_layers"] = layers
    for key in ("layer_types", "mlp_only_layers"):
        if isinstance(config.get(key), list):
            config[key] = config[key][:layers]
    path = folder / f"{model.split(':', 1)[1]}-{layers}l.json"
    path.write_text(json.dumps(config))
    return f"config:{path}"


def worker(args) -> None:
    from transformers import TrainerCallback

    import onboard.train.run as run
    from onboard.harness.session import ModelSession
    from onboard.harness.training import renamed_to_activation, undo_checkpointing
    from onboard.train import TrainOptions, train

    dtype = "bfloat16" if args.group in ("bf16", "deep") else "float32"
    session = ModelSession(model=args.model, device=args.device, data=Path(args.data), max_length=args.max_length,
                           max_examples=4, dtype=dtype, slice="off", row_tokens=args.batch * args.max_length)
    grads_dir = Path(args.out) / "grads" / args.group
    grads_dir.mkdir(parents=True, exist_ok=True)
    original_arguments = run.training_arguments
    kwargs_name = ("activation" if renamed_to_activation() else "gradient") + "_checkpointing_kwargs"

    class Grab(TrainerCallback):
        def __init__(self):
            self.grads, self.norms = None, []

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "grad_norm" in logs:
                self.norms.append(float(logs["grad_norm"]))

        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            if self.grads is None:
                self.grads = {n: p.grad.detach().float().cpu().clone() for n, p in model.named_parameters()
                              if p.requires_grad and p.grad is not None}

    names = [n for n in args.settings.split(",") if n in SETTINGS[args.group]] if args.settings \
        else list(SETTINGS[args.group])
    for name in names:
        ckpt, reentrant, extra = SETTINGS[args.group][name]
        session.setup = dataclasses.replace(session.setup, gradient_checkpointing=ckpt)
        run.training_arguments = (lambda s, o, **ov: original_arguments(s, o, **{kwargs_name: {"use_reentrant": True},
                                                                                 **ov})) if reentrant else original_arguments
        grab = Grab()
        out = Path(tempfile.mkdtemp())
        opts = TrainOptions(out=out, max_steps=args.steps, batch_size=args.batch, lr=1e-4, save_steps=10**6,
                            cce="on" if CCE in extra else "off")
        started = time.perf_counter()
        try:
            result = train(session, ["packing.no_cache_no_mask", *extra], opts, callbacks=[grab])
            record = {"losses": [r["loss"] for r in result.records],
                      "grad_norms": grab.norms,
                      "step_seconds": [round(r["step_seconds"], 3) for r in result.records],
                      "tokens": [r["tokens"] for r in result.records],
                      "applied": result.report["patches_applied"],
                      "checkpointing": result.report["options"]["gradient_checkpointing"]}
            torch.save(grab.grads, grads_dir / f"{name}.pt")
        except Exception as exc:  # noqa: BLE001 - one failing setting is recorded, the others still run
            import traceback

            record = {"error": f"{type(exc).__name__}: {str(exc)[:400]}", "trace": traceback.format_exc()[-2500:]}
        finally:
            undo_checkpointing(session.model)
            run.training_arguments = original_arguments
        record |= {"group": args.group, "setting": name, "checkpointing_asked": ckpt, "reentrant": reentrant,
                   "patches": list(extra), "seconds": round(time.perf_counter() - started, 1),
                   "card": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
        print("RESULT " + json.dumps(record), flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _flat(grads: dict) -> torch.Tensor:
    return torch.cat([grads[k].flatten() for k in sorted(grads)])


def compare(out: Path, records: list[dict], reference: tuple[str, str]) -> list[dict]:
    ref = next(r for r in records if (r["group"], r["setting"]) == reference and "losses" in r)
    r = _flat(torch.load(out / "grads" / reference[0] / f"{reference[1]}.pt"))
    r_dir, r_up = r / r.norm(), r / (r.abs() + ADAM_EPS)
    rows = []
    for rec in records:
        if "losses" not in rec or rec["group"] == "deep" and reference[0] != "deep":
            continue
        g = _flat(torch.load(out / "grads" / rec["group"] / f"{rec['setting']}.pt"))
        up = g / (g.abs() + ADAM_EPS)
        changed = (r_up.sign() != up.sign()) & (r != 0)
        rows.append({"group": rec["group"], "setting": rec["setting"],
                     "grad_rel": float((g / g.norm() - r_dir).norm()),
                     "norm_rel": rec["grad_norms"][0] / ref["grad_norms"][0] - 1 if rec["grad_norms"][0] else None,
                     "update_rel": float((up - r_up).norm() / r_up.norm()),
                     "sign_flip": float(changed.float().mean()),
                     "dloss": [round(a - b, 4) for a, b in zip(rec["losses"], ref["losses"])],
                     "losses": [round(x, 4) for x in rec["losses"]]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="config:llama3-8b")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--deep", type=int, default=0, help="also the bf16 settings with levers at this many layers")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--groups", default="fp32,bf16")
    parser.add_argument("--group")
    parser.add_argument("--settings")
    parser.add_argument("--data")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.group:
        return worker(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "chats.jsonl"
    make_chats(data, 256)
    groups = [g for g in args.groups.split(",") if g in SETTINGS] + (["deep"] if args.deep else [])
    records = []
    for group in groups:
        model = layered_config(args.model, args.deep if group == "deep" else args.layers, out)
        cmd = [sys.executable, __file__, "--group", group, "--out", str(out), "--data", str(data), "--model", model,
               "--steps", str(args.steps), "--batch", str(args.batch), "--max-length", str(args.max_length), "--device", args.device]
        if args.settings:
            cmd += ["--settings", args.settings]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [json.loads(ln[7:]) for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if not lines:
            print(f"{group}: no result\n{(proc.stderr or proc.stdout)[-1500:]}", flush=True)
        for rec in lines:
            print(json.dumps(rec), flush=True)
        records += lines
    result = {"records": records}
    if any(r["group"] == "fp32" and r["setting"] == "ref" and "losses" in r for r in records):
        result["against_fp32"] = compare(out, records, ("fp32", "ref"))
    if any(r["group"] == "deep" and "losses" in r for r in records):
        result["deep"] = compare(out, records, ("deep", "pa_cl_cce"))
    (out / "grad_split.json").write_text(json.dumps(result, indent=1))
    for key in ("against_fp32", "deep"):
        for row in result.get(key, []):
            print(f"{key:12s} {row['group']:5s} {row['setting']:18s} grad_rel {row['grad_rel']:.2e} norm_rel "
                  f"{row['norm_rel'] if row['norm_rel'] is None else format(row['norm_rel'], '+.1e')} update_rel "
                  f"{row['update_rel']:.3f} sign_flip {row['sign_flip']:.4f} dloss {row['dloss']} losses {row['losses']}")


if __name__ == "__main__":
    main()
