"""FM-FSDP-TIED outside onboard: RoBERTa as a causal LM (head tied to its word embeddings) with LoRA, sharded by FSDP2
by the classes its _no_split_modules names (torch refuses at the first forward), or, with `layers`, by RobertaLayer
alone, as fsdp.wrap_class does (it steps). Plain torch, transformers and PEFT.
Run: torchrun --standalone --nproc_per_node 2 bench/audit/fsdp/roberta_tied_plain.py [layers]"""
import sys

import torch
import torch.distributed as dist
from peft import LoraConfig, get_peft_model
from torch.distributed.fsdp import fully_shard
from transformers import RobertaConfig, RobertaForCausalLM

dist.init_process_group("gloo")
config = RobertaConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, is_decoder=True)
base = RobertaForCausalLM(config)
model = get_peft_model(base, LoraConfig(r=8, target_modules="all-linear"))
wrap = {"RobertaLayer"} if sys.argv[1:] == ["layers"] else set(base._no_split_modules)
print("tied:", base.lm_head.decoder.weight is base.roberta.embeddings.word_embeddings.weight, "wrap:", sorted(wrap))
try:
    for module in [m for m in model.modules() if type(m).__name__ in wrap]:
        fully_shard(module)
    fully_shard(model)
    ids = torch.randint(0, 500, (1, 32))
    model(input_ids=ids, labels=ids).loss.backward()
    print("stepped")
except ValueError as exc:
    print("refused:", str(exc)[:140])
dist.destroy_process_group()
