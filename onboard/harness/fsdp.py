"""FSDP001's probe: the model sharded with PyTorch FSDP2 (torch.distributed.fsdp.fully_shard) in N processes, the way
multi-GPU LoRA training shards it, against the same model in one process.

`launch` starts N processes with torchrun (`python -m torch.distributed.run --standalone`), each reading its rank and
the world from the environment as any torchrun or `accelerate launch` job does; the backend is gloo on the CPU and
NCCL on CUDA (one GPU per process). Every process builds the model from the same Setup and seed, applies LoRA
(the setup's LoraConfig) and the patches the single-process checks verified as training applies them (the fused
loss on CUDA only; the speed levers left to KERN001), then:
1. the wrap class: the classes the model's `_no_split_modules` names that exist in its module tree (what
   accelerate's FSDP auto-wrap policy and TRL's FSDP configs shard by); each such module becomes a unit of its
   own, the model itself the last. None found: the whole model is one unit, every parameter gathered at once;
2. rank 0 keeps an unsharded copy and runs one training step on it (the reference): loss, adapter gradients, one
   AdamW update, the logits after it;
3. the sharded model runs the same step on the same packed row on every rank (each rank the same data: the
   sharded math, not data parallelism, is what is compared): its loss; each adapter gradient gathered
   (DTensor.full_tensor) with its shape, and whether every rank holds a gradient for its shard; the AdamW update;
4. tied weights: where the model ties its output layer to its input embeddings, whether it still does after
   sharding (one parameter), and whether the two update as one;
5. the adapter saved from the sharded run (the full state dict gathered to rank 0, PEFT's save_pretrained) is
   loaded by PEFT into a fresh single-process model, whose logits are compared with the sharded model's.
Rank 0 writes what it measured as JSON for the check (onboard.checks.fsdp).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

RESULT = "fsdp_result.json"


def launch(setup, patches: list[str], patch_options: dict, nproc: int, timeout: float = 600) -> dict:
    """The probe in `nproc` processes started by torchrun; rank 0's measurements, or {"error": ...}. A launch that
    leaves no result (the rendezvous lost, a process killed) is tried once more before its error is reported."""
    payload = {"setup": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(setup).items()},
               "patches": list(patches), "patch_options": dict(patch_options)}
    error = ""
    for _attempt in range(2):
        with tempfile.TemporaryDirectory(prefix="onboard-fsdp-") as folder:
            (Path(folder) / "payload.json").write_text(json.dumps(payload, default=str))
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
                   "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{_free_port()}",
                   "-m", "onboard.harness.fsdp", folder]
            env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                   "TOKENIZERS_PARALLELISM": "false"}
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
            except subprocess.TimeoutExpired:
                return {"error": f"the {nproc} processes did not finish in {timeout:.0f} s"}
            result = Path(folder) / RESULT
            if result.exists():
                return json.loads(result.read_text())
            error = _first_error(proc.stderr or proc.stdout) or f"exit {proc.returncode}"
    return {"error": error}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _first_error(text: str) -> str:
    """The first line of a traceback's error in torchrun's output (not its own ChildFailedError summary)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b", ln) and "ChildFailedError" not in ln]
    return (errors[0] if errors else (lines[-1] if lines else ""))[:400]


def wrap_classes(model) -> tuple[list[str], list[str]]:
    """(the class names `_no_split_modules` gives, those of them the module tree holds)."""
    from onboard.patches.base import unwrap

    base = unwrap(model)
    named = list(getattr(base, "_no_split_modules", None) or [])
    present = {type(m).__name__ for m in base.modules()}
    return named, [n for n in named if n in present]


