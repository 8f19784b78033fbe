"""The command line: `onboard check`, `train`, `checks`, `explain`. The only module importing typer."""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from onboard.harness.result import ExitCode
from onboard.harness.setup import help_of

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # help text is plain: [tool.onboard] is a TOML table, not markup
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Is a model architecture ready to fine-tune? What is broken, and which fix makes it train correctly?",
)
# piped output (CI logs, | tee) is not cut at 80 columns: measurement names and messages stay whole
err = Console(stderr=True, width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else 200)


def _version(value: bool) -> None:
    if value:
        import onboard

        print(f"onboard {onboard.__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print onboard's version and exit")] = False) -> None:
    """Is a model architecture ready to fine-tune? What is broken, and which fix makes it train correctly?"""


def _declared_option(name: str, default, meta: dict) -> inspect.Parameter:
    """The command-line option of a declared field (a Setup field, a TrainOptions field): its flag from its name,
    its type from the declaration, its default and help the declaration's, so an option is declared once."""
    types = meta.get("types") or (type(default),)
    flags = [*meta.get("flags", ()), *meta.get("aliases", ())]
    if not meta.get("flags"):
        flags.insert(0, "--" + name.replace("_", "-"))
    if bool in types and default is None:  # unset means "the default for the device": --x/--no-x
        kind, flags[0] = Optional[bool], f"{flags[0]}/--no-{flags[0][2:]}"
    elif bool in types:
        kind = bool
    else:
        kind = Path if meta.get("path") else str if str in types else types[0]
        kind = Optional[kind] if default is None else kind
    option = typer.Option(*flags, help=meta["help"])
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])


def _takes_declared(command: str):
    """Give a command an option per declared field it takes, after its own parameters: every Setup field a
    command line can set (`check_only` ones only on check), and for train every TrainOptions field. The values
    arrive in the command's **options; `_given` reads the Setup's from the context."""
    def wrap(fn):
        from onboard.harness.setup import FIELDS

        signature = inspect.signature(fn, eval_str=True)  # the own parameters' typer annotations, evaluated
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        declared = [(name, f.default if f.default is not dataclasses.MISSING else None, f.metadata)
                    for name, f in FIELDS.items()
                    if f.metadata["cli"] and (command == "check" or not f.metadata["check_only"])]
        if command == "train":
            import typing

            from onboard.train.options import TRAIN_FIELDS, TrainOptions

            hints = typing.get_type_hints(TrainOptions)  # `int | None` -> int: the option's type
            declared += [(name, f.default, {**f.metadata, "types": tuple(t for t in (typing.get_args(hints[name])
                                                                                   or (hints[name],))
                                                                       if t is not type(None))})
                         for name, f in TRAIN_FIELDS.items() if f.metadata["cli"]]
        extra = [_declared_option(name, default, meta) for name, default, meta in declared
                 if name not in signature.parameters]
        fn.__signature__ = signature.replace(parameters=[*own, *extra])
        return fn

    return wrap


ModelArg = Annotated[Optional[str], typer.Argument(help=help_of("model"))]
JsonOpt = Annotated[Optional[str], typer.Option("--json", help="write the JSON report to PATH ('-' for stdout)")]
MarkdownOpt = Annotated[Optional[Path], typer.Option("--markdown", help="write a Markdown report to PATH")]
JunitOpt = Annotated[Optional[Path], typer.Option("--junit", help="write JUnit XML (one testcase per check) to PATH")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="show tracebacks and library logs")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="only the findings and the verdict (to a file or a "
                                        "pipe, also a line per check as it finishes)")]
ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", help="onboard.toml, pyproject.toml ([tool.onboard]) or an axolotl .yml; default: ./onboard.toml, "
                     "else ./pyproject.toml's [tool.onboard]. Command-line options win over the file")]
NoConfigOpt = Annotated[bool, typer.Option("--no-config", help="ignore ./onboard.toml and ./pyproject.toml")]
HtmlOpt = Annotated[Optional[Path], typer.Option("--html", help="write a self-contained HTML page with plots to PATH")]


