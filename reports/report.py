"""The report: run the parity matrix and the timings, and write them as CSV and markdown.

``build(...)`` runs everything and returns a :class:`Report` (pandas frames plus what
failed and what was skipped); ``write(report, out)`` writes ``parity.csv``,
``timings.csv``, ``REPORT.md`` and ``losses/<name>.md``; ``loss_page(...)`` renders
one loss's reference page (``lossparity show`` prints the same page).

Every cell runs through :mod:`reports.matrix`, the engine the tests use. A cell that
raises is recorded as failed with its error; a variant whose implementation is not
registered yet is skipped and listed, never a crash.
"""

from __future__ import annotations

import inspect
import math
import os
import platform
import re
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

import jax_impl
import reference
import torch_impl
from . import matrix, slow_tests, timing
from .system import atomic_write

PARITY_COLUMNS = ["loss", "case", "reduction", "framework", "variant", "dtype", "device",
                  "value_abs_err", "value_rel_err", "grad_abs_err", "grad_rel_err",
                  "value_tol_ratio", "grad_tol_ratio", "rtol", "atol", "passed", "status", "xfail_reason", "error"]
VARIANT_ORDER = ("reference",) + matrix.VARIANTS
FRAMEWORK_OF = {"reference": "numpy", **matrix.FRAMEWORK_OF}
VARIANT_TITLES = {
    "reference": "NumPy reference (forward and analytic VJP)",
    "module": "torch `nn.Module` (autograd)",
    "function": "torch `autograd.Function` (hand-written backward)",
    "autodiff": "JAX `jax.numpy` (autodiff)",
    "custom_vjp": "JAX `jax.custom_vjp` (hand-written backward)",
}
FLOAT_FORMAT = "%.4g"
# pytest turns the reference's RuntimeWarnings into errors (pyproject.toml); so does the report.
REFERENCE_WARNINGS = "reference.*"


# -- running one loss --------------------------------------------------------------------

@dataclass
class LossRun:
    """Everything the parity phase learned about one loss."""

    loss: str
    rows: list = field(default_factory=list)       # parity.csv rows
    failures: list = field(default_factory=list)   # {"id", "status", "detail"} of failed, error and xpass cells
    skipped: list = field(default_factory=list)    # {"loss", "what", "reason"}
    seconds: float = 0.0


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_text(e: BaseException) -> str:
    return _one_line(f"{type(e).__name__}: {e}")


class _reference_warnings_are_errors(warnings.catch_warnings):
    def __enter__(self):
        result = super().__enter__()
        warnings.simplefilter("ignore")
        warnings.filterwarnings("error", category=RuntimeWarning, module=REFERENCE_WARNINGS)
        return result


def run_one(cell: matrix.Cell, seed: int = 0, outputs=None) -> tuple[dict, str]:
    """One matrix cell as a parity.csv row, and the failure detail ('' when it passed).
    ``outputs``: the cell's value and grads (or the exception it raised) computed already."""
    spec = reference.get(cell.loss)
    rtol, atol = matrix.TOLERANCES[cell.dtype]
    error, detail = "", ""
    try:
        with _reference_warnings_are_errors():
            d = matrix.draw(spec, cell.case, cell.reduction, cell.dtype, seed)
            want_value, want_grads = matrix.expected(spec, d)
            if outputs is None:
                runner = matrix.run_torch if cell.framework == "torch" else matrix.run_jax
                outputs = runner(matrix.implementation(cell.variant, cell.loss), spec, d, cell.device)
            if isinstance(outputs, BaseException):
                raise outputs
            value, grads = outputs
        result = matrix.compare(cell, value, grads, want_value, want_grads)
        value_ratio = matrix.tolerance_ratio(value, want_value, rtol, atol)
        grad_ratio = max([matrix.tolerance_ratio(g, w, rtol, atol) for g, w in zip(grads, want_grads)] or [0.0])
        if not result.passed:
            detail = matrix.describe_failure(spec, cell, value, grads, want_value, want_grads, seed,
                                             spec.gradient_names(d.kw))
    except Exception as e:
        nan = math.nan
        result = matrix.Result(cell, nan, nan, nan, nan, rtol, atol, False)
        value_ratio = grad_ratio = nan
        error = _error_text(e)
        detail = f"cell {cell.id} raised {error}\nreproduce with:\n{matrix.reproducer(cell, seed)}"
    row = result.row()
    row.update(value_tol_ratio=value_ratio, grad_tol_ratio=grad_ratio, error=error)
    if cell.xfail_reason:
        row["status"] = "xpass" if result.passed else "xfail"
    else:
        row["status"] = "passed" if result.passed else ("error" if error else "failed")
    if row["status"] == "xpass":
        detail = (f"cell {cell.id} is declared xfail ({cell.xfail_reason}) but agrees with the reference; "
                  "pytest runs it as xfail(strict=True), so it fails there")
    return row, detail


def reference_row(name: str, case: str, reduction: str, seed: int = 0) -> tuple[dict, str]:
    """The analytic VJP against central finite differences in float64, as a parity.csv row."""
    spec = reference.get(name)
    row = {"loss": name, "case": case, "reduction": reduction, "framework": "numpy", "variant": "reference",
           "dtype": "float64", "device": "cpu", "value_abs_err": math.nan, "value_rel_err": math.nan,
           "grad_abs_err": math.nan, "grad_rel_err": math.nan, "value_tol_ratio": math.nan,
           "grad_tol_ratio": math.nan, "rtol": matrix.FD_RTOL, "atol": matrix.FD_ATOL, "passed": False,
           "status": "error", "xfail_reason": "", "error": ""}
    detail = ""
    try:
        with _reference_warnings_are_errors():
            d = matrix.draw(spec, case, reduction, "float64", seed)
            inputs, kw = matrix._as64(d.inputs), matrix._as64(d.kw)
            analytic = reference.vjp(name, *inputs, d.cotangent, **kw)
            numeric = matrix.finite_difference_vjp(name, inputs, kw, d.cotangent)
        errs = [matrix.errors(a, n) for a, n in zip(analytic, numeric)] or [(0.0, 0.0)]
        ok = all(matrix.close(a, n, matrix.FD_RTOL, matrix.FD_ATOL) for a, n in zip(analytic, numeric))
        row.update(grad_abs_err=max(e[0] for e in errs), grad_rel_err=max(e[1] for e in errs),
                   grad_tol_ratio=max([matrix.tolerance_ratio(a, n, matrix.FD_RTOL, matrix.FD_ATOL)
                                       for a, n in zip(analytic, numeric)] or [0.0]),
                   passed=ok, status="passed" if ok else "failed")
        if not ok:
            lines = [f"{name}-{case}-{reduction}: the analytic VJP disagrees with central finite differences "
                     f"(step {matrix.FD_STEP}, rtol={matrix.FD_RTOL}, atol={matrix.FD_ATOL})"]
            for input_name, a, n in zip(spec.differentiable, analytic, numeric):
                if not matrix.close(a, n, matrix.FD_RTOL, matrix.FD_ATOL):
                    lines.append(f"  d/d{input_name}: abs err {matrix.errors(a, n)[0]:.3g}")
                    lines.append(f"    analytic {np.array2string(np.ravel(a)[:6], precision=8)}")
                    lines.append(f"    numeric  {np.array2string(np.ravel(n)[:6], precision=8)}")
            detail = "\n".join(lines)
    except Exception as e:
        row["error"] = _error_text(e)
        detail = f"{name}-{case}-{reduction}: the finite-difference check raised {row['error']}"
    return row, detail


def registered_variants(name: str, variants) -> tuple[list[str], list[dict]]:
    """The variants of ``name`` that are registered, and a skip entry for each that is not."""
    have, skipped = [], []
    for variant in variants:
        try:
            matrix.implementation(variant, name)
            have.append(variant)
        except KeyError:
            skipped.append({"loss": name, "what": f"{FRAMEWORK_OF[variant]} {variant}",
                            "reason": "no implementation registered"})
    return have, skipped


