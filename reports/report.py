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
import tempfile
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
from . import matrix, timing

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


def run_one(cell: matrix.Cell, seed: int = 0) -> tuple[dict, str]:
    """One matrix cell as a parity.csv row, and the failure detail ('' when it passed)."""
    spec = reference.get(cell.loss)
    rtol, atol = matrix.TOLERANCES[cell.dtype]
    error, detail = "", ""
    try:
        with _reference_warnings_are_errors():
            d = matrix.draw(spec, cell.case, cell.reduction, cell.dtype, seed)
            want_value, want_grads = matrix.expected(spec, d)
            fn = matrix.implementation(cell.variant, cell.loss)
            runner = matrix.run_torch if cell.framework == "torch" else matrix.run_jax
            value, grads = runner(fn, spec, d, cell.device)
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


def run_loss(name: str, variants=None, dtypes=None, seed: int = 0, with_reference: bool = True) -> LossRun:
    """Every cell of one loss (CPU, and CUDA where a device exists), plus its reference rows."""
    start = time.perf_counter()
    run = LossRun(name)
    spec = reference.get(name)
    variants = list(matrix.VARIANTS if variants is None else variants)
    have, run.skipped = registered_variants(name, variants)
    cells = [c for c in matrix.cells([name], have, dtypes, devices=matrix.DEVICES)
             if matrix.device_available(c.framework, c.device)] if have else []
    for cell in cells:
        row, detail = run_one(cell, seed)
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


def jax_cache_dir() -> str | None:
    """Where the parity workers keep JAX's persistent compilation cache: ``$LOSSPARITY_JAX_CACHE``
    (empty turns it off), else ``$XDG_CACHE_HOME/lossparity/jax`` (``~/.cache/...``)."""
    configured = os.environ.get("LOSSPARITY_JAX_CACHE")
    if configured is not None:
        return configured or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lossparity", "jax")


def _worker_init() -> None:
    """A parity worker: one torch thread (the workers share the cores; the cells are small), and
    JAX's persistent compilation cache, since most of a JAX cell's time is XLA compiling its
    operations one by one. It changes no number; only workers use it, so the timings, run in
    the main process afterwards, always compile afresh."""
    import jax
    import torch
    torch.set_num_threads(1)
    cache = jax_cache_dir()
    if cache:
        try:
            os.makedirs(cache, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        except OSError:
            pass


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
               progress=None) -> list[LossRun]:
    """``run_loss`` over ``losses``, in ``jobs`` processes when more than one."""
    progress = progress or (lambda run: None)
    args = (variants, dtypes, seed, with_reference)
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


def write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, df.to_csv(index=False, float_format=FLOAT_FORMAT, na_rep="", lineterminator="\n"))


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the report is not
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# -- the report ----------------------------------------------------------------------------

@dataclass
class Report:
    losses: list
    parity: pd.DataFrame
    timings: pd.DataFrame
    failures: dict          # loss -> list of {"id", "status", "detail"}
    skipped: list           # {"loss", "what", "reason"}
    settings: dict


