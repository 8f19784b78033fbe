"""Forward passes the checks share: per-token SFT losses of one example or one packed row."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from onboard.harness.data import IGNORE, Example, PackedRow


def token_losses(logits: torch.Tensor, labels: torch.Tensor, *, seq2seq: bool = False) -> torch.Tensor:
    """Per-position loss of the shifted next-token objective, in fp32; 0 where the label is ignored.

    logits [B, T, V], labels [B, T] -> [B, T]; position t holds the loss of predicting labels[t]. seq2seq: the
    decoder's logits at t predict labels[t] (the model shifted the labels into its decoder's input), no shift.
    """
    if seq2seq:
        flat = logits.reshape(-1, logits.shape[-1]).float()
        loss = F.cross_entropy(flat, labels.reshape(-1).clamp(min=0), reduction="none").view_as(labels)
        return loss * (labels != IGNORE)
    shifted = labels[:, 1:]
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()  # (N, V) rows: far faster than (B, V, T)
    loss = F.cross_entropy(flat, shifted.reshape(-1).clamp(min=0), reduction="none").view_as(shifted)
    loss = loss * (shifted != IGNORE)
    return F.pad(loss, (1, 0))


@torch.no_grad()
def example_losses(model, ex: Example, device: torch.device, **forward_kwargs) -> torch.Tensor:
    """Loss of each trained token of one example, run alone (the unpacked reference)."""
    inputs = example_inputs(ex, device)
    labels = torch.tensor([ex.labels], device=device)
    out = model(**inputs, use_cache=False, **forward_kwargs)
    losses = token_losses(out.logits, labels, seq2seq=ex.seq2seq)[0]
    return losses[labels[0] != IGNORE].cpu()


def example_inputs(ex: Example, device: torch.device) -> dict[str, torch.Tensor]:
    """The forward's inputs for one sample alone: its ids; a seq2seq sample's labels too (they are the decoder's
    input, shifted by the model), so the logits are the decoder's."""
    inputs = {"input_ids": torch.tensor([ex.input_ids], device=device)}
    if ex.seq2seq:
        inputs["labels"] = torch.tensor([ex.labels], device=device)
    return inputs


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
            out["position_ids"][i, n:] = torch.arange(width - n) + row.start
            out["sample"][i, :n] = torch.tensor(row.sample)
        return cls(**{k: v.to(device) if k != "sample" else v for k, v in out.items()})


def split_losses(logits: torch.Tensor, batch: PackedBatch) -> dict[int, torch.Tensor]:
    losses = token_losses(logits, batch.labels).cpu()
    trained = batch.labels.cpu() != IGNORE
    return {int(s): losses[trained & (batch.sample == s)] for s in batch.sample.unique() if s >= 0}


