"""Forward passes the checks share: per-token SFT losses of one example or one packed row."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from onboard.harness.data import IGNORE, Example, PackedRow


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position loss of the shifted next-token objective, in fp32; 0 where the label is ignored.

    logits [B, T, V], labels [B, T] -> [B, T]; position t holds the loss of predicting labels[t].
    """
    shifted = labels[:, 1:]
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()  # (N, V) rows: far faster than (B, V, T)
    loss = F.cross_entropy(flat, shifted.reshape(-1).clamp(min=0), reduction="none").view_as(shifted)
    loss = loss * (shifted != IGNORE)
    return F.pad(loss, (1, 0))


@torch.no_grad()
def example_losses(model, ex: Example, device: torch.device, **forward_kwargs) -> torch.Tensor:
    """Loss of each trained token of one example, run alone (the unpacked reference)."""
    ids = torch.tensor([ex.input_ids], device=device)
    labels = torch.tensor([ex.labels], device=device)
    out = model(input_ids=ids, use_cache=False, **forward_kwargs)
    losses = token_losses(out.logits, labels)[0]
    return losses[labels[0] != IGNORE].cpu()


@dataclass
class PackedBatch:
    """Packed rows stacked into one batch. Shorter rows are right-padded with a dummy sample (sample -1,
    positions restarting at 0): under a causal mask no real token attends to it, so no mask is needed."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    sample: torch.Tensor

    @classmethod
    def from_rows(cls, rows: list[PackedRow], device: torch.device, pad_id: int) -> PackedBatch:
        width = max(len(r.input_ids) for r in rows)
        out = {k: torch.full((len(rows), width), fill, dtype=torch.long)
               for k, fill in (("input_ids", pad_id), ("labels", IGNORE), ("position_ids", 0), ("sample", -1))}
        for i, row in enumerate(rows):
            n = len(row.input_ids)
            out["input_ids"][i, :n] = torch.tensor(row.input_ids)
            out["labels"][i, :n] = torch.tensor(row.labels)
            out["position_ids"][i, :n] = torch.tensor(row.position_ids)
            out["position_ids"][i, n:] = torch.arange(width - n)
            out["sample"][i, :n] = torch.tensor(row.sample)
        return cls(**{k: v.to(device) if k != "sample" else v for k, v in out.items()})


@torch.no_grad()
def packed_losses(model, batch: PackedBatch, device: torch.device, **forward_kwargs) -> dict[int, torch.Tensor]:
    """Loss of each trained token in packed rows, split back into the examples they hold."""
    out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, **forward_kwargs)
    losses = token_losses(out.logits, batch.labels).cpu()
    trained = batch.labels.cpu() != IGNORE
    return {int(s): losses[trained & (batch.sample == s)] for s in batch.sample.unique() if s >= 0}


@torch.no_grad()
def perturbation_leak(model, batch: PackedBatch, vocab: list[int], seed: int, **forward_kwargs) -> tuple[float, float]:
    """(leak, control) in nats: how far the log-probabilities of a packed row's samples move when another
    sample of the row gets other tokens. Leak: the first sample of every row changes, the later samples
    are measured. Control: the last sample changes, the earlier ones are measured; under a causal mask
    nothing can flow backwards, so whatever moves there is numerical coupling of the batch, not attention.
    An isolated model gives exactly 0 for both."""
    sample = batch.sample.to(batch.input_ids.device)
    first = sample[:, :1]
    last = torch.stack([row[row >= 0].max() for row in sample])[:, None]
    gen = torch.Generator().manual_seed(seed + 1)
    pool = torch.tensor(vocab, dtype=torch.long)

    def replaced(which: torch.Tensor) -> torch.Tensor:
        ids = batch.input_ids.clone()
        # another of the data's token ids at every position of the chosen samples
        index = torch.randint(0, len(pool), ids.shape, generator=gen)
        picks, after = pool[index].to(ids.device), pool[(index + 1) % len(pool)].to(ids.device)
        picks = torch.where(picks == ids, after, picks)  # the ids are distinct: `after` differs where `picks` did not
        return torch.where(which, picks, ids)

    def log_probs(ids: torch.Tensor) -> torch.Tensor:
        out = model(input_ids=ids, position_ids=batch.position_ids, **forward_kwargs)
        return out.logits.float().log_softmax(-1)

    base = log_probs(batch.input_ids)
    real = sample >= 0
    moved_first = (log_probs(replaced(sample == first)) - base).abs().amax(-1)
    moved_last = (log_probs(replaced(sample == last)) - base).abs().amax(-1)
    leak = moved_first[real & (sample != first)]
    control = moved_last[real & (sample != last)]
    return (leak.max().item() if leak.numel() else 0.0), (control.max().item() if control.numel() else 0.0)


def batch_tensors(examples: list[Example], device: torch.device, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with an attention mask; labels IGNORE on padding."""
    width = max(len(ex) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, ex in enumerate(examples):
        ids[i, : len(ex)] = torch.tensor(ex.input_ids)
        labels[i, : len(ex)] = torch.tensor(ex.labels)
        mask[i, : len(ex)] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}