def run_loss(name: str, variants=None, dtypes=None, seed: int = 0, with_reference: bool = True,
             devices=None) -> LossRun:
    """Every cell of one loss, plus its reference rows. ``devices`` None: the CPU, and CUDA where
    a device exists; a list (``["cuda"]``): those, each framework that lacks one listed as skipped."""
    start = time.perf_counter()
    run = LossRun(name)
    spec = reference.get(name)
    variants = list(matrix.VARIANTS if variants is None else variants)
    have, run.skipped = registered_variants(name, variants)
    if devices is not None:
        for framework in dict.fromkeys(matrix.FRAMEWORK_OF[v] for v in have):
            run.skipped += [{"loss": name, "what": f"{framework} on {device}", "reason": f"no {device} device"}
                            for device in devices if not matrix.device_available(framework, device)]
    cells = [c for c in matrix.cells([name], have, dtypes, devices=matrix.DEVICES if devices is None else devices)
             if matrix.device_available(c.framework, c.device)] if have else []
    jax_outputs = {}  # each device's JAX cells as one program (matrix.run_jax_calls)
    for device in dict.fromkeys(c.device for c in cells):
        with _reference_warnings_are_errors():
            jax_outputs.update(matrix.run_jax_cells([c for c in cells if c.framework == "jax" and c.device == device],
                                                    seed))
    for cell in cells:
        row, detail = run_one(cell, seed, jax_outputs.get(cell))
        run.rows.append(row)
        if detail:
            run.failures.append({"id": cell.id, "status": row["status"], "detail": detail})
    if with_reference:
        for case in spec.cases:
            for reduction in spec.case_reductions(case):
                row, detail = reference_row(name, case.name, reduction, seed)
                run.rows.append(row)
                if detail:
                    run.failures.append({"id": f"{name}-{case.name}-{reduction}-numpy.reference-float64-cpu",
                                         "status": row["status"], "detail": detail})
    run.seconds = time.perf_counter() - start
    return run


def _worker_init() -> None:
    """A parity worker: one torch thread (the workers share the cores; the cells are small), and
    JAX's persistent compilation cache, since most of a JAX cell's time is XLA compiling its
    operations one by one. It changes no number; only workers use it, so the timings, run in
    the main process afterwards, always compile afresh."""
    import torch
    torch.set_num_threads(1)
    matrix.use_compilation_cache()


# A worker that holds more than this (bytes) drops JAX's in-memory caches after a loss: the
# executables of every operation at every shape add up to gigabytes over the catalogue.
WORKER_MEMORY = 1_500_000_000


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _run_loss_in_worker(name, *args) -> LossRun:
    run = run_loss(name, *args)
    if _resident_bytes() > WORKER_MEMORY:
        import gc
        import jax
        jax.clear_caches()  # the persistent cache on disk keeps them cheap to get back
        gc.collect()
    return run


def run_parity(losses, variants=None, dtypes=None, seed: int = 0, with_reference: bool = True, jobs: int = 1,
               progress=None, devices=None) -> list[LossRun]:
    """``run_loss`` over ``losses``, in ``jobs`` processes when more than one."""
    progress = progress or (lambda run: None)
    args = (variants, dtypes, seed, with_reference, devices)
    runs = []
    if jobs > 1 and len(losses) > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, len(losses)), mp_context=get_context("spawn"),
                                 initializer=_worker_init) as pool:
            # The largest first, so that no big loss starts last and runs alone.
            by_size = sorted(losses, key=lambda name: -len(matrix.cells([name])))
            futures = {pool.submit(_run_loss_in_worker, name, *args): name for name in by_size}
            for future in as_completed(futures):
                try:
                    run = future.result()
                except Exception as e:  # the worker itself died: every cell of the loss is unaccounted for
                    run = LossRun(futures[future], skipped=[{"loss": futures[future], "what": "parity",
                                                              "reason": f"the worker failed: {_error_text(e)}"}])
                runs.append(run)
                progress(run)
    else:
        for name in losses:
            run = run_loss(name, *args)
            runs.append(run)
            progress(run)
    return sorted(runs, key=lambda r: r.loss)


def auto_jobs(losses, variants=None, dtypes=None) -> int:
    """Worker processes for the parity phase: one for a small matrix (starting a worker costs
    seconds), otherwise one per core, at most four."""
    n = len(matrix.cells(losses, [v for v in (variants or matrix.VARIANTS) if v in matrix.VARIANTS] or None, dtypes))
    return 1 if n < 1500 else max(1, min(4, os.cpu_count() or 1))


# -- the frames ----------------------------------------------------------------------------

def _order(values, known) -> dict:
    index = {v: i for i, v in enumerate(known)}
    return {v: index.get(v, len(index)) for v in values}


def parity_frame(rows: list[dict]) -> pd.DataFrame:
    """parity.csv's rows in a fixed order: loss, then the spec's order of cases and
    reductions, then reference, module, function, autodiff, custom_vjp, then dtype and device."""
    df = pd.DataFrame(rows, columns=PARITY_COLUMNS)
    if df.empty:
        return df
    case_rank, red_rank = {}, {}
    for name in df["loss"].unique():
        spec = reference.get(name)
        case_rank.update({(name, c.name): i for i, c in enumerate(spec.matrix_cases)})
        red_rank.update({(name, c.name, r): i for c in spec.matrix_cases
                         for i, r in enumerate(spec.case_reductions(c))})
    key = pd.DataFrame({
        "loss": df["loss"],
        "case": [case_rank.get((l, c), 1 << 20) for l, c in zip(df["loss"], df["case"])],
        "case_name": df["case"],
        "reduction": [red_rank.get((l, c, r), 1 << 20) for l, c, r in zip(df["loss"], df["case"], df["reduction"])],
        "variant": df["variant"].map(_order(df["variant"].unique(), VARIANT_ORDER)),
        "dtype": df["dtype"].map(_order(df["dtype"].unique(), matrix.DTYPES)),
        "device": df["device"].map(_order(df["device"].unique(), matrix.DEVICES)),
    })
    order = key.sort_values(list(key.columns), kind="stable").index
    return df.loc[order].reset_index(drop=True)


def timings_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=timing.COLUMNS)
    if df.empty:
        return df
    rank = _order(df["variant"].unique(), VARIANT_ORDER)
    return (df.assign(_v=df["variant"].map(rank)).sort_values(["loss", "_v", "device"], kind="stable")
            .drop(columns="_v").reset_index(drop=True))


# Columns written exactly (the shortest repr that reads back the same float), not to FLOAT_FORMAT's
# four digits: a tolerance such as float16's rtol 2^-8 must read back as itself.
EXACT_COLUMNS = ("rtol", "atol")


def write_csv(df: pd.DataFrame, path: Path) -> None:
    exact = {c: df[c].map(lambda v: "" if pd.isna(v) else repr(float(v))) for c in EXACT_COLUMNS if c in df}
    atomic_write(path, df.assign(**exact).to_csv(index=False, float_format=FLOAT_FORMAT, na_rep="",
                                                 lineterminator="\n"))


# -- the report ----------------------------------------------------------------------------

@dataclass
class Report:
    losses: list
    parity: pd.DataFrame
    timings: pd.DataFrame
    failures: dict          # loss -> list of {"id", "status", "detail"}
    skipped: list           # {"loss", "what", "reason"}
    settings: dict
    training: object = None  # reports.training.TrainingResult, or None when it was not run
    slow_tests: object = None  # reports.slow_tests.SlowTests, or None when they were not run