def build(losses=None, variants=None, dtypes=None, seed: int = 0, quick: bool = False, jobs: int | None = None,
          with_timings: bool = True, log=print) -> Report:
    """Run the parity matrix (and the reference against finite differences) and the timings."""
    losses = sorted(losses or reference.names())
    with_reference = variants is None or "reference" in variants
    impl_variants = None if variants is None else [v for v in variants if v != "reference"]
    jobs = auto_jobs(losses, impl_variants, dtypes) if jobs is None else max(1, jobs)
    log(f"parity: {len(losses)} losses, {'1 process' if jobs == 1 else f'{jobs} processes'}")
    width = max(map(len, losses)) if losses else 0

    def progress(run: LossRun):
        counts = pd.Series([r["status"] for r in run.rows], dtype=object).value_counts()
        summary = ", ".join(f"{counts[s]} {s}" for s in ("passed", "failed", "error", "xfail", "xpass") if s in counts)
        note = f"; skipped {', '.join(s['what'] for s in run.skipped)}" if run.skipped else ""
        log(f"  {run.loss:<{width}}  {len(run.rows):4d} rows: {summary or 'nothing run'}{note}  ({run.seconds:.1f} s)")

    start = time.perf_counter()
    runs = run_parity(losses, impl_variants, dtypes, seed, with_reference, jobs, progress)
    log(f"parity: {time.perf_counter() - start:.1f} s")
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
        log(f"timings: {len(losses)} losses, float32, {'quick' if quick else 'moderate'} sizes")
        for name in losses:
            t_rows, t_skipped = timing.time_loss(name, impl_variants, budget, seed)
            timing_rows += t_rows
            skipped += t_skipped  # unregistered variants are not timed; the parity phase listed them already
        log(f"timings: {time.perf_counter() - start:.1f} s ({time.process_time() - cpu:.1f} s of CPU)")
    settings = {"seed": seed, "quick": quick, "dtypes": list(dtypes or matrix.DTYPES), "load": timings_load,
                "variants": list(variants or VARIANT_ORDER),
                "devices": [d for d in matrix.DEVICES if any(matrix.device_available(f, d) for f in ("torch", "jax"))]}
    return Report(losses, parity_frame(rows), timings_frame(timing_rows), failures, skipped, settings)


def _load() -> tuple[int, float] | None:
    """The CPU count and the one-minute load average when the timings start: they tell how
    much the numbers can be trusted on a shared machine."""
    try:
        return os.cpu_count() or 1, os.getloadavg()[0]
    except OSError:
        return None


def counts(parity: pd.DataFrame) -> dict:
    cells = parity[parity["variant"] != "reference"]
    ref = parity[parity["variant"] == "reference"]
    status = cells["status"].value_counts()
    return {"cells": len(cells), "passed": int(status.get("passed", 0)),
            "failed": int(status.get("failed", 0) + status.get("error", 0)), "xfail": int(status.get("xfail", 0)),
            "xpass": int(status.get("xpass", 0)), "errors": int(status.get("error", 0)),
            "reference": len(ref), "reference_passed": int((ref["status"] == "passed").sum())}


def write(report: Report, out: Path, log=print) -> list[Path]:
    """Write parity.csv, timings.csv, REPORT.md and losses/<name>.md into ``out``."""
    out = Path(out)
    written = [out / "parity.csv", out / "timings.csv", out / "REPORT.md"]
    write_csv(report.parity, written[0])
    write_csv(report.timings, written[1])
    atomic_write(written[2], render(report_page(report), "markdown"))
    for name in report.losses:
        path = out / "losses" / f"{name}.md"
        atomic_write(path, render(loss_page(name, report.parity, report.timings, report.failures.get(name, []),
                                            [s for s in report.skipped if s["loss"] == name]), "markdown"))
        written.append(path)
    return written


# -- documents: a list of blocks rendered as markdown or as plain text ----------------------

def heading(level: int, text: str):
    return ("heading", level, text)


def para(text: str):
    return ("para", text)


def table(rows, headers):
    return ("table", rows, headers)


def code(text: str, lang: str = ""):
    return ("code", text, lang)


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
    return "\n\n".join(out) + "\n"


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
            out += ["$$", "\n".join(b for b in body if b), "$$"]
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
    return [[f"[{r.loss}](losses/{r.loss}.md)" if link else r.loss, r.case, r.reduction, f"{r.framework}.{r.variant}",
             r.dtype, r.device, _fmt(r.grad_tol_ratio), _fmt(r.grad_abs_err), _fmt(r.atol), _fmt(r.grad_rel_err),
             _fmt(r.rtol), r.status + (f" ({_one_line(r.error, 80)})" if r.error else "")]
            for r in df.itertuples()]


