"""Timings: every implementation of a loss beside the framework's own built-in.

One row per loss x variant x device, in float32, on the loss's default case with
``reduction="mean"``, at a moderate size drawn with the sampler's own size options
(see :func:`sizes_for`). What is timed:

* torch: ``torch.utils.benchmark.Timer(...).blocked_autorange()`` with
  ``num_threads=torch.get_num_threads()`` after a warm-up, median of the blocks;
  ``torch.cuda.synchronize()`` after every call on CUDA. The forward alone, and the
  forward plus ``torch.autograd.grad`` of the differentiable inputs.
* JAX: ``jax.jit`` of the forward and of the forward plus its VJP, compiled apart
  with ``.lower(...).compile()`` (``compile_ms`` is that time, tracing included, for
  the forward plus VJP), then a warm-up and the median of blocks of calls, each call
  ending in ``block_until_ready``.

The built-in (``torch_impl.builtin(name)`` / ``jax_impl.builtin(name)``) is timed the
same way on the same inputs; ``ratio_to_builtin`` is our forward+backward time over
the built-in's. An adapter that raises NotImplementedError (an option the built-in
lacks) leaves the built-in columns empty, with the reason in ``note``.
"""

from __future__ import annotations

import inspect
import math
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
from . import matrix

COLUMNS = ["loss", "framework", "variant", "dtype", "device", "size", "shapes", "fwd_ms", "fwd_bwd_ms", "compile_ms",
           "builtin", "builtin_fwd_ms", "builtin_fwd_bwd_ms", "ratio_to_builtin", "note"]

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
    min_run_time: float    # seconds per measurement (torch's blocked_autorange, JAX's blocks)
    block_time: float      # a block of calls lasts at least this long (seconds)
    slow_forward: float    # stop growing once the NumPy reference's forward takes this long (seconds)


NORMAL = Budget(target_elements=32768, max_scale=1024, min_run_time=0.005, block_time=2.5e-4, slow_forward=0.01)
QUICK = Budget(target_elements=512, max_scale=32, min_run_time=0.002, block_time=2e-4, slow_forward=0.005)
# A call slower than this (seconds) is timed by its warm-up runs alone, not by repeated blocks.
SLOW_CALL = 0.2


# -- the inputs --------------------------------------------------------------------

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
    params = list(inspect.signature(spec.sampler).parameters.values())[1:]  # after rng
    options = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    options.update(case.sample)
    first = spec.sample(np.random.default_rng(0), np.float64, **case.sample)

    def scaled(scale: int) -> dict | None:
        for name, value in options.items():
            if (isinstance(value, tuple) and value and all(isinstance(v, int) and not isinstance(v, bool)
                                                           for v in value)):
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

def _torch_median_ms(f, device: str, budget: Budget) -> float:
    start = time.perf_counter()  # warm-up (allocator, dispatch caches); blocked_autorange warms up too
    f()
    if device == "cuda":
        torch.cuda.synchronize()
    if time.perf_counter() - start > SLOW_CALL:
        start = time.perf_counter()
        f()
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3
    stmt = "f(); torch.cuda.synchronize()" if device == "cuda" else "f()"
    timer = benchmark.Timer(stmt=stmt, globals={"f": f, "torch": torch}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=budget.min_run_time).median * 1e3


def time_torch(fn, spec, d: matrix.Drawn, device: str, budget: Budget) -> tuple[float, float]:
    """Median milliseconds of the forward and of forward + backward."""
    arrays, kw = matrix.torch_arrays(d, device)
    call, primals = matrix.on_differentiable(fn, spec, arrays, kw)
    diff = [p.detach().clone().requires_grad_(True) for p in primals]
    cotangent = torch.as_tensor(d.cotangent, device=device)

    def forward():
        return call(*primals)

    def forward_backward():
        out = call(*diff)
        return torch.autograd.grad(out, diff, cotangent.to(out.dtype), allow_unused=True)

    return _torch_median_ms(forward, device, budget), _torch_median_ms(forward_backward, device, budget)


# -- JAX -----------------------------------------------------------------------------

def _jax_median_ms(compiled, args, budget: Budget) -> float:
    jax.block_until_ready(compiled(*args))  # warm-up
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    once = max(time.perf_counter() - start, 1e-7)
    if once > SLOW_CALL:
        return once * 1e3
    number = max(1, int(budget.block_time / once))
    blocks, spent = [], 0.0
    while len(blocks) < 5 or (spent < budget.min_run_time and len(blocks) < 200):
        start = time.perf_counter()
        for _ in range(number):
            jax.block_until_ready(compiled(*args))
        elapsed = time.perf_counter() - start
        blocks.append(elapsed / number)
        spent += elapsed
    return float(np.median(blocks)) * 1e3