class Progress:
    """The progress of the report's long phases (parity cells, timings, training, pictures).

    On a terminal (``stream.isatty()``) a bar is redrawn in place on ``stream`` and the log
    lines print above it; elsewhere (a pipe, a CI log, a file) each update is one plain line
    given to ``log``. Only the standard library: no new dependency."""

    def __init__(self, stream=None, log=None, tty: bool | None = None, width: int = 28):
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty()) if tty is None else tty
        self._log = log or (lambda msg: print(msg, file=stream or sys.stdout, flush=True))
        self.width = width
        self.name, self.total, self.unit, self.done, self.start, self._drawn = "", 0, "", 0, 0.0, False

    def phase(self, name: str, total: int, unit: str) -> None:
        self.close()
        self.name, self.total, self.unit, self.done, self.start = name, max(0, int(total)), unit, 0, time.perf_counter()
        if self.tty:
            self._draw()

    def log(self, msg: str) -> None:
        if self.tty:
            self._clear()
            print(msg, file=self.stream, flush=True)
            if self.name:
                self._draw()
        else:
            self._log(msg)

    def advance(self, n: int = 1, note: str = "") -> None:
        before, self.done = self.done, self.done + n
        if self.tty:
            if note:
                self.log(note)  # which draws the bar again below the line
            else:
                self._draw()
        elif note or self.done >= self.total or self._tenths(before) != self._tenths(self.done):
            self._log(f"{self.status()}  {note}".rstrip())  # without a note: every tenth of the way

    def _tenths(self, done: int) -> int:
        return 10 * done // self.total if self.total else 0

    def status(self) -> str:
        elapsed = time.perf_counter() - self.start
        done, total = min(self.done, self.total), self.total
        text = f"{self.name} {done}/{total} {self.unit}"
        if total:
            text += f" {100 * done / total:3.0f}%"
        text += f" {_clock(elapsed)}"
        if 0 < done < total:
            text += f", ~{_clock(elapsed / done * (total - done))} left"
        return text

    def close(self) -> None:
        if self.tty and self._drawn:
            self._clear()
        self.name = ""

    def _draw(self) -> None:
        filled = int(self.width * min(self.done, self.total) / self.total) if self.total else 0
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r\x1b[2K[{bar}] {self.status()}")
        self.stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        self.stream.write("\r\x1b[2K")
        self.stream.flush()
        self._drawn = False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


def _parity_units(losses, impl_variants, dtypes, devices, with_reference: bool) -> int:
    """How many parity.csv rows the parity phase will make (the progress bar's total)."""
    devs = [d for d in (matrix.DEVICES if devices is None else devices)
            if any(matrix.device_available(f, d) for f in matrix.FRAMEWORKS)]
    total = sum(1 for c in matrix.cells(losses, impl_variants or None, dtypes, devices=devs)
                if matrix.device_available(c.framework, c.device))
    if with_reference:
        total += sum(len(reference.get(n).case_reductions(c)) for n in losses for c in reference.get(n).cases)
    return total


def build(losses=None, variants=None, dtypes=None, seed: int = 0, quick: bool = False, jobs: int | None = None,
          with_timings: bool = True, log=print, devices=None, with_training: bool = True,
          progress: Progress | None = None) -> Report:
    """Run the parity matrix (and the reference against finite differences), the timings and the
    training-level parity (``reports.training``: 2 epochs under ``quick``, else the full run).

    ``devices`` None runs on the CPU and on CUDA where present; a list limits the parity cells
    and the timings to those devices (the training runs on the CPU). ``progress`` shows each
    phase's progress (default: plain lines through ``log``)."""
    bar = progress or Progress(log=log)
    losses = sorted(losses or reference.names())
    with_reference = variants is None or "reference" in variants
    impl_variants = None if variants is None else [v for v in variants if v != "reference"]
    jobs = auto_jobs(losses, impl_variants, dtypes) if jobs is None else max(1, jobs)
    bar.log(f"parity: {len(losses)} losses, {'1 process' if jobs == 1 else f'{jobs} processes'}")
    width = max(map(len, losses)) if losses else 0

    def on_loss(run: LossRun):
        counts = pd.Series([r["status"] for r in run.rows], dtype=object).value_counts()
        summary = ", ".join(f"{counts[s]} {s}" for s in ("passed", "failed", "error", "xfail", "xpass") if s in counts)
        note = f"; skipped {', '.join(s['what'] for s in run.skipped)}" if run.skipped else ""
        bar.advance(len(run.rows), f"  {run.loss:<{width}}  {len(run.rows):4d} rows: {summary or 'nothing run'}"
                                   f"{note}  ({run.seconds:.1f} s)")

    start = time.perf_counter()
    bar.phase("parity", _parity_units(losses, impl_variants, dtypes, devices, with_reference), "cells")
    runs = run_parity(losses, impl_variants, dtypes, seed, with_reference, jobs, on_loss, devices)
    bar.close()
    bar.log(f"parity: {time.perf_counter() - start:.1f} s")
    rows, failures, skipped = [], {}, []
    for run in runs:
        rows += run.rows
        skipped += run.skipped
        if run.failures:
            failures[run.loss] = run.failures

    timing_rows, timings_load = [], None
    if with_timings:
        timings_load = _load()
        start, cpu = time.perf_counter(), time.process_time()
        budget = timing.QUICK if quick else timing.NORMAL
        bar.log(f"timings: {len(losses)} losses, float32, {'quick' if quick else 'moderate'} sizes")
        bar.phase("timings", len(losses), "losses")
        for name in losses:
            t_rows, t_skipped = timing.time_loss(name, impl_variants, budget, seed, devices=devices)
            timing_rows += t_rows
            skipped += t_skipped  # unregistered variants are not timed; the parity phase listed them already
            bar.advance(1, "" if bar.tty else name)
        bar.close()
        bar.log(f"timings: {time.perf_counter() - start:.1f} s ({time.process_time() - cpu:.1f} s of CPU)")
    trained = run_training(quick, seed, bar) if with_training else None
    settings = {"seed": seed, "quick": quick, "dtypes": list(dtypes or matrix.DTYPES), "load": timings_load,
                "variants": list(variants or VARIANT_ORDER),
                "devices": [d for d in (matrix.DEVICES if devices is None else devices)
                            if any(matrix.device_available(f, d) for f in ("torch", "jax"))]}
    return Report(losses, parity_frame(rows), timings_frame(timing_rows), failures, skipped, settings, trained)


TRAINING_QUICK_EPOCHS = 2


def run_training(quick: bool, seed: int = 0, bar: Progress | None = None):
    """The training-level parity of ``reports.training`` (float64, and float32 for information;
    ``quick``: 2 epochs in float64 only). None, with a log line, when scikit-learn is missing."""
    bar = bar or Progress()
    try:
        from . import training
    except ImportError as e:  # pragma: no cover - scikit-learn is in the test extra
        bar.log(f"training: skipped ({e})")
        return None
    dtypes = (training.PARITY_DTYPE,) if quick else (training.PARITY_DTYPE, "float32")
    epochs = TRAINING_QUICK_EPOCHS if quick else training.EPOCHS
    bar.log(f"training: LeNet-style CNN on the 8x8 digits, {epochs} epochs, {', '.join(dtypes)}")
    start = time.perf_counter()
    bar.phase("training", len(dtypes) * (len(training.TORCH_VARIANTS) + len(training.JAX_VARIANTS)), "runs")
    try:
        result = training.run(epochs=epochs, seed=seed, dtypes=dtypes, log=lambda msg: bar.advance(1, msg))
    except ImportError as e:  # pragma: no cover - scikit-learn is in the test extra
        bar.close()
        bar.log(f"training: skipped ({e})")
        return None
    bar.close()
    bar.log(f"training: {time.perf_counter() - start:.1f} s; "
            f"{'within' if result.passed else 'OUTSIDE'} the tolerance {training.TOLERANCE:g}")
    return result


def _load() -> tuple[int, float] | None:
    """The CPU count and the one-minute load average when the timings start: they tell how
    much the numbers can be trusted on a shared machine."""
    try:
        return os.cpu_count() or 1, os.getloadavg()[0]
    except OSError:
        return None


def per_loss_frame(report: Report) -> pd.DataFrame:
    """One row per loss: its cells by status, the reference against finite differences, the
    worst gradient error over its tolerance (``lossparity report --format csv|json``)."""
    parity, rows = report.parity, []
    for name in report.losses:
        sub = parity[(parity["loss"] == name) & (parity["variant"] != "reference")] if len(parity) else parity
        ref = parity[(parity["loss"] == name) & (parity["variant"] == "reference")] if len(parity) else parity
        st = sub["status"].value_counts() if len(sub) else pd.Series(dtype=int)
        worst = float(sub["grad_tol_ratio"].max()) if len(sub) else math.nan
        rows.append({"loss": name, "family": reference.get(name).family, "cells": len(sub),
                     "passed": int(st.get("passed", 0)), "failed": int(st.get("failed", 0) + st.get("error", 0)),
                     "xfail": int(st.get("xfail", 0)), "xpass": int(st.get("xpass", 0)),
                     "reference_passed": int((ref["status"] == "passed").sum()) if len(ref) else 0,
                     "reference_run": len(ref), "worst_grad_err_over_tol": round(worst, 6) if worst == worst else None})
    return pd.DataFrame(rows, columns=["loss", "family", "cells", "passed", "failed", "xfail", "xpass",
                                       "reference_passed", "reference_run", "worst_grad_err_over_tol"])


def counts(parity: pd.DataFrame) -> dict:
    cells = parity[parity["variant"] != "reference"]
    ref = parity[parity["variant"] == "reference"]
    status = cells["status"].value_counts()
    return {"cells": len(cells), "passed": int(status.get("passed", 0)),
            "failed": int(status.get("failed", 0) + status.get("error", 0)), "xfail": int(status.get("xfail", 0)),
            "xpass": int(status.get("xpass", 0)), "errors": int(status.get("error", 0)),
            "reference": len(ref), "reference_passed": int((ref["status"] == "passed").sum())}


def write(report: Report, out: Path, log=print, progress: Progress | None = None, with_pictures: bool = True
          ) -> list[Path]:
    """Write parity.csv, timings.csv, training.csv (when the training ran), the pictures
    (``figures/*.png``, unless ``with_pictures`` is false), REPORT.md and losses/<name>.md into ``out``."""
    out = Path(out)
    written = [out / "parity.csv", out / "timings.csv"]
    write_csv(report.parity, written[0])
    write_csv(report.timings, written[1])
    if report.training is not None:
        written.append(out / "training.csv")
        atomic_write(written[-1], report.training.curves.to_csv(index=False, float_format="%.10g", na_rep="",
                                                                lineterminator="\n"))
    if report.slow_tests is not None:
        written.append(out / "slow_tests.csv")
        write_csv(report.slow_tests.tests, written[-1])
    if with_pictures:
        pictures = draw_pictures(report, out, progress or Progress(log=log))
    else:
        pictures = Pictures(notes=dict.fromkeys(("parity", "timings", "scaling", "training"), "--no-pictures"))
        pictures.scaling_source = _scaling_frame(report, out)[1]
    written += [out / p for p in pictures.files.values()]
    written.append(out / "REPORT.md")
    atomic_write(written[-1], render(report_page(report, pictures, speed_targets(report, out)), "markdown"))
    for name in report.losses:
        path = out / "losses" / f"{name}.md"
        atomic_write(path, render(loss_page(name, report.parity, report.timings, report.failures.get(name, []),
                                            [s for s in report.skipped if s["loss"] == name],
                                            pictures=pictures.for_loss(name)), "markdown"))
        written.append(path)
    return written


# -- the pictures ------------------------------------------------------------------------------

FIGURES = "figures"  # the pictures' folder, inside the report's folder


@dataclass
class Pictures:
    """The PNGs drawn for a report: ``files`` maps a key (``"parity"``, ``"timings"``,
    ``"scaling"``, ``"training"``, ``("parity", loss)``, ``("scaling", loss)``) to the path
    relative to the report's folder; ``notes`` says why a picture is missing."""

    files: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    scaling_source: str = ""

    def for_loss(self, name: str) -> dict:
        return {kind: "../" + self.files[(kind, name)] for kind in ("parity", "scaling") if (kind, name) in self.files}


def _scaling_frame(report: Report, out: Path) -> tuple[pd.DataFrame | None, str]:
    """The size sweep: the report's own (``report.scaling``) or ``scaling.csv`` in ``out``."""
    df = getattr(report, "scaling", None)
    if isinstance(df, pd.DataFrame) and not df.empty:
        return df, "this run's size sweep"
    path = out / "scaling.csv"
    if path.exists():
        return pd.read_csv(path), "`scaling.csv` found in the report's folder"
    return None, ""


def _curves(scaling: pd.DataFrame | None) -> pd.DataFrame | None:
    """The sweep's rows that draw a curve: a loss's sweep over two or more points (the report
    times every other loss at a single size, for the speed targets)."""
    if scaling is None or scaling.empty:
        return scaling
    keys = ["loss", "sweep"] if "sweep" in scaling else ["loss"]
    return scaling[scaling.groupby(keys)["elements"].transform("nunique") > 1]


def speed_targets(report: Report, out: Path) -> pd.DataFrame:
    """``bench.speed_targets`` of the report's timings and its size sweep (``_scaling_frame``)."""
    from . import bench
    return bench.speed_targets(report.timings, _scaling_frame(report, out)[0])


def draw_pictures(report: Report, out: Path, bar: Progress | None = None) -> Pictures:
    """Every picture of the report; a picture that cannot be drawn is noted, never raised."""
    from . import plots
    bar = bar or Progress()
    pics = Pictures()
    if not plots.available():
        for key in ("parity", "timings", "scaling", "training"):
            pics.notes[key] = "matplotlib is not installed (`pip install matplotlib`)"
        return pics
    scaling, pics.scaling_source = _scaling_frame(report, out)
    scaling = _curves(scaling)
    jobs = [("parity", lambda p: plots.parity_heatmap(report.parity, p, "float32", matrix.TOLERANCES["float32"][0]),
             "parity_float32.png"),
            ("timings", lambda p: plots.timing_ratios(report.timings, p), "timing_ratios.png"),
            ("scaling", lambda p: plots.scaling(scaling, p), "scaling.png"),
            ("training", lambda p: plots.training_curves(report.training.curves, p, report.training.settings["tolerance"],
                                                         report.training.settings["parity_dtype"])
             if report.training is not None else None, "training.png")]
    swept = set(scaling["loss"]) if scaling is not None and "loss" in scaling else set()
    for name in report.losses:
        jobs.append((("parity", name), lambda p, n=name: plots.loss_heatmap(n, report.parity, p), f"parity_{name}.png"))
        if name in swept:
            jobs.append((("scaling", name), lambda p, n=name: plots.scaling(scaling, p, losses=[n]),
                         f"scaling_{name}.png"))
    bar.phase("pictures", len(jobs), "PNGs")
    start = time.perf_counter()
    for key, draw, filename in jobs:
        try:
            if draw(out / FIGURES / filename) is not None:
                pics.files[key] = f"{FIGURES}/{filename}"
            else:
                pics.notes[key] = "nothing to draw"
        except Exception as e:
            pics.notes[key] = f"the picture failed: {_error_text(e)}"
            bar.log(f"pictures: {key}: {pics.notes[key]}")
        bar.advance(1)
    bar.close()
    bar.log(f"pictures: {len(pics.files)} PNGs in {time.perf_counter() - start:.1f} s")
    return pics


# -- documents: a list of blocks rendered as markdown or as plain text ----------------------

def heading(level: int, text: str):
    return ("heading", level, text)


def para(text: str):
    return ("para", text)


def table(rows, headers):
    return ("table", rows, headers)


def code(text: str, lang: str = ""):
    return ("code", text, lang)


def image(alt: str, path: str):
    """A picture (markdown only: the text format leaves it out)."""
    return ("image", alt, path)


def details(summary: str, blocks: list):
    """Blocks folded under a one-line summary (HTML ``<details>`` in markdown; plain in text)."""
    return ("details", summary, blocks)


def render(blocks: list, fmt: str = "markdown") -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            _, level, text = block
            if fmt == "markdown":
                out.append(f"{'#' * level} {text}")
            else:
                text = _plain(text)
                out.append(text + ("\n" + ("=" if level == 1 else "-" if level == 2 else "~") * len(text)
                                   if level <= 3 else ""))
        elif kind == "para":
            out.append(block[1] if fmt == "markdown" else _plain(block[1]))
        elif kind == "table":
            _, rows, headers = block
            if not rows:
                continue
            if fmt == "markdown":
                rows = [[_md_cell(v) for v in row] for row in rows]
                out.append(tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True))
            else:
                rows = [[_plain(str(v)) for v in row] for row in rows]
                out.append(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
        elif kind == "code":
            _, text, lang = block
            if fmt == "markdown":
                out.append(f"```{lang}\n{text.rstrip()}\n```")
            else:
                out.append("\n".join("    " + line if line else "" for line in text.rstrip().splitlines()))
        elif kind == "image":
            _, alt, path = block
            if fmt == "markdown":
                out.append(f"![{alt}]({path})")
        elif kind == "details":
            _, summary, inner = block
            body = render(inner, fmt).rstrip("\n")
            if fmt == "markdown":
                out.append(f"<details>\n<summary>{summary}</summary>\n\n{body}\n\n</details>")
            else:
                out.append(f"{_plain(summary)}:\n\n{body}")
    return "\n\n".join(out) + "\n"


def _md_text(text: str) -> str:
    """Plain text (a spec's sentence) safe in markdown: a ``*`` is not emphasis."""
    return str(text).replace("*", "\\*")


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", "<br>")


def _plain(text: str) -> str:
    """Markdown links and emphasis as plain text."""
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    return text.replace("**", "")


def rst_to_markdown(doc: str) -> str:
    """A docstring's reStructuredText as markdown: ``.. math::`` blocks as ``$$``, :math:`x` as
    ``$x$``, double backquotes as code."""
    lines, out, i = doc.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)\.\. math::\s*(.*)$", line)
        if m:
            indent, body = len(m.group(1)), [m.group(2)] if m.group(2).strip() else []
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                if not lines[i].strip() and (i + 1 >= len(lines) or
                                             len(lines[i + 1]) - len(lines[i + 1].lstrip()) <= indent):
                    break
                body.append(lines[i].strip())
                i += 1
            # One line: inside a multi-line $$ block a line that starts with "+" or "-" would
            # be read as a list item, and "\," as an escaped comma, before the math is seen.
            out += ["", "$$ " + " ".join(b for b in body if b) + " $$", ""]
            continue
        line = re.sub(r":math:`([^`]+)`", r"$\1$", line)
        line = re.sub(r"``([^`]+)``", r"`\1`", line)
        out.append(line)
        i += 1
    return "\n".join(out).strip()