@app.command()
@_takes_declared("check")
def check(
    ctx: typer.Context,
    model: ModelArg = None,
    json_path: JsonOpt = None,
    markdown: MarkdownOpt = None,
    junit: JunitOpt = None,
    html: HtmlOpt = None,
    config: ConfigOpt = None,
    no_config: NoConfigOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also print the table of checks, each check's "
                                          "measurements, diagnosis and fix, and the thresholds")] = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    **options,
) -> None:
    """Load MODEL once and run the checklist: LOAD001 load, ATTN001 attention, LORA001 lora, LOSS001
    initial_loss, PACK001 packing, CCE001 cce, GA001 grad_accum, TRAIN001 train_step, KERN001 kernels, MOE001
    experts, COMPILE001 compile (onboard checks lists them, onboard explain CODE documents one).

    Exit codes: 0 READY (or READY_WITH_FIXES without --strict), 1 NOT_READY, 2 bad input or usage,
    3 environment or internal error, 4 NOT_APPLICABLE (the model trains on inputs text data lacks).
    """
    given = _given(ctx)  # every Setup field this command takes, as typed or defaulted

    def body() -> ExitCode:
        cfg, setup = _setup(ctx, given, config, no_config)
        _read_early(setup)  # a bad name or data file is one line in a second, before torch is imported
        _quiet_libraries(debug)
        from onboard.checks import CHECKS
        from onboard.harness.runner import run_checks
        from onboard.reports import json_report, junit as junit_report, markdown as md_report, terminal
        from onboard.train.policy import left_out_by_training

        session = _open_session(setup, cfg, quiet=quiet)
        err.print(f"Loaded {session.spec.display} in {session.timings['model_load']:.1f} s; "
                  f"{len(session.examples)} samples from {session.data_path.name}")
        if session.slice_map is not None:
            err.print(f"Slice for the code-path checks: {session.slice_map.describe()}", style="dim", markup=False)
        elif session.slice_refused:
            err.print(f"No slice, every check on the whole model: {session.slice_reason}", style="dim", markup=False)

        cut = err.is_terminal or bool(os.environ.get("COLUMNS"))  # piped without COLUMNS: messages stay whole
        # a line per check as it finishes; -q keeps them only where no spinner shows progress (CI logs)
        progress = terminal.Progress(CHECKS, err, lines=not quiet or not err.is_terminal, details=not quiet, cut=cut)
        with err.status(progress):
            report = run_checks(session, CHECKS, on_start=progress.start, on_result=progress.done)
        report.config = cfg.describe() if cfg else None
        left_out = left_out_by_training(report.verified_patches, report.model.get("device", "cpu"))
        if quiet:
            terminal.render_short(report, err, left_out=left_out, cut=cut)
        elif verbose:
            err.print()
            terminal.render(report, err, left_out=left_out, cut=cut)
        else:
            terminal.render_summary(report, err, left_out=left_out, cut=cut)
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
        if not quiet:  # after the files are written: where they went
            terminal.render_next(report, err, json_path=json_path,
                                 files={"JSON": json_path, "Markdown": markdown, "JUnit": junit, "HTML": html})
        return report.exit_code(setup.strict)

    raise typer.Exit(_guarded(body, debug))


def _read_early(setup) -> None:
    """What can be judged without torch: the data file is there, and the model name (a typo gets its close
    names). The session parses the data (naming a bad line) before it loads the model."""
    from onboard.harness.data import data_file

    if setup.data:
        data_file(setup.data)
    setup.spec()


def _open_session(setup, cfg, max_examples: int | None = None, quiet: bool = False):
    from onboard.harness.session import ModelSession

    spec = setup.spec()  # a bad model name fails before the spinner
    if quiet or not err.is_terminal:  # piped: no spinner is drawn, so each step (a download) gets a line
        progress = (lambda msg: None) if quiet else (lambda msg: err.print(msg, highlight=False))
        return _with_warnings(ModelSession(setup, max_examples=max_examples, progress=progress,
                                           thresholds_source=str(cfg.path) if cfg else ""))
    with err.status(f"Loading {spec.display}") as status:
        session = ModelSession(setup, max_examples=max_examples, thresholds_source=str(cfg.path) if cfg else "",
                               progress=lambda msg: status.update(msg))
    return _with_warnings(session)


