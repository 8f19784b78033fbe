"""The command line: `onboard check`, `train`, `checks`, `explain`. The only module importing typer."""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from onboard.harness.result import ExitCode
from onboard.harness.training import DEFAULTS

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
RankOpt = Annotated[int, typer.Option("--lora-rank", "--lora-r", help="LoRA rank (check and train alike)")]
AlphaOpt = Annotated[int, typer.Option("--lora-alpha", help="LoRA alpha (check and train alike)")]
CkptOpt = Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing",
                                                 help="checkpoint gradients in the training step (default: on with CUDA)")]
PackLenOpt = Annotated[int, typer.Option("--pack-length", help="tokens per packed row in the packing check")]
SeedOpt = Annotated[int, typer.Option(help="seed for random weights and probes")]
NoFixOpt = Annotated[bool, typer.Option("--no-fix", help="report only: do not apply and verify fixes")]
UnsafeOpt = Annotated[bool, typer.Option("--unsafe-fixes", help="also apply patches that change what is trained")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="exit 1 on READY_WITH_FIXES too")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="show tracebacks and library logs")]
ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", help="onboard.toml, pyproject.toml ([tool.onboard]) or an axolotl .yml; default: ./onboard.toml, "
                     "else ./pyproject.toml's [tool.onboard]. Command-line options win over the file")]
NoConfigOpt = Annotated[bool, typer.Option("--no-config", help="ignore ./onboard.toml and ./pyproject.toml")]
HtmlOpt = Annotated[Optional[Path], typer.Option("--html", help="write a self-contained HTML page with plots to PATH")]


