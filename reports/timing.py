"""Timings: every implementation of a loss beside the framework's own built-in.

One row per loss x variant x device, in float32, on the loss's default case with
``reduction="mean"``, at a moderate size drawn with the sampler's own size options
(see :func:`sizes_for`). What is timed:

* torch: ``torch.utils.benchmark.Timer(...)`` with ``num_threads=torch.get_num_threads()``
  after a warm-up, median of blocks of calls (``Timer.timeit(number)``, at least
  ``Budget.block_time`` each), ours and the built-in's blocks interleaved round-robin
  (not ``blocked_autorange``, which times one statement to its end before the next:
  this VM drifts 15-20% from minute to minute), each block after an untimed one of half
  as many calls of the same statement (what ran before it leaves a call slower for a few
  milliseconds); ``torch.cuda.synchronize()`` after every
  call on CUDA. The forward alone, and the forward plus ``torch.autograd.grad`` of the
  differentiable inputs.
* torch, ``torch.compile``: the ``module`` variant's ``nn.Module`` (built once, its array
  hyperparameters as buffers) under ``torch.compile`` (default mode, inductor), forward plus
  backward, timed as above; ``compile_ms`` of the module row is the first call's time less
  the median of the later ones: Dynamo's tracing, AOTAutograd and inductor's code
  generation for the forward and the backward, with torch's on-disk caches as they stand
  (a second run finds them warm and compiles faster). ``torch._dynamo.reset()`` comes
  before each loss, so every loss compiles afresh in the process. The first compiled call's
  value and gradients must equal the eager module's (the matrix's tolerance): else no time.
* JAX: ``jax.jit`` of the forward and of the forward plus its VJP, compiled apart
  with ``.lower(...).compile()`` (``compile_ms`` is that time, tracing included, for
  the forward plus VJP), then a warm-up and the median of blocks of calls, each call
  ending in ``block_until_ready``, ours and the built-in's blocks interleaved as torch's.
  Both JAX variants are always jitted.

Every timing runs with glibc's malloc keeping freed memory for the next allocation
(:func:`freed_memory_kept`): as it starts, glibc maps every large block afresh, and from
about 1e6 elements on the timings measured its page faults, not the loss.

Every median comes with its spread, the interquartile range (p75 - p25) of the blocks'
per-call times (``*_iqr_ms``; empty for a call so slow that it was timed in
``SLOW_CALL_BLOCKS`` single calls, fewer than ``MIN_SPREAD_BLOCKS``).

Memory (``peak_bytes``: what one forward + backward allocates at its peak beyond its
inputs, which exist before the call; ``memory_source`` says how it was measured):

* torch on CPU, ``rss``: the process's resident set, blocks of 128 KiB and more mapped
  apart and unmapped when freed (``MALLOC_MODES["returned"]``). ``malloc_trim(0)`` hands the
  allocator's free pages back, ``echo 5 > /proc/self/clear_refs`` resets the high-water
  mark ``VmHWM``, and ``VmHWM`` after the call less ``VmRSS`` before it is the increase;
  the largest of three calls. It is process RSS (page granularity, every thread, anything
  else the process touched meanwhile), not a count of tensors; ``tracemalloc`` would see
  none of torch's or XLA's allocations.
* torch on CUDA, ``cuda_allocator``: ``torch.cuda.max_memory_allocated()`` after
  ``reset_peak_memory_stats()``, less ``memory_allocated()`` before the call.
* JAX, ``xla_memory_analysis``: the compiled forward + VJP's
  ``memory_analysis()``: ``temp_size_in_bytes + output_size_in_bytes -
  alias_size_in_bytes`` (the outputs and the temporaries' block that XLA's buffer
  assignment allocates beyond the arguments). Exact for what XLA
  allocates and independent of the machine's load; the process RSS of a JAX call is not
  reliable (XLA's CPU runtime keeps buffers of earlier calls).

``peak_rss_bytes`` is the process's whole RSS high-water mark during the call (CPU, every
row): the same measurement as torch's ``rss`` before subtracting, so it holds the
libraries, the inputs and everything else resident.

Bandwidth: ``bytes_moved`` is the least traffic a forward + backward must make: every
input and array hyperparameter read once, every gradient and the output written once.
``gbps`` is ``bytes_moved`` over the median forward + backward time; the yardstick,
measured in the same run and the same way (blocks of ``Timer.timeit``), is a plain copy
``dst.copy_(src)`` of ``bytes_moved / 2`` bytes on the same device, which moves the same
bytes (read half, write half): ``copy_ms`` and ``copy_gbps``. ``gbps / copy_gbps`` is the
fraction of copy bandwidth the loss reaches; at small sizes both are overhead-bound.

Every row also names the machine: ``cpu_model`` (``/proc/cpuinfo``), ``threads`` (torch's
intra-op threads for torch rows; the CPUs XLA may use for JAX rows), ``gpu`` (``none``
without one) and ``allocator`` (whether freed memory was kept while timed).

The built-in (``torch_impl.builtin(name)`` / ``jax_impl.builtin(name)``) is timed the
same way on the same inputs; ``ratio_to_builtin`` is our forward+backward time over
the built-in's. So is, for torch, the built-in's floor (``floor_fwd_bwd_ms``, and
``floor_ratio`` over the built-in; :mod:`reports.floor`). An adapter that raises
NotImplementedError (an option the built-in lacks) leaves the built-in columns empty, with
the reason in ``note``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import inspect
import math
import os
import platform
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import numpy as np
import torch
import torch.utils.benchmark as benchmark

import jax_impl
import reference
import torch_impl
from . import floor, matrix
from .system import proc_status

COLUMNS = ["loss", "framework", "variant", "dtype", "device", "size", "shapes",
           "fwd_ms", "fwd_iqr_ms", "fwd_bwd_ms", "fwd_bwd_iqr_ms", "compile_ms", "compiled_fwd_bwd_ms",
           "builtin", "builtin_fwd_ms", "builtin_fwd_bwd_ms", "builtin_fwd_bwd_iqr_ms", "ratio_to_builtin",
           "floor_fwd_bwd_ms", "floor_ratio",
           "peak_bytes", "builtin_peak_bytes", "peak_rss_bytes", "memory_source",
           "bytes_moved", "gbps", "copy_ms", "copy_gbps",
           "cpu_model", "threads", "gpu", "allocator", "note"]

DTYPE = "float32"
# Sampler keywords taken to be the batch size, in order of preference, when a sampler
# has no ``shape`` tuple whose first entry could be scaled.
BATCH_NAMES = ("batch", "batch_size", "n", "N", "num", "num_samples", "samples", "rows")
# Stop growing the inputs once one draw takes this long (CPU seconds).
SLOW_DRAW = 0.05


@dataclass(frozen=True)
class Budget:
    """How large the inputs are and how long each measurement runs."""

    target_elements: int   # scale the batch up to about this many elements in all inputs together
    max_scale: int         # never scale the batch by more than this (pairwise losses grow as its square)
    min_run_time: float    # seconds of blocks per measurement
    block_time: float      # a block of calls lasts at least this long (seconds)
    slow_forward: float    # stop growing once the NumPy reference's forward takes this long (seconds)
    torch_compile: bool = False  # also time torch.compile of the module variant
    forward: bool = True   # also time the forward alone (the sweep times forward + backward only)
    memory: bool = True    # measure peak memory and bandwidth
    warm_fraction: float = 0.5  # before each timed block, this fraction of its calls, untimed
    noisy_spread: float = 0.5   # a measurement whose IQR exceeds this fraction of its median is noisy
    extra_rounds: int = 2       # while any label is noisy, this many more rounds of blocks at most


NORMAL = Budget(target_elements=32768, max_scale=1024, min_run_time=0.1, block_time=2e-3, slow_forward=0.01,
                torch_compile=True)
QUICK = Budget(target_elements=512, max_scale=32, min_run_time=0.002, block_time=2e-4, slow_forward=0.005)
# A call slower than this (seconds) is timed in SLOW_CALL_BLOCKS single calls, not in blocks of
# calls for min_run_time: its median is of those.
SLOW_CALL = 0.2
SLOW_CALL_BLOCKS = 3
# Peak memory on CPU is the largest of this many calls.
MEMORY_CALLS = 3
# The spread (interquartile range) is given where at least this many blocks were timed.
MIN_SPREAD_BLOCKS = 4


@dataclass
class Measured:
    """What was measured of one implementation on one device."""

    fwd_ms: float = math.nan
    fwd_iqr_ms: float = math.nan
    fwd_bwd_ms: float = math.nan
    fwd_bwd_iqr_ms: float = math.nan
    compile_ms: float = math.nan
    compiled_fwd_bwd_ms: float = math.nan
    peak_bytes: float = math.nan
    peak_rss_bytes: float = math.nan
    memory_source: str = ""
    bytes_moved: float = math.nan
    note: str = ""


# -- the machine ---------------------------------------------------------------------

@functools.cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def gpu_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    if matrix._jax_has_gpu():
        return jax.devices("gpu")[0].device_kind
    return "none"


def cpu_threads(framework: str) -> int:
    """torch's intra-op threads, or the CPUs XLA's thread pool may use."""
    if framework == "torch":
        return torch.get_num_threads()
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine(framework: str) -> dict:
    return {"cpu_model": cpu_model(), "threads": cpu_threads(framework), "gpu": gpu_name(), "allocator": allocator()}


# -- the allocator ---------------------------------------------------------------------
# glibc's malloc gives a block of 128 KiB and more its own mapping, unmapped when it is freed
# (the threshold then rises with what was freed, up to 32 MiB), and trims the heap's top: the
# next tensor of that size is a fresh mapping whose pages fault in on first touch, one fault
# per 4 KiB. On this VM that cost more than the arithmetic from about 1e6 float32 elements up,
# and moved with the order of the calls: the same F.nll_loss at 10,000 x 100 read 66 us and
# 191 us in two runs, F.mse_loss at 1e7 elements 34-37 ms, 5.7-5.9 ms with freed memory kept.
# So the timings run with glibc keeping what is freed for the next allocation, as tcmalloc and
# jemalloc do (PyTorch's CPU tuning guide recommends either) and torch's caching allocator does
# on CUDA; peak memory is read with blocks mapped apart, so that RSS follows what is alive.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # malloc.h
MALLOC_MODES = {
    "kept": ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2 ** 31 - 1)),  # every block from the heap, none given back
    "returned": ((M_MMAP_MAX, 65536), (M_MMAP_THRESHOLD, 128 * 1024), (M_TRIM_THRESHOLD, 128 * 1024)),
}


@functools.cache
def _libc(name: str):
    """glibc's function ``name``, or None where there is no glibc."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def malloc_mode(mode: str) -> bool:
    """Set glibc's malloc to ``MALLOC_MODES[mode]``; False where there is no glibc."""
    mallopt = _libc("mallopt")
    return mallopt is not None and all(mallopt(param, value) == 1 for param, value in MALLOC_MODES[mode])


