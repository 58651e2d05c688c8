"""The report's pictures (PNG, matplotlib's Agg renderer), each from one of the report's CSVs.

* :func:`parity_heatmap`: the worst relative gradient error per loss and implementation, in
  float32 (``parity.csv``), on a log colour scale with float32's rtol marked on the scale;
* :func:`loss_heatmap`: one loss's cells, case and reduction by implementation and dtype, as
  error over tolerance (the loss pages);
* :func:`timing_ratios`: forward + backward time over the built-in's (``timings.csv``);
* :func:`scaling`: time against problem size for the swept losses (``scaling.csv``);
* :func:`training_curves`: the training-level parity runs (``training.csv``).

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot, no global
backend switch, nothing shown on a screen. Each function returns the path it wrote, or None
when its data has nothing to draw. Files are written atomically (a temporary file, then
``os.replace``).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .system import atomic_write

DPI = 100
# Relative errors below the floor are drawn at it (an exact zero has no place on a log
# scale), above the ceiling at it (a relative error is unbounded where the expected gradient
# is about zero: a saturated loss can pass, within atol, with a relative error of 1e289).
REL_FLOOR = 1e-10
REL_CEIL = 1.0
# The loss pages' error / tolerance, likewise (float64 cells sit near 1e-9, float32 near 1e-2).
LOSS_FLOOR = 1e-10
LOSS_CEIL = 10.0
VARIANTS = ("module", "function", "autodiff", "custom_vjp")
FRAMEWORK_OF = {"module": "torch", "function": "torch", "autodiff": "jax", "custom_vjp": "jax"}
# One colour and marker per implementation, the same in every picture; built-ins are grey.
STYLE = {"module": ("#1f77b4", "o"), "function": ("#ff7f0e", "s"), "autodiff": ("#2ca02c", "^"),
         "custom_vjp": ("#d62728", "D"), "builtin": ("#555555", "x"), "floor": ("#999999", "v")}


def available() -> bool:
    """Whether matplotlib can be imported (a test dependency; the report installs it)."""
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    # No timestamp or version in the PNG's metadata: the same data draws the same bytes.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return atomic_write(path, buf.getvalue())


def _label(variant: str) -> str:
    return f"{FRAMEWORK_OF.get(variant, '')}.{variant}" if variant in FRAMEWORK_OF else variant


# -- parity ---------------------------------------------------------------------------------

def parity_heatmap(parity: pd.DataFrame, path, dtype: str = "float32", rtol: float | None = None) -> Path | None:
    """Loss (rows) by implementation (columns): the largest ``grad_rel_err`` over the loss's
    cases and reductions in ``dtype``, log colour scale, ``rtol`` marked on the colour bar.
    A cross marks a loss and implementation with a failed cell (or one that raised), a ring one
    with a declared xfail cell."""
    cells = parity[(parity["variant"].isin(VARIANTS)) & (parity["dtype"] == dtype)] if len(parity) else parity
    if cells.empty:
        return None
    from matplotlib.colors import LogNorm
    devices = list(dict.fromkeys(cells["device"]))
    columns = [(v, d) for d in devices for v in VARIANTS if ((cells["variant"] == v) & (cells["device"] == d)).any()]
    losses = sorted(cells["loss"].unique())
    values = np.full((len(losses), len(columns)), np.nan)
    failed, xfail, raised = [], [], []
    for i, loss in enumerate(losses):
        for j, (v, d) in enumerate(columns):
            g = cells[(cells["loss"] == loss) & (cells["variant"] == v) & (cells["device"] == d)]
            if g.empty:
                continue
            err = pd.to_numeric(g["grad_rel_err"], errors="coerce")
            if err.notna().any():
                values[i, j] = float(err.max())
            status = set(g["status"])
            if status & {"failed", "error", "xpass"}:
                failed.append((j, i))
            elif "xfail" in status:
                xfail.append((j, i))
            if err.isna().all():
                raised.append((j, i))
    vmin, vmax = REL_FLOOR, REL_CEIL
    height = max(3.6, 1.6 + 0.19 * len(losses))  # a few losses still leave room for the colour bar's label
    fig = _figure(3.6 + 1.0 * len(columns), height)
    ax = fig.subplots()
    cmap = _cmap("viridis")
    norm = LogNorm(vmin=vmin, vmax=vmax)
    im = ax.imshow(np.ma.masked_invalid(np.clip(values, vmin, vmax)), aspect="auto", cmap=cmap, norm=norm,
                   interpolation="nearest")
    _annotate(ax, values, norm, cmap)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([f"{FRAMEWORK_OF[v]}\n{v}" + (f"\n{d}" if len(devices) > 1 else "") for v, d in columns],
                       fontsize=9)
    ax.set_yticks(range(len(losses)))
    ax.set_yticklabels(losses, fontsize=8)
    ax.set_xticks(np.arange(-0.5, len(columns)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(losses)), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    for marks, marker, colour, label in ((failed, "x", "#ff2020", "a cell failed"),
                                         (xfail, "o", "white", "a declared xfail cell"),
                                         (raised, "s", "#888888", "no gradient error (raised)")):
        if marks:
            xs, ys = zip(*marks)
            ax.scatter(xs, ys, marker=marker, s=40, facecolors="none" if marker != "x" else colour,
                       edgecolors=colour, linewidths=1.6, label=label)
    if failed or xfail or raised:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2 / max(1, height / 6)), fontsize=8, frameon=False,
                  ncol=3)
    cbar = fig.colorbar(im, ax=ax, shrink=min(1.0, 6.0 / height) if height > 6 else 1.0, pad=0.02)
    cbar.set_label(f"worst relative gradient error ({dtype})", fontsize=9)
    if rtol:
        cbar.ax.axhline(rtol, color="red", linewidth=2)
        cbar.ax.text(-0.3, rtol, f"rtol {rtol:g}", color="red", fontsize=8, ha="right", va="center",
                     transform=cbar.ax.get_yaxis_transform())
    ax.set_title(f"Worst relative gradient error per loss, {dtype}\n(colours clipped to [{REL_FLOOR:g}, {REL_CEIL:g}])",
                 fontsize=10)
    return _save(fig, path)


def _short_number(x: float) -> str:
    """1.3e-06 as "1.3e-6", 0.5 as "0.5"."""
    if 1e-3 <= x < 1e3:
        return f"{x:.2g}"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _annotate(ax, raw, norm, cmap, fontsize: float = 6.5) -> None:
    """Each cell's value (``raw``, before clipping to the colour scale), in black or white after
    the cell's lightness; values beyond the scale as "<floor" or ">ceiling"."""
    floor, ceil = norm.vmin, norm.vmax
    for (i, j), v in np.ndenumerate(raw):
        if np.isnan(v):
            continue
        shown = min(max(v, floor), ceil)
        r, g, b, _ = cmap(norm(shown))
        colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
        text = ("0" if v == 0 else f"<{_short_number(floor)}" if v < floor else
                f">{_short_number(ceil)}" if v > ceil else _short_number(v))
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=colour)


