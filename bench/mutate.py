"""Mutation run: break one verdict-deciding line at a time and see whether the tests notice.

Each mutation replaces one snippet of onboard's source (it must occur exactly once in its file) in a copy of
the repository, then runs the tests that should catch it (pytest node ids or -k expressions). A mutation is
KILLED when those tests fail, SURVIVED when they pass. The score is killed / all. The list is the record of
what onboard's tests guard: extend it with every new check, patch and report.

Run: python bench/mutate.py [--only ID,ID] [--list FILE.py] [--workers 1]
  --list FILE.py: mutations from another file (a MUTATIONS list of the same tuples), e.g. ones written by
  someone who did not write the tests. Prints one line per mutation and the score; exit 1 below --target.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: node ids, files, or "-k expr"
    why: str = ""


M = Mutation
MUTATIONS = [
    # ---- runner: the fix loop and the verdict ----
    M("runner-verified-always", "onboard/harness/runner.py",
      "    verified = after.status is Status.PASS or (after.status is Status.WARN and after.diagnosis != result.diagnosis)",
      "    verified = True", ("tests/test_verdicts.py::test_a_leak_no_mask_can_close_trains_unpacked",),
      "a fix is trusted without its re-check passing"),
    M("runner-keep-unverified", "onboard/harness/runner.py",
      "    if not verified:  # what did not fix the finding is not left to shape the checks after it\n"
      "        session.revert_patch(patch.id)", "    pass",
      ("tests/test_runner.py::test_a_fix_that_does_not_verify_is_taken_back",), "an unverified patch stays applied"),
    M("runner-unsafe-applied", "onboard/harness/runner.py",
      "if patch.applicability is Applicability.SAFE or unsafe_fixes:", "if True:",
      ("tests/test_faults.py::test_unsafe_fix_waits_for_the_flag",), "unsafe patches applied without the flag"),
    M("runner-no-skip-after-failure", "onboard/harness/runner.py",
      "        missing = [code for code in check.requires if code in unmet]", "        missing = []",
      ("tests/test_checks_tiny.py::test_lora_fails_when_targets_match_nothing",), "prerequisites ignored"),
    M("verdict-error-is-not-ready", "onboard/harness/result.py",
      "        if any(c.blocking and c.status is Status.FAIL for c in self.checks):",
      "        if any(c.blocking for c in self.checks):",
      ("tests/test_checks_tiny.py::test_a_crashing_check_is_an_error_and_the_others_still_run",),
      "a crash blamed on the model"),
    M("verdict-fixed-is-ready", "onboard/harness/result.py",
      "        if any(c.fixed for c in self.checks):\n            return Verdict.READY_WITH_FIXES",
      "        if False:\n            return Verdict.READY_WITH_FIXES",
      ("tests/test_cli.py::test_tiny_run_writes_every_report",), "fixes hidden from the verdict"),
    M("exit-strict-ignored", "onboard/harness/result.py",
      "        if verdict is Verdict.NOT_READY or (strict and verdict is Verdict.READY_WITH_FIXES):",
      "        if verdict is Verdict.NOT_READY:", ("tests/test_cli.py::test_strict_and_no_fix_gate",), "--strict ignored"),
    M("exit-inconclusive-ok", "onboard/harness/result.py",
      "            return ExitCode.ENVIRONMENT_ERROR\n        if verdict is Verdict.NOT_APPLICABLE",
      "            return ExitCode.OK\n        if verdict is Verdict.NOT_APPLICABLE",
      ("tests/test_checks_tiny.py::test_a_crashing_check_is_an_error_and_the_others_still_run",),
      "a crashed run exits 0"),
    M("exit-enum-renumbered", "onboard/harness/result.py", "    NOT_READY = 1\n", "    NOT_READY = 4\n",
      ("tests/test_cli.py::test_strict_and_no_fix_gate",), "the documented exit code changes"),
    M("exit-usage-renumbered", "onboard/harness/result.py", "    USAGE_ERROR = 2 ", "    USAGE_ERROR = 5 ",
      ("tests/test_cli.py::test_bad_input_is_one_line_and_exit_code",), "bad input no longer exits 2"),
    # ---- checks ----
    M("pack-leak-ignored", "onboard/checks/packing.py", "            if leak > tol:", "            if leak > tol * 1e6:",
      ("tests/test_checks_tiny.py::test_a_loop_of_ones_own_keeps_the_cache_finding",), "packing leaks pass"),
    M("pack-isolation-as-cache", "onboard/checks/packing.py", '        if "no_mask_no_cache" in names:',
      '        if False:', ("tests/test_verdicts.py::test_a_true_leak_is_fixed_by_the_block_mask",),
      "a mask-independent leak reported as a cache leak"),
    M("pack-control-hides", "onboard/checks/packing.py", "            tol = max(floor, factor * control)",
      "            tol = max(floor, factor * control, 1.0)",
      ("tests/test_verdicts.py::test_a_true_leak_is_fixed_by_the_block_mask",), "tolerance swamped"),
    M("cce-loss-branch", "onboard/checks/cce.py", "        if rel > rtol or grad_rel > rtol * 10:",
      "        if grad_rel > rtol * 10:", ("tests/test_cce.py::test_a_loss_that_differs_only_in_value_is_caught",),
      "the loss comparison never decides"),
    M("cce-grad-branch", "onboard/checks/cce.py", "        if rel > rtol or grad_rel > rtol * 10:",
      "        if rel > rtol:", ("tests/test_cce.py::test_gradients_that_differ_with_an_equal_loss_are_caught",),
      "the gradient comparison never decides"),
    M("cce-inactive-ignored", "onboard/checks/cce.py", '            if "ran 0 times" in text:', "            if False:",
      ("tests/test_faults.py::test_fault_is_found_and_fixed",), "a bypassed output layer reads as math"),
    M("cce-transform-config", "onboard/patches/cce.py", "    if torch.equal(z, logits):\n        return 1.0, None, 0.0",
      "    return 1.0, None, 0.0", ("tests/test_verdicts.py::test_fused_loss_follows_the_model_not_its_config_names",),
      "the measured logit transform is ignored"),
    M("lora-offpath-as-nograd", "onboard/checks/lora.py", '            paths["off_path"].append(name)',
      '            paths["detached"].append(name)',
      ("tests/test_verdicts.py::test_a_pooler_whose_output_never_reaches_the_loss_is_no_finding",),
      "a pooler reported as a broken adapter"),
    M("lora-detached-ignored", "onboard/checks/lora.py", '            paths["detached"].append(name)\n',
      '            paths["off_path"].append(name)\n', ("tests/test_faults.py::test_fault_is_found_and_fixed",),
      "a detached adapter passes"),
    M("lora-init-blamed", "onboard/checks/lora.py",
      'paths["init_blocked" if session.spec.random_weights else "blocked"].append(name)',
      'paths["blocked"].append(name)', ("tests/test_verdicts.py::test_a_gradient_blocked_by_random_init_is_no_finding",),
      "random init blamed on the architecture"),
    M("train-dropout-compared", "onboard/checks/train_step.py", "        if stochastic:\n            loss = eval_loss",
      "        if False:\n            loss = eval_loss",
      ("tests/test_verdicts.py::test_dropout_under_any_config_name_is_compared_with_dropout_off",),
      "dropout read as a packing bug"),
    M("train-noupdate-ignored", "onboard/checks/train_step.py", "        if changed == 0:", "        if changed < 0:",
      ("tests/test_faults.py::test_fault_is_found_and_fixed",), "a frozen adapter passes"),
    M("ga-ratio-ignored", "onboard/checks/grad_accum.py", "        if rel <= rtol and grad_rel <= rtol * 10:",
      "        if True:", ("tests/test_faults.py::test_fault_is_found_and_fixed",), "GA loss inflation passes"),
    M("ga-grads-ignored", "onboard/checks/grad_accum.py", "        if rel <= rtol and grad_rel <= rtol * 10:",
      "        if rel <= rtol:", ("tests/test_runner.py::test_accumulation_that_keeps_the_loss_but_not_the_gradients_is_caught",),
      "GA gradients never decide"),
    M("headdim-off-by-one", "onboard/patches/attention.py",
      "max(head_dims(config), default=0) > FLASH_MAX_HEAD_DIM", "max(head_dims(config), default=0) >= FLASH_MAX_HEAD_DIM",
      ("tests/test_runner.py::test_head_dim_at_the_flash_limit_is_no_head_size_finding",), "head_dim 256 refused"),
    M("train-nograd-as-step", "onboard/checks/train_step.py", '            elif "does not require grad" in str(exc):',
      "            elif False:", ("tests/test_runner.py::test_a_training_path_that_never_calls_the_adapted_layers_is_caught",),
      "a training path without adapters reads as a crash"),
    M("load-missing-ignored", "onboard/checks/load.py", "        if missing or reshaped:", "        if False:",
      ("tests/test_faults.py::test_checkpoint_missing_its_head_is_named_at_load",), "a missing head passes LOAD001"),
    M("loss-random-threshold", "onboard/checks/initial_loss.py", "        if mean >= random_fraction * ln_v:",
      "        if mean >= 1.1 * ln_v:", ("tests/test_faults.py::test_planted_weight_fault_reads_as_random",),
      "the random-loss threshold loosened"),
    M("attn-kernel-blamed", "onboard/checks/attention.py",
      '                if wanted != "eager" and _runs_with(session, "eager", lambda: _step(model, inputs)):',
      "                if True:", ("tests/test_checks_tiny.py::test_forward_that_fails_with_eager_too_is_not_blamed_on_the_backend",),
      "the backend blamed for the model's forward"),
    M("attn-fallback-unchecked", "onboard/checks/attention.py", "        if rel > rtol:\n            res.status, res.diagnosis = Status.FAIL, \"FM-ATTN-MISMATCH\"",
      "        if False:\n            res.status, res.diagnosis = Status.FAIL, \"FM-ATTN-MISMATCH\"",
      ("tests/test_runner.py::test_a_backend_that_disagrees_with_eager_is_a_mismatch",), "a mismatching backend passes"),
    M("attn-noncausal-ignored", "onboard/checks/attention.py",
      '        if future > session.threshold("attention.future_tolerance"):', "        if False:",
      ("tests/test_runner.py::test_a_backend_that_ignores_the_causal_mask_is_not_causal",),
      "a model that reads the future passes"),
    # ---- patches ----
    M("patch-causal-noop", "onboard/patches/attention.py", '                set_attr(handle, config, "is_decoder", True)',
      "                pass", ("tests/test_verdicts.py::test_attention_causal_makes_eager_attention_causal_too",),
      "attention.causal leaves is_decoder off (eager attention stays bidirectional)"),
    M("patch-cache-kept", "onboard/patches/packing.py", '        set_attr(handle, config, "use_cache", False)\n    hook = ',
      "        pass\n    hook = ", ("tests/test_checks_tiny.py::test_packing_patch_reverts_cleanly",),
      "the packing patch leaves the cache on"),
    M("patch-block-mask-noop", "onboard/patches/packing.py",
      "            kwargs[\"attention_mask\"] = layer_masks(config, positions, dtype, mask)", "            pass",
      ("tests/test_verdicts.py::test_a_true_leak_is_fixed_by_the_block_mask",), "the block mask never applied"),
    M("patch-revert-leaks", "onboard/patches/base.py", "        while self._undo:\n            self._undo.pop()()",
      "        self._undo.clear()", ("tests/test_faults.py::test_apply_then_revert_leaves_the_model_unchanged",),
      "revert does nothing"),
    M("patch-types-ids-missing", "onboard/patches/extra_inputs.py",
      "                if kwargs.get(name) is None:\n                    kwargs[name] = torch.zeros_like(ids)",
      "                pass", ("tests/test_faults.py::test_fault_is_found_and_fixed",), "token_type_ids never injected"),
    M("patch-ga-noop", "onboard/patches/loss_kwargs.py",
      '            output["loss"] = loss * (local.to(loss.device) / torch.as_tensor(count, device=loss.device))',
      "            pass", ("tests/test_faults.py::test_fault_is_found_and_fixed",), "the GA patch rescales nothing"),
    M("patch-ga-accepts-noop", "onboard/patches/loss_kwargs.py",
      '        set_attr(handle, unwrap(model), "accepts_loss_kwargs", True)\n        return handle', "        return handle",
      ("tests/test_exact.py",), "loss.accepts_num_items declares nothing"),
    M("patch-block-mask-one-type", "onboard/patches/packing.py",
      "    if isinstance(types, (list, tuple)) and set(types) - {\"full_attention\"}:",
      "    if False:", ("tests/test_exact.py",), "the block mask gives sliding layers a full mask (GPT-OSS)"),
    M("pack-far-end-skipped", "onboard/checks/packing.py", "        if far is not None:", "        if False:",
      ("tests/test_exact.py",), "a sample at the far end of the longest row is never judged (Llama 4)"),
    M("ga-equal-micro-batches", "onboard/checks/grad_accum.py",
      "    labels[:, 1:][trained & first & (rank > keep)] = IGNORE",
      "    labels[:, 1:][trained & (rank > trained.sum(1).min())] = IGNORE",
      ("tests/test_exact.py",), "GA001's micro-batches hold equal token counts again: a mean of means passes"),
    M("train-short-samples", "onboard/checks/train_step.py", "        examples[-1] = long_example(session.examples, min(span + 32, session.max_length))",
      "        pass", ("tests/test_exact.py",), "TRAIN001's samples never cross the model's window"),
    # ---- reports ----
    M("junit-failure-dropped", "onboard/reports/junit.py",
      "        if r.status is Status.FAIL and (not r.fixed or report.options.get(\"strict\")):",
      "        if False:", ("tests/test_reports.py::test_every_report_shows_an_unfixed_failure",),
      "JUnit shows no failure for a NOT_READY run"),
    M("markdown-verdict-wrong", "onboard/reports/markdown.py", "report.verdict.value", "\"READY\"",
      ("tests/test_reports.py::test_every_report_shows_an_unfixed_failure",), "the Markdown verdict is wrong"),
    M("json-patches-all", "onboard/harness/result.py",
      "        fixes = [c.fix.patch_id for c in self.checks if c.fixed]",
      "        fixes = [c.fix.patch_id for c in self.checks if c.fix]",
      ("tests/test_verdicts.py::test_a_loss_that_is_neither_next_token_nor_unshifted_has_no_fix",),
      "an unverified patch listed for training"),
    # ---- found by the audit of the 5.24 matrix ----
    # (pack-mask-built-once, a one-row mask handed to the control's two rows, left the list on 2026-12-06: the
    # control now runs under the first leaking convention, which has no mask on every model that leaks with one
    # (Bloom leaks under the default cache first), so no model can show it: an equivalent mutant)
    M("loss-vocab-from-head", "onboard/checks/initial_loss.py", "ln_v = math.log(session.logit_width)",
      "ln_v = math.log(session.model.get_output_embeddings().weight.shape[0])",
      ("tests/test_verdicts.py::test_ln_vocab_comes_from_the_logits_when_the_output_layer_is_not_exposed",),
      "ln V read off an output layer the model may not expose"),
    M("attn-no-loss-unnamed", "onboard/checks/attention.py",
      "    if loss is None:  # what the Trainer refuses too", "    if False:  # what the Trainer refuses too",
      ("tests/test_verdicts.py::test_a_forward_that_returns_no_loss_is_named_as_such",),
      "a forward without a loss reads as a backend failure"),
    M("causal-patch-whole-model", "onboard/patches/attention.py",
      "    return (decoder if isinstance(decoder, torch.nn.Module) else base).named_modules()",
      "    return base.named_modules()",
      ("tests/test_verdicts.py::test_a_text_model_left_bidirectional_by_its_config_is_made_causal",),
      "attention.causal makes a vision tower causal too"),
    M("lora-shared-leaf-by-leaf", "onboard/patches/peft_targets.py",
      "        leaves = sorted({name if name.rpartition(\".\")[2] in linear_leaves else name.rpartition(\".\")[2]",
      "        leaves = sorted({name.rpartition(\".\")[2]",
      ("tests/test_verdicts.py::test_a_target_name_that_also_names_a_layer_is_left_out_by_full_name",),
      "a module left out of LoRA by a leaf name its Linears share"),
    M("attn-probe-eval-mode", "onboard/checks/attention.py", "            _forward_backward(model, batch, train=True)",
      "            _forward_backward(model, batch, train=False)",
      ("tests/test_verdicts.py::test_the_forward_probe_runs_in_train_mode_as_training_does",),
      "the forward probe's backward in eval mode"),
    # ---- train ----
    M("train-refuse-ignored", "onboard/cli.py", "            if not force:", "            if False:",
      ("tests/test_train.py::test_not_ready_model_is_refused_unless_forced",), "a NOT_READY model trains"),
    # ---- issue 23: the path to train (fallbacks, harm, the trainer's conventions, sample boundaries, coverage) ----
    M("pack-harm-ignored", "onboard/checks/packing.py", "            elif worst > harm_floor:", "            elif False:",
      ("tests/test_faults.py::test_fault_is_found_and_fixed[pack-positions]",),
      "samples isolated but positioned over the row pass (FM-PACK-POSITIONS never found)"),
    M("pack-trainer-keeps-cache", "onboard/checks/packing.py", '    if trainer == "custom":\n        yield\n        return',
      "    if True:\n        yield\n        return", ("tests/test_checks_tiny.py::test_checklist_on_tiny_architectures",),
      "the HF Trainer's cache switch not modelled: every model reads FM-PACK-CACHE under the default setup"),
    M("fallback-never-tried", "onboard/harness/runner.py",
      '    if fallback and fallback not in [t["patch_id"] for t in tried]:', "    if False:",
      ("tests/test_verdicts.py::test_a_hybrid_falls_back_to_unpacked_naming_the_kernels_it_needs",),
      "a failing optimisation is NOT_READY although a slower setup trains correctly"),
    M("segment-conv-unmasked", "onboard/patches/packing.py",
      "== doc\n                    acc = acc +", "!= -2\n                    acc = acc +",
      ("tests/test_faults.py::test_fault_is_found_and_fixed[pack-conv]",),
      "the short convolution still reads the previous sample"),
    M("boundaries-not-sent", "onboard/patches/packing.py", "            kwargs.update(sample_boundaries(positions))",
      "            pass", ("tests/test_verdicts.py::test_a_hybrid_falls_back_to_unpacked_naming_the_kernels_it_needs",),
      "packing.sample_boundaries sends nothing: the missing kernel package is never named"),
    M("coverage-ignored", "onboard/checks/lora.py",
      "        if frozen and len(frozen) < len(coverage) and not (experts and all(c[\"experts\"] for c in frozen.values())):",
      "        if False:",
      ("tests/test_faults.py::test_fault_is_found_and_fixed[lora-coverage]",),
      "a hybrid's Mamba mixers left frozen by attention-only targets pass"),
    M("cce-fallback-unchecked", "onboard/checks/cce.py", "        if not rel <= rtol:\n            res.status, res.diagnosis = Status.FAIL, \"FM-CCE-MATH\"\n            res.message = (\"the model's own loss is not",
      "        if False:\n            res.status, res.diagnosis = Status.FAIL, \"FM-CCE-MATH\"\n            res.message = (\"the model's own loss is not",
      ("tests/test_verdicts.py::test_a_loss_that_is_neither_next_token_nor_unshifted_has_no_fix",),
      "the model's own loss accepted as the fallback where it is not the next-token loss (Bart)"),
    M("train-grads-ignored", "onboard/checks/train_step.py",
      "        if loss_off <= loss_limit and grad_off is not None and grad_off > grad_limit:", "        if False:",
      ("tests/test_exact.py",), "TRAIN001 compares only the loss (GPT-OSS with one full mask: loss right, gradients not)"),
    M("unpacked-still-packs", "onboard/train/run.py",
      "    packing = options.packing and ids.PACKING_UNPACKED not in applied", "    packing = options.packing",
      ("tests/test_cli.py::test_train_follows_the_unpacked_fallback",), "onboard train packs a model whose fix is unpacked"),
    # ---- issue 25 and 26: check versions, the label shift ----
    M("train-from-changed-checks", "onboard/train/run.py",
      "    changed = changed_checks(report)\n    if changed:", "    changed = changed_checks(report)\n    if False:",
      ("tests/test_check_versions.py",), "a report made by checks that changed since is trained from"),
    M("labels-shift-crosses-samples", "onboard/patches/labels.py",
      "        shifted[..., :-1][restart] = IGNORE  # the last position of a sample the next one follows", "        pass",
      ("tests/test_labels.py",), "a packed sample's last position trained on the next sample's first token"),
    # ---- objectives: NOT_APPLICABLE, seq2seq, positions, XLNet (issue 26) ----
    M("needs-never-read", "onboard/checks/attention.py",
      "                elif needs := needs_from_error(base, inputs, exc) or needs_beyond_text_labels(model, inputs):",
      "                elif needs := None:",
      ("tests/test_objectives.py::test_a_model_that_needs_more_than_text_is_not_applicable",),
      "a model that needs pixels is NOT_READY (FM-MODEL-FORWARD) again"),
    M("needs-any-error", "onboard/checks/attention.py",
      "                elif needs := needs_from_error(base, inputs, exc) or needs_beyond_text_labels(model, inputs):",
      "                elif needs := f\"{exc}\":",
      ("tests/test_checks_tiny.py::test_forward_that_fails_with_eager_too_is_not_blamed_on_the_backend",),
      "every failing forward is NOT_APPLICABLE: a broken model escapes NOT_READY"),
    M("seq2seq-loss-shifted", "onboard/harness/forward.py",
      "    if seq2seq:\n        flat = logits.reshape(-1, logits.shape[-1]).float()",
      "    if False:\n        flat = logits.reshape(-1, logits.shape[-1]).float()",
      ("tests/test_objectives.py::test_an_encoder_decoder_is_probed_as_seq2seq_and_trains_right_padded",),
      "an encoder-decoder's reference loss shifted as a causal LM's"),
    M("seq2seq-never-found", "onboard/harness/inputs.py",
      "    return \"seq2seq\" if logits is not None", "    return \"causal\" if logits is not None",
      ("tests/test_objectives.py::test_t5_is_built_as_seq2seq_and_its_accumulation_finding_is_fixed",),
      "encoder-decoders probed as decoder-only again"),
    M("position-start-zero", "onboard/harness/session.py",
      "            self._position_start = 0 if self.seq2seq else own_position_start(",
      "            self._position_start = 0 if True else own_position_start(",
      ("tests/test_objectives.py::test_roberta_packs_once_its_positions_start_where_it_numbers_a_sample",),
      "RoBERTa's packed rows numbered from 0: the family falls back to unpacked"),
    M("xlnet-mask-kept", "onboard/patches/attention.py",
      "    kwargs[\"attention_mask\"] = None\n    return args, kwargs", "    return None",
      ("tests/test_verdicts.py::test_causal_xlnet_trains_right_padded_batches_as_each_sample_alone",),
      "causal XLNet's padded batches crash in transformers' uni mask again"),
    # issue 27: the layer-complete slice
    M("slice-kind-ignores-config", "onboard/harness/slice.py",
      "    sigs = [(_module_signature(layer), _config_entries(text, i, total, keys)) for i, layer in enumerate(stack)]",
      "    sigs = [(_module_signature(layer), ()) for i, layer in enumerate(stack)]",
      ("tests/test_slice.py::test_slice_keeps_two_of_each_kind_with_the_models_weights",),
      "NoPE layers (a config entry, not a module) are no kind of their own: SmolLM3's slice has no NoPE layer"),
    M("slice-hidden-states-unchecked", "onboard/harness/slice.py",
      "                if diff != 0.0:", "                if False:",
      ("tests/test_slice.py::test_a_slice_whose_hidden_states_are_not_the_models_is_refused",),
      "a slice whose hidden states are not the model's is used"),
    M("slice-patches-not-replayed", "onboard/harness/session.py",
      "            self.apply_patch(get_patch(patch_id), option=option)\n        if adapter_at",
      "            pass\n        if adapter_at",
      ("tests/test_slice.py::test_moving_between_slice_and_whole_carries_the_patches_and_the_adapter",),
      "the fixes PACK001 verified on the slice are not on the whole model TRAIN001 trains"),
    M("slice-whole-only-runs", "onboard/harness/runner.py",
      "        elif check.whole_only and not session.whole_fits:", "        elif False:",
      ("tests/test_slice.py::test_slice_only_reads_the_kept_layers_from_the_checkpoint",),
      "TRAIN001 trains the slice and calls it the model's step when the whole model is not loaded"),
    # issue 30: the branches a blind mutation run found unguarded
    M("moe-unlearning-not-counted", "onboard/checks/moe.py",
      "in runs.items() if same and not unlearning]", "in runs.items() if same]",
      ("tests/test_moe.py::test_an_implementation_with_eagers_math_whose_expert_never_learns_is_not_chosen",),
      "an experts kernel with eager's math whose routed expert's adapter never learns is verified and chosen"),
    M("warn-enables-dropped", "onboard/harness/result.py",
      "c.enables and c.status in (Status.PASS, Status.WARN)", "c.enables and c.status is Status.PASS",
      ("tests/test_api.py::test_a_lever_verified_beside_one_left_off_is_trained_with",),
      "a lever KERN001 verified beside one it left off (WARN) is dropped from the verified patches, training and "
      "apply_patches"),
    # issue 28: the step as training runs it
    M("kern-no-checkpointing", "onboard/checks/kernels.py",
      "loss, grads, seconds = step(ckpt)", "loss, grads, seconds = step(False)",
      ("tests/test_kernels.py::test_a_lever_that_breaks_only_under_checkpointing_is_left_off",),
      "KERN001 verifies levers without the setup's checkpointing (a lever that fails under it is trained with)"),
    # issue 29: FSDP001
    M("fsdp-tied-ignored", "onboard/checks/fsdp.py", '        if out.get("tied_apart"):', "        if False:",
      ("tests/test_faults.py::test_fault_is_found_and_fixed[fsdp-tied]",),
      "a tied head sharded apart from its embeddings is not reported (torch's refusal reads as onboard's error)"),
    M("fsdp-wrap-ignored", "onboard/checks/fsdp.py", '        if not out["wrap_classes"]:', "        if False:",
      ("tests/test_faults.py::test_fault_is_found_and_fixed[fsdp-wrap]",),
      "a model FSDP wraps as one unit passes"),
    M("plan-ignores-split-cost", "onboard/train/plan.py",
      "fitting = [c for c in cands if c.fits]", "fitting = [c for c in cands if c.fits and c.split == 1]",
      ("tests/test_plan.py::test_the_plan_is_the_least_recomputation_that_fits",),
      "the plan never splits a micro-batch, and calls a run that needs it unfittable"),
]


# the tests a mutation without its own list runs, by the module it changes (mutations written blind)
DEFAULT_TESTS = {
    "onboard/checks/packing.py": ("tests/test_verdicts.py", "tests/test_checks_tiny.py"),
    "onboard/checks/cce.py": ("tests/test_cce.py", "tests/test_verdicts.py", "tests/test_faults.py"),
    "onboard/checks/lora.py": ("tests/test_verdicts.py", "tests/test_faults.py", "tests/test_checks_tiny.py"),
    "onboard/checks/train_step.py": ("tests/test_verdicts.py", "tests/test_runner.py", "tests/test_faults.py"),
    "onboard/checks/grad_accum.py": ("tests/test_faults.py", "tests/test_runner.py"),
    "onboard/checks/attention.py": ("tests/test_runner.py", "tests/test_checks_tiny.py", "tests/test_faults.py"),
    "onboard/checks/load.py": ("tests/test_faults.py", "tests/test_checks_tiny.py"),
    "onboard/checks/initial_loss.py": ("tests/test_faults.py", "tests/test_gguf.py"),
    "onboard/harness/runner.py": ("tests/test_runner.py", "tests/test_checks_tiny.py", "tests/test_faults.py"),
    "onboard/harness/result.py": ("tests/test_result.py", "tests/test_cli.py", "tests/test_reports.py"),
    "onboard/patches/": ("tests/test_faults.py", "tests/test_verdicts.py", "tests/test_checks_tiny.py",
                         "tests/test_runner.py"),
    "onboard/reports/": ("tests/test_reports.py", "tests/test_cli.py", "tests/test_html.py"),
    "onboard/fixtures/tiny.py": ("tests/test_tiny.py",),
    "onboard/cli.py": ("tests/test_cli.py", "tests/test_reports.py"),
}


def tests_for(m: Mutation) -> tuple[str, ...]:
    if m.tests:
        return m.tests
    return next((tests for prefix, tests in DEFAULT_TESTS.items() if m.file.startswith(prefix)), ("tests",))


def _apply(copy: Path, m: Mutation) -> None:
    path = copy / m.file
    text = path.read_text()
    count = text.count(m.old)
    if count != 1:
        raise ValueError(f"{m.id}: the snippet occurs {count} times in {m.file}")
    path.write_text(text.replace(m.old, m.new))


def _copy_repo(dest: Path) -> None:
    for name in ("onboard", "tests", "bench", "pyproject.toml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, dest / name)


def run(m: Mutation, timeout: float) -> tuple[str, float, str]:
    with tempfile.TemporaryDirectory(prefix=f"mutant-{m.id}-") as tmp:
        copy = Path(tmp)
        _copy_repo(copy)
        _apply(copy, m)
        args = []
        for t in tests_for(m):
            args += t.split(" ", 1) if t.startswith("-k ") else [t]
        env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
        start = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args],
                                  cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "TIMEOUT", time.perf_counter() - start, ""
        seconds = time.perf_counter() - start
        tail = (done.stdout.strip().splitlines() or [""])[-1]
        if "no tests ran" in tail or done.returncode in (4, 5):
            return "BROKEN", seconds, tail  # the named tests do not exist: the list is out of date
        return ("KILLED" if done.returncode != 0 else "SURVIVED"), seconds, tail


# the test that should trip each blind mutation, named after the fact (the mutations stay as their author wrote
# them): one test instead of a module's whole files keeps the blind run to minutes on two cores
BLIND_TESTS = {
    "ga-grads-ignored": "tests/test_runner.py::test_accumulation_that_keeps_the_loss_but_not_the_gradients_is_caught",
    "pack-isolation-wrong-patch": "tests/test_verdicts.py::test_a_true_leak_is_fixed_by_the_block_mask",
    "is-packed-needs-all-restarts": "tests/test_verdicts.py::test_a_true_leak_is_fixed_by_the_block_mask",
    "block-mask-crosses-samples": "tests/test_verdicts.py::test_a_true_leak_is_fixed_by_the_block_mask",
    "flash-headdim-off-by-one": "tests/test_runner.py::test_head_dim_at_the_flash_limit_is_no_head_size_finding",
    "loss-kwargs-patch-noop": "tests/test_faults.py::test_fault_is_found_and_fixed[loss-ga]",
    "verdict-crash-is-not-ready": "tests/test_result.py::test_verdicts_and_exit_codes",
    "patches-include-unverified": "tests/test_result.py::test_only_verified_fixes_are_patches_for_training",
    "verify-warn-same-diagnosis": "tests/test_runner.py::test_a_fix_after_which_the_same_warning_stays_is_not_verified",
    "unverified-fix-not-reverted": "tests/test_runner.py::test_a_fix_that_does_not_verify_is_taken_back",
    "junit-fixed-fail-is-failure": "tests/test_reports.py::test_a_fixed_failure_passes_without_strict_and_fails_with_it",
    "html-applied-shown-verified": "tests/test_reports.py::test_a_fix_that_was_applied_but_did_not_verify_reads_so_in_every_report",
}


def _load(path: Path) -> list[Mutation]:
    spec = importlib.util.spec_from_file_location("extra_mutations", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = [m if isinstance(m, Mutation) else Mutation(*m) for m in module.MUTATIONS]
    return [m if m.tests or m.id not in BLIND_TESTS else
            Mutation(m.id, m.file, m.old, m.new, (BLIND_TESTS[m.id],), m.why) for m in found]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None)
    parser.add_argument("--list", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--target", type=float, default=0.9)
    args = parser.parse_args()
    mutations = _load(args.list) if args.list else MUTATIONS
    if args.only:
        wanted = set(args.only.split(","))
        mutations = [m for m in mutations if m.id in wanted]
    results = []
    for m in mutations:
        outcome, seconds, tail = run(m, args.timeout)
        results.append((m, outcome))
        print(f"{outcome:9} {seconds:6.1f} s  {m.id:30} {m.why}  [{tail[:80]}]", flush=True)
    judged = [o for _, o in results if o in ("KILLED", "SURVIVED")]
    killed = judged.count("KILLED")
    score = killed / len(judged) if judged else 0.0
    print(f"\nscore {killed}/{len(judged)} = {score:.0%} killed"
          + (f"; {len(results) - len(judged)} not judged (BROKEN/TIMEOUT)" if len(judged) < len(results) else ""))
    for m, o in results:
        if o != "KILLED":
            print(f"  {o}: {m.id} ({m.file}): {m.why}")
    return 0 if score >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