@contextlib.contextmanager
def freed_memory_kept():
    """Within: glibc keeps freed memory for the next allocation (the timings). After: blocks of
    128 KiB and more mapped apart and given back when freed (peak memory)."""
    kept = malloc_mode("kept")
    try:
        yield kept
    finally:
        if kept:
            malloc_mode("returned")


def allocator() -> str:
    """What the timings ran under, for the CSVs."""
    return "glibc malloc, freed memory kept while timed" if _libc("mallopt") is not None else "the C library's malloc"


# -- memory --------------------------------------------------------------------------

def _reset_peak_rss() -> bool:
    trim = _libc("malloc_trim")
    if trim is not None:
        trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@functools.cache
def rss_available() -> bool:
    """Whether this process can reset and read its RSS high-water mark (Linux)."""
    try:
        return _reset_peak_rss() and "VmHWM" in proc_status()
    except OSError:
        return False


def rss_peak(f, calls: int = MEMORY_CALLS) -> tuple[float, float]:
    """(the largest increase of the process's RSS during one call of ``f`` over its RSS
    just before, the RSS high-water mark itself), over ``calls`` calls; NaNs where the
    high-water mark cannot be reset."""
    if not rss_available():
        return math.nan, math.nan
    malloc_mode("returned")
    added, peak = 0, 0
    for _ in range(calls):
        _reset_peak_rss()
        before = proc_status()["VmRSS"]
        f()
        hwm = proc_status()["VmHWM"]
        added, peak = max(added, hwm - before), max(peak, hwm)
    return float(added), float(peak)