def _fmt(x, digits: int = 3) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, (float, np.floating)):
        if math.isinf(x):
            return "inf"
        if x == 0:
            return "0"
        return f"{x:.{digits}g}"
    return str(x)


def _ms(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _value(v) -> str:
    if isinstance(v, (reference.Sampled, reference.PerFramework)):
        return v.description
    return repr(v)


# -- REPORT.md -----------------------------------------------------------------------------

def _versions() -> str:
    import jax
    import torch
    parts = [f"Python {platform.python_version()}", f"numpy {np.__version__}", f"torch {torch.__version__}",
             f"jax {jax.__version__}"]
    try:
        import optax
        parts.append(f"optax {optax.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


def worst_cells(parity: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The cells whose gradient came closest to (or went past) its tolerance: the largest
    ``grad_tol_ratio``, then ``grad_rel_err``; cells that raised first."""
    cells = parity[parity["variant"] != "reference"]
    return cells.sort_values(["grad_tol_ratio", "grad_rel_err"], ascending=False, na_position="first",
                             kind="stable").head(n)


def _worst_rows(df: pd.DataFrame, link: bool = True) -> list:
    """The worst cells' rows (``WORST_HEADERS``); ``link`` False (a loss's own page) leaves the
    loss column out. Each error stands with its tolerance in one cell, "8.4e-6 (1e-5)", and the
    device in the implementation's, so that the table fits a page without wrapping numbers."""
    return [([f"[{r.loss}](losses/{r.loss}.md)"] if link else []) +
            [r.case, r.reduction, f"{r.framework}.{r.variant} {r.dtype} {r.device}", _fmt(r.grad_tol_ratio),
             f"{_sci(r.grad_abs_err)} ({_sci(r.atol)})", f"{_sci(r.grad_rel_err)} ({_sci(r.rtol)})",
             r.status + (f" ({_one_line(r.error, 80)})" if r.error else "")]
            for r in df.itertuples()]


def _sci(x) -> str:
    """A short number: 8.44e-06 as 8.44e-6."""
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), _fmt(x))


