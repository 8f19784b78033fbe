"""The pytest plugin as a model repository uses it: `pytest --onboard MODEL`, results as pytest outcomes."""

from importlib.metadata import entry_points

from onboard.checks import CHECKS

pytest_plugins = ["pytester"]


def _plugin_args() -> list[str]:
    """Installed, the plugin loads from its pytest11 entry point; from a bare checkout, name it."""
    installed = any(ep.value == "onboard.pytest_plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "onboard.pytest_plugin"]


def test_each_check_is_a_test_and_strict_fails_the_fixed_one(pytester):
    pytester.makepyfile(test_own="def test_own_suite_still_runs():\n    assert True\n")
    result = pytester.runpytest_subprocess(*_plugin_args(), "--onboard", "tiny:llama", "-v", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["onboard?tiny:llama?::LOSS001 initial_loss SKIPPED*random weights*",
                                 "onboard?tiny:llama?::PACK001 packing PASSED*"])
    # every check and the repository's own test; skipped: LOSS001 (random weights), MOE001 (no experts),
    # COMPILE001 (the CPU compiles only when asked), FSDP001 (one process unless --nproc)
    result.assert_outcomes(passed=len(CHECKS) - 4 + 1, skipped=4)
    result.stdout.fnmatch_lines([f"*collected {len(CHECKS) + 1} items*"])

    strict = pytester.runpytest_subprocess(*_plugin_args(), "--onboard", "fault:pack-cache", "--onboard-strict",
                                           "-k", "PACK001 or LOAD001", "-p", "no:cacheprovider")
    strict.assert_outcomes(passed=1, failed=1, deselected=len(CHECKS) - 1)
    strict.stdout.fnmatch_lines([f"*collected {len(CHECKS) + 1} items / {len(CHECKS) - 1} deselected / 2 selected*"])
    strict.stdout.fnmatch_lines(["*PACK001 packing: cross-sample attention*", "*diagnosis: FM-PACK-CACHE*",
                                 "*fix packing.no_cache_no_mask: verified (failing because of --onboard-strict)*",
                                 "*leak_no_mask_default_cache = * nats  (<= 1e-05)*"])


def test_a_model_that_cannot_load_is_an_error_and_the_fixture_returns_the_report(pytester):
    pytester.makepyfile(test_fixture="""
def test_gate(onboard_check):
    report = onboard_check("tiny:qwen2", device="cpu", lora_targets="q_proj,v_proj")
    assert report.verdict.value == "READY"
    lora = next(c for c in report.checks if c.code == "LORA001")
    assert lora.measurements["target_modules"].value == "q_proj, v_proj"
""")
    result = pytester.runpytest_subprocess(*_plugin_args(), "--onboard", "tiny:not_an_arch", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=len(CHECKS))
    result.stdout.fnmatch_lines(["*onboard could not check tiny:not_an_arch: unknown architecture*"])


def test_a_repository_gates_on_sharding_through_a_config_file(pytester):
    """FSDP001 in a model repository's CI: `nproc = 2` in the --onboard-config file shards the model over two gloo
    processes; a model whose _no_split_modules names no class of its own is a finding with its fix verified
    (READY_WITH_FIXES), which --onboard-strict fails."""
    pytester.makefile(".toml", onboard='nproc = 2\ndevice = "cpu"\n')
    result = pytester.runpytest_subprocess(*_plugin_args(), "--onboard", "fault:fsdp-wrap", "--onboard-config",
                                           "onboard.toml", "--onboard-strict", "-k", "FSDP001", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, deselected=len(CHECKS) - 1)
    result.stdout.fnmatch_lines(["*FM-FSDP-WRAP*"])