def cuda_peak(f) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    f()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - before)


def xla_peak(compiled) -> float:
    """What an XLA executable allocates beyond its arguments, from its buffer assignment."""
    stats = compiled.memory_analysis()
    if stats is None:
        return math.nan
    # temp_size is the one block XLA packs every temporary into (reusing space between
    # temporaries whose lifetimes do not overlap); peak_memory_in_bytes leaves it out on CPU.
    return float(stats.temp_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes)


# -- the copy yardstick ------------------------------------------------------------------

def copy_ms(nbytes: int, device: str, budget: Budget, cache: dict | None = None) -> float:
    """Median milliseconds of a copy that moves ``nbytes`` (reads ``nbytes // 2``, writes as
    many) on ``device``, timed like the torch losses. ``cache`` (one per measured point, so
    that the yardstick is taken beside what it measures) keeps it for the point's other rows."""
    half = max(1, int(nbytes) // 2)
    key = (half, device)
    if cache is not None and key in cache:
        return cache[key]
    if device == "cpu" or torch.cuda.is_available():
        src = torch.ones(half, dtype=torch.uint8, device=device)
        dst = torch.zeros_like(src)
        ms = _torch_median_ms(lambda: dst.copy_(src), device, budget)[0]
    else:  # JAX on a GPU that torch does not see
        src = jax.device_put(np.ones(half, np.uint8), jax.devices("gpu")[0])
        copy = jax.jit(lambda x: x + np.uint8(1)).lower(src).compile()
        ms = _jax_median_ms(copy, (src,), budget)[0]
    if cache is not None:
        cache[key] = ms
    return ms


def _nbytes(arrays) -> int:
    return int(sum(a.nbytes for a in arrays if hasattr(a, "nbytes")))


# -- the inputs --------------------------------------------------------------------

def _sampler_options(spec, case) -> tuple[list, dict]:
    params = list(inspect.signature(spec.sampler).parameters.values())[1:]  # after rng
    options = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    options.update(case.sample)
    return params, options


def _int_tuple(value) -> bool:
    return (isinstance(value, tuple) and bool(value)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value))


def sizes_for(spec, case, budget: Budget) -> dict:
    """The sampler keywords that make the default case's inputs a moderate size.

    The sampler's own size options are read from its signature: a tuple of ints
    (``shape=(6, 4)``) has its first entry scaled, or else an int keyword named like a
    batch size (``n``, ``N``, ``batch``, ...); a sampler that passes ``**kw`` on is tried
    with a ``shape``. The batch is doubled while the inputs, drawn for real, stay within
    ``budget.target_elements`` (so a loss whose inputs grow as the square of the batch
    grows less), at most ``budget.max_scale`` times. A sampler with no size option keeps
    its defaults (returns ``{}``).
    """
    params, options = _sampler_options(spec, case)
    first = spec.sample(np.random.default_rng(0), np.float64, **case.sample)

    def scaled(scale: int) -> dict | None:
        for name, value in options.items():
            if _int_tuple(value):
                return {name: (value[0] * scale,) + tuple(value[1:])}
        for name in BATCH_NAMES:
            if isinstance(options.get(name), int) and not isinstance(options[name], bool):
                return {name: options[name] * scale}
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params) and first and np.ndim(first[0]):
            return {"shape": (np.shape(first[0])[0] * scale,) + tuple(np.shape(first[0])[1:])}
        return None

    def probe(sizes: dict) -> tuple[int, float] | None:
        """Elements of the inputs at ``sizes``, and the CPU seconds of one reference forward there."""
        try:
            inputs, kw = spec.draw(np.random.default_rng(0), case, np.float64, **sizes)
            if "shape" in sizes and "shape" not in options and np.shape(inputs[0]) != sizes["shape"]:
                return None  # a ``**kw`` sampler that ignored the shape
            kw = {**matrix._as64(kw), "reduction": "mean"}
            seconds = math.inf
            for _ in range(3):  # the best of three: the machine may be busy
                start = time.perf_counter()
                reference.loss(spec.name, *inputs, **kw)
                seconds = min(seconds, time.perf_counter() - start)
                if seconds > budget.slow_forward:
                    break
            return sum(int(np.size(x)) for x in inputs), seconds
        except Exception:
            return None

    best, scale, last = {}, 2, None
    while scale <= budget.max_scale:
        sizes = scaled(scale)
        start = time.process_time()
        found = None if sizes is None else probe(sizes)
        if found is None or found[0] > budget.target_elements or found[1] > budget.slow_forward:
            break
        best, scale = sizes, scale * 2
        if time.process_time() - start > SLOW_DRAW:  # a rejection sampler that slows down as it grows
            break
        # The next doubling costs at least twice as much (more for a pairwise loss); below a
        # millisecond the times are overhead, too noisy to tell.
        growth = max(2.0, found[1] / last) if last and last > 1e-3 else 2.0
        if found[1] * growth > budget.slow_forward:
            break
        last = found[1]
    return best