def _cmap(name: str):
    import matplotlib
    return matplotlib.colormaps[name].with_extremes(bad="#dddddd")


def loss_heatmap(name: str, parity: pd.DataFrame, path, max_columns: int = 8) -> Path | None:
    """One loss: case and reduction (rows) by implementation and dtype (columns), coloured by
    the cell's error over its tolerance (the larger of value and gradient), log scale; 1 is
    the edge of passing. Crosses mark failed cells.

    At most ``max_columns`` columns side by side (two dtypes of four implementations): further
    dtypes go to a panel below, with only the rows that have cells there (the half-precision
    cells cover few cases), so that the picture stays about 1,000 pixels wide."""
    cells = parity[(parity["loss"] == name) & (parity["variant"].isin(VARIANTS))] if len(parity) else parity
    if cells.empty:
        return None
    from matplotlib.colors import LogNorm
    rows = list(dict.fromkeys(zip(cells["case"], cells["reduction"])))
    dtypes = list(dict.fromkeys(cells["dtype"]))
    devices = list(dict.fromkeys(cells["device"]))
    columns = [(v, dt, dev) for dev in devices for dt in dtypes for v in VARIANTS
               if ((cells["variant"] == v) & (cells["dtype"] == dt) & (cells["device"] == dev)).any()]
    index = {key: i for i, key in enumerate(rows)}
    col_index = {key: j for j, key in enumerate(columns)}
    values = np.full((len(rows), len(columns)), np.nan)
    failed = np.zeros_like(values, dtype=bool)
    ratio = np.fmax(pd.to_numeric(cells["value_tol_ratio"], errors="coerce").to_numpy(float),
                    pd.to_numeric(cells["grad_tol_ratio"], errors="coerce").to_numpy(float))
    for r, value in zip(cells.itertuples(), ratio):
        i, j = index[(r.case, r.reduction)], col_index[(r.variant, r.dtype, r.device)]
        values[i, j] = value
        failed[i, j] = r.status in ("failed", "error", "xpass")
    # Panels: consecutive columns, at most max_columns each, never splitting a (dtype, device).
    panels, current = [], []
    for key, group in _runs(columns, lambda c: (c[1], c[2])):
        if current and len(current) + len(group) > max_columns:
            panels.append(current)
            current = []
        current = current + group
    if current:
        panels.append(current)
    panel_rows = []
    for cols in panels:
        js = [col_index[c] for c in cols]
        panel_rows.append([i for i in range(len(rows)) if np.isfinite(values[i, js]).any() or failed[i, js].any()])
    width = 3.6 + 0.72 * max(len(p) for p in panels)
    heights = [0.2 * max(1, len(r)) for r in panel_rows]
    fig = _figure(width, sum(heights) + 0.8 * len(panels) + 0.4)
    axes = np.atleast_1d(fig.subplots(len(panels), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)).ravel()
    cmap = _cmap("magma")
    norm = LogNorm(vmin=LOSS_FLOOR, vmax=LOSS_CEIL)
    im = None
    for ax, cols, prows in zip(axes, panels, panel_rows):
        js = [col_index[c] for c in cols]
        sub = values[np.ix_(prows, js)]
        im = ax.imshow(np.ma.masked_invalid(np.clip(sub, LOSS_FLOOR, LOSS_CEIL)), aspect="auto", cmap=cmap, norm=norm,
                       interpolation="nearest")
        _annotate(ax, sub, norm, cmap, fontsize=6)
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([f"{FRAMEWORK_OF[v]}\n{v}\n{dt}" + (f"\n{dev}" if len(devices) > 1 else "")
                            for v, dt, dev in cols], fontsize=7)
        ax.xaxis.tick_top()
        ax.set_yticks(range(len(prows)))
        ax.set_yticklabels([f"{rows[i][0]} / {rows[i][1]}" for i in prows], fontsize=8)
        ax.set_xticks(np.arange(-0.5, len(cols)), minor=True)
        ax.set_yticks(np.arange(-0.5, len(prows)), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.6)
        ax.tick_params(which="minor", length=0)
        marks = np.argwhere(failed[np.ix_(prows, js)])
        if len(marks):
            ax.scatter(marks[:, 1], marks[:, 0], marker="x", s=40, color="#00e0ff", linewidths=1.6, label="failed")
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, -0.02), fontsize=8, frameon=False)
    cbar = fig.colorbar(im, ax=list(axes), pad=0.02, shrink=min(1.0, 5.0 / max(sum(heights), 1e-9)), aspect=25)
    cbar.set_label("error / tolerance (1 = the edge of passing)", fontsize=9)
    cbar.ax.axhline(1.0, color="#00e0ff", linewidth=2)
    return _save(fig, path)