def _with_warnings(session: ModelSession):
    for warning in session.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    return session




@app.command()
@_takes_declared("train")
def train(
    ctx: typer.Context,
    model: ModelArg = None,
    from_report: Annotated[Optional[Path], typer.Option("--from", help="a saved `onboard check --json` report: "
                           "train with its verified patches and its setup instead of running the checks")] = None,
    force: Annotated[bool, typer.Option("--force", help="train a NOT_READY model anyway")] = False,
    config: ConfigOpt = None,
    no_config: NoConfigOpt = False,
    debug: DebugOpt = False,
    **options,
) -> None:
    """Fine-tune a LoRA on MODEL with the patches its check run verified, in the setup the checks ran.

    Without --from the checklist runs first (on the first 32 chats of --data) and a NOT_READY model is
    refused unless --force. With --from, the report's setup is the training's; an option given that differs
    from it is refused, naming it. Exit codes: 0 trained, 1 refused (NOT_READY), 2 bad input, 3 environment or
    internal error, 4 refused (NOT_APPLICABLE: the model needs inputs text data lacks), 130 stopped by Ctrl-C
    after saving a checkpoint (continue with --resume).
    """
    given = _given(ctx)

    def body() -> int:
        from onboard.harness.errors import BadInput
        from onboard.train.options import TRAIN_FIELDS, TrainOptions

        # the training options first (a bad value is one line before any import of torch), the seed the Setup's
        wanted = TrainOptions(**{name: options[name] for name, f in TRAIN_FIELDS.items() if f.metadata["cli"]},
                              data=given.get("data"), seed=given.get("seed", 0))
        if wanted.nproc > 1 and "WORLD_SIZE" not in os.environ:  # the launch users make, made for them
            return _relaunch_under_torchrun(wanted.nproc)
        if int(os.environ.get("RANK", "0")) != 0:
            err.quiet = True  # one progress bar and one summary: rank 0's
        report = None
        if from_report:
            from onboard.train.policy import typed_against_report
            from onboard.train.run import load_check_report

            report = load_check_report(from_report)
            differ = typed_against_report(report, given, _from_cli(ctx, given))
            if differ:  # before minutes of loading: what was typed is not what was checked
                raise BadInput(f"{from_report} checked another setup: " + "; ".join(differ)
                               + " (run onboard check with these options, or train with the checked ones)")
        cfg, setup = _setup(ctx, given, config, no_config, report=report, report_path=from_report)
        _read_early(setup)
        _quiet_libraries(debug)
        from onboard.reports import json_report, terminal
        from onboard.train import refuse_existing_run
        from onboard.train import train as run_training
        from onboard.train.policy import CHECK_SAMPLE, left_out_by_training

        refuse_existing_run(wanted.out, wanted.resume)  # before minutes of loading and checking, not after
        if report is not None and report.model.get("id") != setup.spec().display:
            raise BadInput(f"{from_report} is a report on {report.model.get('id')}, not {setup.spec().display}")
        # the session the checks run on is the one training runs on: same LoRA, lengths, flags
        # with a report no check runs here: no slice to build
        session = _open_session(setup.replace(slice="off") if report is not None else setup, cfg,
                                max_examples=None if report else CHECK_SAMPLE)
        if report is not None:
            _same_setup(report, session, from_report)
        err.print(f"Loaded {session.spec.display} in {session.timings['model_load']:.1f} s")
        examples = None  # the training data, tokenized (here when the row length needs it, else by training)
        if report is None and wanted.packing:  # PACK001 judges a sample at the far end of the longest row packed
            from onboard.harness.data import read_chats
            from onboard.train.run import longest_row_built

            data = given.get("data")
            examples = session.tokenize(read_chats(Path(data) if data else session.data_path))  # trained on below
            built = longest_row_built([len(ex) for ex in examples], wanted.batch_size, wanted.batch_tokens)
            if built > session.longest_row:
                session.setup = session.setup.replace(row_tokens=built)
        if report is None:
            from onboard.checks import CHECKS
            from onboard.harness.runner import run_checks

            cut = err.is_terminal or bool(os.environ.get("COLUMNS"))
            progress = terminal.Progress(CHECKS, err, cut=cut)
            with err.status(progress):
                report = run_checks(session, CHECKS, on_start=progress.start, on_result=progress.done)
            terminal.render_summary(report, err, left_out=left_out_by_training(
                report.verified_patches, session.device, wanted.cce), cut=cut)
            wanted.out.mkdir(parents=True, exist_ok=True)
            json_report.write(report, wanted.out / "check_report.json")
            source = {"ran": True, "report": str(wanted.out / "check_report.json")}
        else:
            source = {"ran": False, "report": str(from_report)}
            if report.model.get("device", "").split(":")[0] != session.device.type:
                err.print(f"note: {from_report} was checked on {report.model.get('device')}, training runs on "
                          f"{session.device}", highlight=False)
        source["verdict"] = report.verdict.value
        if report.verdict.value == "NOT_APPLICABLE":  # nothing --force can do: the text data lacks its inputs
            needs = "; ".join(c.needs for c in report.checks if c.needs)
            err.print(f"[bold red]refused:[/] {session.spec.display} is NOT_APPLICABLE: onboard trains on text, and "
                      f"the model needs {needs}", highlight=False)
            return ExitCode.NOT_APPLICABLE
        if report.exit_code() != 0:
            findings = "; ".join(f"{c.code} {c.diagnosis or c.status.value}" for c in report.checks if c.blocking)
            if not force:
                err.print(f"[bold red]refused:[/] {session.spec.display} is {report.verdict.value} ({findings}); "
                          "fix it, or pass --force to train anyway", highlight=False)
                return ExitCode.NOT_READY
            err.print(f"[yellow]--force:[/] training a {report.verdict.value} model ({findings})", highlight=False)
            source["forced"] = True
        result = run_training(session, report.verified_patches, dataclasses.replace(wanted, seed=setup.seed),
                              check_source=source, console=err, patch_options=report.patch_options,
                              examples=examples, check_report=report)
        r = result.report
        if result.status == "interrupted":
            err.print(f"stopped after step {result.steps}; checkpoint {r['last_checkpoint']} saved. "
                      "Continue with the same command and --resume.", highlight=False)
            return 130
        err.print(f"[bold green]trained[/] {r['steps']} steps: loss {r['first_loss']:.4f} -> {r['final_loss']:.4f}, "
                  f"{r['tokens_per_s'] or 0:,.0f} tokens/s, peak {r['peak_memory_gib']:.2f} GiB; "
                  f"adapter {r['adapter']}, report {wanted.out / 'train_report.json'}", highlight=False)
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
def explain(code: Annotated[str, typer.Argument(help="a check code (PACK001) or name (packing), a failure mode "
                                                     "(FM-PACK-CACHE), a patch id (packing.unpacked), 'thresholds' "
                                                     "or 'verdict'")]) -> None:
    """Print a check's documentation (what it does, why it matters, failure modes, fix) with the thresholds it
    judges against (fp32, bf16 and fp16 defaults) and the failure modes it reports, a failure mode's (what the
    checks say of it, and the fault-catalog models that show it), a patch's, every threshold ('thresholds'), or
    the verdict rule (what READY, READY_WITH_FIXES and NOT_READY mean, and the fallbacks)."""
    from onboard import reference
    from onboard.checks import find_check
    from onboard.harness.result import VERDICT_RULE
    from onboard.patches import PATCHES

    if code.lower() == "verdict":
        print(VERDICT_RULE)
        return
    if code.lower() == "thresholds":
        print(reference.explain_thresholds())
        return
    if code.upper().startswith("FM-"):
        text = reference.failure_mode(code.upper())
        if text is None:
            err.print(f"error: no check reports {code} (onboard explain CODE lists each check's failure modes)")
            raise typer.Exit(ExitCode.USAGE_ERROR)
        print(text)
        return
    if code in PATCHES:
        print(reference.explain_patch(code))
        return
    try:
        check = find_check(code)
    except KeyError as exc:
        err.print(f"error: {exc.args[0]}")
        raise typer.Exit(ExitCode.USAGE_ERROR) from None
    print(reference.explain_check(check))


