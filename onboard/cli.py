"""The command line: `onboard check`, `onboard checks`, `onboard explain`. The only module importing typer."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from onboard.harness.result import ExitCode

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Is a model architecture ready to fine-tune? What is broken, and which fix makes it train correctly?",
)
err = Console(stderr=True)

ModelArg = Annotated[
    Optional[str],
    typer.Argument(help="hub id (org/name), local folder, .gguf file, tiny:ARCH, or an embedded model "
                        "(smollm2, gemma3-270m). Default: smollm2."),
]
JsonOpt = Annotated[Optional[str], typer.Option("--json", help="write the JSON report to PATH ('-' for stdout)")]
MarkdownOpt = Annotated[Optional[Path], typer.Option("--markdown", help="write a Markdown report to PATH")]
JunitOpt = Annotated[Optional[Path], typer.Option("--junit", help="write JUnit XML (one testcase per check) to PATH")]
DataOpt = Annotated[Optional[Path], typer.Option("--data", help="chat samples, JSONL of {\"messages\": [...]}")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")]
DtypeOpt = Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")]
AttnOpt = Annotated[Optional[str], typer.Option("--attn", help="attention implementation: eager, sdpa, flex_attention, ...")]
RevisionOpt = Annotated[Optional[str], typer.Option(help="hub revision (branch, tag or commit)")]
RemoteOpt = Annotated[bool, typer.Option("--trust-remote-code", help="allow the model's own code from the hub")]
RandomOpt = Annotated[bool, typer.Option("--random-weights", help="build from the config with random weights")]
TemplateOpt = Annotated[Optional[Path], typer.Option("--chat-template", help="a Jinja chat template file to use instead of the tokenizer's")]
TargetsOpt = Annotated[Optional[str], typer.Option("--lora-targets", help="comma-separated module names (default all-linear)")]
MaxLenOpt = Annotated[int, typer.Option("--max-length", help="truncate samples to this many tokens")]
PackLenOpt = Annotated[int, typer.Option("--pack-length", help="tokens per packed row in the packing check")]
SeedOpt = Annotated[int, typer.Option(help="seed for random weights and probes")]
NoFixOpt = Annotated[bool, typer.Option("--no-fix", help="report only: do not apply and verify fixes")]
UnsafeOpt = Annotated[bool, typer.Option("--unsafe-fixes", help="also apply patches that change what is trained")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="exit 1 on READY_WITH_FIXES too")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="show tracebacks and library logs")]


@app.command()
def check(
    model: ModelArg = None,
    json_path: JsonOpt = None,
    markdown: MarkdownOpt = None,
    junit: JunitOpt = None,
    data: DataOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attn: AttnOpt = None,
    revision: RevisionOpt = None,
    trust_remote_code: RemoteOpt = False,
    random_weights: RandomOpt = False,
    lora_targets: TargetsOpt = None,
    chat_template: TemplateOpt = None,
    max_length: MaxLenOpt = 1024,
    pack_length: PackLenOpt = 512,
    seed: SeedOpt = 0,
    no_fix: NoFixOpt = False,
    unsafe_fixes: UnsafeOpt = False,
    strict: StrictOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Load MODEL once and run the checklist: load, lora, initial_loss, packing, cce.

    Exit codes: 0 READY (or READY_WITH_FIXES without --strict), 1 NOT_READY, 2 bad input or usage,
    3 environment or internal error.
    """
    _quiet_libraries(debug)

    def body() -> ExitCode:
        from onboard.checks import CHECKS
        from onboard.harness.runner import run_checks
        from onboard.harness.session import ModelSession
        from onboard.harness.spec import ModelSpec
        from onboard.reports import json_report, junit as junit_report, markdown as md_report, terminal

        spec = ModelSpec.parse(model, revision=revision, trust_remote_code=trust_remote_code,
                               random_weights=random_weights)
        template = _read_template(chat_template) if chat_template else None
        targets = [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None
        with err.status(f"Loading {spec.display}") as status:
            session = ModelSession(
                spec, device=device, dtype=dtype, attn=attn, data=data, max_length=max_length,
                pack_length=pack_length, lora_targets=targets, chat_template=template, seed=seed,
                progress=lambda msg: status.update(msg),
            )
        err.print(f"Loaded {spec.display} in {session.timings['model_load']:.1f} s; "
                  f"{len(session.examples)} samples from {session.data_path.name}")
        with err.status("Running checks") as status:
            report = run_checks(
                session, CHECKS, fix=not no_fix, unsafe_fixes=unsafe_fixes,
                on_start=lambda c: status.update(f"Running {c.code} {c.name}"),
                on_result=lambda r: err.print(terminal.check_line(r)),
            )
        err.print()
        terminal.render(report, err)
        if json_path:
            json_report.write(report, json_path)
        if markdown:
            md_report.write(report, markdown)
        if junit:
            junit_report.write(report, junit)
        return report.exit_code(strict)

    raise typer.Exit(_guarded(body, debug))


@app.command("checks")
def list_checks() -> None:
    """List the checks with their codes, in the order they run."""
    from rich.table import Table

    from onboard.checks import CHECKS

    table = Table()
    for col in ("code", "name", "requires", "fix", "what it checks"):
        table.add_column(col)
    for c in CHECKS:
        table.add_row(c.code, c.name, ", ".join(c.requires) or "-", c.fix_availability.value, c.summary)
    Console().print(table)


@app.command()
def explain(code: Annotated[str, typer.Argument(help="a check code (PACK001) or name (packing)")]) -> None:
    """Print a check's documentation: what it does, why it matters, failure modes, fix."""
    from onboard.checks import find_check

    try:
        check = find_check(code)
    except KeyError as exc:
        err.print(f"error: {exc.args[0]}")
        raise typer.Exit(ExitCode.USAGE_ERROR) from None
    print(f"{check.code} {check.name}: {check.summary}\n\n{check.documentation()}")


def _read_template(path: Path) -> str:
    from onboard.harness.errors import BadInput

    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read chat template {path}: {exc.strerror}") from exc


def _guarded(body, debug: bool) -> int:
    """Known errors become one line and their exit code; anything else is an internal error (3)."""
    from onboard.harness.errors import OnboardError

    try:
        return int(body())
    except OnboardError as exc:
        if debug:
            traceback.print_exc()
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001
        if debug:
            traceback.print_exc()
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                  highlight=False)
        return int(ExitCode.ENVIRONMENT_ERROR)


def _quiet_libraries(debug: bool) -> None:
    if debug:
        return
    import os
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