@app.command()
def check(
    ctx: typer.Context,
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
    max_length: MaxLenOpt = DEFAULTS.max_length,
    pack_length: PackLenOpt = 512,
    lora_rank: RankOpt = DEFAULTS.lora_rank,
    lora_alpha: AlphaOpt = DEFAULTS.lora_alpha,
    gradient_checkpointing: CkptOpt = DEFAULTS.gradient_checkpointing,
    seed: SeedOpt = 0,
    no_fix: NoFixOpt = False,
    unsafe_fixes: UnsafeOpt = False,
    strict: StrictOpt = False,
    debug: DebugOpt = False,
    config: ConfigOpt = None,
    no_config: NoConfigOpt = False,
    html: HtmlOpt = None,
) -> None:
    """Load MODEL once and run the checklist: load, lora, initial_loss, packing, cce.

    Exit codes: 0 READY (or READY_WITH_FIXES without --strict), 1 NOT_READY, 2 bad input or usage,
    3 environment or internal error.
    """
    _quiet_libraries(debug)
    given = dict(model=model, device=device, dtype=dtype, attn=attn, revision=revision,
                 trust_remote_code=trust_remote_code, random_weights=random_weights, lora_targets=lora_targets,
                 chat_template=chat_template, max_length=max_length, pack_length=pack_length, seed=seed,
                 data=data, no_fix=no_fix, unsafe_fixes=unsafe_fixes, strict=strict, lora_rank=lora_rank,
                 lora_alpha=lora_alpha, gradient_checkpointing=gradient_checkpointing)

    def body() -> ExitCode:
        cfg, o = _with_config(ctx, given, config, no_config)
        model, device, dtype, attn, revision = o["model"], o["device"], o["dtype"], o["attn"], o["revision"]
        trust_remote_code, random_weights, lora_targets = o["trust_remote_code"], o["random_weights"], o["lora_targets"]
        chat_template, max_length, pack_length, seed = o["chat_template"], o["max_length"], o["pack_length"], o["seed"]
        data, no_fix, unsafe_fixes, strict = o["data"], o["no_fix"], o["unsafe_fixes"], o["strict"]
        from onboard.checks import CHECKS
        from onboard.harness.runner import run_checks
        from onboard.harness.session import ModelSession
        from onboard.harness.spec import ModelSpec
        from onboard.harness.thresholds import Thresholds
        from onboard.reports import json_report, junit as junit_report, markdown as md_report, terminal

        spec = ModelSpec.parse(model, revision=revision, trust_remote_code=trust_remote_code,
                               random_weights=random_weights)
        thresholds = Thresholds(cfg.thresholds, str(cfg.path)) if cfg else Thresholds()
        template = _read_template(Path(chat_template)) if chat_template else (cfg.template_text if cfg else None)
        targets = [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None
        with err.status(f"Loading {spec.display}") as status:
            session = ModelSession(
                spec, device=device, dtype=dtype, attn=attn, data=data, max_length=max_length,
                pack_length=pack_length, lora_targets=targets, chat_template=template, seed=seed,
                thresholds=thresholds, lora_rank=o["lora_rank"], lora_alpha=o["lora_alpha"],
                gradient_checkpointing=o["gradient_checkpointing"], progress=lambda msg: status.update(msg),
            )
        err.print(f"Loaded {spec.display} in {session.timings['model_load']:.1f} s; "
                  f"{len(session.examples)} samples from {session.data_path.name}")
        with err.status("Running checks") as status:
            report = run_checks(
                session, CHECKS, fix=not no_fix, unsafe_fixes=unsafe_fixes,
                not_applicable=cfg.not_applicable if cfg else None,
                on_start=lambda c: status.update(f"Running {c.code} {c.name}"),
                on_result=lambda r: err.print(terminal.check_line(r)),
            )
        report.config = cfg.describe() if cfg else None
        report.options["strict"] = strict
        err.print()
        terminal.render(report, err)
        if json_path:
            json_report.write(report, json_path)
        if markdown:
            md_report.write(report, markdown)
        if junit:
            junit_report.write(report, junit)
        if html:
            from onboard.reports import html as html_report

            html_report.write(report, html)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:  # GitHub Actions shows this file on the run's page
            with open(summary, "a", encoding="utf-8") as f:
                f.write(md_report.render(report) + "\n")
        return report.exit_code(strict)

    raise typer.Exit(_guarded(body, debug))


CHECK_SAMPLE = 32  # chats of the training file the pre-training check run uses


@app.command()
def train(
    model: ModelArg = None,
    data: DataOpt = None,
    from_report: Annotated[Optional[Path], typer.Option("--from", help="a saved `onboard check --json` report: "
                           "train with its verified patches instead of running the checks")] = None,
    out: Annotated[Path, typer.Option("--out", help="run folder: adapter, checkpoints, log, report")] = Path("runs/onboard"),
    force: Annotated[bool, typer.Option("--force", help="train a NOT_READY model anyway")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint in --out")] = False,
    epochs: Annotated[float, typer.Option(help="passes over the data")] = 1.0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="optimizer steps; overrides --epochs when > 0")] = -1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="samples per micro-batch (one packed row)")] = 8,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="micro-batches per optimizer step")] = 1,
    lr: Annotated[float, typer.Option(help="peak learning rate (linear decay)")] = 2e-4,
    lora_r: RankOpt = DEFAULTS.lora_rank,
    lora_alpha: AlphaOpt = DEFAULTS.lora_alpha,
    lora_targets: TargetsOpt = None,
    packing: Annotated[bool, typer.Option("--packing/--no-packing", help="pack samples per micro-batch "
                       "(position_ids restart) or pad them")] = True,
    cce: Annotated[str, typer.Option(help="fused CCE loss: auto (on CUDA when verified), on, off")] = "auto",
    gradient_checkpointing: CkptOpt = DEFAULTS.gradient_checkpointing,
    save_steps: Annotated[int, typer.Option("--save-steps", help="checkpoint every N steps")] = 50,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attn: AttnOpt = None,
    max_length: MaxLenOpt = DEFAULTS.max_length,
    revision: RevisionOpt = None,
    trust_remote_code: RemoteOpt = False,
    random_weights: RandomOpt = False,
    unsafe_fixes: UnsafeOpt = False,
    seed: SeedOpt = 0,
    debug: DebugOpt = False,
) -> None:
    """Fine-tune a LoRA on MODEL with the patches its check run verified.

    Without --from the checklist runs first (on the first 32 chats of --data) and a NOT_READY model is
    refused unless --force. Exit codes: 0 trained, 1 refused (NOT_READY), 2 bad input, 3 environment or
    internal error, 130 stopped by Ctrl-C after saving a checkpoint (continue with --resume).
    """
    _quiet_libraries(debug)
    if cce not in ("auto", "on", "off"):
        err.print(f"[bold red]error:[/] --cce must be auto, on or off, not {cce!r}", highlight=False)
        raise typer.Exit(ExitCode.USAGE_ERROR)

    def body() -> int:
        from onboard.harness.errors import BadInput
        from onboard.harness.session import ModelSession
        from onboard.harness.spec import ModelSpec
        from onboard.reports import json_report, terminal
        from onboard.train import TrainOptions, load_check_report
        from onboard.train import train as run_training

        spec = ModelSpec.parse(model, revision=revision, trust_remote_code=trust_remote_code,
                               random_weights=random_weights)
        targets = [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None
        report = load_check_report(from_report) if from_report else None
        if report is not None:
            if report.model.get("id") != spec.display:
                raise BadInput(f"{from_report} is a report on {report.model.get('id')}, not {spec.display}")
            checked = report.options.get("lora_targets", "all-linear")
            checked = None if checked == "all-linear" else list(checked)
            if targets is not None and targets != checked:
                raise BadInput(f"--lora-targets {lora_targets} differs from the checked setup ({checked or 'all-linear'})")
            targets = checked
        with err.status(f"Loading {spec.display}") as status:
            # the session the checks run on is the one training runs on: same LoRA, lengths, flags
            session = ModelSession(
                spec, device=device, dtype=dtype, attn=attn, data=data, max_length=max_length,
                lora_targets=targets, seed=seed, max_examples=None if report else CHECK_SAMPLE,
                lora_rank=lora_r, lora_alpha=lora_alpha, gradient_checkpointing=gradient_checkpointing,
                progress=lambda msg: status.update(msg),
            )
        if report is not None:
            _same_setup(report, session, from_report)
        err.print(f"Loaded {spec.display} in {session.timings['model_load']:.1f} s")
        if report is None:
            from onboard.checks import CHECKS
            from onboard.harness.runner import run_checks

            with err.status("Running checks") as status:
                report = run_checks(session, CHECKS, unsafe_fixes=unsafe_fixes,
                                    on_start=lambda c: status.update(f"Running {c.code} {c.name}"),
                                    on_result=lambda r: err.print(terminal.check_line(r)))
            out.mkdir(parents=True, exist_ok=True)
            json_report.write(report, out / "check_report.json")
            source = {"ran": True, "report": str(out / "check_report.json")}
        else:
            source = {"ran": False, "report": str(from_report)}
            if report.model.get("device", "").split(":")[0] != session.device.type:
                err.print(f"note: {from_report} was checked on {report.model.get('device')}, training runs on "
                          f"{session.device}", highlight=False)
        source["verdict"] = report.verdict.value
        if report.exit_code() != 0:
            findings = "; ".join(f"{c.code} {c.diagnosis or c.status.value}: {c.message}" for c in report.checks
                                 if c.blocking)
            if not force:
                err.print(f"[bold red]refused:[/] {spec.display} is {report.verdict.value} ({findings}). "
                          "Fix it, or pass --force to train anyway.", highlight=False)
                return ExitCode.NOT_READY
            err.print(f"[yellow]--force:[/] training a {report.verdict.value} model ({findings})", highlight=False)
            source["forced"] = True
        patches = report.verified_patches
        err.print(f"Training with patches: {', '.join(patches) or 'none'}")
        options = TrainOptions(
            out=out, data=data, epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
            lr=lr, lora_r=lora_r, lora_alpha=lora_alpha, packing=packing, cce=cce,
            gradient_checkpointing=gradient_checkpointing, save_steps=save_steps, resume=resume, seed=seed)
        result = run_training(session, patches, options, check_source=source, console=err)
        r = result.report
        if result.status == "interrupted":
            err.print(f"stopped after step {result.steps}; checkpoint {r['last_checkpoint']} saved. "
                      "Continue with the same command and --resume.", highlight=False)
            return 130
        err.print(f"[bold green]trained[/] {r['steps']} steps: loss {r['first_loss']:.4f} -> {r['final_loss']:.4f}, "
                  f"{r['tokens_per_s'] or 0:,.0f} tokens/s, peak {r['peak_memory_gib']:.2f} GiB; "
                  f"adapter {r['adapter']}, report {out / 'train_report.json'}", highlight=False)
        return ExitCode.OK

    raise typer.Exit(_guarded(body, debug))


@app.command()
def sweep(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL results, one line per architecture; "
                                      "architectures already in it are skipped (resume)")] = Path("sweep.jsonl"),
    arch: Annotated[Optional[str], typer.Option("--arch", help="comma-separated model types (default: every "
                                                "causal-LM and image-text-to-text architecture)")] = None,
    workers: Annotated[int, typer.Option(help="architectures checked at once, one process each")] = 2,
    timeout: Annotated[float, typer.Option(help="seconds one architecture may take before it is killed")] = 60.0,
    debug: DebugOpt = False,
) -> None:
    """Build every architecture of the installed transformers tiny, with random weights, and run the checks
    on each in its own process; a crash or hang costs only that architecture. Render with `onboard report`.

    Exit codes: 0 the sweep finished (whatever the architectures' verdicts), 2 bad input, 3 internal error.
    """
    _quiet_libraries(debug)

    def body() -> ExitCode:
        from collections import Counter

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from onboard.harness.errors import BadInput
        from onboard.sweep import architectures, read_records, run_sweep

        if workers < 1 or timeout <= 0:
            raise BadInput("--workers must be at least 1 and --timeout positive")
        known = architectures()
        names = [a.strip() for a in arch.split(",") if a.strip()] if arch else list(known)
        archs = {a: known.get(a, "unknown") for a in names}
        done = read_records(out)
        todo = [a for a in archs if a not in done]
        err.print(f"{len(archs)} architectures, {len(archs) - len(todo)} already in {out}; "
                  f"{workers} workers, {timeout:g} s each")
        running: list[str] = []
        start = time.perf_counter()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err) as progress:
            bar = progress.add_task("starting (imports and one warm-up run)", total=len(archs),
                                    completed=len(archs) - len(todo))

            def started(name: str) -> None:
                running.append(name)
                progress.update(bar, description="running " + ", ".join(running))

            def finished(record) -> None:
                running.remove(record.arch)
                progress.update(bar, advance=1, description="running " + ", ".join(running))
                progress.console.print(f"{record.arch:<28} {record.outcome:<17} {record.seconds:6.1f} s  "
                                       f"{record.reason[:90]}", highlight=False)

            run_sweep(archs, out, workers=workers, timeout=timeout, on_start=started, on_done=finished)
        records = read_records(out)
        counts = Counter(r.outcome for a, r in records.items() if a in archs)
        err.print(f"{sum(counts.values())} architectures in {out} ({time.perf_counter() - start:.0f} s this run): "
                  + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
        return ExitCode.OK

    raise typer.Exit(_guarded(body, debug))


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="`onboard check --json` files and `onboard sweep` JSONL files; "
                                               "with --diff exactly two: OLD NEW")],
    markdown: MarkdownOpt = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="write the matrix as a self-contained HTML page")] = None,
    diff: Annotated[bool, typer.Option("--diff", help="compare OLD and NEW (two sweeps, e.g. two transformers "
                                       "releases): what changed per architecture and check")] = False,
    fail_on_regression: Annotated[bool, typer.Option(
        "--fail-on-regression", help="with --diff: exit 1 when an architecture's outcome got worse")] = False,
    debug: DebugOpt = False,
) -> None:
    """Render many runs as one matrix, architecture x check: status, the patch that made a check pass, and
    why a run is not ready; or, with --diff OLD NEW, what changed between two sets of runs. Without
    --markdown or --html the Markdown goes to stdout.

    Exit codes: 0 written, 1 with --fail-on-regression: an outcome got worse, 2 a file is missing or not an
    onboard report, or --diff without exactly two files.
    """

    def body() -> ExitCode:
        from onboard.harness.errors import BadInput
        from onboard.reports import matrix

        if diff:
            from onboard.reports import diff as diff_report

            if len(runs) != 2:
                raise BadInput(f"--diff compares exactly two files (OLD NEW), got {len(runs)}")
            old, new = matrix.load_rows([runs[0]]), matrix.load_rows([runs[1]])
            labels = (runs[0].name, runs[1].name)
            text = diff_report.render_markdown(old, new, *labels)
            page = diff_report.render_html(old, new, *labels) if html else ""
            changes = diff_report.diff(old, new)
            summary = f"{len(changes)} architectures changed, {sum(c.regression for c in changes)} regressed"
            code = ExitCode.NOT_READY if fail_on_regression and any(c.regression for c in changes) else ExitCode.OK
        else:
            rows = matrix.load_rows(runs)
            text = matrix.render_markdown(rows)
            page = matrix.render_html(rows) if html else ""
            summary = f"{len(rows)} runs: " + ", ".join(f"{k} {v}" for k, v in matrix.counts(rows).most_common())
            code = ExitCode.OK
        if markdown:
            markdown.write_text(text, encoding="utf-8")
        if html:
            html.write_text(page, encoding="utf-8")
        if not (markdown or html):
            sys.stdout.write(text)
        err.print(summary)
        return code

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