def _runs(items, key):
    """Consecutive runs of ``items`` with equal ``key``: [(key, [items])]."""
    out = []
    for item in items:
        k = key(item)
        if out and out[-1][0] == k:
            out[-1][1].append(item)
        else:
            out.append((k, [item]))
    return out


# -- timings ----------------------------------------------------------------------------------

def timing_ratios(timings: pd.DataFrame, path) -> Path | None:
    """Per loss (rows), each implementation's forward + backward time over its framework's
    built-in (log scale; 1 = as fast). Losses with no built-in are left out."""
    if timings.empty or "ratio_to_builtin" not in timings:
        return None
    t = timings.assign(ratio=pd.to_numeric(timings["ratio_to_builtin"], errors="coerce"))
    t = t[t["ratio"].notna() & (t["ratio"] > 0)]
    if t.empty:
        return None
    devices = list(dict.fromkeys(t["device"]))
    losses = sorted(t["loss"].unique(), reverse=True)  # alphabetical from the top
    y = {loss: i for i, loss in enumerate(losses)}
    height = 1.7 + 0.2 * len(losses)
    fig = _figure(4.0 + 3.2 * len(devices), height)
    axes = np.atleast_1d(fig.subplots(1, len(devices), sharey=True))
    lo, hi = float(t["ratio"].min()), float(t["ratio"].max())
    lo, hi = min(lo, 0.5) / 1.3, max(hi, 2.0) * 1.3
    offsets = {v: (k - 1.5) * 0.16 for k, v in enumerate(VARIANTS)}
    for ax, device in zip(axes, devices):
        sub = t[t["device"] == device]
        ax.axvspan(lo, 1.0, color="#e8f4e8", zorder=0)
        ax.axvline(1.0, color="black", linewidth=1)
        for variant in VARIANTS:
            g = sub[sub["variant"] == variant]
            if g.empty:
                continue
            colour, marker = STYLE[variant]
            ax.scatter(g["ratio"], [y[loss] + offsets[variant] for loss in g["loss"]], color=colour, marker=marker,
                       s=22, label=f"{_label(variant)} (median {g['ratio'].median():.2g}x)", zorder=3)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_yticks(range(len(losses)))
        ax.set_yticklabels(losses, fontsize=8)
        ax.set_ylim(-0.7, len(losses) - 0.3)
        ax.grid(axis="x", which="major", color="#cccccc", linewidth=0.6)
        ax.grid(axis="y", which="major", color="#eeeeee", linewidth=0.5)
        ax.set_xlabel("forward + backward time / the built-in's (log)", fontsize=9)
        ax.xaxis.set_major_formatter(_ratio_formatter())
        if len(losses) > 15:  # a tall chart: the scale at the top too
            ax.tick_params(axis="x", top=True, labeltop=True)
        # The device's line as the legend's title: a separate axes title would sit under the legend.
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0 + 0.35 / height), ncol=2, fontsize=8, frameon=False,
                  title=f"{device}: left of 1 = faster than the built-in", title_fontsize=10)
    return _save(fig, path)


