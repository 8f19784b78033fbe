# plain torch + transformers: RoBERTa causal LM, FSDP2 by the classes its _no_split_modules names
import torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from transformers import RobertaConfig, RobertaForCausalLM
dist.init_process_group("gloo")
m = RobertaForCausalLM(RobertaConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, is_decoder=True))
from peft import LoraConfig, get_peft_model
m = get_peft_model(m, LoraConfig(r=8, target_modules="all-linear"))
print("tied:", m.base_model.model.lm_head.decoder.weight is m.base_model.model.roberta.embeddings.word_embeddings.weight, "no_split:", m.base_model.model._no_split_modules)
try:
    for mod in [x for x in m.modules() if type(x).__name__ == "RobertaLayer"]:
        fully_shard(mod)
    fully_shard(m); print("sharded")
    ids = torch.randint(0, 500, (1, 32)); m(input_ids=ids, labels=ids).loss.backward(); print("stepped")
except ValueError as e:
    print("refused:", str(e)[:140])
dist.destroy_process_group()