WORST_HEADERS = ["loss", "case", "reduction", "implementation, dtype, device", "err / tol", "grad abs err (atol)",
                 "grad rel err (rtol)", "status"]


def _timing_rows(df: pd.DataFrame, with_loss: bool = True) -> list:
    rows = []
    for r in df.itertuples():
        row = [r.loss] if with_loss else []
        row += [f"{r.framework}.{r.variant}", r.device, r.shapes, _ms(r.fwd_ms), _ms(r.fwd_bwd_ms), _ms(r.compile_ms),
                r.builtin, _ms(r.builtin_fwd_ms), _ms(r.builtin_fwd_bwd_ms), _fmt(r.ratio_to_builtin, 2),
                _fmt(getattr(r, "floor_ratio", math.nan), 2), _one_line(r.note, 120) if isinstance(r.note, str) else ""]
        rows.append(row)
    return rows


TIMING_HEADERS = ["implementation", "device", "shapes", "fwd ms", "fwd+bwd ms", "compile ms", "built-in",
                  "built-in fwd ms", "built-in fwd+bwd ms", "ratio", "floor", "note"]
TIMING_NOTE = ("float32, the default case, `reduction=\"mean\"`, milliseconds. Medians: torch by "
               "blocks of `torch.utils.benchmark.Timer.timeit` (all of torch's threads) after a warm-up; JAX "
               "by blocks of calls to what `jax.jit(...).lower(...).compile()` returned, after a warm-up, each "
               "call ending in `block_until_ready`; ours and the built-in's blocks interleaved, each after an "
               "untimed block of half as many calls of its own. `compile ms` is "
               "that `.lower(...).compile()` (tracing included) for the forward+backward, measured apart from the "
               "runs; on a torch `module` row it is "
               "`torch.compile` of the module (the first compiled fwd+bwd less the later ones' median; "
               "timings.csv has the compiled fwd+bwd in `compiled_fwd_bwd_ms`). `ratio` is our fwd+bwd over "
               "the built-in's; `floor`, where torch's built-in is one pair of ATen kernels, those kernels' "
               "fwd+bwd in a minimal Python `autograd.Function` over the built-in's: the least ratio a Python "
               "Function reaches (reports/floor.py; `floor_fwd_bwd_ms` and `floor_ratio` in timings.csv). Timed "
               "with glibc keeping freed memory. timings.csv also holds each median's spread (`*_iqr_ms`), the "
               "peak memory (`peak_bytes`, `memory_source`), the bytes moved and GB/s beside a copy of the same "
               "bytes (`gbps`, `copy_gbps`), and the machine (`cpu_model`, `threads`, `gpu`, `allocator`); see "
               "reports/timing.py.")


def report_page(report: Report, pictures: Pictures | None = None, targets: pd.DataFrame | None = None) -> list:
    parity, timings = report.parity, report.timings
    pictures = pictures or Pictures()
    c = counts(parity) if not parity.empty else counts(pd.DataFrame(columns=PARITY_COLUMNS))
    s = report.settings
    files = ["[parity.csv](parity.csv)", "[timings.csv](timings.csv)"]
    if report.training is not None:
        files.append("[training.csv](training.csv)")
    if report.slow_tests is not None:
        files.append("[slow_tests.csv](slow_tests.csv)")
    if pictures.scaling_source:
        files.append("[scaling.csv](scaling.csv)")
    blocks = [heading(1, "lossparity report"),
              para(f"Seed {s['seed']}{' (quick)' if s['quick'] else ''}; dtypes {', '.join(s['dtypes'])}; "
                   f"implementations {', '.join(s['variants'])}; devices {', '.join(s['devices'])}. "
                   f"{_versions()}. Files: {', '.join(files)}."),
              para("")]  # the contents, filled in at the end

    blocks.append(heading(2, "Summary"))
    n_skipped_losses = len({k["loss"] for k in report.skipped if k["what"] != "timings"})
    summary = [["losses", len(report.losses)],
               ["matrix cells run", c["cells"]],
               ["passed", c["passed"]],
               ["failed", f"{c['failed']}" + (f" ({c['errors']} raised)" if c["errors"] else "")],
               ["xfail (declared on the spec)", c["xfail"]]]
    if c["xpass"]:
        summary.append(["xpass (declared xfail, but agree: strict xfail fails in pytest)", c["xpass"]])
    summary += [["reference VJP vs finite differences",
                 f"{c['reference_passed']} of {c['reference']} passed" if c["reference"] else "not run"],
                ["skipped implementations", f"{sum(1 for k in report.skipped if k['what'] != 'timings')}"
                                            f" (in {n_skipped_losses} losses)"]]
    if report.slow_tests is not None and not report.slow_tests.problem:
        summary.append(["slow tests (outside `make test`)", report.slow_tests.summary()])
    blocks.append(table(summary, ["", "count"]))

    tol_rows = [[dt, _fmt(rt), _fmt(at)] for dt, (rt, at) in matrix.TOLERANCES.items() if dt in s["dtypes"]]
    tol_rows.append(["reference vs finite differences (float64, step "
                     f"{_fmt(matrix.FD_STEP)})", _fmt(matrix.FD_RTOL), _fmt(matrix.FD_ATOL)])
    blocks += [heading(3, "Tolerances"),
               para("A cell passes where every element of the value and of each gradient satisfies "
                    "|actual - expected| <= atol + rtol * |expected| (torch.testing's defaults for float64 and "
                    "float32; for float16 and bfloat16 derived from the format's unit roundoff u: rtol = 8u, "
                    "atol = u); "
                    "`err / tol` is the largest ratio of the two sides, so 1 is the edge."),
               table(tol_rows, ["dtype", "rtol", "atol"])]

    blocks.append(heading(3, "Parity at a glance"))
    if "parity" in pictures.files:
        rtol = _fmt(matrix.TOLERANCES["float32"][0])
        blocks += [para(f"The worst relative gradient error of each loss and implementation over its float32 cells "
                        f"(every case and reduction), on a log scale; the red mark on the colour bar is float32's "
                        f"rtol ({rtol}). A cell above it still passes where its error is within atol: the relative "
                        "error is unbounded where the expected gradient is about zero (a saturated loss), which is "
                        "why the matrix judges `err / tol`. A red cross marks a loss and implementation with a "
                        "failed cell; each loss's page has the cell-by-cell picture."),
                   image("worst relative gradient error, loss by implementation, float32", pictures.files["parity"])]
    else:
        blocks.append(para(f"No picture: {pictures.notes.get('parity', 'not drawn')}"
                           + (" (this run has no float32 cells)." if "float32" not in s["dtypes"] else ".")))

    if c["cells"]:
        blocks += [heading(3, "Worst cells by gradient error"),
                   para("Ranked by `err / tol`, the gradient's error measured against its tolerance (what decides "
                        "pass or fail); the relative error stands beside it. A relative error alone can be huge "
                        "where the expected gradient is close to zero (a saturated loss) while the cell agrees "
                        "to far within atol."),
                   table(_worst_rows(worst_cells(parity)), WORST_HEADERS)]

    bad = [(loss, f) for loss, fs in sorted(report.failures.items()) for f in fs]
    if bad:
        blocks.append(heading(2, "Failures"))
        blocks.append(para("Each loss's page holds the full details and a Python reproducer."))
        blocks.append(table([[f"[{loss}](losses/{loss}.md)", f["id"], f["status"],
                              _one_line(f["detail"].splitlines()[0] if f["detail"] else "", 160)]
                             for loss, f in bad[:200]], ["loss", "cell", "status", "what"]))
        if len(bad) > 200:
            blocks.append(para(f"... and {len(bad) - 200} more (parity.csv has them all)."))
    if report.skipped:
        blocks.append(heading(2, "Skipped"))
        blocks.append(table(_skipped_rows(report.skipped), ["loss", "skipped", "why"]))

    blocks.append(heading(2, "Catalogue"))
    rows = []
    for name in report.losses:
        spec = reference.get(name)
        sub = parity[(parity["loss"] == name) & (parity["variant"] != "reference")] if not parity.empty else parity
        ref = parity[(parity["loss"] == name) & (parity["variant"] == "reference")] if not parity.empty else parity
        st = sub["status"].value_counts() if len(sub) else {}
        worst = sub["grad_tol_ratio"].max() if len(sub) else math.nan
        rows.append([f"[{name}](losses/{name}.md)", spec.family, len(spec.matrix_cases), len(sub), st.get("passed", 0),
                     st.get("failed", 0) + st.get("error", 0), st.get("xfail", 0),
                     f"{int((ref['status'] == 'passed').sum())}/{len(ref)}" if len(ref) else "",
                     _fmt(worst), _builtins_text(spec, short=True)])
    blocks.append(table(rows, ["loss", "family", "cases", "cells", "passed", "failed", "xfail", "reference FD",
                               "worst grad err / tol", "built-ins"]))

    blocks.append(heading(2, "Timings"))
    if timings.empty:
        blocks.append(para("No timings were taken."))
    else:
        note = TIMING_NOTE
        if s.get("load"):
            cpus, load = s["load"]
            note += (f" The machine had {cpus} CPUs and a load average of {load:.1f} when the timings started"
                     + ("; other processes shared the cores, so read the numbers as rough." if load > 0.5 * cpus
                        else "."))
        blocks.append(para(note))
        if "timings" in pictures.files:
            blocks += [para("Each implementation's forward + backward time over its framework's built-in (losses "
                            "without a built-in are left out); left of 1 is faster. The legend gives each "
                            "implementation's median over the losses."),
                       image("forward + backward time over the built-in's, per loss", pictures.files["timings"])]
        blocks.append(details(f"All {len(timings)} timings (table)",
                              [table(_timing_rows(timings), ["loss"] + TIMING_HEADERS)]))
    blocks += targets_blocks(targets, report.losses)

    blocks += scaling_blocks(pictures)
    blocks += training_blocks(report.training, pictures)
    blocks += slow_test_blocks(report.slow_tests)
    present = [b[2] for b in blocks if b[0] == "heading" and b[2] in REPORT_SECTIONS]
    blocks[2] = para("Contents: " + " · ".join(f"[{title}](#{_anchor(title)})" for title in present))
    return blocks