def _ratio_formatter():
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda x, _: f"{x:g}x")


# -- scaling ----------------------------------------------------------------------------------

SCALING_NEEDS = ("loss", "framework", "variant", "device", "dtype", "elements", "classes", "fwd_bwd_ms")


def scaling_panels(scaling: pd.DataFrame) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(loss, device, sweep, rows) per panel: ``sweep`` is ``"elements"`` (x = elements) or
    ``"classes"`` (x = classes at a fixed number of rows). The file's ``sweep`` column says
    which rows belong where; without one, a loss whose rows hold several class counts at one
    row count has a class sweep there, and the rest is its element sweep."""
    missing = [c for c in SCALING_NEEDS if c not in scaling.columns]
    if missing:
        raise ValueError(f"scaling.csv lacks the columns {', '.join(missing)}")
    df = scaling.assign(elements=pd.to_numeric(scaling["elements"], errors="coerce"),
                        classes=pd.to_numeric(scaling["classes"], errors="coerce"),
                        fwd_bwd_ms=pd.to_numeric(scaling["fwd_bwd_ms"], errors="coerce"))
    df = df[df["fwd_bwd_ms"].notna() & (df["fwd_bwd_ms"] > 0)]
    panels = []
    for loss in dict.fromkeys(df["loss"]):
        for device in dict.fromkeys(df[df["loss"] == loss]["device"]):
            g = df[(df["loss"] == loss) & (df["device"] == device)]
            if "sweep" in g.columns:
                parts = {s: g[g["sweep"] == s] for s in dict.fromkeys(g["sweep"])}
            else:
                parts = _infer_sweeps(g)
            for sweep, rows in parts.items():
                x = "classes" if sweep == "classes" else "elements"
                if rows[x].nunique() >= 2:
                    panels.append((loss, device, "classes" if sweep == "classes" else "elements", rows))
    return panels


def _infer_sweeps(g: pd.DataFrame) -> dict:
    classes = g["classes"]
    if classes.notna().any() and classes.nunique() >= 3:
        rows_per_class = (g["elements"] / classes).round()
        tokens = rows_per_class[classes.notna()].mode()
        if len(tokens):
            at = g[rows_per_class == tokens.iloc[0]]
            if at["classes"].nunique() >= 3:
                rest = g[classes == classes.mode().iloc[0]]
                return {"elements": rest, "classes": at}
    return {"elements": g}


def scaling(scaling: pd.DataFrame, path, losses=None) -> Path | None:
    """Small multiples: per swept loss (and device), forward + backward milliseconds against the
    elements of the first input (or the class count, for a class sweep), log-log; one line per
    implementation, the built-ins dashed, torch's floor (``reports.floor``) dash-dotted."""
    if scaling is None or scaling.empty:
        return None
    panels = scaling_panels(scaling)
    if losses is not None:
        panels = [p for p in panels if p[0] in losses]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(3.3 * ncols, 2.8 * nrows + 0.6)  # three panels across: 1,000 pixels
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    handles = {}
    for ax, (loss, device, sweep, rows) in zip(axes, panels):
        x = "classes" if sweep == "classes" else "elements"
        dtypes = list(dict.fromkeys(rows["dtype"]))
        for (framework, variant), g in rows.groupby(["framework", "variant"], sort=False):
            g = g.groupby(x, as_index=False)["fwd_bwd_ms"].median().sort_values(x)
            builtin = variant == "builtin"
            colour, marker = STYLE.get(variant, ("black", "."))
            label = (f"{framework} built-in" if builtin else "torch floor (its kernels, Python Function)"
                     if variant == "floor" else _label(variant))
            style = (":" if framework == "jax" else "--") if builtin else "-." if variant == "floor" else "-"
            (line,) = ax.plot(g[x], g["fwd_bwd_ms"], linestyle=style, marker=marker, markersize=4, linewidth=1.4,
                              color="black" if builtin and framework == "torch" else colour, label=label)
            handles.setdefault(label, line)
        if not (rows["variant"] == "builtin").any() and "builtin_fwd_bwd_ms" in rows:
            for framework, g in rows.groupby("framework", sort=False):
                b = g.assign(b=pd.to_numeric(g["builtin_fwd_bwd_ms"], errors="coerce")).groupby(x)["b"].median()
                b = b[b.notna()]
                if len(b):
                    label = f"{framework} built-in"
                    (line,) = ax.plot(b.index, b.values, linestyle="--" if framework == "torch" else ":",
                                      color="black", linewidth=1.4, label=label)
                    handles.setdefault(label, line)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(which="major", color="#dddddd", linewidth=0.6)
        title = loss + (f" ({device})" if device != "cpu" else "")
        if sweep == "classes":
            n_rows = (rows["elements"] / rows["classes"]).round().mode()
            title += f": classes at {int(n_rows.iloc[0])} rows" if len(n_rows) else ": classes"
        elif rows["classes"].notna().any() and rows["classes"].nunique() == 1:
            title += f" ({int(rows['classes'].dropna().iloc[0])} classes)"
        ax.set_title(title + (f", {', '.join(dtypes)}" if dtypes != ["float32"] else ""), fontsize=10)
        ax.set_xlabel("classes" if sweep == "classes" else "elements of the first input", fontsize=9)
        ax.set_ylabel("fwd+bwd ms", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(4, len(handles)),
               fontsize=9, frameon=False)
    return _save(fig, path)