def _jax_programs(fn, spec, d: matrix.Drawn, device: str):
    """The forward and the forward + VJP of ``fn`` under ``jax.jit``, each with its arguments.

    The arrays (inputs and array hyperparameters) are arguments, not constants; the other
    hyperparameters are closed over (static)."""
    arrays, kw = matrix.jax_arrays(d, device)
    array_kw = {k: v for k, v in kw.items() if isinstance(v, jax.Array)}
    static_kw = {k: v for k, v in kw.items() if k not in array_kw}
    cotangent = jax.device_put(d.cotangent, jax.devices("gpu" if device == "cuda" else "cpu")[0])

    def forward(arrays, array_kw):
        return fn(*arrays, **static_kw, **array_kw)

    def forward_vjp(arrays, array_kw, cotangent):
        call, primals = matrix.on_differentiable(fn, spec, list(arrays), {**static_kw, **array_kw})
        out, pullback = jax.vjp(call, *primals)
        return out, pullback(cotangent.astype(out.dtype))  # a built-in may answer in float64 under x64

    return {"fwd": (jax.jit(forward), (arrays, array_kw)),
            "fwd_bwd": (jax.jit(forward_vjp), (arrays, array_kw, cotangent))}


def time_jax(fns: dict, spec, d: matrix.Drawn, device: str, budget: Budget) -> dict:
    """For each ``label: fn``, (median ms of the jitted forward, of the forward + VJP, ms that
    ``.lower(...).compile()`` of the forward + VJP took), or the exception it raised.

    ``compile_ms`` (tracing, lowering and XLA's compiling) is measured with nothing else
    running. The other programs (the forwards, and the built-in's, labelled ``"builtin"``)
    compile two at a time, since XLA releases the GIL; nothing runs beside a measurement."""
    out, programs, compiled, compile_ms = {}, {}, {}, {}
    for label, fn in fns.items():
        programs[label] = _jax_programs(fn, spec, d, device)
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
    for label, progs in programs.items():
        if label in out:
            continue
        try:
            out[label] = (_jax_median_ms(compiled[label, "fwd"], progs["fwd"][1], budget),
                          _jax_median_ms(compiled[label, "fwd_bwd"], progs["fwd_bwd"][1], budget),
                          compile_ms.get(label, math.nan))
        except Exception as e:
            out[label] = e
    return out


def time_torch_all(fns: dict, spec, d: matrix.Drawn, device: str, budget: Budget) -> dict:
    """For each ``label: fn``, (median ms of the forward, of forward + backward, NaN), or the exception."""
    out = {}
    for label, fn in fns.items():
        try:
            out[label] = (*time_torch(fn, spec, d, device, budget), math.nan)
        except Exception as e:
            out[label] = e
    return out


# -- the table -------------------------------------------------------------------------

def _devices(framework: str) -> list[str]:
    return [dev for dev in matrix.DEVICES if matrix.device_available(framework, dev)]


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


def time_loss(name: str, variants=None, budget: Budget = NORMAL, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """The timing rows of one loss, and what could not be timed at all ({"loss", "what", "reason"}).

    A variant whose implementation is not registered is left out silently: the parity
    phase reports it."""
    spec = reference.get(name)
    case = spec.cases[0]
    rows, skipped = [], []
    wanted = [v for v in (matrix.VARIANTS if variants is None else variants) if v in matrix.VARIANTS]
    try:
        sizes = sizes_for(spec, case, budget)
        d = draw(spec, case, sizes, seed)
    except Exception as e:  # a sampler that does not scale: keep its own sizes
        try:
            sizes, d = {}, draw(spec, case, {}, seed)
        except Exception as e2:
            return [], [{"loss": name, "what": "timings",
                         "reason": f"the inputs could not be drawn: {_error(e2)} (scaled: {_error(e)})"}]
    for framework, pkg, timer in (("torch", torch_impl, time_torch_all), ("jax", jax_impl, time_jax)):
        fns = {}
        for variant in (v for v in wanted if matrix.FRAMEWORK_OF[v] == framework):
            try:
                fns[variant] = pkg.get(name, variant)
            except KeyError:
                continue
        if not fns:
            continue
        builtin = pkg.builtin(name)
        if builtin is not None:
            fns["builtin"] = builtin
        for device in _devices(framework):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                measured = timer(fns, spec, d, device, budget)
            b = measured.get("builtin")
            b_fwd, b_fwd_bwd, b_note = math.nan, math.nan, ""
            if isinstance(b, NotImplementedError):
                b_note = f"the built-in lacks this option: {b}"
            elif isinstance(b, Exception):
                b_note = f"the built-in failed: {_error(b)}"
            elif b is not None:
                b_fwd, b_fwd_bwd, _ = b
            for variant, result in measured.items():
                if variant == "builtin":
                    continue
                row = {"loss": name, "framework": framework, "variant": variant, "dtype": DTYPE, "device": device,
                       "size": int(np.size(d.inputs[0])) if d.inputs else 0, "shapes": _shapes(d),
                       "fwd_ms": math.nan, "fwd_bwd_ms": math.nan, "compile_ms": math.nan,
                       "builtin": _builtin_name(spec, framework) if builtin is not None else "",
                       "builtin_fwd_ms": b_fwd, "builtin_fwd_bwd_ms": b_fwd_bwd, "ratio_to_builtin": math.nan,
                       "note": b_note}
                if isinstance(result, Exception):
                    row["note"] = "; ".join(filter(None, [f"failed: {_error(result)}", b_note]))
                else:
                    fwd, fwd_bwd, compile_ms = result
                    row.update(fwd_ms=fwd, fwd_bwd_ms=fwd_bwd, compile_ms=compile_ms)
                    if not math.isnan(b_fwd_bwd):
                        row["ratio_to_builtin"] = fwd_bwd / b_fwd_bwd
                rows.append(row)
    return rows, skipped