def _same_setup(report, session, path) -> None:
    """`train --from`: the report must be a check of this training setup (what the checks depend on)."""
    from onboard.harness.errors import BadInput
    from onboard.harness.runner import run_options
    from onboard.harness.training import TRAINED_WITH

    now = run_options(session)
    differ = [f"{k} {report.options[k]!r} checked, {now[k]!r} now" for k in TRAINED_WITH
              if k in report.options and report.options[k] != now[k]]
    if differ:
        raise BadInput(f"{path} checked another setup: " + "; ".join(differ)
                       + " (run onboard check with these options, or train with the checked ones)")


_OPTION_DEFAULTS: dict = {}  # options a config file may set that have no flag


def _with_config(ctx: typer.Context, given: dict, path: Optional[Path], no_config: bool):
    """The config file (explicit, or found in the current folder) and the options with it applied:
    an option given on the command line wins over the file, the file over the default."""
    from onboard.config import discover_config, load_config
    from onboard.harness.errors import BadInput

    if path is None and not no_config:
        path = discover_config(Path.cwd())
    options = {**_OPTION_DEFAULTS, **given}
    if path is None:
        return None, options
    cfg = load_config(path)
    for name, value in cfg.options.items():
        source = ctx.get_parameter_source(name) if name in given else None
        from_cli = source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
        if name == "model" and cfg.kind == "axolotl" and from_cli and given["model"] != value:
            raise BadInput(f"MODEL {given['model']} is not the base_model {value} of {path}: give one or the other")
        if not from_cli:
            options[name] = value
    err.print(f"config: {path}" + (f" (axolotl; not applicable: {', '.join(cfg.not_applicable)})"
                                   if cfg.kind == "axolotl" else ""), highlight=False)
    for note in cfg.notes:
        err.print(f"  note: {note}", highlight=False)
    return cfg, options


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