def sizes_at(spec, case, elements: int, classes: int | None = None, class_axis: int = 1) -> dict:
    """The sampler keywords that give the first input about ``elements`` elements: its
    leading (batch) dimension is set to ``elements`` over the product of the others. With
    ``classes``, the first input's ``class_axis`` gets that many entries first (``(N, C)``
    logits). Raises ValueError for a sampler with no shape option."""
    params, options = _sampler_options(spec, case)
    name = next((k for k, v in options.items() if _int_tuple(v)), None)
    if name is not None:
        shape = list(options[name])
    elif any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        name, shape = "shape", list(np.shape(spec.sample(np.random.default_rng(0), np.float64, **case.sample)[0]))
    else:
        raise ValueError(f"the sampler of {spec.name} has no shape option to scale")
    if not shape:
        raise ValueError(f"the first input of {spec.name} is a scalar")
    if classes is not None:
        if class_axis >= len(shape):
            raise ValueError(f"the first input of {spec.name} has no axis {class_axis} to hold the classes")
        shape[class_axis] = int(classes)
    row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    shape[0] = max(1, int(round(elements / row)))
    return {name: tuple(shape)}


def draw(spec, case, sizes: dict, seed: int = 0) -> matrix.Drawn:
    """float32 inputs of the case at ``sizes``, reduction mean (or the case's first), and a cotangent."""
    rng = np.random.default_rng(matrix.seed_for(spec.name, case.name, seed) + 2)
    inputs, kw = spec.draw(rng, case, getattr(np, DTYPE), **sizes)
    reductions = spec.case_reductions(case)
    kw = {**kw, "reduction": "mean" if "mean" in reductions else reductions[0]}
    if kw["reduction"] == "mean":
        shape = ()
    else:
        shape = np.shape(reference.loss(spec.name, *matrix._as64(inputs), **matrix._as64(kw)))
    cotangent = rng.standard_normal(shape).astype(DTYPE)
    return matrix.Drawn(inputs, kw, cotangent)


def _shapes(d: matrix.Drawn) -> str:
    return " / ".join("x".join(map(str, np.shape(x))) or "()" for x in d.inputs)


# -- torch ---------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _torch_median_ms(f, device: str, budget: Budget) -> tuple[float, float]:
    """(median, interquartile range) of one call, in milliseconds."""
    return _torch_medians_ms({None: f}, device, budget)[None]


def _torch_medians_ms(calls: dict, device: str, budget: Budget) -> dict:
    """``{label: (median, interquartile range)}`` in milliseconds of each ``f()``, timed by
    ``torch.utils.benchmark.Timer`` (all cores, CUDA synchronised) in blocks of
    ``Timer.timeit(number)``, the labels' blocks interleaved (:func:`_interleaved_medians_ms`).
    A call that raises raises here."""
    stmt = "f(); torch.cuda.synchronize()" if device == "cuda" else "f()"

    def once(label) -> float:
        f = calls[label]
        f()  # warm-up (allocator, dispatch caches, first-call costs)
        _sync(device)
        start = time.perf_counter()
        f()
        _sync(device)
        return time.perf_counter() - start

    def block(timer, number: int) -> float:
        return timer.timeit(number).raw_times[0]

    timers = {label: benchmark.Timer(stmt=stmt, globals={"f": f, "torch": torch}, num_threads=torch.get_num_threads())
              for label, f in calls.items()}
    return _interleaved_medians_ms(timers, once, block, budget)


