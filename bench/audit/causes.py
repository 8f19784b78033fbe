"""Curated causes for the audit's TRUE findings, read by bench/audit/reproduce.py. Each key is (model_type,
failure_mode), or a bare failure mode for a generic cause; each value names the source line behind the finding as
path:line relative to site-packages, followed by the mechanism in one sentence. All line numbers were read in
transformers 5.24.0 and PEFT 0.21.2 as installed in /work/main/.venv and will differ in other versions.
"""

CAUSES: dict = {
    # --- generic causes (looked up by failure mode when no (arch, mode) entry exists) -----------------------
    "FM-PACK-MASK": (
        "transformers/masking_utils.py:865 — packed-sequence detection from position_ids runs only when "
        "attention_mask is None and cache is None, so passing an all-ones 2D attention_mask disables it and "
        "samples attend across boundaries."
    ),
    "FM-PACK-CACHE": (
        "transformers/models/llama/modeling_llama.py:375 — the model forward builds a DynamicCache whenever "
        "use_cache is truthy (the config default), so cache is not None at transformers/masking_utils.py:865 and "
        "the packed-sequence mask is never built."
    ),
    "FM-LORA-UNSUPPORTED": (
        "peft/tuners/tuners_utils.py:160 — PEFT raises for LoRA on out_proj/conv1d of mamba-type models (model "
        "types listed at :152); transformers/models/llama4/modeling_llama4.py:141 — Llama4Router subclasses "
        "nn.Linear but returns a tuple (:152), so LoRA wraps it and adds a tensor to that tuple "
        "(peft/tuners/lora/layer.py:1102)."
    ),
    "FM-ATTN-NONCAUSAL": (
        "transformers/models/bert/modeling_bert.py:700 — BERT-style models build a causal mask only when "
        "config.is_decoder is True (create_bidirectional_mask otherwise, :708) and give self-attention "
        "is_causal=config.is_decoder (:361), while BertLMHeadModel only logs a warning without it (:838), so a "
        "*LMHeadModel / *ForCausalLM built from a default or encoder checkpoint config (is_decoder False in both) "
        "attends both ways."
    ),
    "FM-LOSS-GA": (
        "transformers/trainer.py:521 — a forward that takes **kwargs sets model_accepts_loss_kwargs (:517-523), so "
        "the Trainer passes num_items_in_batch (:2167-2170) and skips dividing the loss by the accumulation steps "
        "(:2115-2119), but forwards such as BartForCausalLM's compute their own mean CrossEntropyLoss "
        "(models/bart/modeling_bart.py:1298) and ignore num_items_in_batch, so with k accumulation steps the loss "
        "and gradients are k times too large."
    ),
    "FM-INPUT-EXTRA": (
        "transformers/models/molmo2/modeling_molmo2.py:820 — Molmo2Model.forward raises in training mode when "
        "mm_token_type_ids is None, although a text-only batch has no multimodal tokens to type."
    ),
    "FM-TRAIN-LOSS": (
        "transformers/data/data_collator.py:1354 — DataCollatorWithFlattening marks sample boundaries only by "
        "restarting position_ids (no mask, seq_idx or cu_seq_lens by default, :1304-1307), so where PACK001 found "
        "the samples leaking (a mask built without position_ids, a recurrent or convolution state) the packed "
        "training step mixes them the same way; the row's PACK001 cause names the line."
    ),
    # --- FM-PACK-ISOLATION ----------------------------------------------------------------------------------
    ("opt", "FM-PACK-ISOLATION"): (
        "transformers/models/opt/modeling_opt.py:363 — create_causal_mask is called without position_ids, so the "
        "packed-sequence mask is never built and later samples attend to earlier ones."
    ),
    ("afmoe", "FM-PACK-ISOLATION"): (
        "transformers/models/afmoe/modeling_afmoe.py:554 — mask_kwargs for create_causal_mask / "
        "create_sliding_window_causal_mask omit position_ids, so the packed-sequence mask is never built."
    ),
    ("gpt_oss", "FM-PACK-ISOLATION"): (
        "transformers/models/gpt_oss/modeling_gpt_oss.py:461 — mask_kwargs for create_causal_mask / "
        "create_sliding_window_causal_mask omit position_ids, so the packed-sequence mask is never built."
    ),
    ("biogpt", "FM-PACK-ISOLATION"): (
        "transformers/models/biogpt/modeling_biogpt.py:380 — a None mask is replaced by ones (:376) and "
        "create_causal_mask is called without position_ids, so the packed-sequence mask is never built."
    ),
    ("xglm", "FM-PACK-ISOLATION"): (
        "transformers/models/xglm/modeling_xglm.py:440 — create_causal_mask is called without position_ids, so "
        "the packed-sequence mask is never built."
    ),
    ("mpt", "FM-PACK-ISOLATION"): (
        "transformers/models/mpt/modeling_mpt.py:322 — create_causal_mask is called without position_ids (MPT "
        "takes none; ALiBi is relative), so the packed-sequence mask is never built."
    ),
    ("trocr", "FM-PACK-ISOLATION"): (
        "transformers/models/trocr/modeling_trocr.py:553 — create_causal_mask is called without position_ids "
        "(positions come from cache_length, not position_ids), so the packed-sequence mask is never built."
    ),
    ("mvp", "FM-PACK-ISOLATION"): (
        "transformers/models/mvp/modeling_mvp.py:790 — MvpDecoder takes no position_ids and calls "
        "create_causal_mask without them, so the packed-sequence mask is never built."
    ),
    ("bart", "FM-PACK-ISOLATION"): (
        "transformers/models/bart/modeling_bart.py:631 — the decoder takes no position_ids: it builds its own "
        "arange positions and fills a None mask with ones, then calls create_causal_mask without position_ids, so "
        "the packed-sequence mask is never built."
    ),
    ("bigbird_pegasus", "FM-PACK-ISOLATION"): (
        "transformers/models/bigbird_pegasus/modeling_bigbird_pegasus.py:1765 — the decoder takes no "
        "position_ids: it builds its own arange positions and fills a None mask with ones, then calls "
        "create_causal_mask without position_ids, so the packed-sequence mask is never built."
    ),
    ("blenderbot", "FM-PACK-ISOLATION"): (
        "transformers/models/blenderbot/modeling_blenderbot.py:596 — the decoder takes no position_ids: it builds "
        "its own arange positions and fills a None mask with ones, then calls create_causal_mask without "
        "position_ids, so the packed-sequence mask is never built."
    ),
    ("blenderbot-small", "FM-PACK-ISOLATION"): (
        "transformers/models/blenderbot_small/modeling_blenderbot_small.py:562 — the decoder takes no "
        "position_ids: it builds its own arange positions and fills a None mask with ones, then calls "
        "create_causal_mask without position_ids, so the packed-sequence mask is never built."
    ),
    ("mbart", "FM-PACK-ISOLATION"): (
        "transformers/models/mbart/modeling_mbart.py:709 — the decoder takes no position_ids: it builds its own "
        "arange positions and fills a None mask with ones, then calls create_causal_mask without position_ids, so "
        "the packed-sequence mask is never built."
    ),
    ("pegasus", "FM-PACK-ISOLATION"): (
        "transformers/models/pegasus/modeling_pegasus.py:657 — the decoder takes no position_ids: it builds its "
        "own arange positions and fills a None mask with ones, then calls create_causal_mask without "
        "position_ids, so the packed-sequence mask is never built."
    ),
    ("plbart", "FM-PACK-ISOLATION"): (
        "transformers/models/plbart/modeling_plbart.py:564 — the decoder takes no position_ids: it builds its own "
        "arange positions and fills a None mask with ones, then calls create_causal_mask without position_ids, "
        "so the packed-sequence mask is never built."
    ),
    ("qwen2_vl", "FM-PACK-ISOLATION"): (
        "transformers/models/qwen2_vl/modeling_qwen2_vl.py:786 — 2D position_ids are expanded to the mrope rows "
        "and, because no leading text row exists, text_position_ids is set to None, so create_causal_mask gets no "
        "positions and builds a plain causal mask over the packed row."
    ),
    ("qwen2_5_vl", "FM-PACK-ISOLATION"): (
        "transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py:823 — 2D position_ids are expanded to the mrope "
        "rows and, because no leading text row exists, text_position_ids is set to None, so create_causal_mask "
        "gets no positions and builds a plain causal mask over the packed row."
    ),
    ("glm4v", "FM-PACK-ISOLATION"): (
        "transformers/models/glm4v/modeling_glm4v.py:854 — 2D position_ids are expanded to the mrope rows and, "
        "because no leading text row exists, text_position_ids is set to None, so create_causal_mask gets no "
        "positions and builds a plain causal mask over the packed row."
    ),
    ("glm46v", "FM-PACK-ISOLATION"): (
        "transformers/models/glm4v/modeling_glm4v.py:854 (text model built at glm46v/modeling_glm46v.py:73) — 2D "
        "position_ids are expanded to the mrope rows and, because no leading text row exists, text_position_ids "
        "is set to None, so create_causal_mask gets no positions and builds a plain causal mask over the packed "
        "row."
    ),
    ("glmga", "FM-PACK-ISOLATION"): (
        "transformers/models/glm4v/modeling_glm4v.py:854 (glmga maps to Glm46V, text model glm4v_text) — 2D "
        "position_ids are expanded to the mrope rows and, because no leading text row exists, text_position_ids "
        "is set to None, so create_causal_mask gets no positions and builds a plain causal mask over the packed "
        "row."
    ),
    ("glm_ocr", "FM-PACK-ISOLATION"): (
        "transformers/models/glm_ocr/modeling_glm_ocr.py:774 — 2D position_ids are expanded to the mrope rows "
        "and, because no leading text row exists, text_position_ids is set to None, so create_causal_mask gets no "
        "positions and builds a plain causal mask over the packed row."
    ),
    ("hunyuan_vl", "FM-PACK-ISOLATION"): (
        "transformers/models/hunyuan_vl/modeling_hunyuan_vl.py:807 — 2D position_ids are expanded to the mrope "
        "rows and, because no leading text row exists, text_position_ids is set to None, so create_causal_mask "
        "gets no positions and builds a plain causal mask over the packed row."
    ),
    ("hy_v4_vl", "FM-PACK-ISOLATION"): (
        "transformers/models/hy_v4_vl/modeling_hy_v4_vl.py:1188 — 2D position_ids are expanded to the mrope rows "
        "and, because no leading text row exists, text_position_ids is set to None, so create_causal_mask gets no "
        "positions and builds a plain causal mask over the packed row."
    ),
    ("cosmos3_edge", "FM-PACK-ISOLATION"): (
        "transformers/models/cosmos3_edge/modeling_cosmos3_edge.py:689 — 2D position_ids are expanded to the "
        "mrope rows and, because no leading text row exists, text_position_ids is set to None, so "
        "create_causal_mask gets no positions and builds a plain causal mask over the packed row."
    ),
    ("ernie4_5_vl_moe", "FM-PACK-ISOLATION"): (
        "transformers/models/ernie4_5_vl_moe/modeling_ernie4_5_vl_moe.py:772 — 2D position_ids are expanded to "
        "the mrope rows and, because no leading text row exists, text_position_ids is set to None, so "
        "create_causal_mask gets no positions and builds a plain causal mask over the packed row."
    ),
    ("bloom", "FM-PACK-ISOLATION"): (
        "transformers/models/bloom/modeling_bloom.py:517 — create_causal_mask is called without position_ids, and "
        "a 4D mask cannot be used instead because build_alibi_tensor unpacks the mask as 2D (:79) to cumsum "
        "ALiBi positions."
    ),
    ("openai-gpt", "FM-PACK-ISOLATION"): (
        "transformers/models/openai/modeling_openai.py:71 — attention uses a fixed tril buffer, not "
        "create_causal_mask, so position_ids never reach the mask; a 4D mask is mis-broadcast as a 2D one (:357)."
    ),
    ("rwkv", "FM-PACK-ISOLATION"): (
        "transformers/models/rwkv/modeling_rwkv.py:270 — the RWKV linear-attention state (and time_shift) runs "
        "over the whole row; the model ignores attention_mask (:547) and has no notion of sample boundaries."
    ),
    ("xlstm", "FM-PACK-ISOLATION"): (
        "transformers/models/xlstm/modeling_xlstm.py:1476 — every mLSTM block scans the whole row with one state "
        "(the chunked eval path at :1461 carries it too); xLSTMModel.forward takes neither position_ids nor "
        "attention_mask."
    ),
    ("recurrent_gemma", "FM-PACK-ISOLATION"): (
        "transformers/models/recurrent_gemma/modeling_recurrent_gemma.py:455 — the temporal conv1d spans sample "
        "boundaries; the RG-LRU does reset where position_ids == 0 (:307), so only this conv leaks the previous "
        "sample's tail."
    ),
    ("minimax", "FM-PACK-ISOLATION"): (
        "transformers/models/minimax/modeling_minimax.py:243 — lightning attention accumulates the KV state block "
        "by block over the whole row with no reset at sample boundaries, and a 4D mask never reaches it."
    ),
    ("inkling_text", "FM-PACK-ISOLATION"): (
        "transformers/models/inkling/modeling_inkling.py:527 — the k/v/attn/mlp short convolutions run over the "
        "whole row (seq_idx only from kwargs, not passed at :579), and relative-logit positions come from arange, "
        "not position_ids (:241)."
    ),
    ("lara_mini", "FM-PACK-ISOLATION"): (
        "transformers/models/lara_mini/modeling_lara_mini.py:698 — the gated-delta-net layer (and its causal "
        "conv1d) scans the whole row with one recurrent state; cu_seqlens comes only from a cu_seq_lens_q kwarg, "
        "is never derived from position_ids, and a 4D mask cannot reset the state."
    ),
    ("qwen3_next", "FM-PACK-ISOLATION"): (
        "transformers/models/qwen3_next/modeling_qwen3_next.py:743 — the gated-delta-net layer (and its causal "
        "conv1d) scans the whole row with one recurrent state; cu_seqlens comes only from a cu_seq_lens_q kwarg, "
        "is never derived from position_ids, and a 4D mask cannot reset the state."
    ),
    ("olmo_hybrid", "FM-PACK-ISOLATION"): (
        "transformers/models/olmo_hybrid/modeling_olmo_hybrid.py:724 — the gated-delta-net layer (and its causal "
        "conv1d) scans the whole row with one recurrent state; cu_seqlens comes only from a cu_seq_lens_q kwarg, "
        "is never derived from position_ids, and a 4D mask cannot reset the state."
    ),
    ("qwen3_5", "FM-PACK-ISOLATION"): (
        "transformers/models/qwen3_5/modeling_qwen3_5.py:632 — the gated-delta-net layer (and its causal conv1d) "
        "scans the whole row with one recurrent state; cu_seqlens comes only from a cu_seq_lens_q kwarg, is never "
        "derived from position_ids, and a 4D mask cannot reset the state."
    ),
    ("qwen3_5_text", "FM-PACK-ISOLATION"): (
        "transformers/models/qwen3_5/modeling_qwen3_5.py:632 — the gated-delta-net layer (and its causal conv1d) "
        "scans the whole row with one recurrent state; cu_seqlens comes only from a cu_seq_lens_q kwarg, is never "
        "derived from position_ids, and a 4D mask cannot reset the state."
    ),
    ("qwen3_5_moe", "FM-PACK-ISOLATION"): (
        "transformers/models/qwen3_5_moe/modeling_qwen3_5_moe.py:649 — the gated-delta-net layer (and its causal "
        "conv1d) scans the whole row with one recurrent state; cu_seqlens comes only from a cu_seq_lens_q kwarg, "
        "is never derived from position_ids, and a 4D mask cannot reset the state."
    ),
    ("qwen3_5_moe_text", "FM-PACK-ISOLATION"): (
        "transformers/models/qwen3_5_moe/modeling_qwen3_5_moe.py:649 — the gated-delta-net layer (and its causal "
        "conv1d) scans the whole row with one recurrent state; cu_seqlens comes only from a cu_seq_lens_q kwarg, "
        "is never derived from position_ids, and a 4D mask cannot reset the state."
    ),
    ("minicpmv4_6", "FM-PACK-ISOLATION"): (
        "transformers/models/qwen3_5/modeling_qwen3_5.py:632 (text model is qwen3_5_text, "
        "minicpmv4_6/configuration_minicpmv4_6.py:88) — the gated-delta-net layer (and its causal conv1d) scans "
        "the whole row with one recurrent state; cu_seqlens comes only from a cu_seq_lens_q kwarg, is never "
        "derived from position_ids, and a 4D mask cannot reset the state."
    ),
    ("minicpm_ocr", "FM-PACK-ISOLATION"): (
        "transformers/models/qwen3_5/modeling_qwen3_5.py:632 (text model is qwen3_5_text, "
        "minicpm_ocr/configuration_minicpm_ocr.py:81) — the gated-delta-net layer (and its causal conv1d) scans "
        "the whole row with one recurrent state; cu_seqlens comes only from a cu_seq_lens_q kwarg, is never "
        "derived from position_ids, and a 4D mask cannot reset the state."
    ),
    ("minicpmv4_7", "FM-PACK-ISOLATION"): (
        "transformers/models/qwen3_5/modeling_qwen3_5.py:632 (text model is qwen3_5_text, "
        "minicpmv4_7/configuration_minicpmv4_7.py:100) — the gated-delta-net layer (and its causal conv1d) scans "
        "the whole row with one recurrent state; cu_seqlens comes only from a cu_seq_lens_q kwarg, is never "
        "derived from position_ids, and a 4D mask cannot reset the state."
    ),
    ("lfm2_moe", "FM-PACK-ISOLATION"): (
        "transformers/models/lfm2_moe/modeling_lfm2_moe.py:459 — the short-conv layer convolves the whole row "
        "(kernel spans sample boundaries); seq_idx arrives only as an explicit kwarg and is never derived from "
        "position_ids, and a 4D mask cannot cut the convolution."
    ),
    ("lfm3", "FM-PACK-ISOLATION"): (
        "transformers/models/lfm3/modeling_lfm3.py:401 — the short-conv layer convolves the whole row (kernel "
        "spans sample boundaries); seq_idx arrives only as an explicit kwarg and is never derived from "
        "position_ids, and a 4D mask cannot cut the convolution."
    ),
    ("lfm3_vl", "FM-PACK-ISOLATION"): (
        "transformers/models/lfm3/modeling_lfm3.py:401 (text model is lfm3, lfm3_vl/configuration_lfm3_vl.py:67) "
        "— the short-conv layer convolves the whole row (kernel spans sample boundaries); seq_idx arrives only as "
        "an explicit kwarg and is never derived from position_ids, and a 4D mask cannot cut the convolution."
    ),
    ("mamba", "FM-PACK-ISOLATION"): (
        "transformers/models/mamba/modeling_mamba.py:461 — the Mamba mixer runs causal_conv1d_fn and "
        "mamba_selective_scan over the whole row with one state; no sequence boundaries are derived from "
        "position_ids, and a 4D mask cannot reset the SSM state."
    ),
    ("falcon_mamba", "FM-PACK-ISOLATION"): (
        "transformers/models/falcon_mamba/modeling_falcon_mamba.py:499 — the Mamba mixer runs causal_conv1d_fn "
        "and mamba_selective_scan over the whole row with one state; no sequence boundaries are derived from "
        "position_ids, and a 4D mask cannot reset the SSM state."
    ),
    ("jamba", "FM-PACK-ISOLATION"): (
        "transformers/models/jamba/modeling_jamba.py:601 — the Mamba mixer runs causal_conv1d_fn and "
        "mamba_selective_scan over the whole row with one state; no sequence boundaries are derived from "
        "position_ids, and a 4D mask cannot reset the SSM state."
    ),
    ("zamba", "FM-PACK-ISOLATION"): (
        "transformers/models/zamba/modeling_zamba.py:586 — the Mamba mixer scans the whole row with one state; "
        "seq_idx reaches only the conv (:526) and only as an explicit kwarg, never derived from position_ids; a "
        "4D mask cannot reset the state."
    ),
    ("mamba2", "FM-PACK-ISOLATION"): (
        "transformers/models/mamba2/modeling_mamba2.py:577 — the Mamba-2 mixer runs causal_conv1d_fn and "
        "mamba2_chunk_scan over the whole row with one state; no seq_idx is derived from position_ids, and a 4D "
        "mask cannot reset the SSM state."
    ),
    ("bamba", "FM-PACK-ISOLATION"): (
        "transformers/models/bamba/modeling_bamba.py:773 — the Mamba-2 mixer runs causal_conv1d_fn and "
        "mamba2_chunk_scan over the whole row with one state; no seq_idx is derived from position_ids, and a 4D "
        "mask cannot reset the SSM state."
    ),
    ("zamba2", "FM-PACK-ISOLATION"): (
        "transformers/models/zamba2/modeling_zamba2.py:839 — the Mamba-2 mixer runs causal_conv1d_fn and "
        "mamba2_chunk_scan over the whole row with one state; no seq_idx is derived from position_ids, and a 4D "
        "mask cannot reset the SSM state."
    ),
    ("falcon_h1", "FM-PACK-ISOLATION"): (
        "transformers/models/falcon_h1/modeling_falcon_h1.py:792 — the Mamba-2 mixer runs causal_conv1d_fn and "
        "mamba2_chunk_scan over the whole row with one state; no seq_idx is derived from position_ids, and a 4D "
        "mask cannot reset the SSM state."
    ),
    ("nemotron_h", "FM-PACK-ISOLATION"): (
        "transformers/models/nemotron_h/modeling_nemotron_h.py:584 — the Mamba-2 mixer runs causal_conv1d_fn and "
        "mamba2_chunk_scan over the whole row with one state; no seq_idx is derived from position_ids, and a 4D "
        "mask cannot reset the SSM state."
    ),
    ("granitemoehybrid", "FM-PACK-ISOLATION"): (
        "transformers/models/granitemoehybrid/modeling_granitemoehybrid.py:694 — the Mamba-2 mixer runs "
        "causal_conv1d_fn and mamba2_chunk_scan over the whole row with one state; no seq_idx is derived from "
        "position_ids, and a 4D mask cannot reset the SSM state."
    ),
    ("nemotron_h_omni", "FM-PACK-ISOLATION"): (
        "transformers/models/nemotron_h/modeling_nemotron_h.py:584 (text model is nemotron_h, "
        "nemotron_h_omni/configuration_nemotron_h_omni.py:61) — the Mamba-2 mixer runs causal_conv1d_fn and "
        "mamba2_chunk_scan over the whole row with one state; no seq_idx is derived from position_ids, and a 4D "
        "mask cannot reset the SSM state."
    ),
    ("bailing_hybrid", "FM-PACK-ISOLATION"): (
        "transformers/models/bailing_hybrid/modeling_bailing_hybrid.py:769 — the linear-attention layer (KDA, after "
        "its causal conv1d at :741) scans the whole row with one recurrent state; no cu_seqlens is ever passed (the "
        "torch fallbacks ignore **kwargs), and create_recurrent_attention_mask returns None for a 4D mask "
        "(masking_utils.py:1516), so nothing resets the state at a sample boundary."
    ),
    ("kimi_linear", "FM-PACK-ISOLATION"): (
        "transformers/models/kimi_linear/modeling_kimi_linear.py:696 — the KDA delta-attention layer (after its "
        "causal conv1d at :657) scans the whole row with one recurrent state; no cu_seqlens is ever passed (the "
        "torch fallbacks ignore **kwargs), and create_recurrent_attention_mask returns None for a 4D mask "
        "(masking_utils.py:1516), so nothing resets the state at a sample boundary."
    ),
    ("glm5_next", "FM-PACK-ISOLATION"): (
        "transformers/models/glm5_next/modeling_glm5_next.py:749 — the KDA linear-attention layer (after its causal "
        "conv1d at :710) scans the whole row with one recurrent state, and the text model reduces any mask to a 2D "
        "padding mask (:1484, None for a 4D mask, then all ones at :1492), so the indexed attention too selects "
        "keys by row causality alone (:854) and never sees a sample boundary."
    ),
    ("qwen4_exp", "FM-PACK-ISOLATION"): (
        "transformers/models/qwen4_exp/modeling_qwen4_exp.py:616 — the gated-delta-net layer (and its causal conv1d "
        "at :571) scans the whole row with one recurrent state; cu_seqlens comes only from a cu_seq_lens_q kwarg, "
        "is never derived from position_ids, and a 4D mask cannot reset the state (a checkpoint with ple_layer_ids "
        "also hashes n-grams across the boundary unless each sample ends in EOS, :1129)."
    ),
    ("qwen4_exp_text", "FM-PACK-ISOLATION"): (
        "transformers/models/qwen4_exp/modeling_qwen4_exp.py:616 — the gated-delta-net layer (and its causal conv1d "
        "at :571) scans the whole row with one recurrent state; cu_seqlens comes only from a cu_seq_lens_q kwarg, "
        "is never derived from position_ids, and a 4D mask cannot reset the state (a checkpoint with ple_layer_ids "
        "also hashes n-grams across the boundary unless each sample ends in EOS, :1129)."
    ),
    ("zaya", "FM-PACK-ISOLATION"): (
        "transformers/models/zaya/modeling_zaya.py:235 — the CCA projection convolves q/k over the whole row and "
        "takes half of each value head from the previous token (:250), both across sample boundaries; the conv "
        "mask is only a 2D padding mask (:748), None for a 4D mask."
    ),
    ("inkling2", "FM-PACK-ISOLATION"): (
        "transformers/models/inkling2/modeling_inkling2.py:340 — the post-attention / post-MLP short convolutions "
        "(and the k/v dynamic convolutions, :405) span sample boundaries: seq_idx comes only from a kwarg, is "
        "never derived from position_ids, the torch conv fallback ignores it (:263), and a 4D mask gives no "
        "conv mask."
    ),
    ("inkling2_text", "FM-PACK-ISOLATION"): (
        "transformers/models/inkling2/modeling_inkling2.py:340 — the post-attention / post-MLP short convolutions "
        "(and the k/v dynamic convolutions, :405) span sample boundaries: seq_idx comes only from a kwarg, is "
        "never derived from position_ids, the torch conv fallback ignores it (:263), and a 4D mask gives no "
        "conv mask."
    ),
    ("inkling2_loop", "FM-PACK-ISOLATION"): (
        "transformers/models/inkling2_loop/modeling_inkling2_loop.py:383 — the short convolutions (and the k/v "
        "dynamic convolutions, :448) span sample boundaries: seq_idx comes only from a kwarg, is never derived "
        "from position_ids, the torch conv fallback ignores it (:306), and a 4D mask gives no conv mask."
    ),
    ("inkling2_loop_text", "FM-PACK-ISOLATION"): (
        "transformers/models/inkling2_loop/modeling_inkling2_loop.py:383 — the short convolutions (and the k/v "
        "dynamic convolutions, :448) span sample boundaries: seq_idx comes only from a kwarg, is never derived "
        "from position_ids, the torch conv fallback ignores it (:306), and a 4D mask gives no conv mask."
    ),
    ("deepseek_v4", "FM-PACK-ISOLATION"): (
        "transformers/models/deepseek_v4/modeling_deepseek_v4.py:649 — the CSA (and HCA, :419) compressors pool "
        "fixed windows of the whole packed row into compressed KV entries, and which entries a query may see is "
        "set from its restarted position_ids alone (:589, :449), so a later sample's queries read the earlier "
        "sample's compressed windows; that block bias is appended to a 4D mask too (:851) (the HCA path only "
        "engages on rows of at least 128 tokens)."
    ),
    ("prophetnet", "FM-PACK-ISOLATION"): (
        "transformers/models/prophetnet/modeling_prophetnet.py:1306 — ProphetNetDecoder takes no position_ids "
        "(:1087, its positions count the whole row, :1147) and builds a plain triu causal mask over the row, "
        "adding the attention mask as 2D (:1314), so samples attend across boundaries and a 4D mask cannot be "
        "passed."
    ),
    ("xlm", "FM-PACK-ISOLATION"): (
        "transformers/models/xlm/modeling_xlm.py:72 — get_masks builds the mask from lengths alone (a plain "
        "triangle when config.causal, the padding mask otherwise), position_ids only feed the position embedding, "
        "and a 4D attention_mask fails the (bs, slen) assert (:77)."
    ),
    # --- FM-CCE-MATH: encoder-decoder families used as decoder-only -----------------------------------------
    ("bart", "FM-CCE-MATH"): (
        "transformers/models/bart/modeling_bart.py:1299 — the ForCausalLM loss is CrossEntropy(logits, labels) "
        "with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("mbart", "FM-CCE-MATH"): (
        "transformers/models/mbart/modeling_mbart.py:1372 — the ForCausalLM loss is CrossEntropy(logits, labels) "
        "with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("blenderbot", "FM-CCE-MATH"): (
        "transformers/models/blenderbot/modeling_blenderbot.py:1002 — the ForCausalLM loss is "
        "CrossEntropy(logits, labels) with no shift, so position t is trained to predict token t (copy) instead "
        "of token t+1."
    ),
    ("blenderbot-small", "FM-CCE-MATH"): (
        "transformers/models/blenderbot_small/modeling_blenderbot_small.py:966 — the ForCausalLM loss is "
        "CrossEntropy(logits, labels) with no shift, so position t is trained to predict token t (copy) instead "
        "of token t+1."
    ),
    ("pegasus", "FM-CCE-MATH"): (
        "transformers/models/pegasus/modeling_pegasus.py:1124 — the ForCausalLM loss is CrossEntropy(logits, "
        "labels) with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("plbart", "FM-CCE-MATH"): (
        "transformers/models/plbart/modeling_plbart.py:1135 — the ForCausalLM loss is CrossEntropy(logits, "
        "labels) with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("mvp", "FM-CCE-MATH"): (
        "transformers/models/mvp/modeling_mvp.py:1611 — the ForCausalLM loss is CrossEntropy(logits, labels) with "
        "no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("bigbird_pegasus", "FM-CCE-MATH"): (
        "transformers/models/bigbird_pegasus/modeling_bigbird_pegasus.py:2370 — the ForCausalLM loss is "
        "CrossEntropy(logits, labels) with no shift, so position t is trained to predict token t (copy) instead "
        "of token t+1."
    ),
    ("marian", "FM-CCE-MATH"): (
        "transformers/models/marian/modeling_marian.py:1099 — the ForCausalLM loss is CrossEntropy(logits, "
        "labels) with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("trocr", "FM-CCE-MATH"): (
        "transformers/models/trocr/modeling_trocr.py:769 — the ForCausalLM loss is CrossEntropy(logits, labels) "
        "with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("cpmant", "FM-CCE-MATH"): (
        "transformers/models/cpmant/modeling_cpmant.py:765 — the ForCausalLM loss is CrossEntropy(logits, labels) "
        "with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("whisper", "FM-CCE-MATH"): (
        "transformers/models/whisper/modeling_whisper.py:1270 — the WhisperForCausalLM loss is CrossEntropy(logits, "
        "labels) with no shift (its docstring says labels must come pre-shifted, :1220), so with labels = "
        "input_ids position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("prophetnet", "FM-CCE-MATH"): (
        "transformers/models/prophetnet/modeling_prophetnet.py:1812 — the loss is the mean NLL, with no shift, "
        "over all config.ngram predicting streams that lm_head projects (:1772), while the returned logits are "
        "stream 0 only (:1774), so it is neither the shifted next-token CE of the logits nor a loss on the layer "
        "output the logits come from."
    ),
    ("xlm", "FM-CCE-MATH"): (
        "transformers/models/xlm/modeling_xlm.py:896 — XLMPredLayer's loss is cross_entropy(scores, labels) with no "
        "shift, although XLMWithLMHeadModel's docstring says labels are shifted inside the model (:993), so "
        "position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("chameleon", "FM-CCE-MATH"): (
        "transformers/models/chameleon/modeling_chameleon.py:1071 — after lm_head the forward sets every image "
        "token's logit to the dtype minimum, so the model's CE normalises over text tokens only, which no scale or "
        "softcap of lm_head's output gives a fused loss (the tiny model masks the 2 image tokens of its test "
        "vocabulary_map, a checkpoint its 8192 VQ image tokens)."
    ),
    # --- FM-TRAIN-LOSS: the same unshifted loss line --------------------------------------------------------
    ("bart", "FM-TRAIN-LOSS"): (
        "transformers/models/bart/modeling_bart.py:1299 — the ForCausalLM loss is CrossEntropy(logits, labels) "
        "with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("mbart", "FM-TRAIN-LOSS"): (
        "transformers/models/mbart/modeling_mbart.py:1372 — the ForCausalLM loss is CrossEntropy(logits, labels) "
        "with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("blenderbot", "FM-TRAIN-LOSS"): (
        "transformers/models/blenderbot/modeling_blenderbot.py:1002 — the ForCausalLM loss is "
        "CrossEntropy(logits, labels) with no shift, so position t is trained to predict token t (copy) instead "
        "of token t+1."
    ),
    ("blenderbot-small", "FM-TRAIN-LOSS"): (
        "transformers/models/blenderbot_small/modeling_blenderbot_small.py:966 — the ForCausalLM loss is "
        "CrossEntropy(logits, labels) with no shift, so position t is trained to predict token t (copy) instead "
        "of token t+1."
    ),
    ("pegasus", "FM-TRAIN-LOSS"): (
        "transformers/models/pegasus/modeling_pegasus.py:1124 — the ForCausalLM loss is CrossEntropy(logits, "
        "labels) with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("plbart", "FM-TRAIN-LOSS"): (
        "transformers/models/plbart/modeling_plbart.py:1135 — the ForCausalLM loss is CrossEntropy(logits, "
        "labels) with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("mvp", "FM-TRAIN-LOSS"): (
        "transformers/models/mvp/modeling_mvp.py:1611 — the ForCausalLM loss is CrossEntropy(logits, labels) with "
        "no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("bigbird_pegasus", "FM-TRAIN-LOSS"): (
        "transformers/models/bigbird_pegasus/modeling_bigbird_pegasus.py:2370 — the ForCausalLM loss is "
        "CrossEntropy(logits, labels) with no shift, so position t is trained to predict token t (copy) instead "
        "of token t+1."
    ),
    ("marian", "FM-TRAIN-LOSS"): (
        "transformers/models/marian/modeling_marian.py:1099 — the ForCausalLM loss is CrossEntropy(logits, "
        "labels) with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("trocr", "FM-TRAIN-LOSS"): (
        "transformers/models/trocr/modeling_trocr.py:769 — the ForCausalLM loss is CrossEntropy(logits, labels) "
        "with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("cpmant", "FM-TRAIN-LOSS"): (
        "transformers/models/cpmant/modeling_cpmant.py:765 — the ForCausalLM loss is CrossEntropy(logits, labels) "
        "with no shift, so position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("whisper", "FM-TRAIN-LOSS"): (
        "transformers/models/whisper/modeling_whisper.py:1270 — the WhisperForCausalLM loss is CrossEntropy(logits, "
        "labels) with no shift (its docstring says labels must come pre-shifted, :1220), so with labels = "
        "input_ids position t is trained to predict token t (copy) instead of token t+1."
    ),
    ("prophetnet", "FM-TRAIN-LOSS"): (
        "transformers/models/prophetnet/modeling_prophetnet.py:1812 — the loss is the mean NLL, with no shift, over "
        "all config.ngram predicting streams, so position t is trained on token t (which its stream sees) rather "
        "than the next-token loss of the logits; packed, the decoder's whole-row mask and positions (:1306, :1147) "
        "mix the samples as well."
    ),
    ("xlm", "FM-TRAIN-LOSS"): (
        "transformers/models/xlm/modeling_xlm.py:896 — XLMPredLayer's loss is cross_entropy(scores, labels) with no "
        "shift, although the docstring says labels are shifted inside the model (:993), so position t is trained "
        "on token t; packed, the mask built from lengths (:72) also mixes the samples."
    ),
    ("xlm-roberta-xl", "FM-TRAIN-LOSS"): (
        "transformers/models/xlm_roberta_xl/modeling_xlm_roberta_xl.py:156 — alone, position ids are made from "
        "input_ids starting at padding_idx + 1 (= 2), while DataCollatorWithFlattening gives 0-based position_ids "
        "(data/data_collator.py:1354, position_ids_start defaults to 0, as its docstring warns at :1293), so each "
        "packed sample is embedded at positions shifted by two, its second token on the zero padding row (:75), "
        "and its loss differs."
    ),
    # --- FM-LORA-UNSUPPORTED --------------------------------------------------------------------------------
    ("llama4", "FM-LORA-UNSUPPORTED"): (
        "transformers/models/llama4/modeling_llama4.py:141 — Llama4Router subclasses nn.Linear, so all-linear "
        "LoRA wraps it, but its forward returns a tuple (:152) that LoRA then adds a tensor to "
        "(peft/tuners/lora/layer.py:1102)."
    ),
    ("phimoe", "FM-LORA-UNSUPPORTED"): (
        "transformers/models/phimoe/modeling_phimoe.py:463 — PhimoeTopKRouter subclasses nn.Linear, so all-linear "
        "LoRA wraps it, but its forward returns a 3-tuple (:480) that LoRA then adds a tensor to "
        "(peft/tuners/lora/layer.py:1102)."
    ),
    ("mamba", "FM-LORA-UNSUPPORTED"): (
        "peft/tuners/tuners_utils.py:160 — _check_lora_target_modules_mamba raises for LoRA on out_proj/conv1d "
        "when model_type is mamba (one of the mamba model types at :152)."
    ),
    ("mamba2", "FM-LORA-UNSUPPORTED"): (
        "peft/tuners/tuners_utils.py:160 — _check_lora_target_modules_mamba raises for LoRA on out_proj/conv1d "
        "when model_type is mamba2 (one of the mamba model types at :152)."
    ),
    ("falcon_mamba", "FM-LORA-UNSUPPORTED"): (
        "peft/tuners/tuners_utils.py:160 — _check_lora_target_modules_mamba raises for LoRA on out_proj/conv1d "
        "when model_type is falcon_mamba (one of the mamba model types at :152)."
    ),
    ("falcon_h1", "FM-LORA-UNSUPPORTED"): (
        "peft/tuners/tuners_utils.py:160 — _check_lora_target_modules_mamba raises for LoRA on out_proj/conv1d "
        "when model_type is falcon_h1 (one of the mamba model types at :152)."
    ),
    ("nemotron_h", "FM-LORA-UNSUPPORTED"): (
        "peft/tuners/tuners_utils.py:160 — _check_lora_target_modules_mamba raises for LoRA on out_proj/conv1d "
        "when model_type is nemotron_h (one of the mamba model types at :152)."
    ),
    # --- ATTN001 FM-MODEL-FORWARD: a text-only input_ids + labels call cannot run ---------------------------
    ("blip", "FM-MODEL-FORWARD"): (
        "transformers/models/blip/modeling_blip.py:798 — BlipForConditionalGeneration.forward takes pixel_values "
        "as a required argument and always runs the vision model on it (:828), so a text-only call fails."
    ),
    ("blip-2", "FM-MODEL-FORWARD"): (
        "transformers/models/blip_2/modeling_blip_2.py:1589 — Blip2ForConditionalGeneration.forward takes "
        "pixel_values as a required argument and always encodes it via get_image_features (:1680), so a text-only "
        "call fails."
    ),
    ("instructblip", "FM-MODEL-FORWARD"): (
        "transformers/models/instructblip/modeling_instructblip.py:1177 — forward requires pixel_values and "
        "qformer_input_ids (no defaults), so a text-only call fails."
    ),
    ("instructblipvideo", "FM-MODEL-FORWARD"): (
        "transformers/models/instructblipvideo/modeling_instructblipvideo.py:1123 — forward requires pixel_values "
        "and qformer_input_ids (no defaults), so a text-only call fails."
    ),
    ("kosmos-2", "FM-MODEL-FORWARD"): (
        "transformers/models/kosmos2/modeling_kosmos2.py:1612 — Kosmos2ForConditionalGeneration.forward raises "
        "when neither pixel_values nor image_embeds is given."
    ),
    ("idefics", "FM-MODEL-FORWARD"): (
        "transformers/models/idefics/modeling_idefics.py:955 — IdeficsModel.forward raises unless exactly one of "
        "pixel_values, image_encoder_embeddings or perceiver_embeddings is given."
    ),
    ("pix2struct", "FM-MODEL-FORWARD"): (
        "transformers/models/pix2struct/modeling_pix2struct.py:1282 — the encoder always runs on "
        "flattened_patches (input_ids is not a parameter), and the vision encoder raises when they are None "
        "(:462)."
    ),
    ("git", "FM-MODEL-FORWARD"): (
        "transformers/models/git/modeling_git.py:1082 — the loss always drops the first image_patch_tokens logits "
        "(:1079) even without pixel_values, so text-only logits and labels[:, 1:] no longer line up."
    ),
    ("musicgen", "FM-MODEL-FORWARD"): (
        "transformers/models/musicgen/modeling_musicgen.py:495 — input_ids must be (batch*num_codebooks, seq) and "
        "labels (batch, seq, num_codebooks) (:746), so plain text token ids and labels do not fit."
    ),
    ("udop", "FM-MODEL-FORWARD"): (
        "transformers/models/udop/modeling_udop.py:1219 — the encoder always computes the 2D layout bias from "
        "bbox, and the horizontal bias raises when bbox is None (:991)."
    ),
    ("xmod", "FM-MODEL-FORWARD"): (
        "transformers/models/xmod/modeling_xmod.py:734 — XmodModel.forward raises when lang_ids is None and the "
        "config has no default_language (the default is None)."
    ),
    ("diffusion_gemma", "FM-MODEL-FORWARD"): (
        "transformers/models/diffusion_gemma/modeling_diffusion_gemma.py:1610 — DiffusionGemmaForBlockDiffusion is "
        "a block-diffusion denoiser: its forward has no labels argument (they fall into **kwargs) and returns "
        "logits with no loss (:1666), so a Trainer has nothing to train on."
    ),
    ("florence2", "FM-MODEL-FORWARD"): (
        "transformers/models/florence2/modeling_florence2.py:752 — an encoder-decoder: input_ids go to the encoder "
        "(:746), and without decoder_input_ids or labels the decoder gets one start token (:753-755), so the logits "
        "cover one position; with labels its decoder reads shift_tokens_right(labels) (:876), not the input text."
    ),
    ("gemma4_assistant", "FM-MODEL-FORWARD"): (
        "transformers/models/gemma4_assistant/modeling_gemma4_assistant.py:165 — the assistant is a drafter for "
        "assisted generation: its forward ignores input_ids and raises unless it gets the target model's "
        "inputs_embeds and shared_kv_states."
    ),
    ("gemma4_unified_assistant", "FM-MODEL-FORWARD"): (
        "transformers/models/gemma4_unified_assistant/modeling_gemma4_unified_assistant.py:172 — the assistant is a "
        "drafter for assisted generation: its forward ignores input_ids and raises unless it gets the target "
        "model's inputs_embeds and shared_kv_states."
    ),
    ("musicgen_melody", "FM-MODEL-FORWARD"): (
        "transformers/models/musicgen_melody/modeling_musicgen_melody.py:742 — labels must be (batch, seq, "
        "num_codebooks) (:701), so (batch, seq) text labels are indexed on their last axis as codebooks and the "
        "per-codebook CE gets one target per sequence against seq logits."
    ),
    ("pi0", "FM-MODEL-FORWARD"): (
        "transformers/models/pi0/modeling_pi0.py:240 — PI0ForConditionalGeneration is a flow-matching robot "
        "policy: forward requires the robot state as its first argument and its only loss is an MSE on actions "
        "(:314), not a token loss."
    ),
    ("pp_formulanet", "FM-MODEL-FORWARD"): (
        "transformers/models/pp_formulanet/modeling_pp_formulanet.py:995 — PPFormulaNetModel.forward raises unless "
        "exactly one of pixel_values and encoder_outputs is given: it decodes text from an image only."
    ),
    ("qwen2_5_omni_thinker", "FM-MODEL-FORWARD"): (
        "transformers/models/qwen2_5_omni/modeling_qwen2_5_omni.py:288 — get_rope_index, run whenever "
        "input_ids and an attention_mask are given (:1816), reads config.vision_start_token_id, which "
        "Qwen2_5OmniThinkerConfig does not define (only the talker config has it, configuration_qwen2_5_omni.py:343); "
        "the tiny model keeps the class defaults, a checkpoint whose thinker_config carries the key as an extra "
        "field does not fail."
    ),
    ("qwen3_omni_moe_thinker", "FM-MODEL-FORWARD"): (
        "transformers/models/qwen3_omni_moe/modeling_qwen3_omni_moe.py:291 — get_rope_index, run whenever "
        "input_ids and an attention_mask are given (:1905), reads config.vision_start_token_id, which "
        "Qwen3OmniMoeThinkerConfig does not define (only the talker config has it, "
        "configuration_qwen3_omni_moe.py:470); the tiny model keeps the class defaults, a checkpoint whose "
        "thinker_config carries the key as an extra field does not fail."
    ),
    ("reformer", "FM-MODEL-FORWARD"): (
        "transformers/models/reformer/modeling_reformer.py:1601 — the reversible layers' backward asserts training "
        "mode, and in training mode the axial position embeddings raise unless the sequence length equals "
        "prod(axial_pos_shape) (:233), so a gradient is only available on inputs padded to exactly that length."
    ),
    ("t5gemma2", "FM-MODEL-FORWARD"): (
        "transformers/models/t5gemma2/modeling_t5gemma2.py:978 — an encoder-decoder: input_ids go to the encoder "
        "and the decoder's inputs come only from decoder_input_ids or shifted labels (:1232), so without labels "
        "the decoder raises that it got neither input_ids nor inputs_embeds."
    ),
    ("vision-encoder-decoder", "FM-MODEL-FORWARD"): (
        "transformers/models/vision_encoder_decoder/modeling_vision_encoder_decoder.py:386 — "
        "VisionEncoderDecoderModel.forward raises when neither pixel_values nor encoder_outputs is given: the "
        "text is only ever decoded from an image."
    ),
    # --- ATTN001 FM-ATTN-NONCAUSAL: later tokens reach earlier predictions ----------------------------------
    ("paligemma", "FM-ATTN-NONCAUSAL"): (
        "transformers/models/paligemma/configuration_paligemma.py:91 — an unset "
        "text_config.use_bidirectional_attention becomes True, so Gemma's attention sets is_causal False "
        "(models/gemma/modeling_gemma.py:228); with sdpa, no token_type_ids and no padding create_causal_mask "
        "returns None (masking_utils.py:517) and sdpa takes is_causal from the module "
        "(integrations/sdpa_attention.py:148), so the text attends both ways, while eager always gets the causal "
        "mask (released PaliGemma configs leave the field unset too)."
    ),
    ("cpmant", "FM-ATTN-NONCAUSAL"): (
        "transformers/models/cpmant/modeling_cpmant.py:565 — the mask lets every token see every context token, "
        "and the forward marks the whole input as context (context is all ones, :626), so the causal triangle "
        "never applies and later tokens reach earlier ones."
    ),
    ("xlnet", "FM-ATTN-NONCAUSAL"): (
        "transformers/models/xlnet/modeling_xlnet.py:1070 — with attn_type 'bi' (the config default and the "
        "released checkpoints') the base mask is None, and without perm_mask or input_mask no data mask is added "
        "(:1086, :1111), so the content stream attends to the whole sequence."
    ),
    ("xlm", "FM-ATTN-NONCAUSAL"): (
        "transformers/models/xlm/modeling_xlm.py:74 — with config.causal False (the default, "
        "configuration_xlm.py:113) get_masks uses the padding mask as the attention mask, so every token attends "
        "to the whole sequence."
    ),
    # --- FM-PACK-ISOLATION of the BERT family and the rest of the audit of transformers 5.24 ---
    ("bert", "FM-PACK-ISOLATION"): (
        "transformers/models/bert/modeling_bert.py:701 — with is_decoder the mask is create_causal_mask called without "
        "position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("bert-generation", "FM-PACK-ISOLATION"): (
        "transformers/models/bert_generation/modeling_bert_generation.py:570 — with is_decoder the mask is create_causal_mask called without "
        "position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("camembert", "FM-PACK-ISOLATION"): (
        "transformers/models/camembert/modeling_camembert.py:678 — with is_decoder the mask is create_causal_mask called without "
        "position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("data2vec-text", "FM-PACK-ISOLATION"): (
        "transformers/models/data2vec/modeling_data2vec_text.py:642 — with is_decoder the mask is create_causal_mask called without "
        "position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("electra", "FM-PACK-ISOLATION"): (
        "transformers/models/electra/modeling_electra.py:647 — with is_decoder the mask is create_causal_mask called without "
        "position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("ernie", "FM-PACK-ISOLATION"): (
        "transformers/models/ernie/modeling_ernie.py:672 — with is_decoder the mask is create_causal_mask called without "
        "position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("roberta", "FM-PACK-ISOLATION"): (
        "transformers/models/roberta/modeling_roberta.py:656 — with is_decoder the mask is create_causal_mask called without "
        "position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("roberta-prelayernorm", "FM-PACK-ISOLATION"): (
        "transformers/models/roberta_prelayernorm/modeling_roberta_prelayernorm.py:682 — with is_decoder the mask is create_causal_mask called without "
        "position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("roc_bert", "FM-PACK-ISOLATION"): (
        "transformers/models/roc_bert/modeling_roc_bert.py:759 — with is_decoder the mask is create_causal_mask called without "
        "position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("xlm-roberta", "FM-PACK-ISOLATION"): (
        "transformers/models/xlm_roberta/modeling_xlm_roberta.py:667 — with is_decoder the mask is create_causal_mask called without "
        "position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("xlm-roberta-xl", "FM-PACK-ISOLATION"): (
        "transformers/models/xlm_roberta_xl/modeling_xlm_roberta_xl.py:663 — with is_decoder the mask is create_causal_mask called without "
        "position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("big_bird", "FM-PACK-ISOLATION"): (
        "transformers/models/big_bird/modeling_big_bird.py:1641 — the mask function (create_causal_mask with is_decoder) is called "
        "without position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("megatron-bert", "FM-PACK-ISOLATION"): (
        "transformers/models/megatron_bert/modeling_megatron_bert.py:642 — the mask function (create_causal_mask with is_decoder) is called "
        "without position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("rembert", "FM-PACK-ISOLATION"): (
        "transformers/models/rembert/modeling_rembert.py:575 — the mask function (create_causal_mask with is_decoder) is called "
        "without position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("roformer", "FM-PACK-ISOLATION"): (
        "transformers/models/roformer/modeling_roformer.py:729 — the mask function (create_causal_mask with is_decoder) is called "
        "without position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("marian", "FM-PACK-ISOLATION"): (
        "transformers/models/marian/modeling_marian.py:580 — the decoder's create_causal_mask is called without "
        "position_ids, so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("evolla", "FM-PACK-ISOLATION"): (
        "transformers/models/evolla/modeling_evolla.py:1359 — create_causal_mask is called without position_ids, "
        "so packed-sequence detection never runs and later samples attend to earlier ones."
    ),
    ("glm4v_moe", "FM-PACK-ISOLATION"): (
        "transformers/models/glm4v_moe/modeling_glm4v_moe.py:990 — the mask gets the text row of the mrope positions the model computes "
        "itself, not the restarting position_ids of the packed row, so packed-sequence detection never runs "
        "(as glm4v and qwen2_vl)."
    ),
    ("paddleocr_vl", "FM-PACK-ISOLATION"): (
        "transformers/models/paddleocr_vl/modeling_paddleocr_vl.py:540 — the mask gets the text row of the mrope positions the model computes "
        "itself, not the restarting position_ids of the packed row, so packed-sequence detection never runs "
        "(as glm4v and qwen2_vl)."
    ),
    ("qwen2_5_omni_thinker", "FM-PACK-ISOLATION"): (
        "transformers/models/qwen2_5_omni/modeling_qwen2_5_omni.py:1638 — the mask gets the text row of the mrope positions the model computes "
        "itself, not the restarting position_ids of the packed row, so packed-sequence detection never runs "
        "(as glm4v and qwen2_vl)."
    ),
    ("molmo2", "FM-MODEL-FORWARD"): (
        "transformers/models/molmo2/modeling_molmo2.py:820 — in training the forward raises without "
        "mm_token_type_ids, which text-only data does not have (inputs.token_type_ids supplies zeros)."
    ),
}

