"""Plain reproduction of the MOE001 and COMPILE001 fault findings (python bench/audit/moe_compile.py, about a
minute on the CPU): transformers, torch and peft only; the fault models come from onboard's builders (the same
model), nothing from onboard's checks. A healthy tiny Llama is run last: one graph, no break."""
import torch, torch._dynamo as dynamo
from peft import get_peft_model, LoraConfig
from onboard.fixtures.faults import FAULTS
from onboard.fixtures.tiny import build_tiny

def model_of(name):
    return FAULTS[name].build(torch.float32)[1]

def loss_grads(m, ids, pos, labels):
    m.zero_grad(set_to_none=True)
    out = m(input_ids=ids, position_ids=pos, labels=labels, use_cache=False); out.loss.backward()
    return out.loss.item(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

torch.manual_seed(0)
ids = torch.randint(1, 400, (1, 120)); pos = torch.cat([torch.arange(60), torch.arange(60)])[None]; labels = ids.clone()
for name in ("moe-kernel", "moe-lora"):
    m = get_peft_model(model_of(name), LoraConfig(r=8, target_modules="all-linear"))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n: p.normal_(std=1e-2)
    res = {}
    for impl in ("eager", "grouped_mm"):
        m.base_model.model.set_experts_implementation(impl); res[impl] = loss_grads(m, ids, pos, labels)
    (le, ge), (lg, gg) = res["eager"], res["grouped_mm"]
    rel = max(((gg[n] - ge[n]).norm() / ge[n].norm().clamp_min(1e-12)).item() for n in ge)
    last = m.base_model.model.config.num_experts - 1
    a = [n for n in gg if "experts" in n and "lora_A" in n]
    zero_last = [n for n in a if gg[n].reshape(m.base_model.model.config.num_experts, -1, gg[n].shape[-1])[last].abs().sum() == 0]
    print(name, "loss eager", le, "grouped", lg, "max grad rel", round(rel, 4), "last-expert A grads zero under grouped_mm:", len(zero_last), "of", len(a))
for name in ("compile-breaks", "compile-math", "compile-fail"):
    m = model_of(name).eval()
    try:
        ex = dynamo.explain(m)(input_ids=ids, position_ids=pos, labels=labels, use_cache=False)
        print(name, "graphs", ex.graph_count, "breaks", ex.graph_break_count, (ex.break_reasons[0].user_stack[-1].filename.split('/')[-1] + ":" + str(ex.break_reasons[0].user_stack[-1].lineno)) if ex.break_reasons else "")
        dynamo.reset()
        with torch.no_grad():
            e = m(input_ids=ids, labels=labels).loss.item(); c = torch.compile(m, backend="aot_eager")(input_ids=ids, labels=labels).loss.item()
        print("   eager loss", e, "compiled", c)
    except Exception as exc:
        print(name, "compile raises:", type(exc).__name__, str(exc).splitlines()[0][:120])
    dynamo.reset()
healthy = build_tiny("llama", 512, lambda c: __import__("transformers").AutoModelForCausalLM.from_config(c)).eval()
ex = dynamo.explain(healthy)(input_ids=ids, position_ids=pos, labels=labels, use_cache=False)
print("healthy tiny llama: graphs", ex.graph_count, "breaks", ex.graph_break_count)
