"""Every patch id, once. Checks, training, the fault catalog and tests name a patch through these constants;
onboard.patches refuses at import a registry whose ids differ from this list, so a typo is an ImportError, not a
fix that silently never applies."""

ATTENTION_FALLBACK = "attention.fallback"
ATTENTION_CAUSAL = "attention.causal"
LORA_WRAPPED_LINEAR = "lora.wrapped_linear_targets"
LORA_EXCLUDE_UNWRAPPABLE = "lora.exclude_unwrappable"
LORA_EXPERT_PARAMETERS = "lora.expert_parameters"
INPUTS_TOKEN_TYPE_IDS = "inputs.token_type_ids"
PACKING_NO_CACHE = "packing.no_cache_no_mask"
PACKING_BLOCK_MASK = "packing.block_mask"
PACKING_SAMPLE_BOUNDARIES = "packing.sample_boundaries"
PACKING_SEGMENT_CONV = "packing.segment_conv"
PACKING_UNPACKED = "packing.unpacked"
LOSS_NUM_ITEMS = "loss.num_items_in_batch"
LOSS_ACCEPTS_NUM_ITEMS = "loss.accepts_num_items"
CCE_FUSED_LOSS = "cce.fused_loss"
CCE_MODEL_LOSS = "cce.model_loss"
LABELS_SHIFT = "labels.shift"
SPEED_PACKED_ATTENTION = "speed.packed_attention"
SPEED_COMPILED_LAYERS = "speed.compiled_layers"
SPEED_BF16_ADAPTERS = "speed.bf16_adapters"
MOE_EXPERTS_IMPLEMENTATION = "moe.experts_implementation"
FSDP_WRAP_CLASS = "fsdp.wrap_class"

ALL = (ATTENTION_FALLBACK, ATTENTION_CAUSAL, LORA_WRAPPED_LINEAR, LORA_EXCLUDE_UNWRAPPABLE, LORA_EXPERT_PARAMETERS,
       INPUTS_TOKEN_TYPE_IDS, PACKING_NO_CACHE, PACKING_BLOCK_MASK, PACKING_SAMPLE_BOUNDARIES, PACKING_SEGMENT_CONV,
       PACKING_UNPACKED,
       LOSS_NUM_ITEMS, LOSS_ACCEPTS_NUM_ITEMS, CCE_FUSED_LOSS, CCE_MODEL_LOSS, LABELS_SHIFT,
       SPEED_PACKED_ATTENTION, SPEED_COMPILED_LAYERS, SPEED_BF16_ADAPTERS, MOE_EXPERTS_IMPLEMENTATION,
       FSDP_WRAP_CLASS)