def _interleaved_medians_ms(calls: dict, once, block, budget: Budget) -> dict:
    """``{label: (median, interquartile range)}`` in milliseconds of one call of each entry of
    ``calls``: ``once(label)`` warms a call up and returns the seconds of one more, and
    ``block(calls[label], number)`` the seconds of ``number`` calls. The labels' blocks (at
    least ``budget.block_time`` each, at least 5 and ``budget.min_run_time`` in all) are
    interleaved round-robin: this machine's speed drifts by 15-20% from minute to minute (a
    VM's neighbours), and measured one after the other (as ``blocked_autorange`` does) our
    code and the built-in met different drifts (the same loss read 0.4x and 1.6x of its
    built-in in two runs). Each timed block follows an untimed one of the same call
    (``budget.warm_fraction`` of its calls): a call is slower for a few milliseconds after
    another one ran (F.multi_margin_loss after our forward: ~190 us on its first call, ~95 us
    after 40, against 55 us after its own), so without it a block would be charged for what
    the label before it left behind. While any label's blocks spread widely (an interquartile
    range above ``budget.noisy_spread`` of the median: small JAX calls on this VM, ~3% of the
    rows, whose per-block times can be bimodal), every label gets another round of blocks, at
    most ``budget.extra_rounds`` times, and the median is taken over all of them. A call slower
    than ``SLOW_CALL`` is ``SLOW_CALL_BLOCKS`` single calls, ``once``'s the first, in the same
    round-robin, with no warm-up block and no extra round: the median of one call let a single
    disturbed call stand for the loss (at 1e7 elements a 472 ms call of ``mse_loss``, whose
    calls took 42 ms before and after it)."""
    with freed_memory_kept():
        return _interleaved_medians(calls, once, block, budget)


def _interleaved_medians(calls: dict, once, block, budget: Budget) -> dict:
    out, number, blocks, spent, limit, least, slow = {}, {}, {}, {}, {}, {}, set()
    for label in calls:
        seconds = max(once(label), 1e-7)
        if seconds > SLOW_CALL:
            slow.add(label)
            number[label], blocks[label], spent[label] = 1, [seconds], 0.0
            limit[label] = least[label] = SLOW_CALL_BLOCKS
        else:
            number[label], blocks[label], spent[label] = max(1, int(budget.block_time / seconds)), [], 0.0
            limit[label], least[label] = 200, 5

    def wanted(label) -> bool:
        return len(blocks[label]) < least[label] or (spent[label] < budget.min_run_time
                                                     and len(blocks[label]) < limit[label])

    def noisy(label) -> bool:
        times = blocks[label]
        if len(times) < MIN_SPREAD_BLOCKS:
            return False
        p25, p50, p75 = np.percentile(times, [25, 50, 75])
        return p75 - p25 > budget.noisy_spread * p50

    for round_ in range(1 + budget.extra_rounds):
        if round_:
            if not any(noisy(label) for label in blocks):
                break
            for label in blocks.keys() - slow:
                spent[label], limit[label] = 0.0, len(blocks[label]) + 200
        while any(wanted(label) for label in blocks):
            for label in [label for label in blocks if wanted(label)]:
                if budget.warm_fraction > 0 and label not in slow:
                    block(calls[label], max(1, round(number[label] * budget.warm_fraction)))
                elapsed = block(calls[label], number[label])
                blocks[label].append(elapsed / number[label])
                spent[label] += elapsed
    for label, times in blocks.items():
        p25, p50, p75 = np.percentile(times, [25, 50, 75])
        out[label] = (float(p50) * 1e3, float(p75 - p25) * 1e3 if len(times) >= MIN_SPREAD_BLOCKS else math.nan)
    return out


def _torch_memory(f, device: str) -> tuple[float, float, str]:
    """(peak_bytes, peak_rss_bytes, memory_source) of one call of ``f``."""
    if device == "cuda":
        added = cuda_peak(f)
        return added, rss_peak(f, calls=1)[1], "cuda_allocator"
    added, peak = rss_peak(f)
    return added, peak, "rss" if not math.isnan(added) else ""


def _torch_setup(spec, d: matrix.Drawn, device: str):
    arrays, kw = matrix.torch_arrays(d, device)
    positions = [spec.inputs.index(n) for n in spec.differentiable]
    params = list(spec.gradient_names(kw)[len(positions):])
    primals = [arrays[p] for p in positions] + [kw[k] for k in params]
    diff = [p.detach().clone().requires_grad_(True) for p in primals]
    cotangent = torch.as_tensor(d.cotangent, device=device)
    moved = (_nbytes(arrays) + _nbytes([v for v in kw.values() if isinstance(v, torch.Tensor)])
             + _nbytes(diff) + int(d.cotangent.nbytes))
    return arrays, kw, positions, params, diff, cotangent, moved


def _torch_calls(fn, spec, d: matrix.Drawn, device: str):
    """The forward and the forward + backward of ``fn`` as calls with no arguments, and the
    bytes a forward + backward moves at least."""
    arrays, kw, _, _, diff, cotangent, moved = _torch_setup(spec, d, device)
    call, primals = matrix.on_differentiable(fn, spec, arrays, kw)

    def forward():
        return call(*primals)

    def forward_backward():
        out = call(*diff)
        return torch.autograd.grad(out, diff, cotangent.to(out.dtype), allow_unused=True)

    return {"fwd": forward, "fwd_bwd": forward_backward}, moved