REPORT_SECTIONS = ("Summary", "Parity at a glance", "Worst cells by gradient error", "Failures", "Skipped",
                   "Catalogue", "Timings", "Time against problem size", "Training-level parity", "Slow tests")


def _anchor(title: str) -> str:
    """The anchor GitHub (and pandoc's gfm) gives a heading: lower case, punctuation dropped,
    spaces as hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def targets_blocks(targets: pd.DataFrame | None, losses=()) -> list:
    from . import bench
    if targets is None or targets.empty:
        return []
    rows = [[r.framework, r.device, r.point, r.losses, _fmt(r.median_ratio), _fmt(r.max_ratio),
             f"[{r.worst_loss}](losses/{r.worst_loss}.md)" if r.worst_loss in losses else r.worst_loss,
             r.above_max, _fmt(r.above_max_floor), "yes" if r.met else "**no**"] for r in targets.itertuples()]
    return [heading(3, "Speed targets"),
            para(f"The targets: for each loss with a built-in, the fastest of a framework's variants, forward + "
                 f"backward, at most {bench.TARGET_MEDIAN}x the built-in at the median over the losses and never "
                 f"above {bench.TARGET_MAX}x. Measured at the timings' default sizes (above) and at each point of "
                 "the size sweep (below) that was run, over the losses timed there with their built-in. The "
                 "report's sweep times the losses it does not sweep at "
                 f"{' and '.join(bench.point_label('elements', n, None) for n in bench.EVERY_LOSS_SIZES)} too "
                 "(all but those whose sampler has no shape to scale: they are timed at their default size only). "
                 f"\"Floor too\": of the losses above {bench.TARGET_MAX}x, those whose floor is above it as well: "
                 "torch's own kernels for the loss, in a minimal Python `autograd.Function` (`reports/floor.py`), "
                 "are already that much slower than the built-in, so no `function` variant can meet the bound there."),
            table(rows, ["framework", "device", "measured at", "losses", "median ratio", "max ratio", "worst",
                         f"above {bench.TARGET_MAX}x", "floor too", "met"])]


def scaling_blocks(pictures: Pictures) -> list:
    blocks = [heading(2, "Time against problem size")]
    if "scaling" in pictures.files:
        blocks += [para(f"From {pictures.scaling_source}: forward + backward milliseconds (float32, the default "
                        "case, `reduction=\"mean\"`) against the elements of the first input, log-log, for the "
                        "swept losses; for `cross_entropy` also against the class count at a fixed number of rows. "
                        "Built-ins dashed (torch) and dotted (JAX); the torch floor (the built-in's own kernels "
                        "in a minimal Python `autograd.Function`) dash-dotted."),
                   image("time against problem size", pictures.files["scaling"])]
    elif pictures.scaling_source:
        blocks.append(para(f"No picture from {pictures.scaling_source}: {pictures.notes.get('scaling', 'not drawn')}."))
    else:
        blocks.append(para("Skipped: there is no `scaling.csv` (the size sweep) in the report's folder, so there is "
                           "nothing to draw. The sweep writes it (`lossparity bench --out DIR`, or a report "
                           "that runs the sweep)."))
    return blocks


def training_blocks(result, pictures: Pictures) -> list:
    """The "Training-level parity" section: the set-up, the tolerance stated beforehand, the
    measured differences and the curves."""
    blocks = [heading(2, "Training-level parity")]
    if result is None:
        blocks.append(para("Not run (`--no-training`, or scikit-learn is missing). `reports/training.py` trains a "
                           "LeNet-style CNN on scikit-learn's 8x8 digits with the built-in cross entropy and with "
                           "ours, and compares the loss curves and the final weights."))
        return blocks
    st = result.settings
    tol = _fmt(st["tolerance"])
    steps = st["epochs"] * st["steps_per_epoch"]
    bound = steps * 1e-14 * st["lr"] / (1 - st["momentum"])
    blocks.append(para(
        f"A LeNet-style CNN (conv 5x5 -> tanh -> avg-pool -> conv 3x3 -> tanh -> avg-pool -> 64 -> 32 -> 10, 3,446 "
        f"weights) trained on scikit-learn's 8x8 digits ({st['n_train']} training, {st['n_test']} test images) for "
        f"{st['epochs']} epochs of {st['steps_per_epoch']} mini-batches of {st['batch_size']}, SGD with learning rate "
        f"{st['lr']:g} and momentum {st['momentum']:g} (`torch.optim.SGD`, `optax.sgd`), on the CPU. Every run starts "
        "from the same initial weights and sees the same batches: torch with `F.cross_entropy`, then our `module` and "
        "`function`; JAX (the same network in `jax.numpy`, `lax.conv_general_dilated`) with "
        "`optax.softmax_cross_entropy_with_integer_labels`, then our `autodiff` and `custom_vjp`."))
    blocks.append(para(
        f"**Tolerance, stated before running ({st['parity_dtype']}):** {tol}, relative, for every step's mini-batch "
        f"loss and for the final weights (max |w - w built-in| over max |w built-in|). The runs differ by rounding "
        f"alone: about 100 ulps (1e-14) of the gradient per step, times lr/(1 - momentum) = "
        f"{st['lr'] / (1 - st['momentum']):.2g}, summed over the {steps} steps ({bound:.0e}), times 100 for what the "
        f"non-convex training map may amplify: {100 * bound:.0e}; {tol} covers the full run (440 steps). In float32 "
        "the same bound is about 0.1, no tolerance worth stating; float32 is measured for information "
        "(`reports/training.py` has the whole argument)."))
    rows = []
    for r in result.summary.itertuples():
        verdict = ("within" if r.passed is True else "OUTSIDE") if r.passed != "n/a" else "information"
        rows.append([r.comparison, r.dtype, r.steps, _fmt(r.curve_max_abs_diff), _fmt(r.curve_max_rel_diff),
                     _fmt(r.weights_max_abs_diff), _fmt(r.weights_rel_diff),
                     _fmt(r.tolerance) if r.passed != "n/a" else "", verdict])
    blocks.append(table(rows, ["comparison", "dtype", "steps", "curve max abs diff", "curve max rel diff",
                               "weights max abs diff", "weights rel diff", "tolerance", "verdict"]))
    accuracy = {f"{r.framework}.{r.variant} {r.dtype}": r.accuracy[-1] for r in result.runs}
    final = {f"{r.framework}.{r.variant} {r.dtype}": r.losses[-1] for r in result.runs}
    acc_values = sorted(set(round(a, 6) for a in accuracy.values()))
    blocks.append(para(
        f"Measured: {'every comparison is within' if result.passed else 'NOT every comparison is within'} the "
        f"tolerance. Largest differences in {st['parity_dtype']}: curves "
        f"{_fmt(result.summary[result.summary['dtype'] == st['parity_dtype']]['curve_max_rel_diff'].max())}, final "
        f"weights {_fmt(result.summary[result.summary['dtype'] == st['parity_dtype']]['weights_rel_diff'].max())} "
        f"(relative). The network learns: the last mini-batch loss is "
        + (f"{_fmt(min(final.values()))} in every run" if _fmt(min(final.values())) == _fmt(max(final.values()))
           else f"{_fmt(min(final.values()))} to {_fmt(max(final.values()))}")
        + f" (from {_fmt(result.runs[0].losses[0])} at the first step) and the test accuracy "
        + (f"{acc_values[0]:.3f} in every run." if len(acc_values) == 1 else
           f"between {acc_values[0]:.3f} and {acc_values[-1]:.3f}.")
        + " Our torch `module` shares `log_softmax`'s backward with the built-in, so its weights can come out "
          "bit for bit the same."))
    if "training" in pictures.files:
        blocks.append(image("training curves and their differences from the built-in", pictures.files["training"]))
    return blocks


SLOW_TESTS_SHOWN = 100  # failures listed in REPORT.md; slow_tests.csv has every test


def slow_test_blocks(result) -> list:
    """The "Slow tests" section: the tests ``make test`` leaves out (``slow``), run by the
    report (``reports.slow_tests``), counted per file, with each failure's message."""
    blocks = [heading(2, "Slow tests")]
    if result is None:
        blocks.append(para("Not run (`--quick` or `--no-slow-tests`). The tests marked `slow` are the second-order "
                           "and transform checks, the built-in comparisons and `check_grads` beyond `make test`'s "
                           "quick tier; `make test PYTEST_ARGS='-m slow'` runs them too."))
        return blocks
    if result.problem:
        blocks.append(para(f"Not run: {result.problem}. The command was `{result.command}`."))
        return blocks
    c = result.counts()
    blocks.append(para(
        f"The tests `make test` leaves out as `slow` (the parity matrix's slow cells are this report's parity "
        f"phase), run as `{result.command}` in {_clock(result.seconds)}: {len(result.tests)} tests, "
        + ", ".join(f"{c[o]} {o}" for o in slow_tests.OUTCOMES if c[o] or o in ("passed", "failed"))
        + ". An `xfail` is declared on the spec with its reason and runs strict: it fails where it passes. "
          "[slow_tests.csv](slow_tests.csv) has every test with its outcome, seconds and message."))
    per_file = result.per_file()
    blocks.append(table(per_file.values.tolist(), list(per_file.columns)))
    failed = result.failed()
    if len(failed):
        blocks += [heading(3, f"Failed slow tests ({len(failed)})"),
                   para("`.venv/bin/python -m pytest 'TEST'` reruns one; the transform checks' messages end with the "
                        "Python call that reproduces the failure (slow_tests.csv has each message whole)."),
                   table([[r.test, r.outcome, _one_line(r.message, 200)] for r in failed.head(SLOW_TESTS_SHOWN).itertuples()],
                         ["test", "outcome", "message"])]
        if len(failed) > SLOW_TESTS_SHOWN:
            blocks.append(para(f"... and {len(failed) - SLOW_TESTS_SHOWN} more (slow_tests.csv has them all)."))
    return blocks