# -- training ---------------------------------------------------------------------------------

def training_curves(curves: pd.DataFrame, path, tolerance: float | None = None,
                    parity_dtype: str = "float64") -> Path | None:
    """Three panels: the loss per step of every run (they lie on top of one another); the
    relative difference of each run's curve from its framework's built-in (and of JAX's
    built-in from torch's, when the file has it) per step; the same for the weights at the
    end of each epoch. Log scales, zeros drawn at the floor, the tolerance marked."""
    if curves is None or curves.empty:
        return None
    floor = 1e-18
    # Two rows, 1,000 pixels wide: the curves across the top, their differences below.
    fig = _figure(10, 8)
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.15])
    ax_loss = fig.add_subplot(grid[0, :])
    ax_curve, ax_weights = fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
    dtypes = list(dict.fromkeys(curves["dtype"]))
    main = curves[curves["dtype"] == (parity_dtype if parity_dtype in dtypes else dtypes[0])]
    widths = {"builtin": 3.5}
    for (framework, variant), g in main.groupby(["framework", "variant"], sort=False):
        colour, _ = STYLE.get(variant, ("black", "."))
        if variant == "builtin":
            colour = "#999999" if framework == "torch" else "#444444"
        ax_loss.plot(g["step"], g["loss"], color=colour, linewidth=widths.get(variant, 0.9),
                     linestyle="-" if framework == "torch" else "--", label=f"{framework}.{variant}")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step", fontsize=9)
    ax_loss.set_ylabel("mini-batch loss", fontsize=9)
    ax_loss.set_title(f"Training loss, {main['dtype'].iloc[0]} (every run, on top of one another)", fontsize=10)
    ax_loss.legend(fontsize=8, frameon=False, ncol=2)
    styles = {d: s for d, s in zip(dtypes, ("-", "--", ":"))}
    for (framework, variant, dtype), g in curves.groupby(["framework", "variant", "dtype"], sort=False):
        against = g["compared_with"].iloc[0] if "compared_with" in g else ("" if variant == "builtin" else "builtin")
        if not isinstance(against, str) or not against:
            continue
        colour, marker = STYLE.get(variant, ("black", "."))
        label = f"{framework}.{variant} {dtype}"
        if variant == "builtin":
            colour, label = "#444444", f"{framework}.builtin vs {against} {dtype}"
        # The largest difference up to each step: a monotone curve that reads as "agrees to
        # within this, so far" (the per-step differences jump between 0 and a few ulps).
        running = np.fmax.accumulate(g["loss_rel_diff"].to_numpy(float))
        ax_curve.plot(g["step"], np.maximum(running, floor), color=colour, linestyle=styles[dtype], linewidth=1.4,
                      label=label)
        e = g[g["weights_rel_diff"].notna()]
        ax_weights.plot(e["epoch"] + 1, np.maximum(e["weights_rel_diff"].to_numpy(float), floor), color=colour,
                        linestyle=styles[dtype], marker=marker, markersize=4, linewidth=1, label=label)
    for ax in (ax_curve, ax_weights):
        ax.set_yscale("log")
        ax.set_ylim(floor / 3, 1.0)
        if tolerance:
            ax.axhline(tolerance, color="red", linewidth=1.5)
            ax.text(0.01, tolerance * 2.5, f"tolerance {tolerance:g} ({parity_dtype})", color="red", fontsize=8,
                    transform=ax.get_yaxis_transform())
        ax.grid(which="major", color="#dddddd", linewidth=0.6)
    ax_curve.set_xlabel("step", fontsize=9)
    ax_curve.set_ylabel("max so far of |loss - built-in's| / |built-in's|", fontsize=9)
    ax_curve.set_title(f"Loss curves against the built-in\n(0 drawn at {floor:g})", fontsize=10)
    ax_weights.set_xlabel("epoch", fontsize=9)
    ax_weights.set_ylabel("max |w - w built-in| / max |w built-in|", fontsize=9)
    ax_weights.set_title(f"Weights against the built-in's, end of each epoch\n(0 drawn at {floor:g})", fontsize=10)
    handles, labels = ax_weights.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    return _save(fig, path)