def time_torch_compiled(module_call, spec, d: matrix.Drawn, device: str, budget: Budget) -> tuple[float, float, str]:
    """``torch.compile`` of the ``module`` variant's ``nn.Module``: (compile ms, median ms of
    the compiled forward + backward, a note on graph breaks). The first compiled call's value
    and gradients are held to the eager module's within the matrix's tolerance for the dtype
    (inductor fuses and reorders); where they differ, the note says by how much and both
    times are NaN: a time of something that computes another loss is no yardstick."""
    from torch._dynamo.utils import counters
    arrays, kw, positions, params, diff, cotangent, _ = _torch_setup(spec, d, device)
    inputs = list(arrays)
    for p, x in zip(positions, diff):
        inputs[p] = x
    module_kw = {**kw, **dict(zip(params, diff[len(positions):]))}
    torch._dynamo.reset()
    counters.clear()
    eager = module_call.module_class(**module_kw)
    compiled = torch.compile(eager)

    def forward_backward(module=compiled):
        out = module(*inputs)
        return out, torch.autograd.grad(out, diff, cotangent.to(out.dtype), allow_unused=True)

    start = time.perf_counter()
    got = forward_backward()
    _sync(device)
    first = (time.perf_counter() - start) * 1e3
    disagreement = _compiled_disagreement(got, forward_backward(eager), str(d.cotangent.dtype))
    if disagreement:
        torch._dynamo.reset()
        return math.nan, math.nan, f"torch.compile disagrees with the eager module: {disagreement}; not timed"
    median, _ = _torch_median_ms(forward_backward, device, budget)
    graphs, breaks = counters["stats"].get("unique_graphs", 0), sum(counters["graph_break"].values())
    note = ""
    if breaks or not graphs:
        note = (f"torch.compile: {graphs} graph{'s' if graphs != 1 else ''}, {breaks} graph "
                f"break{'s' if breaks != 1 else ''}" + (" (it ran eagerly)" if not graphs else ""))
    torch._dynamo.reset()  # drop the compiled code and its guards on these inputs
    return max(first - median, 0.0), median, note


def _compiled_disagreement(got, want, dtype: str) -> str:
    """Where the compiled ``(value, grads)`` differ from the eager ones beyond the matrix's
    tolerance for ``dtype``: the first such tensor and its largest errors ("" if none)."""
    rtol, atol = matrix.TOLERANCES[dtype]
    names = ["value"] + [f"grad {i}" for i in range(len(got[1]))]
    for name, g, w in zip(names, (got[0], *got[1]), (want[0], *want[1])):
        if (g is None) != (w is None):
            return f"{name}: " + ("no gradient where eager has one" if g is None else "a gradient where eager has none")
        if g is None:
            continue
        g, w = g.detach().cpu().double().numpy(), w.detach().cpu().double().numpy()
        if not matrix.close(g, w, rtol, atol):
            a, r = matrix.errors(g, w)
            return f"{name} abs err {a:.3g}, rel err {r:.3g} (rtol={rtol}, atol={atol})"
    return ""


def time_torch_all(fns: dict, spec, d: matrix.Drawn, device: str, budget: Budget) -> dict:
    """For each ``label: fn``, a :class:`Measured`, or the exception it raised; with
    ``budget.torch_compile``, the ``module`` entry holds torch.compile's columns too.

    Ours, the built-in (labelled ``"builtin"``) and its floor (``"floor"``, :mod:`reports.floor`)
    are timed side by side, their blocks interleaved; a call that raises is left out first, so
    that its error is its own."""
    out, calls, moved = {}, {}, {}
    for label, fn in fns.items():
        try:
            calls[label], moved[label] = _torch_calls(fn, spec, d, device)
            for f in calls[label].values():
                f()
        except Exception as e:
            out[label] = e
            calls.pop(label, None)
    # Peak memory before the timings, which leave glibc's heap holding freed blocks (see
    # freed_memory_kept) that later large tensors would reuse, each page of them counted.
    memory = {}
    for label in [label for label in calls if budget.memory and label != "floor"]:
        try:
            memory[label] = _torch_memory(calls[label]["fwd_bwd"], device)
        except Exception as e:
            out[label] = e
            calls.pop(label)
    medians = {which: _torch_medians_ms({label: c[which] for label, c in calls.items()}, device, budget)
               for which in (("fwd", "fwd_bwd") if budget.forward else ("fwd_bwd",))}
    for label, c in calls.items():
        m = Measured(bytes_moved=moved[label])
        if budget.forward:
            m.fwd_ms, m.fwd_iqr_ms = medians["fwd"][label]
        m.fwd_bwd_ms, m.fwd_bwd_iqr_ms = medians["fwd_bwd"][label]
        if label in memory:
            m.peak_bytes, m.peak_rss_bytes, m.memory_source = memory[label]
        out[label] = m
    module = out.get("module")
    if budget.torch_compile and isinstance(module, Measured) and hasattr(fns["module"], "module_class"):
        try:
            module.compile_ms, module.compiled_fwd_bwd_ms, note = time_torch_compiled(fns["module"], spec, d,
                                                                                      device, budget)
        except Exception as e:
            note = f"torch.compile failed: {_error(e)}"
            torch._dynamo.reset()
        module.note = "; ".join(filter(None, [module.note, note]))
    return {label: out[label] for label in fns}


# -- JAX -----------------------------------------------------------------------------

def _jax_median_ms(compiled, args, budget: Budget) -> tuple[float, float]:
    """(median, interquartile range) of one call, in milliseconds."""
    return _jax_medians_ms({None: (compiled, args)}, budget)[None]


def _jax_medians_ms(calls: dict, budget: Budget) -> dict:
    """``{label: (median, interquartile range)}`` in milliseconds of each ``(compiled, args)``,
    every call ending in ``block_until_ready``, the labels' blocks interleaved
    (:func:`_interleaved_medians_ms`)."""
    def once(label) -> float:
        compiled, args = calls[label]
        jax.block_until_ready(compiled(*args))  # warm-up
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        return time.perf_counter() - start

    def block(call, number: int) -> float:
        compiled, args = call
        start = time.perf_counter()
        for _ in range(number):
            jax.block_until_ready(compiled(*args))
        return time.perf_counter() - start

    return _interleaved_medians_ms(calls, once, block, budget)