def _skipped_rows(skipped: list) -> list:
    grouped: dict = {}
    for k in skipped:
        grouped.setdefault((k["loss"], k["reason"]), []).append(k["what"])
    return [[loss, ", ".join(whats), reason] for (loss, reason), whats in grouped.items()]


# -- the catalogue ---------------------------------------------------------------------------

def _short(name: str) -> str:
    """A built-in's description for a narrow column: common prefixes shortened, remarks in
    parentheses dropped."""
    name = name.split(" (")[0]
    return (name.replace("torch.nn.functional.", "F.").replace("optax.losses.", "optax.")
            .replace("keras.losses.", "keras."))


BUILTIN_LIBRARIES = ("torch", "optax", "keras")


def builtins_of(spec) -> dict:
    """The other libraries' losses that the tests use as oracles, as the spec names them:
    torch's where ``torch_impl.builtin`` has an adapter, optax's and Keras's where
    ``jax_impl.builtin`` has one."""
    wired = {"torch": torch_impl.builtin(spec.name) is not None}
    wired["optax"] = wired["keras"] = jax_impl.builtin(spec.name) is not None
    out = {lib: spec.builtins[lib] for lib in BUILTIN_LIBRARIES if lib in spec.builtins and wired[lib]}
    for lib, framework in (("torch", "torch"), ("optax", "jax")):
        if wired[lib] and not any(k in out for k in ((lib,) if lib == "torch" else ("optax", "keras"))):
            out[lib] = f"{framework} built-in"
    return out


def _builtins_text(spec, short: bool = False) -> str:
    return ", ".join(_short(v) if short else v for v in builtins_of(spec).values())


def catalogue() -> pd.DataFrame:
    rows = []
    for name in reference.names():
        spec = reference.get(name)
        b = builtins_of(spec)
        have, _ = registered_variants(name, matrix.VARIANTS)
        rows.append({"name": name, "family": spec.family, "inputs": ", ".join(spec.inputs),
                     "hyperparameters": ", ".join(f"{k}={_value(v)}" for k, v in spec.defaults.items()),
                     **{lib: b.get(lib, "") for lib in BUILTIN_LIBRARIES},
                     "implementations": f"{len(have)}/{len(matrix.VARIANTS)}",
                     "alias_of": spec.alias_of or ""})
    return pd.DataFrame(rows, columns=["name", "family", "inputs", "hyperparameters", *BUILTIN_LIBRARIES,
                                       "implementations", "alias_of"])


# -- losses/<name>.md ------------------------------------------------------------------------

def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return f"# the source of {getattr(obj, '__qualname__', obj)!r} is not available\n"


def implementation_sources(name: str) -> list[tuple[str, str, list]]:
    """(variant, title, [source texts]) for the five implementations; empty list where not registered."""
    spec = reference.get(name)
    out = [("reference", VARIANT_TITLES["reference"], [_source(spec.forward), _source(spec.vjp_fn)])]
    for variant in matrix.VARIANTS:
        try:
            objs = matrix.implementation(variant, name).sources
            texts = [_source(o) for o in objs]
        except KeyError:
            texts = []
        out.append((variant, VARIANT_TITLES[variant], texts))
    return out


def _signature(spec) -> str:
    params = list(spec.inputs) + [f"{k}={_value(v)}" for k, v in spec.defaults.items()]
    return f"{spec.name}({', '.join(params)})"


def parity_summary(parity: pd.DataFrame) -> list:
    """Per implementation, dtype and device: cells by status and the worst errors beside the tolerance."""
    rows = []
    if parity.empty:
        return rows
    for (variant, dtype, device), g in parity.groupby(["variant", "dtype", "device"], sort=False):
        st = g["status"].value_counts()
        rows.append([f"{FRAMEWORK_OF.get(variant, '')}.{variant}", dtype, device, len(g), st.get("passed", 0),
                     st.get("failed", 0) + st.get("error", 0), st.get("xfail", 0) + st.get("xpass", 0),
                     _fmt(g["value_rel_err"].max()), _fmt(g["grad_abs_err"].max()), _fmt(g["grad_rel_err"].max()),
                     _fmt(g["rtol"].iloc[0]), _fmt(g["atol"].iloc[0]),
                     _fmt(g[["value_tol_ratio", "grad_tol_ratio"]].max().max())])
    order = {v: i for i, v in enumerate(VARIANT_ORDER)}
    return sorted(rows, key=lambda r: (order.get(r[0].split(".")[1], 99), r[1], r[2]))


PARITY_HEADERS = ["implementation", "dtype", "device", "cells", "passed", "failed", "xfail", "worst value rel err",
                  "worst grad abs err", "worst grad rel err", "rtol", "atol", "worst err / tol"]


