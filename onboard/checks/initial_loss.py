"""LOSS001: the pretrained model's SFT loss on chat data is far from random, attributed by token kind."""

from __future__ import annotations

from typing import TYPE_CHECKING

import math

import torch

from onboard.checks.base import Check
from onboard.harness.data import CONTENT, IGNORE, KIND_NAMES, TEMPLATE
from onboard.harness.result import Status, bar_figure

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession



class InitialLossCheck(Check):
    """What it does:
    Measures the masked SFT loss (assistant tokens only) of the model as loaded, on the built-in chats or
    --data, and judges it against ln(vocab_size), the loss of a uniform guess. The loss is also split by
    token kind: content (the assistant's words) and template (chat markers such as <|im_end|> or
    <end_of_turn>, and the EOS).

    Why it matters:
    A pretrained model starts SFT around 0.5-2.0 nats. A loss near ln(V) means the model predicts at
    random: broken weights (a bad conversion, shuffled or mis-mapped tensors), a broken mask, or a template
    that scrambles the input. Training from there is training from scratch.

    Failure modes:
    FM-LOSS-RANDOM: loss >= 0.8 x ln(V) is FAIL; above 3.0 nats is WARN (a partial fault, e.g. a RoPE bug).
    FM-LOSS-TEMPLATE: template tokens cost more than 3 nats each while content is fine: a base model whose
    chat tokens were never trained. WARN, not a broken model: those tokens are learnt in fine-tuning.
    FM-LOSS-MASK: no token of any sample is labelled (the template or its assistant markers leave every
    answer out of the loss): FAIL, whatever the weights, since training would then learn nothing.
    With random weights (tiny:ARCH, --random-weights) the loss says nothing and the check is SKIP.

    Fix:
    None: a random-level loss needs the weights or the loader fixed, not a patch.
    """

    code = "LOSS001"
    runs_on = "whole"
    whole_only = True
    name = "initial_loss"
    summary = "pretrained SFT loss is far from ln(vocab_size); loss by token kind"
    requires = ("LOAD001", "ATTN001")  # a forward that cannot run says nothing more here

    def figures(self, result, device):
        ms = result.measurements
        if "loss" not in ms:
            return []
        labels = {"loss": "all assistant tokens", "loss_content": "content", "loss_template": "template"}
        groups = [g for g in labels if g in ms]
        lines = {"ln V": float(ms["ln_vocab"].value)} if "ln_vocab" in ms else {}
        title = "LOSS001: loss by token kind" + (" (random weights: not judged)" if result.status is Status.SKIP else "")
        return [bar_figure(title, [labels[g] for g in groups], {"mean loss": [float(ms[g].value) for g in groups]},
                           "nats", colors={"mean loss": "#0969da"}, lines=lines)]

    def run(self, session: ModelSession):
        if not any(ex.n_trained for ex in session.examples):  # the data's property, whatever the weights
            return self.result(Status.FAIL, "no assistant token was labelled: the template hides the answers",
                               diagnosis="FM-LOSS-MASK")
        if session.spec.random_weights:  # the loss of random weights says nothing: do not spend forwards on it
            some = list(session.reference_losses(range(min(4, len(session.examples)))).values())
            mean = torch.cat(some).mean().item() if some else float("nan")
            ln_v = math.log(session.logit_width)
            res = self.result(Status.SKIP, f"random weights: a loss of {mean:.2f} (ln V {ln_v:.2f}) says nothing "
                                           "about the model")
            res.measure("loss", round(mean, 4), "nats", f"not judged: random weights ({len(some)} samples)")
            res.measure("ln_vocab", round(ln_v, 4), "nats")
            return res
        losses = list(session.reference_losses().values())
        kinds = [torch.tensor([k for k, lab in zip(ex.kinds, ex.labels) if lab != IGNORE]) for ex in session.examples]
        ids = [torch.tensor([lab for lab in ex.labels if lab != IGNORE]) for ex in session.examples]
        loss_all, kind_all, id_all = torch.cat(losses), torch.cat(kinds), torch.cat(ids)
        vocab = session.logit_width
        ln_v = math.log(vocab)
        random_fraction = session.threshold("initial_loss.random_fraction")
        suspect = session.threshold("initial_loss.suspect_loss")
        mean = loss_all.mean().item()
        res = self.result(Status.PASS, "")
        res.measure("loss", round(mean, 4), "nats", f"< {suspect} pass, >= {random_fraction} x ln V fail")
        res.measure("ln_vocab", round(ln_v, 4), "nats")
        res.measure("loss_over_ln_vocab", round(mean / ln_v, 4), "", compare="<", limit=random_fraction)
        res.measure("trained_tokens", int(loss_all.numel()), "tokens")
        by_kind = {}
        for kind in (CONTENT, TEMPLATE):
            sel = kind_all == kind
            if sel.any():
                by_kind[kind] = loss_all[sel].mean().item()
                res.measure(f"loss_{KIND_NAMES[kind]}", round(by_kind[kind], 4), "nats")
                res.measure(f"tokens_{KIND_NAMES[kind]}", int(sel.sum()), "tokens")
        res.evidence["per_sample_loss"] = [round(x.mean().item(), 4) if x.numel() else None for x in losses]
        res.evidence["costliest_template_tokens"] = _costliest(session.tokenizer, loss_all, kind_all, id_all)

        content = by_kind.get(CONTENT, mean)
        template = by_kind.get(TEMPLATE)
        if mean >= random_fraction * ln_v:
            res.status, res.diagnosis = Status.FAIL, "FM-LOSS-RANDOM"
            res.message = (f"loss {mean:.2f} nats is {mean / ln_v:.0%} of ln V = {ln_v:.2f}: the model predicts "
                           "at random (broken weights, mask or template)")
        elif template is not None and template > suspect and content <= suspect:
            res.status, res.diagnosis = Status.WARN, "FM-LOSS-TEMPLATE"
            res.message = (f"loss {mean:.2f} nats; template tokens ({template:.2f} nats each vs "
                           f"{content:.2f} for content): untrained chat tokens, typical of a base model")
        elif mean > suspect:
            res.status = Status.WARN
            res.message = (f"loss {mean:.2f} nats is high for a pretrained model (expected 0.5-2.0; ln V "
                           f"{ln_v:.2f}): suspect a partial fault such as a RoPE or attention bug")
        else:
            res.message = f"loss {mean:.2f} nats (content {content:.2f}), ln V {ln_v:.2f}"
        if session.template_is_fallback and res.status in (Status.PASS, Status.WARN):
            res.message += "; rendered with the plain fallback template"
        return res


def _costliest(tokenizer, losses, kinds, ids, top: int = 3) -> list[dict]:
    sel = kinds == TEMPLATE
    if not sel.any():
        return []
    rows = []
    for tid in ids[sel].unique():
        mask = sel & (ids == tid)
        rows.append({"token": tokenizer.decode([int(tid)], clean_up_tokenization_spaces=False), "mean_loss": round(losses[mask].mean().item(), 3),
                     "count": int(mask.sum())})
    return sorted(rows, key=lambda r: -r["mean_loss"])[:top]
