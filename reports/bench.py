"""The size sweep (``scaling.csv``) and ``lossparity bench``.

The sweep times the main losses' implementations and their built-ins at sizes from 1e3
to 1e7 elements (decades; the elements of the first input, e.g. ``(N, C)`` logits), and
``cross_entropy`` over class counts from 10 to 32,768 at a fixed number of tokens (rows).
Each point is measured as in :mod:`reports.timing` (forward + backward only, float32, the
default case, ``reduction="mean"``): the median and its interquartile range, the peak
memory, the bytes moved and the achieved GB/s beside a copy of the same bytes timed in the
same run. One row per loss x point x implementation, the built-in included as the variant
``builtin``; ``builtin_fwd_bwd_ms`` and ``ratio_to_builtin`` set each row beside its
framework's built-in.

A point is left out (listed, with the reason) when its inputs would not fit in the memory
the machine has free, and a loss's sweep stops growing once one forward + backward took
longer than ``SLOW_POINT`` seconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

import reference
from . import timing
from .system import mem_available

SWEEP_LOSSES = ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy_with_logits",
                "binary_cross_entropy", "kl_div", "cross_entropy", "nll_loss")
SIZES = (10 ** 3, 10 ** 4, 10 ** 5, 10 ** 6, 10 ** 7)
QUICK_SIZES = (10 ** 3, 10 ** 4, 10 ** 5)
CLASS_LOSSES = ("cross_entropy",)
# The report's sweep times every other loss at these sizes too: its speed targets then cover
# every loss with a built-in at a size where the work, not the call around it, dominates.
EVERY_LOSS_SIZES = (10 ** 6,)
CLASSES = (10, 100, 1000, 10000, 32768)
QUICK_CLASSES = (10, 100, 1000)
TOKENS = 256           # rows of the class sweep
QUICK_TOKENS = 64
# The class axis of the first input, for the losses that have one. In the element sweep
# these losses hold ``ELEMENT_SWEEP_CLASSES`` classes and the rows grow.
CLASS_AXIS = {"cross_entropy": 1, "nll_loss": 1}
ELEMENT_SWEEP_CLASSES = 100
# Stop a loss's sweep once one forward + backward at a point took longer than this (seconds).
SLOW_POINT = 2.0
# A point needs about this many times its first input's float64 bytes free (the draw in
# float64, the float32 arrays of both frameworks, gradients and temporaries).
MEMORY_FACTOR = 16

SWEEP = replace(timing.NORMAL, torch_compile=False, forward=False)
QUICK_SWEEP = replace(timing.QUICK, torch_compile=False, forward=False)

SCALING_COLUMNS = ["loss", "sweep", "framework", "variant", "device", "dtype", "point_elements", "elements",
                   "classes", "shapes", "fwd_bwd_ms", "fwd_bwd_iqr_ms", "builtin", "builtin_fwd_bwd_ms",
                   "ratio_to_builtin", "compile_ms", "peak_bytes", "memory_source", "bytes_moved", "gbps", "copy_ms",
                   "copy_gbps",
                   "cpu_model", "threads", "gpu", "allocator", "note"]


@dataclass(frozen=True)
class Point:
    sweep: str            # "elements" or "classes"
    elements: int         # elements of the first input asked for
    classes: int | None   # the class count, for a loss with a class axis


def points(name: str, sizes=SIZES, classes=CLASSES, tokens: int = TOKENS, class_losses=CLASS_LOSSES) -> list[Point]:
    """The sweep of one loss: ``sizes`` elements, then (for a loss in ``class_losses``)
    ``classes`` classes at ``tokens`` rows."""
    axis = CLASS_AXIS.get(name)
    out = [Point("elements", int(n), ELEMENT_SWEEP_CLASSES if axis is not None else None) for n in sizes or ()]
    if name in class_losses and axis is not None:
        out += [Point("classes", int(tokens) * int(c), int(c)) for c in classes or ()]
    return out


def sweep_loss(name: str, pts: list[Point], budget: timing.Budget = SWEEP, devices=None, variants=None,
               seed: int = 0, log=None) -> tuple[list[dict], list[dict]]:
    """The scaling rows of one loss over ``pts``, and the points left out ({"loss", "what", "reason"})."""
    spec = reference.get(name)
    case = spec.cases[0]
    axis = CLASS_AXIS.get(name, 1)
    rows, skipped = [], []
    stopped = {}  # sweep -> why it stopped growing
    for p in pts:
        what = f"classes {p.classes} ({p.elements:g} elements)" if p.sweep == "classes" else f"elements {p.elements:g}"
        if p.sweep in stopped:
            skipped.append({"loss": name, "what": what, "reason": stopped[p.sweep]})
            continue
        need = MEMORY_FACTOR * 8 * p.elements
        if need > mem_available():
            skipped.append({"loss": name, "what": what,
                            "reason": f"needs about {need / 2**30:.1f} GiB free; {mem_available() / 2**30:.1f} GiB is"})
            continue
        start = time.perf_counter()
        try:
            sizes = timing.sizes_at(spec, case, p.elements, p.classes, axis)
            d = timing.draw(spec, case, sizes, seed)
        except Exception as e:
            skipped.append({"loss": name, "what": what, "reason": f"the inputs could not be drawn: {timing._error(e)}"})
            continue
        slowest, copies = 0.0, {}
        for framework, device, builtin, measured in timing.measure(name, d, variants, budget, devices):
            b = measured.get("builtin")
            b_note = timing._builtin_note(b)
            b_ms = b.fwd_bwd_ms if isinstance(b, timing.Measured) else math.nan
            for variant, result in measured.items():
                row = {"loss": name, "sweep": p.sweep, "framework": framework, "variant": variant, "device": device,
                       "dtype": timing.DTYPE, "point_elements": p.elements, "elements": int(np.size(d.inputs[0])),
                       "classes": (int(np.shape(d.inputs[0])[axis]) if p.classes is not None else math.nan),
                       "shapes": timing._shapes(d), "builtin": builtin, "builtin_fwd_bwd_ms": b_ms,
                       "ratio_to_builtin": math.nan, **timing.machine(framework), "note": b_note}
                if isinstance(result, Exception):
                    if variant == "floor":  # an option the floor does not cover: no yardstick here
                        continue
                    if variant == "builtin":
                        row["note"] = b_note
                    else:
                        row["note"] = "; ".join(filter(None, [f"failed: {timing._error(result)}", b_note]))
                else:
                    row.update({k: getattr(result, k) for k in ("fwd_bwd_ms", "fwd_bwd_iqr_ms", "compile_ms",
                                                                "peak_bytes", "memory_source", "bytes_moved")})
                    row.update(timing.bandwidth(result, device, budget, copies))
                    row["note"] = "; ".join(filter(None, [result.note, "" if variant == "builtin" else b_note]))
                    if not math.isnan(b_ms):
                        row["ratio_to_builtin"] = result.fwd_bwd_ms / b_ms
                    slowest = max(slowest, result.fwd_bwd_ms / 1e3)
                rows.append({c: row.get(c, math.nan) for c in SCALING_COLUMNS})
        if log is not None:
            log(f"  {name:<34} {what:<28} {time.perf_counter() - start:6.1f} s")
        if slowest > SLOW_POINT:
            stopped[p.sweep] = f"a forward + backward at a smaller point took {slowest:.1f} s"
    return rows, skipped


def sweep(losses=None, sizes=SIZES, classes=CLASSES, tokens: int = TOKENS, budget: timing.Budget = SWEEP,
          devices=None, variants=None, class_losses=CLASS_LOSSES, seed: int = 0,
          log=None) -> tuple[list[dict], list[dict]]:
    """The scaling rows of every loss in ``losses`` (default: ``SWEEP_LOSSES``), and what was left out."""
    rows, skipped = [], []
    for name in SWEEP_LOSSES if losses is None else losses:
        r, s = sweep_loss(name, points(name, sizes, classes, tokens, class_losses), budget, devices, variants,
                          seed, log)
        rows += r
        skipped += s
    return rows, skipped


def scaling_frame(rows: list[dict]):
    import pandas as pd
    return pd.DataFrame(rows, columns=SCALING_COLUMNS)


# -- the speed targets -------------------------------------------------------------------

# Issue 6's targets for our implementations against their framework's built-in, forward +
# backward: the fastest of a framework's variants per loss, at most TARGET_MEDIAN times the
# built-in at the median over the losses and never above TARGET_MAX.
TARGET_MEDIAN = 1.05
TARGET_MAX = 1.25
TARGET_COLUMNS = ["framework", "device", "measured", "point", "losses", "median_ratio", "max_ratio", "worst_loss",
                  "above_max", "above_max_floor", "met"]


def point_label(sweep: str, elements, classes) -> str:
    """The point asked for: ``elements`` (the first input's, as asked for; its draw may hold a
    few more or fewer) or, in the class sweep, the rows and the class count."""
    if sweep == "classes":
        return f"{round(float(elements) / float(classes))} rows x {int(classes)} classes"
    n = int(elements)
    decade = round(math.log10(n)) if n > 0 else 0
    return f"1e{decade} elements" if n >= 1000 and n == 10 ** decade else f"{n:,} elements"


def speed_targets(timings=None, scaling=None):
    """The targets, measured: one row per framework x device x point (``timings.csv``'s
    default sizes, then each point of ``scaling.csv``), over the losses whose built-in was
    timed there: how many, the median and the largest of each loss's best ratio (its fastest
    variant over the built-in), the loss with the largest, how many lie above ``TARGET_MAX``
    and, of those, how many have a floor (:mod:`reports.floor`) above it too, and whether both
    targets hold."""
    import pandas as pd
    frames = []
    if timings is not None and len(timings):
        t = timings[timings["ratio_to_builtin"].notna()]
        if "floor_ratio" not in t:
            t = t.assign(floor_ratio=math.nan)
        best = t.groupby(["framework", "device", "loss"], sort=False).agg(
            ratio_to_builtin=("ratio_to_builtin", "min"), floor_ratio=("floor_ratio", "first")).reset_index()
        best["measured"], best["point"], best["order"] = "timings", "default sizes", -1.0
        frames.append(best)
    if scaling is not None and len(scaling):
        s = scaling.copy()
        if "ratio_to_builtin" not in s:
            s["ratio_to_builtin"] = s["fwd_bwd_ms"] / s["builtin_fwd_bwd_ms"]
        s = s[(s["variant"] != "builtin") & s["ratio_to_builtin"].notna()]
        if "sweep" not in s:
            s["sweep"] = "elements"
        if "classes" not in s:
            s["classes"] = math.nan
        if "point_elements" not in s:  # a scaling.csv from before the column: the nearest decade, the class count
            s["point_elements"] = [e if w == "classes" else 10 ** round(math.log10(e))
                                   for w, e in zip(s["sweep"], s["elements"])]
        asked = s["point_elements"]
        s["point"] = [point_label(w, e, c) for w, e, c in zip(s["sweep"], asked, s["classes"])]
        s["order"] = [(1e12 if w == "classes" else 0) + float(e) for w, e in zip(s["sweep"], asked)]
        keys = ["framework", "device", "point", "order", "loss"]
        floors = s[s["variant"] == "floor"].groupby(keys, sort=False)["ratio_to_builtin"].first().rename("floor_ratio")
        best = s[s["variant"] != "floor"].groupby(keys, sort=False)["ratio_to_builtin"].min()
        best = best.reset_index().join(floors, on=keys)
        best["measured"] = "sweep"
        frames.append(best)
    if not frames:
        return pd.DataFrame(columns=TARGET_COLUMNS)
    best = pd.concat(frames, ignore_index=True)
    rows = []
    keys = ["framework", "device", "measured", "point", "order"]
    for (framework, device, measured, point, order), g in best.groupby(keys, sort=False):
        ratios = g.set_index("loss")["ratio_to_builtin"]
        median, worst = float(ratios.median()), float(ratios.max())
        above = ratios > TARGET_MAX
        floors = g.set_index("loss")["floor_ratio"]
        floor_above = int((above & (floors > TARGET_MAX)).sum()) if floors.notna().any() else math.nan
        rows.append({"framework": framework, "device": device, "measured": measured, "point": point,
                     "losses": len(ratios), "median_ratio": median, "max_ratio": worst,
                     "worst_loss": str(ratios.idxmax()), "above_max": int(above.sum()),
                     "above_max_floor": floor_above,
                     "met": bool(median <= TARGET_MEDIAN and not above.any()), "order": order})
    frameworks = {"torch": 0, "jax": 1}
    df = pd.DataFrame(rows).sort_values(
        ["framework", "device", "order"], key=lambda c: c.map(frameworks) if c.name == "framework" else c, kind="stable")
    return df[TARGET_COLUMNS].reset_index(drop=True)


def targets_line(row) -> str:
    floor = "" if math.isnan(row.above_max_floor) else f"{row.above_max_floor:.0f} of them with a floor above it too; "
    return (f"{row.framework} {row.device}, {row.point}: median {row.median_ratio:.2f}x over {row.losses} losses, "
            f"{row.above_max} above {TARGET_MAX}x ({floor}worst {row.worst_loss} {row.max_ratio:.2f}x): "
            + ("met" if row.met else "not met"))


# -- printing -----------------------------------------------------------------------------

def _ms(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def _num(x, digits: int = 3) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _mib(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x / 2**20:.2f}"


def timings_table(df) -> str:
    from tabulate import tabulate
    rows = [[r.loss, f"{r.framework}.{r.variant}", r.device, r.shapes, _ms(r.fwd_bwd_ms), _ms(r.fwd_bwd_iqr_ms),
             _ms(r.compile_ms), _ms(r.compiled_fwd_bwd_ms), _ms(r.builtin_fwd_bwd_ms), _num(r.ratio_to_builtin, 2),
             _num(getattr(r, "floor_ratio", math.nan), 2), _mib(r.peak_bytes), _num(r.gbps), _num(r.copy_gbps)]
            for r in df.itertuples()]
    return tabulate(rows, headers=["loss", "implementation", "device", "shapes", "fwd+bwd ms", "iqr", "compile ms",
                                   "compiled ms", "built-in ms", "ratio", "floor", "peak MiB", "GB/s", "copy GB/s"],
                    disable_numparse=True)


def targets_table(df) -> str:
    from tabulate import tabulate
    rows = [[r.framework, r.device, r.point, r.losses, f"{r.median_ratio:.3f}", f"{r.max_ratio:.2f}", r.worst_loss,
             r.above_max, _num(r.above_max_floor), "yes" if r.met else "no"] for r in df.itertuples()]
    return tabulate(rows, headers=["framework", "device", "measured at", "losses", "median ratio", "max ratio",
                                   "worst", f"above {TARGET_MAX}x", "floor too", "met"], disable_numparse=True)


def scaling_table(df) -> str:
    """One line per loss x point: each implementation's forward + backward ms, the copy
    yardstick's GB/s and the best implementation's GB/s."""
    from tabulate import tabulate
    if df.empty:
        return "(no points)"
    labels = list(dict.fromkeys(f"{f}.{v}" for f, v in zip(df["framework"], df["variant"])))
    rows = []
    keys = ["loss", "sweep", "device", "elements", "classes"]
    for key, g in df.groupby(keys, sort=False, dropna=False):
        ms = {f"{r.framework}.{r.variant}": r.fwd_bwd_ms for r in g.itertuples()}
        classes = "" if isinstance(key[4], float) and math.isnan(key[4]) else str(int(key[4]))
        rows.append([key[0], key[1], key[2], f"{key[3]:.3g}", classes] + [_ms(ms.get(lab, math.nan)) for lab in labels]
                    + [_num(g["gbps"].max()), _num(g["copy_gbps"].iloc[0]), _mib(g["peak_bytes"].max())])
    return tabulate(rows, headers=keys + [f"{lab} ms" for lab in labels] + ["best GB/s", "copy GB/s", "peak MiB"],
                    disable_numparse=True)


# -- lossparity bench ------------------------------------------------------------------------

def write_csv(df, path) -> None:
    from .report import write_csv as write
    write(df, path)


def run_sweep(out=None, losses=None, sizes=SIZES, classes=CLASSES, tokens: int = TOKENS, quick: bool = False,
              devices=None, variants=None, seed: int = 0, log=print, others=(), other_sizes=EVERY_LOSS_SIZES):
    """The sweep as a DataFrame (written to ``out/scaling.csv`` when ``out`` is given), and
    what it left out: ``losses`` (default ``SWEEP_LOSSES``) at ``sizes`` and, for
    ``cross_entropy``, ``classes``; then the losses in ``others`` at ``other_sizes`` alone."""
    budget = QUICK_SWEEP if quick else SWEEP
    losses = SWEEP_LOSSES if losses is None else losses
    others = list(others) if other_sizes else []
    start, cpu = time.perf_counter(), time.process_time()
    if log is not None:
        log(f"sweep: {len(losses)} losses, sizes {', '.join(f'{s:g}' for s in sizes or ())}; cross_entropy classes "
            f"{', '.join(map(str, classes or ()))} at {tokens} tokens"
            + (f"; {len(others)} other losses at {', '.join(f'{s:g}' for s in other_sizes)}" if others else ""))
    rows, skipped = [], []
    for group, group_sizes, group_classes in ((losses, sizes, classes), (others, other_sizes, ())):
        for name in group:
            r, s = sweep([name], group_sizes, group_classes, tokens, budget, devices, variants, seed=seed, log=log)
            rows, skipped = rows + r, skipped + s
            if out is not None:  # loss by loss: a run stopped part way keeps what it measured
                write_csv(scaling_frame(rows), Path(out) / "scaling.csv")
    df = scaling_frame(rows)
    if out is not None:
        write_csv(df, Path(out) / "scaling.csv")
    if log is not None:
        log(f"sweep: {len(df)} rows, {time.perf_counter() - start:.1f} s ({time.process_time() - cpu:.1f} s of CPU)")
    return df, skipped


def bench(out, losses=None, sizes=None, classes=None, tokens=None, quick: bool = False, devices=None,
          with_timings: bool = True, with_sweep: bool = True, torch_compile: bool = True, seed: int = 0,
          log=print) -> dict:
    """``lossparity bench``: the timings of ``losses`` (default ``SWEEP_LOSSES``) into
    ``out/timings.csv`` and their sweep into ``out/scaling.csv``; returns the frames."""
    from .report import timings_frame
    losses = list(losses or SWEEP_LOSSES)
    out = Path(out)
    result = {}
    if with_timings:
        budget = timing.QUICK if quick else replace(timing.NORMAL, torch_compile=torch_compile)
        start = time.perf_counter()
        rows, skipped = [], []
        for name in losses:
            t = time.perf_counter()
            r, s = timing.time_loss(name, budget=budget, seed=seed, devices=devices)
            rows += r
            skipped += s
            write_csv(timings_frame(rows), out / "timings.csv")  # loss by loss: a run stopped part way keeps them
            if log is not None:
                log(f"  timings {name:<34} {time.perf_counter() - t:6.1f} s")
        df = timings_frame(rows)
        result["timings"], result["timings_skipped"] = df, skipped
        if log is not None:
            log(f"timings: {len(df)} rows, {time.perf_counter() - start:.1f} s")
    if with_sweep:
        df, skipped = run_sweep(out, losses, sizes or (QUICK_SIZES if quick else SIZES),
                                classes or (QUICK_CLASSES if quick else CLASSES),
                                tokens or (QUICK_TOKENS if quick else TOKENS), quick, devices, seed=seed, log=log)
        result["scaling"], result["scaling_skipped"] = df, skipped
    return result