WORST_HEADERS = ["loss", "case", "reduction", "implementation", "dtype", "device", "err / tol", "grad abs err",
                 "atol", "grad rel err", "rtol", "status"]


def _timing_rows(df: pd.DataFrame, with_loss: bool = True) -> list:
    rows = []
    for r in df.itertuples():
        row = [r.loss] if with_loss else []
        row += [f"{r.framework}.{r.variant}", r.device, r.shapes, _ms(r.fwd_ms), _ms(r.fwd_bwd_ms), _ms(r.compile_ms),
                r.builtin, _ms(r.builtin_fwd_ms), _ms(r.builtin_fwd_bwd_ms), _fmt(r.ratio_to_builtin, 2),
                _one_line(r.note, 120) if isinstance(r.note, str) else ""]
        rows.append(row)
    return rows


TIMING_HEADERS = ["implementation", "device", "shapes", "fwd ms", "fwd+bwd ms", "compile ms", "built-in",
                  "built-in fwd ms", "built-in fwd+bwd ms", "ratio", "note"]
TIMING_NOTE = ("float32, the default case, `reduction=\"mean\"`, milliseconds. Medians: torch by "
               "`torch.utils.benchmark.Timer.blocked_autorange` (all of torch's threads) after a warm-up; JAX "
               "by blocks of calls to what `jax.jit(...).lower(...).compile()` returned, after a warm-up, each "
               "call ending in `block_until_ready`. `compile ms` is that `.lower(...).compile()` (tracing "
               "included) for the forward+backward, measured apart from the runs. `ratio` is our fwd+bwd over "
               "the built-in's.")


def report_page(report: Report) -> list:
    parity, timings = report.parity, report.timings
    c = counts(parity) if not parity.empty else counts(pd.DataFrame(columns=PARITY_COLUMNS))
    s = report.settings
    blocks = [heading(1, "lossparity report"),
              para(f"Seed {s['seed']}{' (quick)' if s['quick'] else ''}; dtypes {', '.join(s['dtypes'])}; "
                   f"implementations {', '.join(s['variants'])}; devices {', '.join(s['devices'])}. "
                   f"{_versions()}. Files: [parity.csv](parity.csv), [timings.csv](timings.csv).")]

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
    blocks.append(table(summary, ["", "count"]))

    tol_rows = [[dt, _fmt(rt), _fmt(at)] for dt, (rt, at) in matrix.TOLERANCES.items() if dt in s["dtypes"]]
    tol_rows.append(["reference vs finite differences (float64, step "
                     f"{_fmt(matrix.FD_STEP)})", _fmt(matrix.FD_RTOL), _fmt(matrix.FD_ATOL)])
    blocks += [heading(3, "Tolerances"),
               para("A cell passes where every element of the value and of each gradient satisfies "
                    "|actual - expected| <= atol + rtol * |expected| (torch.testing's defaults per dtype); "
                    "`err / tol` is the largest ratio of the two sides, so 1 is the edge."),
               table(tol_rows, ["dtype", "rtol", "atol"])]

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
        blocks += [para(note), table(_timing_rows(timings), ["loss"] + TIMING_HEADERS)]
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


def loss_page(name: str, parity: pd.DataFrame, timings: pd.DataFrame, failures: list, skipped: list,
              fmt: str = "markdown") -> list:
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
    blocks.append(table([[f"`{k}`", f"`{_value(v)}`"] for k, v in spec.defaults.items()], ["name", "default"]))
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
        blocks.append(table([[d.library, f"`{d.builtin}`", d.difference, f"`{d.mapping}`"] for d in spec.differences],
                            ["library", "built-in", "difference", "mapping"]))

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
        cells = sub[sub["variant"] != "reference"]
        if len(cells):
            blocks.append(heading(3, "Worst cells"))
            blocks.append(table(_worst_rows(worst_cells(cells, 5), link=False), WORST_HEADERS))
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