def _jax_programs(fn, spec, d: matrix.Drawn, device: str, forward: bool = True):
    """The forward and the forward + VJP of ``fn`` under ``jax.jit``, each with its arguments,
    and the bytes a forward + VJP moves at least.

    The arrays (inputs and array hyperparameters) are arguments, not constants; the other
    hyperparameters are closed over (static)."""
    arrays, kw = matrix.jax_arrays(d, device)
    array_kw = {k: v for k, v in kw.items() if isinstance(v, jax.Array)}
    static_kw = {k: v for k, v in kw.items() if k not in array_kw}
    cotangent = jax.device_put(d.cotangent, jax.devices("gpu" if device == "cuda" else "cpu")[0])
    _, primals = matrix.on_differentiable(fn, spec, list(arrays), {**static_kw, **array_kw})
    moved = _nbytes(arrays) + _nbytes(array_kw.values()) + _nbytes(primals) + int(d.cotangent.nbytes)

    def fwd(arrays, array_kw):
        return fn(*arrays, **static_kw, **array_kw)

    forward_vjp, args = matrix.jax_vjp_program(fn, spec, arrays, kw)
    programs = {"fwd_bwd": (forward_vjp, (*args, cotangent))}
    if forward:
        programs["fwd"] = (jax.jit(fwd), (arrays, array_kw))
    return programs, moved


def time_jax(fns: dict, spec, d: matrix.Drawn, device: str, budget: Budget) -> dict:
    """For each ``label: fn``, a :class:`Measured` (the jitted forward's and forward + VJP's
    median ms and spread, the ms that ``.lower(...).compile()`` of the forward + VJP took,
    XLA's peak memory, bytes moved), or the exception it raised.

    ``compile_ms`` (tracing, lowering and XLA's compiling) is measured with nothing else
    running. The other programs (the forwards, and the built-in's, labelled ``"builtin"``)
    compile two at a time, since XLA releases the GIL; nothing runs beside a measurement."""
    out, programs, moved, compiled, compile_ms = {}, {}, {}, {}, {}
    for label, fn in fns.items():
        try:
            programs[label], moved[label] = _jax_programs(fn, spec, d, device, budget.forward)
        except Exception as e:
            out[label] = e
            continue
        if label == "builtin":
            continue
        try:
            jitted, args = programs[label]["fwd_bwd"]
            start = time.perf_counter()
            compiled[label, "fwd_bwd"] = jitted.lower(*args).compile()
            compile_ms[label] = (time.perf_counter() - start) * 1e3
        except Exception as e:
            out[label] = e
    lowered = {}
    for label, progs in programs.items():
        for which, (jitted, args) in progs.items():
            if label in out or (label, which) in compiled:
                continue
            try:
                lowered[label, which] = jitted.lower(*args)
            except Exception as e:  # a built-in adapter raises NotImplementedError while tracing
                out[label] = e
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(program.compile) for key, program in lowered.items() if key[0] not in out}
    for (label, which), future in futures.items():
        try:
            compiled[label, which] = future.result()
        except Exception as e:
            out[label] = e
    # Ours and the built-in side by side, blocks interleaved; a program that raises is then
    # timed alone, so that its error is its own.
    medians = {}
    for which in ("fwd", "fwd_bwd") if budget.forward else ("fwd_bwd",):
        try:
            medians[which] = _jax_medians_ms({label: (compiled[label, which], progs[which][1])
                                              for label, progs in programs.items() if label not in out}, budget)
        except Exception:  # noqa: BLE001
            medians[which] = {}
    for label, progs in programs.items():
        if label in out:
            continue
        try:
            m = Measured(compile_ms=compile_ms.get(label, math.nan), bytes_moved=moved[label])
            if budget.forward:
                m.fwd_ms, m.fwd_iqr_ms = medians["fwd"].get(label) or _jax_median_ms(compiled[label, "fwd"],
                                                                                        progs["fwd"][1], budget)
            program, args = compiled[label, "fwd_bwd"], progs["fwd_bwd"][1]
            m.fwd_bwd_ms, m.fwd_bwd_iqr_ms = medians["fwd_bwd"].get(label) or _jax_median_ms(program, args, budget)
            m.compiled_fwd_bwd_ms = m.fwd_bwd_ms
            if budget.memory:
                m.peak_bytes, m.memory_source = xla_peak(program), "xla_memory_analysis"
                m.peak_rss_bytes = rss_peak(lambda: jax.block_until_ready(program(*args)), calls=1)[1]
            out[label] = m
        except Exception as e:
            out[label] = e
    return out


# -- the table -------------------------------------------------------------------------

def _devices(framework: str, devices=None) -> list[str]:
    return [dev for dev in matrix.DEVICES if matrix.device_available(framework, dev)
            and (devices is None or dev in devices)]


def _builtin_name(spec, framework: str) -> str:
    libraries = ("torch",) if framework == "torch" else ("optax", "keras", "jax")
    for lib in libraries:
        if lib in spec.builtins:
            return spec.builtins[lib]
    return f"{framework} built-in"


def _error(e: BaseException) -> str:
    """The exception's type and its first sentence, on one line."""
    text = " ".join(str(e).split())
    first = re.split(r"(?<=[.!?])\s(?=[A-Z])", text, maxsplit=1)[0]
    if isinstance(e, jax.errors.ConcretizationTypeError):
        first = "it reads array values, so jax.jit cannot trace it"
    return f"{type(e).__name__}: {first}"[:200]


