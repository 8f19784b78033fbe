"""FM-KERN-CKPT outside the check code: fault:kern-ckpt's model, LoRA, one packed row; the adapter gradients with
the packed-attention lever against sdpa, without and with transformers' own gradient checkpointing.
Run: python bench/audit/kern_ckpt_plain.py"""
import torch
from peft import LoraConfig, get_peft_model

from onboard.fixtures.faults import FAULTS
from onboard.patches.speed import register

tok, model = FAULTS["kern-ckpt"].build(torch.float32)
model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
with torch.no_grad():
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.normal_(std=1e-2)
lengths = [20, 30, 25]
ids = torch.randint(5, 200, (1, sum(lengths)), generator=torch.Generator().manual_seed(0))
pos = torch.cat([torch.arange(n) for n in lengths])[None]
register()


def grads(attn, ckpt):
    base = model.base_model.model
    base.set_attn_implementation(attn)
    if ckpt:
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    else:
        base.activation_checkpointing_disable()
        model.eval()
    model.zero_grad()
    model(input_ids=ids, position_ids=pos, labels=ids, use_cache=False).loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


for ckpt in (False, True):
    plain, lever = grads("sdpa", ckpt), grads("onboard_packed", ckpt)
    print(f"checkpointing {ckpt}: lever vs plain gradients rel {float((lever - plain).norm() / plain.norm()):.3g}")