def _adapter_params(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _local(tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _full(tensor) -> torch.Tensor:
    return (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach().float().cpu()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _step(model, batch, lr: float):
    """Loss, adapter gradients (full), and the adapter weights after one AdamW update."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, labels=batch.labels, use_cache=False)
    out.loss.backward()
    params = _adapter_params(model)
    grads = {n: _full(p.grad) if p.grad is not None else None for n, p in params.items()}
    # a rank whose shard of a small weight is empty (fewer rows than ranks) holds no gradient, rightly
    local = {n: p.grad is not None or _local(p).numel() == 0 for n, p in params.items()}
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(out.loss.detach()), grads, local, {n: _full(p) for n, p in params.items()}


def _tied(model) -> bool | None:
    from onboard.patches.base import unwrap

    base = unwrap(model)
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    out, inp = base.get_output_embeddings(), base.get_input_embeddings()
    if not getattr(config, "tie_word_embeddings", False) or out is None or inp is None:
        return None
    return out.weight is inp.weight


def _tied_apart(model, units: list) -> bool:
    """Whether a tied output layer and input embeddings land in different FSDP units: each module belongs to the
    nearest unit around it (itself included), else to the model's own."""
    from onboard.patches.base import unwrap

    if not _tied(model):
        return False
    base = unwrap(model)
    inp, head = base.get_input_embeddings(), base.get_output_embeddings()

    def unit_of(target) -> int:
        holders = [i for i, unit in enumerate(units) if any(m is target for m in unit.modules())]
        return holders[-1] if holders else -1  # modules() lists a unit before the units inside it

    return unit_of(inp) != unit_of(head)


def worker(folder: Path) -> None:
    import copy

    import torch.distributed as dist
    from peft import PeftModel, get_peft_model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard

    from onboard.harness.samemath import shortest_row
    from onboard.harness.session import ModelSession
    from onboard.harness.setup import Setup
    from onboard.patches import get_patch, is_lora_transform, left_out_by_training

    payload = json.loads((folder / "payload.json").read_text())
    cuda = torch.cuda.is_available() and payload["setup"].get("device", "auto") != "cpu"
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = f"cuda:{local}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    setup = Setup(**{**payload["setup"], "device": device, "slice": "off"})
    out: dict = {"world_size": world, "backend": dist.get_backend(), "device": device}
    try:
        session = ModelSession(setup=setup, max_examples=8)
        patches = [get_patch(p) for p in payload["patches"]]
        for transform in [p for p in patches if is_lora_transform(p)]:
            session.apply_patch(transform)
        torch.manual_seed(session.seed)
        model = get_peft_model(session.model, session.lora_config())
        session.set_adapter(model)
        # the verified patches as training applies them here (the fused loss on CUDA only: left_out_by_training);
        # the speed levers are judged in one process, the sharding without them
        left_out = left_out_by_training(payload["patches"], device)
        for patch in [p for p in patches if not is_lora_transform(p)]:
            if patch.id.startswith("speed.") or patch.id in left_out:
                continue
            session.apply_patch(patch, option=payload["patch_options"].get(patch.id))
        with torch.no_grad():  # B != 0: every adapter matrix gets a gradient, the same on every rank
            gen = torch.Generator().manual_seed(session.seed)
            for name, param in model.named_parameters():
                if param.requires_grad and "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen).to(param.dtype) * 1e-2)
        batch = shortest_row(session, 4)
        lr = 1e-3
        named, found = wrap_classes(model)
        out["no_split_modules"], out["wrap_classes"] = named, found
        out["tied_before"] = _tied(model)
        reference = None
        if rank == 0:
            single = copy.deepcopy(model)
            reference = _step(single, batch, lr)
            with torch.no_grad():
                ref_logits = single(input_ids=batch.input_ids, position_ids=batch.position_ids,
                                    use_cache=False).logits.float().cpu()
        units = [m for m in model.modules() if type(m).__name__ in found]
        out["tied_apart"] = _tied_apart(model, units)
        for unit in units:
            fully_shard(unit)
        fully_shard(model)
        out["units"] = len(units) + 1
        out["tied_after"] = _tied(model)
        loss, grads, local_grads, weights = _step(model, batch, lr)
        without = [None] * world  # each rank's adapter weights that got no gradient there
        dist.all_gather_object(without, sorted(n for n, got in local_grads.items() if not got))
        with torch.no_grad():
            logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                           use_cache=False).logits.float().cpu()
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            ref_loss, ref_grads, _, ref_weights = reference
            out["loss"], out["loss_single"] = loss, ref_loss
            out["loss_rel_diff"] = abs(loss - ref_loss) / max(abs(ref_loss), 1e-12)
            # only what gets a gradient in one process is owed one sharded (an adapter whose output never reaches
            # the loss, as Jamba's dt_proj on its slow path, gets none either way: LORA001's matter, not sharding's)
            owed = {n for n, g in ref_grads.items() if g is not None}
            out["grads_on_every_rank"] = not any(owed.intersection(names) for names in without)
            missing = [n for n, g in grads.items() if g is None and n in owed]
            shapes = [n for n, g in grads.items() if g is not None and n in owed
                      and tuple(g.shape) != tuple(ref_grads[n].shape)]
            out["grads_missing"], out["grad_shape_mismatch"] = missing[:5], shapes[:5]
            common = sorted(n for n in owed if grads.get(n) is not None and n not in shapes)
            flat = lambda d: torch.cat([d[n].flatten() for n in common])  # noqa: E731
            out["grad_rel_diff"] = _rel(flat(grads), flat(ref_grads)) if common else None
            delta = lambda w: torch.cat([w[n].flatten() for n in common])  # noqa: E731
            out["update_rel_diff"] = _rel(delta(weights), delta(ref_weights)) if common else None
            out["logits_rel_diff_single"] = _rel(logits, ref_logits)
            # the adapter as a sharded run saves it, loaded into a fresh single-process model
            saved = Path(folder) / "adapter"
            model.save_pretrained(saved, state_dict=state)
            fresh = ModelSession(setup=setup.replace(device="cpu"), max_examples=1)
            loaded = PeftModel.from_pretrained(fresh.model, saved)
            for patch in [p for p in patches if not is_lora_transform(p)]:
                if not (patch.id.startswith("speed.") or patch.id.startswith("cce.")):
                    fresh.apply_patch(patch, option=payload["patch_options"].get(patch.id))
            loaded.eval()
            with torch.no_grad():
                reloaded = loaded(input_ids=batch.input_ids.cpu(), position_ids=batch.position_ids.cpu(),
                                  use_cache=False).logits.float()
            out["saved_logits_rel_diff"] = _rel(reloaded, logits)
            (folder / RESULT).write_text(json.dumps(out))
    except Exception as exc:  # noqa: BLE001 - rank 0's error is the check's evidence
        if rank == 0:
            import traceback

            out["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            out["trace"] = traceback.format_exc()[-1500:]
            (folder / RESULT).write_text(json.dumps(out, default=str))
        raise
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