def _implementations(name: str, wanted, framework: str, pkg, with_builtin: bool = True) -> dict:
    fns = {}
    for variant in (v for v in wanted if matrix.FRAMEWORK_OF[v] == framework):
        try:
            fns[variant] = pkg.get(name, variant)
        except KeyError:
            continue
    if fns and with_builtin:
        builtin = pkg.builtin(name)
        if builtin is not None:
            fns["builtin"] = builtin
            floor_call = floor.get(name) if framework == "torch" else None
            if floor_call is not None:
                fns["floor"] = floor_call
    return fns


def measure(name: str, d: matrix.Drawn, variants=None, budget: Budget = NORMAL, devices=None,
            with_builtin: bool = True) -> list[tuple[str, str, str, dict]]:
    """Time every registered implementation of ``name`` (and the built-in) on the inputs ``d``:
    a list of (framework, device, builtin name or "", {label: Measured or exception})."""
    spec = reference.get(name)
    wanted = [v for v in (matrix.VARIANTS if variants is None else variants) if v in matrix.VARIANTS]
    out = []
    for framework, pkg, timer in (("torch", torch_impl, time_torch_all), ("jax", jax_impl, time_jax)):
        fns = _implementations(name, wanted, framework, pkg, with_builtin)
        if not fns:
            continue
        builtin = _builtin_name(spec, framework) if "builtin" in fns else ""
        for device in _devices(framework, devices):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                measured = timer(fns, spec, d, device, budget)
            out.append((framework, device, builtin, measured))
    return out


def _builtin_note(b) -> str:
    if isinstance(b, NotImplementedError):
        return f"the built-in lacks this option: {b}"
    if isinstance(b, Exception):
        return f"the built-in failed: {_error(b)}"
    return ""


def bandwidth(m: Measured, device: str, budget: Budget, cache: dict | None = None) -> dict:
    """``gbps`` (bytes_moved over the forward + backward), and the copy yardstick's ms and GB/s."""
    if not budget.memory or math.isnan(m.bytes_moved):
        return {"gbps": math.nan, "copy_ms": math.nan, "copy_gbps": math.nan}
    copy = copy_ms(int(m.bytes_moved), device, budget, cache)
    return {"gbps": m.bytes_moved / m.fwd_bwd_ms / 1e6 if m.fwd_bwd_ms > 0 else math.nan,
            "copy_ms": copy, "copy_gbps": m.bytes_moved / copy / 1e6 if copy > 0 else math.nan}


def time_loss(name: str, variants=None, budget: Budget = NORMAL, seed: int = 0,
              devices=None) -> tuple[list[dict], list[dict]]:
    """The timing rows of one loss, and what could not be timed at all ({"loss", "what", "reason"}).

    A variant whose implementation is not registered is left out silently: the parity
    phase reports it. ``devices`` (default: every device present) limits the devices."""
    spec = reference.get(name)
    case = spec.cases[0]
    rows, skipped = [], []
    try:
        sizes = sizes_for(spec, case, budget)
        d = draw(spec, case, sizes, seed)
    except Exception as e:  # a sampler that does not scale: keep its own sizes
        try:
            sizes, d = {}, draw(spec, case, {}, seed)
        except Exception as e2:
            return [], [{"loss": name, "what": "timings",
                         "reason": f"the inputs could not be drawn: {_error(e2)} (scaled: {_error(e)})"}]
    copies: dict = {}  # the copy yardstick of this loss's inputs, per device
    for framework, device, builtin, measured in measure(name, d, variants, budget, devices):
        b = measured.get("builtin")
        b_note = _builtin_note(b)
        b = b if isinstance(b, Measured) else Measured()
        f = measured.get("floor")
        f_ms = f.fwd_bwd_ms if isinstance(f, Measured) else math.nan
        for variant, result in measured.items():
            if variant in ("builtin", "floor"):
                continue
            row = {"loss": name, "framework": framework, "variant": variant, "dtype": DTYPE, "device": device,
                   "size": int(np.size(d.inputs[0])) if d.inputs else 0, "shapes": _shapes(d),
                   "builtin": builtin, "builtin_fwd_ms": b.fwd_ms, "builtin_fwd_bwd_ms": b.fwd_bwd_ms,
                   "builtin_fwd_bwd_iqr_ms": b.fwd_bwd_iqr_ms, "builtin_peak_bytes": b.peak_bytes,
                   "ratio_to_builtin": math.nan, "floor_fwd_bwd_ms": f_ms, "floor_ratio": f_ms / b.fwd_bwd_ms,
                   **machine(framework), "note": b_note}
            if isinstance(result, Exception):
                row["note"] = "; ".join(filter(None, [f"failed: {_error(result)}", b_note]))
            else:
                row.update({k: getattr(result, k) for k in (
                    "fwd_ms", "fwd_iqr_ms", "fwd_bwd_ms", "fwd_bwd_iqr_ms", "compile_ms", "compiled_fwd_bwd_ms",
                    "peak_bytes", "peak_rss_bytes", "memory_source", "bytes_moved")})
                row.update(bandwidth(result, device, budget, copies))
                row["note"] = "; ".join(filter(None, [result.note, b_note]))
                if not math.isnan(b.fwd_bwd_ms):
                    row["ratio_to_builtin"] = result.fwd_bwd_ms / b.fwd_bwd_ms
            rows.append({c: row.get(c, math.nan) for c in COLUMNS})
    return rows, skipped