def claims_blocks(spec) -> list:
    """The "Claims from the articles" section: each claim of the seed articles about this loss,
    the verdict it should get and the verdict its proof measures now (``reference.articles``)."""
    rows, sources = [], {}
    for c in spec.claims:
        measured, evidence = c.measure()
        ref = sources.setdefault(c.source, len(sources) + 1)
        mark = "" if measured == c.verdict else " (DISAGREES)"
        rows.append([f"[{ref}]", c.claim, c.verdict, measured + mark, evidence])
    notes = "; ".join(f"[{i}] {s.title}, {s.url} (read: {s.retrieved})" for s, i in sources.items())
    return [heading(2, "Claims from the articles"),
            para("Each claim as the article makes it, the verdict recorded for it and the verdict its proof "
                 "measured just now, running the code the article describes (`reference/articles.py`)."),
            table(rows, ["source", "claim", "verdict", "measured now", "evidence"]),
            para("Sources: " + notes + ".")]


def hyperparameter_requirements(spec) -> dict[str, list[str]]:
    """Per hyperparameter, what the shared checks require of it: the ``must ...`` clause of the
    error that the reference raises on an unknown reduction and on each of the spec's bad inputs
    that changes only that hyperparameter (``"label_smoothing must be a number in [0.0, 1.0]; got 1.5"`` gives
    ``"a number in [0.0, 1.0]"``), in the order declared, without repeats."""
    inputs, kw = spec.draw(np.random.default_rng(matrix.seed_for(spec.name, spec.cases[0].name)))
    kw = spec.bind(inputs, kw)
    out: dict[str, list[str]] = {}
    unknown_reduction = (inputs, {**kw, "reduction": "avg"})  # the check every loss shares
    for bad_inputs, bad_kw in [unknown_reduction] + [bad.mutate(inputs, dict(kw)) for bad in spec.bad_inputs]:
        changed = [k for k in kw if bad_kw.get(k) is not kw[k]]
        if len(changed) != 1 or any(a is not b for a, b in zip(bad_inputs, inputs)):
            continue
        name = changed[0]
        try:
            reference.loss(spec.name, *bad_inputs, **bad_kw)
        except (TypeError, ValueError, IndexError) as e:
            m = re.match(rf"{re.escape(name)} must (?:be )?(.*?)(?:; got .*)?$", str(e), re.S)
            if m and m.group(1) not in out.setdefault(name, []):
                out[name].append(m.group(1))
    return out


def loss_page(name: str, parity: pd.DataFrame, timings: pd.DataFrame, failures: list, skipped: list,
              fmt: str = "markdown", pictures: dict | None = None) -> list:
    """One loss's page. ``pictures`` ({"parity": path, "scaling": path}, relative to the page)
    embeds the report's pictures of this loss."""
    pictures = pictures or {}
    spec = reference.get(name)
    md = fmt == "markdown"
    doc = (lambda text: rst_to_markdown(text)) if md else (lambda text: text)
    blocks = [heading(1, name)]
    facts = [f"Family **{spec.family}**", f"inputs {', '.join(f'`{i}`' for i in spec.inputs)}",
             f"gradients for {', '.join(f'`{i}`' for i in spec.differentiable) or 'none'}"]
    if spec.alias_of:
        facts.append(f"an alias of [{spec.alias_of}]({spec.alias_of}.md)")
    blocks += [para("; ".join(facts) + "."), code(_signature(spec), "python")]

    blocks += [heading(2, "Formula"), para(doc(spec.doc) or "(no docstring)"),
               heading(2, "Gradient"), para(doc(inspect.getdoc(spec.vjp_fn) or "") or "(no docstring)")]

    blocks.append(heading(2, "Hyperparameters"))
    required = hyperparameter_requirements(spec)
    blocks.append(table([[f"`{k}`", f"`{_value(v)}`", "; ".join(required.get(k, [])) or "-"]
                         for k, v in spec.defaults.items()], ["name", "default", "valid values"]))
    blocks.append(para("Valid values are what the shared checks require, read from their errors on an unknown "
                       "reduction and on the spec's declared bad inputs (`-`: none declared)."))
    if spec.array_params:
        blocks.append(para(f"Array hyperparameters ({', '.join(spec.array_params)}) are passed as the "
                           "framework's own array type."))

    blocks.append(heading(2, "Cases"))
    straight = {c.name for c in spec.straight_through_cases}
    blocks.append(table([[c.name + (" (straight-through)" if c.name in straight and "straight" not in c.name else ""),
                          ", ".join(f"{k}={_value(v)}" for k, v in c.items()) or "(defaults)",
                          ", ".join(f"{k}={v!r}" for k, v in c.sample.items()),
                          ", ".join(spec.case_reductions(c))] for c in spec.matrix_cases],
                        ["case", "hyperparameters", "sampler options", "reductions"]))
    if straight:
        blocks.append(para("Straight-through cases: there the gradient is, by the loss's definition, not the "
                           "derivative of its forward (see Gradient), so the reference's finite-difference check "
                           "skips them; every implementation is still compared with the reference VJP."))
    if spec.differentiable_params:
        blocks.append(para(f"Array hyperparameters that get a gradient when given: "
                           f"{', '.join(f'`{p}`' for p in spec.differentiable_params)}."))

    blocks.append(heading(2, "Built-ins and differences"))
    b = builtins_of(spec)
    listed = {**spec.builtins}
    brows = [[lib, f"`{bname}`", "yes" if lib in b else "no"] for lib, bname in listed.items()]
    brows += [[lib, f"`{bname}`", "yes"] for lib, bname in b.items() if lib not in listed]
    blocks.append(table(brows, ["library", "built-in", "tested as an oracle"]) if brows else
                  para("No library ships this loss."))
    if spec.differences:
        # A list, not a table: the differences are sentences and the mappings code, too long for
        # table cells (a four-column table of them ran off the page).
        blocks.append(para("Recorded differences, each with the mapping that reconciles it:"))
        blocks.append(para("\n".join(f"- **{d.library}** `{d.builtin}`: {_md_text(d.difference)}  \n"
                                     f"  mapping: `{d.mapping}`" for d in spec.differences)))

    if spec.claims:
        blocks += claims_blocks(spec)

    blocks.append(heading(2, "Known disagreements (xfail)"))
    if spec.xfails:
        blocks.append(table([[x.reason, x.variant or "any", x.dtype or "any", x.case or "any", x.reduction or "any"]
                             for x in spec.xfails], ["reason", "variant", "dtype", "case", "reduction"]))
    else:
        blocks.append(para("None: every cell is expected to agree with the reference."))

    blocks.append(heading(2, "Parity"))
    sub = parity[parity["loss"] == name] if not parity.empty else parity
    if sub.empty:
        blocks.append(para("No cell was run."))
    else:
        blocks.append(para("The worst errors of each implementation and dtype, beside the tolerance; "
                           "`reference` is the analytic VJP against central finite differences in float64."))
        blocks.append(table(parity_summary(sub), PARITY_HEADERS))
        if "parity" in pictures:
            blocks += [para("Every cell: error over tolerance (the larger of the value's and the gradient's), log "
                            "scale; 1 is the edge of passing."),
                       image(f"{name}: error over tolerance per cell", pictures["parity"])]
        cells = sub[sub["variant"] != "reference"]
        if len(cells):
            blocks.append(heading(3, "Worst cells"))
            blocks.append(table(_worst_rows(worst_cells(cells, 5), link=False), WORST_HEADERS[1:]))
    if skipped:
        blocks.append(para("Skipped: " + "; ".join(f"{w} ({r})" for _, w, r in _skipped_rows(skipped)) + "."))
    if failures:
        blocks.append(heading(3, "Failures"))
        for f in failures[:20]:
            blocks.append(code(f["detail"], "text"))
        if len(failures) > 20:
            blocks.append(para(f"... and {len(failures) - 20} more (parity.csv lists them all)."))

    blocks.append(heading(2, "Timings"))
    tsub = timings[timings["loss"] == name] if not timings.empty else timings
    if tsub.empty:
        blocks.append(para("No timings were taken."))
    else:
        blocks += [para(TIMING_NOTE), table(_timing_rows(tsub, with_loss=False), TIMING_HEADERS)]
    if "scaling" in pictures:
        blocks += [para("Time against problem size (the report's size sweep, float32, forward + backward):"),
                   image(f"{name}: time against problem size", pictures["scaling"])]

    blocks.append(heading(2, "Implementations"))
    for variant, title, texts in implementation_sources(name):
        blocks.append(heading(3, title))
        if texts:
            blocks.append(code("\n\n".join(t.rstrip() for t in texts), "python"))
        else:
            blocks.append(para("Not registered yet."))
    return blocks


def show(name: str, fmt: str = "markdown", seed: int = 0, with_timings: bool = True) -> str:
    """One loss's page, computed on the spot: its cells, its reference rows and quick timings."""
    run = run_loss(name, seed=seed)
    parity = parity_frame(run.rows)
    t_rows, t_skipped = timing.time_loss(name, budget=timing.QUICK, seed=seed) if with_timings else ([], [])
    return render(loss_page(name, parity, timings_frame(t_rows), run.failures, run.skipped + t_skipped, fmt), fmt)