def replaced(ids: torch.Tensor, which: torch.Tensor, pool: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """`ids` with every position in `which` set to another token of `pool` (random, never the one it was)."""
    index = torch.randint(0, len(pool), ids.shape, generator=gen)
    picks, after = pool[index].to(ids.device), pool[(index + 1) % len(pool)].to(ids.device)
    picks = torch.where(picks == ids, after, picks)  # the ids are distinct: `after` differs where `picks` did not
    return torch.where(which, picks, ids)


class Perturbation:
    """How far a packed row's samples move when another sample of the row gets other tokens, in nats of
    log-probability. Leak: the first sample changes and the later samples are measured (a model that attends
    backwards too is ATTN001's finding: FM-ATTN-NONCAUSAL). Control: the row twice in one batch, the first
    copy's first sample changed, the second copy measured: rows never attend to each other, so what moves
    there is numerical coupling of the batch (MoE kernels), not attention. An isolated model gives exactly 0
    for both (masked keys add exact zeros)."""

    def __init__(self, model, batch: PackedBatch, vocab: list[int], seed: int, kwargs_for=lambda ids: {}):
        # kwargs_for(ids) builds the convention's forward arguments for each batch it runs (the control runs two
        # rows: a mask built once for one row would not fit it)
        self.model, self.batch, self.kwargs_for = model, batch, kwargs_for
        self.sample = batch.sample[:1].to(batch.input_ids.device)  # the first row
        self.first = self.sample[:, :1]
        self.pool = torch.tensor(vocab, dtype=torch.long)
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.logits = self._logits(batch.input_ids, batch.position_ids)  # unperturbed: also what the losses come from

    @torch.no_grad()
    def _logits(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, position_ids=positions, **self.kwargs_for(ids)).logits

    def _replaced(self, ids: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        return replaced(ids, which, self.pool, self.gen)

    @staticmethod
    def _distance(a: torch.Tensor, b: torch.Tensor) -> float:
        """Largest change of a log-probability over the positions given ([T, V] each, in fp32)."""
        return (a.float().log_softmax(-1) - b.float().log_softmax(-1)).abs().max().item() if a.numel() else 0.0

    def leak(self) -> float:
        ids, positions = self.batch.input_ids[:1], self.batch.position_ids[:1]
        changed = self.sample == self.first
        other = self._logits(self._replaced(ids, changed), positions)
        measured = (self.sample >= 0) & ~changed
        return self._distance(self.logits[:1][measured], other[measured])

    def control(self) -> float:
        ids = self.batch.input_ids[:1].repeat(2, 1)
        positions = self.batch.position_ids[:1].repeat(2, 1)
        base = self._logits(ids, positions)
        changed = torch.zeros_like(ids, dtype=torch.bool)
        changed[0] = self.sample[0] == self.first[0]
        other = self._logits(self._replaced(ids, changed), positions)
        return self._distance(base[1], other[1])


def grad_rel_diff(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> float:
    """||other - reference|| / ||reference|| over every named gradient; inf when the names differ or none exist."""
    if set(reference) != set(other) or not reference:
        return float("inf")
    num = sum(((other[n] - reference[n]) ** 2).sum() for n in reference) ** 0.5
    den = sum((reference[n] ** 2).sum() for n in reference) ** 0.5
    return float(num / den.clamp(min=1e-30))


def batch_tensors(examples: list[Example], device: torch.device, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with an attention mask; labels IGNORE on padding. Seq2seq samples: the encoder's ids
    and the labels padded each to their own width."""
    if examples and examples[0].seq2seq:
        from onboard.patches.packing import seq2seq_batch

        batch = seq2seq_batch([{"input_ids": ex.input_ids, "labels": ex.labels} for ex in examples], pad_id)
        return {k: v.to(device) for k, v in batch.items()}
    width = max(len(ex) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, ex in enumerate(examples):
        ids[i, : len(ex)] = torch.tensor(ex.input_ids)
        labels[i, : len(ex)] = torch.tensor(ex.labels)
        mask[i, : len(ex)] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


@torch.no_grad()
def own_position_start(model, ex: Example, device: torch.device, pad_id: int | None) -> int:
    """Where the model numbers a sample's positions when it is given none: the `start` whose position_ids
    start..start+n-1 reproduce the sample alone exactly (0 for most models; padding_idx + 1 for RoBERTa-style
    embeddings, which count from the padding index). 0 when no candidate does (the packing check then finds a
    model that positions otherwise: FM-PACK-POSITIONS), or when the forward takes no position_ids."""
    ids = torch.tensor([ex.input_ids], device=device)
    try:
        alone = model(input_ids=ids, use_cache=False).logits.float().log_softmax(-1)
        # the padding index the embeddings count from is the config's or the tokenizer's pad id: candidates only,
        # each judged by the forward
        config_pad = getattr(getattr(model, "config", None), "pad_token_id", None)
        pads = [p + 1 for p in (pad_id, config_pad) if isinstance(p, int) and not isinstance(p, bool)]
        candidates = dict.fromkeys([0, 1, 2, *pads])
        for start in candidates:
            positions = torch.arange(start, start + ids.shape[1], device=device)[None]
            given = model(input_ids=ids, position_ids=positions, use_cache=False).logits.float().log_softmax(-1)
            if (given - alone).abs().max().item() == 0:
                return start
    except Exception:  # noqa: BLE001 - no position_ids, or positions past the model's: it numbers from 0 here
        return 0
    return 0