def _same_setup(report, session: ModelSession, path) -> None:
    """`train --from`: the report must be a check of this training setup (what the checks depend on)."""
    from onboard.harness.errors import BadInput
    from onboard.harness.runner import run_options
    from onboard.harness.setup import TRAINED_WITH

    now = run_options(session)
    differ = [f"{k} {report.options[k]!r} checked, {now[k]!r} now" for k in TRAINED_WITH
              if k in report.options and report.options[k] != now[k]]
    if differ:
        raise BadInput(f"{path} checked another setup: " + "; ".join(differ)
                       + " (run onboard check with these options, or train with the checked ones)")


def _from_cli(ctx: typer.Context, given: dict) -> set[str]:
    """The options the user typed (or set through the environment), not typer's defaults."""
    typed = set()
    for name in given:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            typed.add(name)
    return typed


def _given(ctx: typer.Context) -> dict:
    """The Setup fields among the command's parameters, with the values the user typed or the defaults: read off
    the command itself, so an option cannot be declared and then left out of the setup (a field missing from the
    hand-kept dicts this replaces was silently ignored)."""
    from dataclasses import fields

    from onboard.harness.setup import Setup

    names = {f.name for f in fields(Setup)}
    return {name: value for name, value in ctx.params.items() if name in names}


def _setup(ctx: typer.Context, given: dict, path: Optional[Path], no_config: bool, report=None, report_path=None):
    """The run's Setup: an option typed on the command line wins over the config file (explicit, or found in
    the current folder), the file over the defaults. With a check report (`train --from`) the report's setup
    takes the file's place: what the checks ran is what training runs."""
    from onboard.config import discover_config, load_config
    from onboard.harness.errors import BadInput
    from onboard.harness.setup import TRAINED_WITH, merged

    typed = _from_cli(ctx, given)
    if report is not None:
        recorded = {k: report.options[k] for k in (*TRAINED_WITH, "seed") if k in report.options}
        recorded["model"] = report.model.get("id")
        if recorded.get("lora_targets") == "all-linear":
            recorded["lora_targets"] = None
        return None, merged(recorded, given, typed, str(report_path))
    if path is None and not no_config:
        path = discover_config(Path.cwd())
    if path is None:
        return None, merged({}, given, typed, "command line")
    cfg = load_config(path)
    file_options = cfg.setup_options()
    if cfg.kind == "axolotl" and "model" in typed and given["model"] != file_options.get("model"):
        raise BadInput(f"MODEL {given['model']} is not the base_model {file_options.get('model')} of {path}: "
                       "give one or the other")
    err.print(f"config: {path}" + (f" (axolotl; not applicable: {', '.join(cfg.not_applicable)})"
                                   if cfg.kind == "axolotl" else ""), highlight=False)
    for note in cfg.notes:
        err.print(f"  note: {note}", highlight=False)
    return cfg, merged(file_options, given, typed, str(path))


def _relaunch_under_torchrun(nproc: int) -> int:
    """This `onboard train` command again in `nproc` processes started by torchrun (each reads its rank and the world
    from the environment, as under `accelerate launch` or a torchrun of one's own); its exit code."""
    import subprocess

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if not arg.startswith("--nproc="):
            argv.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "onboard.cli", *argv]
    err.print(f"launching {nproc} processes: torchrun --standalone --nproc_per_node={nproc} -m onboard.cli "
              + " ".join(argv), highlight=False, soft_wrap=True)
    return subprocess.run(cmd).returncode


def _guarded(body, debug: bool) -> int:
    """Known errors become one line and their exit code; anything else is an internal error (3)."""
    from onboard.harness.errors import OnboardError

    try:
        return int(body())
    except OnboardError as exc:
        if debug:
            traceback.print_exc()
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)  # one line, never broken
        return int(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001
        if debug:
            traceback.print_exc()
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                  highlight=False, soft_wrap=True)
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
