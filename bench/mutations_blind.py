"""Blind mutations for the mutation-testing run of onboard.

Written by a helper session that read only the source under onboard/; its author had not read the
tests (nothing under tests/ or bench/ was opened), so these mutations are not shaped by what the tests
happen to check. Each is a one- or two-line change that would make onboard give a wrong verdict,
diagnosis, "verified" flag, exit code or report.

Tuple: (id, file, exact old snippet (occurs once), new snippet, (), what breaks).
"""

MUTATIONS = [
    # --- onboard/checks/ ---
    ("ga-grads-ignored", "onboard/checks/grad_accum.py",
     "        if rel <= rtol and grad_rel <= rtol * 10:\n",
     "        if rel <= rtol or grad_rel <= rtol * 10:\n",
     (), "GA001 passes when the loss matches but the accumulated gradients do not (or vice versa)"),
    ("pack-isolation-wrong-patch", "onboard/checks/packing.py",
     "            res.diagnosis, res.proposed_patch = \"FM-PACK-ISOLATION\", \"packing.block_mask\"\n",
     "            res.diagnosis, res.proposed_patch = \"FM-PACK-ISOLATION\", \"packing.no_cache_no_mask\"\n",
     (), "FM-PACK-ISOLATION proposes the no-cache/no-mask patch, which cannot fix it: never verified"),
    # --- onboard/patches/ ---
    ("is-packed-needs-all-restarts", "onboard/patches/packing.py",
     "    return bool((position_ids[:, 1:] != position_ids[:, :-1] + 1).any())\n",
     "    return bool((position_ids[:, 1:] != position_ids[:, :-1] + 1).all())\n",
     (), "packed rows are not recognised as packed: packing patches do nothing, fixes never verify"),
    ("block-mask-crosses-samples", "onboard/patches/packing.py",
     "    allowed = (doc[:, :, None] == doc[:, None, :]) & causal\n",
     "    allowed = (doc[:, :, None] >= doc[:, None, :]) & causal\n",
     (), "the block-diagonal mask lets a sample attend to earlier samples: packing.block_mask still leaks"),
    ("flash-headdim-off-by-one", "onboard/patches/attention.py",
     "max(head_dims(config), default=0) > FLASH_MAX_HEAD_DIM:",
     "max(head_dims(config), default=0) >= FLASH_MAX_HEAD_DIM:",
     (), "head_dim 256 (supported by flash-attn) is wrongly a FAIL FM-ATTN-HEADDIM"),
    ("loss-kwargs-patch-noop", "onboard/patches/loss_kwargs.py",
     "        set_attr(handle, unwrap(model), \"accepts_loss_kwargs\", False)\n",
     "        set_attr(handle, unwrap(model), \"accepts_loss_kwargs\", True)\n",
     (), "loss.num_items_in_batch leaves the Trainer skipping the GA division: FM-LOSS-GA fix never verifies"),
    # --- onboard/harness/result.py ---
    ("verdict-crash-is-not-ready", "onboard/harness/result.py",
     "        if any(c.blocking and c.status is Status.FAIL for c in self.checks):\n",
     "        if any(c.blocking for c in self.checks):\n",
     (), "a crashed check (ERROR) gives NOT_READY / exit 1 instead of INCONCLUSIVE / exit 3"),
    ("patches-include-unverified", "onboard/harness/result.py",
     "        fixes = [c.fix.patch_id for c in self.checks if c.fixed]\n",
     "        fixes = [c.fix.patch_id for c in self.checks if c.fix is not None]\n",
     (), "patches that were tried but not verified are listed as patches for training"),
    # --- onboard/harness/runner.py ---
    ("verify-warn-same-diagnosis", "onboard/harness/runner.py",
     "    verified = after.status is Status.PASS or (after.status is Status.WARN and after.diagnosis != result.diagnosis)\n",
     "    verified = after.status in (Status.PASS, Status.WARN)\n",
     (), "a re-check that still WARNs with the same finding counts as a verified fix"),
    ("unverified-fix-not-reverted", "onboard/harness/runner.py",
     "    if not verified:  # what did not fix the finding is not left to shape the checks after it\n"
     "        session.revert_patch(patch.id)\n",
     "",
     (), "a patch that did not verify stays applied and shapes the later checks (and training)"),
    # --- onboard/reports/ ---
    ("junit-fixed-fail-is-failure", "onboard/reports/junit.py",
     "        if r.status is Status.FAIL and (not r.fixed or report.options.get(\"strict\")):",
     "        if r.status is Status.FAIL:",
     (), "JUnit reports a verified-fixed finding as a failure even without --strict"),
    ("html-applied-shown-verified", "onboard/reports/html.py",
     "(\"verified\" if r.fix.verified else \"not verified\")",
     "(\"verified\" if r.fix.applied else \"not verified\")",
     (), "HTML check table shows a fix that applied but did not verify as verified"),
]
