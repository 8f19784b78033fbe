"""COMPILE001: the training step under torch.compile compiles, in one graph, without recompiling for every row
length, and gives eager's loss and adapter gradients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import logging
import re
import time

import torch

from onboard.checks.base import SEQ2SEQ_NOT_PROBED, Check, FixAvailability
from onboard.harness.result import Status
from onboard.harness.samemath import (SameMath, as_trained, first_line, loss_and_grads, modes_of,
                                      randomise_lora_b, restore_modes, shortest_row)
from onboard.harness.training import checkpointing, restore_parameters
from onboard.patches import get_patch, ids, unwrap

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession

ROWS = (4, 3, 2)  # samples per packed row: three rows of different lengths, as training's steps have
CPU_COST = ("on the CPU a real model's compile takes minutes (SmolLM2-135M: 70 s for the first compiled step, "
            "141 s more when the row length changes, on a 2-core machine)")


class CompileCheck(Check):
    """What it does:
    Runs the training forward and backward under torch.compile, as a trainer with torch_compile on does (the
    whole model compiled; `TrainingArguments(torch_compile=True)`, axolotl's `torch_compile: true`), on packed
    rows (the shortest samples, 4, then 3, then 2 per row: three row lengths) with the model as the earlier
    checks left it (LoRA, its fixes, its attention backend). It measures:
    - whether it compiles (the compiler's first error line when not);
    - the loss and every adapter gradient of the compiled step against eager's on the same row, with KERN001's
      rule (onboard.harness.samemath): within compile.loss_rtol in fp32 (gradients 10 times that); in
      bf16/fp16 at most kernels.rounding_factor times as far from the fp32 run as eager is;
    - graph breaks (compile.max_graph_breaks, 0), each named with the user source line where it happened;
    - recompiles: the first new row length recompiles once with dynamic shapes (expected); a third length must
      compile nothing new (compile.max_recompiles, 0), and hitting torch's recompile limit is a finding (the
      frame then runs eagerly, silently);
    - on CUDA, the step time compiled and eager (after compiling; informative).
    Under the setup's gradient checkpointing (on by default on CUDA) the compiled and the eager step both
    checkpoint, as training does, but without the hook transformers puts on the input embeddings to make their
    output require a gradient: non-reentrant checkpointing (what onboard trains with) does not need it, and its
    `requires_grad_()` breaks the graph on every model (measured on tiny Llama: 6 breaks with the hook, 0
    without), a fact about the setup, not the model.
    On CUDA the backend is Inductor (what trains); on the CPU it is dynamo + AOTAutograd (`aot_eager`): the
    graph capture, breaks, recompiles and the autograd graph are the same, Inductor's generated code is not
    judged. It runs when the setup compiles: by default on CUDA; on the CPU only when asked
    (--torch-compile), since a real model's compile there takes minutes.
    The adapters' B matrices are set to small random values for the comparison and put back after.

    Why it matters:
    Compiling is the cheapest speed-up a fine-tune has, and where a new architecture goes wrong without a
    crash: a graph break per layer or a recompile per batch makes the compiled run slower than eager, and past
    the recompile limit torch silently runs the frame eagerly (vllm#27178); compile regressions between torch
    releases change numbers (pytorch#153527); a model's compile-only code path (`is_torchdynamo_compiling()`
    branches) is code its eager tests never ran.

    Failure modes:
    FM-COMPILE-FAIL: the step does not compile (the compiler's first error line): WARN.
    FM-COMPILE-MATH: it compiles to another loss or other gradients: WARN.
    FM-COMPILE-BREAKS: graph breaks or recompiles above the thresholds, with the first break's source line: WARN.
    All are WARN: training without whole-model compile (what `onboard train` does) is correct; compiling this
    model as it is would fail, train other math, or run slower than it should.

    Fix:
    speed.compiled_layers (CUDA): compile each decoder layer on its own instead of the whole model (regional
    compilation), which keeps a break or a failing op outside the layers out of the compiled code; verified by
    re-running the check on the regionally compiled model. On the CPU the lever does not apply and no fix is
    proposed.
    """

    code = "COMPILE001"
    runs_on = "slice"
    version = 3  # 2: not probed for seq2seq (SKIP); 3: under the setup's checkpointing and mixed precision
    name = "compile"
    summary = "the training step under torch.compile compiles in one graph, does not recompile, gives eager's math"
    requires = ("LORA001", "PACK001")
    fix_availability = FixAvailability.SOMETIMES
    needs_labels = True

    def run(self, session: ModelSession):
        on_cuda = session.device.type == "cuda"
        wanted = session.setup.torch_compile
        if wanted is False or (wanted is None and not on_cuda):
            why = "--no-torch-compile" if wanted is False else f"not asked for ({CPU_COST}; --torch-compile runs it)"
            return self.result(Status.SKIP, f"the setup does not compile: {why}")
        if session.seq2seq:
            return self.result(Status.SKIP, SEQ2SEQ_NOT_PROBED)
        model = session.train_model
        regional = ids.SPEED_COMPILED_LAYERS in session.applied
        ckpt = checkpointing(session)
        backend = "inductor" if on_cuda else "aot_eager"
        starts = [sum(ROWS[:i]) for i in range(len(ROWS))]
        batches = [b for b in (shortest_row(session, n, start) for n, start in zip(ROWS, starts)) if b is not None]
        res = self.result(Status.PASS, "")
        res.measure("mode", "decoder layers (speed.compiled_layers)" if regional else "whole model", "",
                    "what is compiled")
        res.measure("backend", backend if not regional else "speed.compiled_layers' own", "",
                    "" if on_cuda else "the CPU: dynamo and AOTAutograd, Inductor's code not judged")
        res.measure("row_lengths", [int(b.input_ids.shape[1]) for b in batches], "tokens")
        res.measure("gradient_checkpointing", ckpt, "", "the setup's: the compiled step runs under it, as training does")
        saved = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        modes = modes_of(model)
        from torch._dynamo.utils import counters

        try:
            randomise_lora_b(model, session.seed)
            model.eval()
            with as_trained(session, model, False):
                plain = SameMath.measure(model, batches[0], session.threshold("compile.loss_rtol"),
                                         session.threshold("kernels.rounding_factor"), res)
            torch._dynamo.reset()
            counters.clear()
            # the transformers model, LoRA layers inside: PEFT's own wrapper breaks the graph at its entry (PEFT 0.21,
            # torch 2.13), which is not the model's and not where the step's time goes
            compiled = model if regional else torch.compile(unwrap(model), backend=backend)
            graphs = []
            # without transformers' input-grad hook: see the docstring
            with _CompilerLog() as log, as_trained(session, model, ckpt, input_grads=False):
                try:
                    began = time.perf_counter()
                    loss, grads, _ = loss_and_grads(compiled, batches[0], model)
                    res.measure("first_step_seconds", round(time.perf_counter() - began, 2), "s",
                                "compiling included, informative")
                    graphs.append(_graphs(counters))
                    for batch in batches[1:]:
                        loss_and_grads(compiled, batch, model)
                        graphs.append(_graphs(counters))
                except Exception as exc:  # noqa: BLE001 - the compiler's error is the finding
                    return self._failed(res, session, regional, exc, log)
                if on_cuda:
                    last = batches[-1]
                    _, _, compiled_s = loss_and_grads(compiled, last, model)
                    _, _, eager_s = loss_and_grads(model, last)
                    res.measure("step_ms_compiled", round(compiled_s * 1000, 2), "ms", "informative")
                    res.measure("step_ms_eager", round(eager_s * 1000, 2), "ms", "informative")
                    res.measure("speedup", round(eager_s / max(compiled_s, 1e-9), 2), "x", "eager / compiled")
        finally:
            restore_parameters(model, saved)
            restore_modes(modes)
        same, rel, grad_rel = plain.judge(res, "compiled", loss, grads)
        breaks = sum(counters["graph_break"].values())
        recompiles = graphs[-1] - graphs[-2] if len(graphs) >= 3 else 0
        max_breaks, max_recompiles = session.threshold("compile.max_graph_breaks"), session.threshold(
            "compile.max_recompiles")
        res.measure("graphs", graphs, "", "graphs compiled so far, after each row length")
        res.measure("graph_breaks", breaks, "breaks", compare="<=", limit=max_breaks)
        res.measure("recompiles_third_length", recompiles, "graphs", compare="<=", limit=max_recompiles)
        if log.breaks:
            res.evidence["graph_breaks"] = log.breaks[:10]
        if log.limit_hit:
            res.evidence["recompile_limit"] = log.limit_hit[0]
        if not same:
            res.status, res.diagnosis = Status.WARN, "FM-COMPILE-MATH"
            res.message = (f"the compiled step gives other math: loss rel {rel:.2g}, gradients rel {grad_rel:.2g} "
                           "against eager")
            return res
        if breaks > max_breaks or recompiles > max_recompiles or log.limit_hit:
            res.status, res.diagnosis = Status.WARN, "FM-COMPILE-BREAKS"
            parts = []
            if breaks > max_breaks:
                first = log.breaks[0] if log.breaks else {"at": "?", "reason": next(iter(counters["graph_break"]), "")}
                parts.append(f"{breaks} graph breaks (first at {first['at']}: {first['reason']})")
            if recompiles > max_recompiles:
                parts.append(f"{recompiles} graphs compiled again for a third row length")
            if log.limit_hit:
                parts.append("torch's recompile limit was hit: that frame now runs eagerly")
            res.message = "; ".join(parts)
            self._propose(res, session, regional)
            return res
        res.message = (f"compiles in {graphs[0]} graph{'s' if graphs[0] != 1 else ''}, no recompile for a third row "
                       f"length; loss rel {rel:.1g}, gradients rel {grad_rel:.1g} against eager")
        if on_cuda:
            res.message += f"; {res.measurements['speedup'].value}x eager's step"
        return res

    def _failed(self, res, session: ModelSession, regional, exc, log):
        res.status, res.diagnosis = Status.WARN, "FM-COMPILE-FAIL"
        res.message = f"torch.compile fails: {first_line(exc, 240)}"
        res.evidence["error"] = str(exc)[:2000]
        if log.breaks:
            res.evidence["graph_breaks"] = log.breaks[:10]
        self._propose(res, session, regional)
        return res

    @staticmethod
    def _propose(res, session: ModelSession, regional) -> None:
        patch = get_patch(ids.SPEED_COMPILED_LAYERS)
        if regional:
            return
        reason = patch.applies_to(session.train_model)
        if reason is None:
            res.proposed_patch = patch.id
        else:
            res.message += f" (regional compilation, the fallback, does not apply here: {reason})"


def _graphs(counters) -> int:
    return int(counters["stats"]["unique_graphs"])


class _CompilerLog(logging.Handler):
    """Dynamo's graph-break records (user source line and reason) and recompile-limit warnings, collected while
    it runs and kept out of the terminal."""

    BREAKS = "torch._dynamo.symbolic_convert.__graph_breaks"

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.breaks: list[dict[str, str]] = []
        self.limit_hit: list[str] = []

    def emit(self, record):
        text = record.getMessage()
        if re.search(r"hit config\.(recompile|cache_size)_limit", text.splitlines()[0] if text else ""):
            self.limit_hit.append(text.splitlines()[0][:300])
            return
        where = re.search(r"^Graph break (?:\([^)]*\) )?in user code at (\S+)", text)
        if where:
            lines = [ln.strip() for ln in text.splitlines()]
            reason = next((ln.removeprefix("Explanation:").strip() for ln in lines if ln.startswith("Explanation:")),
                          next((ln for ln in lines[1:] if ln and not ln.startswith("Graph Break Reason")), ""))
            self.breaks.append({"at": where.group(1), "reason": reason[:300]})

    def __enter__(self):
        import torch._logging

        self._breaks = logging.getLogger(self.BREAKS)
        self._dynamo = logging.getLogger("torch._dynamo")
        torch._logging.set_logs(graph_breaks=True)
        self._propagate = self._breaks.propagate
        self._breaks.propagate = False  # collected here, not printed
        self._breaks.addHandler(self)
        self._dynamo.addHandler(self)
        # torch prints dynamo's warnings through its own handler on this logger: the recompile-limit warning is
        # the finding's evidence here, not terminal noise
        self._printers = [h for h in self._dynamo.handlers if h is not self]
        for handler in self._printers:
            self._dynamo.removeHandler(handler)
        return self

    def __exit__(self, *exc):
        import torch._logging

        self._breaks.removeHandler(self)
        self._dynamo.removeHandler(self)
        self._breaks.propagate = self._propagate
        torch._logging.set_logs()  # torch's own configuration again (its handlers included)
        for handler in self._printers:
            if handler not in self._dynamo.handlers:
                self._dynamo.addHandler(handler)
        return False
