"""The parity matrix: loss x case x reduction x implementation x dtype x device.

One cell draws inputs from the spec's sampler with a seed derived from the loss and
the case (so every implementation and dtype of a case sees the same numbers), runs
one implementation, and compares its value and the gradient of every
differentiable input, under a random cotangent, with the reference computed in
float64 from the same inputs (rounded to the cell's dtype first).

The tests (``tests/test_matrix.py``) and the report both run cells from here.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from dataclasses import dataclass

import jax
import numpy as np
import torch

import jax_impl
import reference
import torch_impl

# The matrix compares float64 cells; this is the harness's own process.
jax.config.update("jax_enable_x64", True)

# Per dtype (rtol, atol); a cell passes where |actual - expected| <= atol + rtol |expected|.
# float64, float32: torch.testing.assert_close's defaults. They hold for every cell of the
# catalogue as it stands: no loss needed a wider one.
# float16, bfloat16: derived from the format alone (machine epsilon eps = 2^-10 and 2^-7, unit
# roundoff u = eps / 2), fixed before any half cell ran. torch's CPU kernels and XLA round every
# operation's result to the storage format, and a loss and each gradient entry are a short chain
# of such operations (the reductions accumulate in float32): rtol = 8u = 4 eps allows about
# eight roundings of relative size u. atol = u, the error of one rounding of an O(1) quantity:
# what an entry near 0 keeps when O(1) terms cancel to it (the samplers draw O(1) inputs).
# The expectation is the float64 reference on the inputs as rounded to the cell's dtype, so the
# tolerance measures the implementation's arithmetic alone, not the rounding of its inputs.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-7),
    "float32": (1.3e-6, 1e-5),
    "float16": (2.0 ** -8, 2.0 ** -11),
    "bfloat16": (2.0 ** -5, 2.0 ** -8),
}
DTYPES = tuple(TOLERANCES)
# Every case and reduction of a loss runs in the full dtypes; the half dtypes run the loss's
# default case under one reduction (``half_reduction``), which keeps the matrix small.
FULL_DTYPES = ("float64", "float32")
HALF_DTYPES = ("float16", "bfloat16")
# The NumPy type of each dtype's drawn arrays (bfloat16 is ml_dtypes', which JAX ships).
NP_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": jax.numpy.bfloat16}
DEVICES = ("cpu", "cuda")
FRAMEWORKS = {"torch": torch_impl.VARIANTS, "jax": jax_impl.VARIANTS}
VARIANTS = tuple(v for vs in FRAMEWORKS.values() for v in vs)
FRAMEWORK_OF = {v: f for f, vs in FRAMEWORKS.items() for v in vs}


@dataclass(frozen=True)
class Cell:
    loss: str
    case: str
    reduction: str
    variant: str
    dtype: str
    device: str = "cpu"

    @property
    def framework(self) -> str:
        return FRAMEWORK_OF[self.variant]

    @property
    def id(self) -> str:
        return f"{self.loss}-{self.case}-{self.reduction}-{self.framework}.{self.variant}-{self.dtype}-{self.device}"

    @property
    def xfail_reason(self) -> str | None:
        return reference.get(self.loss).xfail_reason(self.variant, self.dtype, self.case, self.reduction)


def cells(losses=None, variants=None, dtypes=None, devices=("cpu",)) -> list[Cell]:
    out = []
    for name in losses or reference.names():
        spec = reference.get(name)
        for case in spec.matrix_cases:
            for reduction in spec.case_reductions(case):
                for variant in variants or VARIANTS:
                    for dtype in dtypes or DTYPES:
                        if case.dtypes is not None and dtype not in case.dtypes:
                            continue  # the case is beyond this dtype's precision (see the spec)
                        if dtype in HALF_DTYPES and (case is not half_case(spec, dtype)
                                                     or reduction != half_reduction(spec, case)):
                            continue  # half precision: the default case under one reduction
                        for device in devices:
                            out.append(Cell(name, case.name, reduction, variant, dtype, device))
    return out


def half_case(spec, dtype: str):
    """The one case of a loss's cells in a half dtype: its default case, or the first of its
    cases that the spec admits in ``dtype`` where the default is beyond that precision
    (``Case.dtypes``; circle's default gamma = 80 is a float64 case). None: no case admits it."""
    return next((c for c in spec.cases if c.dtypes is None or dtype in c.dtypes), None)


def half_reduction(spec, case) -> str:
    """The one reduction of a loss's half-precision cells: ``mean`` where ``case`` has it,
    else the loss's default reduction, else the case's first."""
    reductions = spec.case_reductions(case)
    for reduction in ("mean", spec.defaults.get("reduction")):
        if reduction in reductions:
            return reduction
    return reductions[0]


def quick(spec, case, reduction: str, dtype: str | None = None) -> bool:
    """Whether ``make test`` runs this (case, reduction, dtype); the rest is marked ``slow``, and
    the report runs every cell. The quick tier keeps every loss, every implementation and every
    case: the default case (``spec.cases[0]``) under every reduction in float64, and under one
    reduction (``half_reduction``: ``mean`` where it has it) in every dtype; each other case under
    that one reduction in one dtype: float32 where the case admits it (the edges of the domain are
    float32's: logits of 1e4, saturated probabilities), else its first. ``dtype=None`` (the
    float64-only tests): the dtype is not asked. A reduction's own code (a weighted mean's
    denominator, ``batchmean``, NaN for every target ignored) is a case of its own where it
    matters, so it stays in the quick tier."""
    case = spec.case(case)
    if case is spec.matrix_cases[0]:
        return dtype in (None, "float64") or reduction == half_reduction(spec, case)
    if reduction != half_reduction(spec, case):
        return False
    if dtype is None or dtype in HALF_DTYPES:
        return True
    admitted = [d for d in FULL_DTYPES if case.dtypes is None or d in case.dtypes]
    return dtype == ("float32" if "float32" in admitted else admitted[0])


def jax_cache_dir() -> str | None:
    """Where the parity workers and the tests keep JAX's persistent compilation cache:
    ``$LOSSPARITY_JAX_CACHE`` (empty turns it off), else ``$XDG_CACHE_HOME/lossparity/jax``
    (``~/.cache/...``)."""
    configured = os.environ.get("LOSSPARITY_JAX_CACHE")
    if configured is not None:
        return configured or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lossparity", "jax")


def use_compilation_cache() -> None:
    """Turn on JAX's persistent compilation cache (``jax_cache_dir``) in this process, for every
    program however quick to compile. Most of an eager JAX cell's time is XLA compiling its
    operations one by one, for each shape and dtype; the cache keeps them across processes and
    runs. It changes no number. Not for timings: they must compile afresh."""
    cache = jax_cache_dir()
    if cache:
        try:
            os.makedirs(cache, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        except OSError:
            pass


def device_available(framework: str, device: str) -> bool:
    if device == "cpu":
        return True
    if framework == "torch":
        return torch.cuda.is_available()
    return _jax_has_gpu()


def _jax_has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


def seed_for(loss: str, case: str, seed: int = 0) -> int:
    """The seed of a (loss, case)'s inputs; ``seed`` (``lossparity report --seed``) picks
    another draw, and 0 is the draw the tests use."""
    if seed:
        return zlib.crc32(f"{seed}/{loss}/{case}".encode())
    return zlib.crc32(f"{loss}/{case}".encode())


# -- drawing a cell's inputs -------------------------------------------------------

@dataclass
class Drawn:
    inputs: tuple          # NumPy, already rounded to the cell's dtype
    kw: dict               # hyperparameters, arrays rounded to the cell's dtype
    cotangent: np.ndarray  # rounded to the cell's dtype


def draw(spec, case_name: str, reduction: str, dtype: str, seed: int = 0) -> Drawn:
    rng = np.random.default_rng(seed_for(spec.name, case_name, seed))
    inputs, kw = spec.draw(rng, case_name, NP_DTYPES[dtype])
    kw = {**kw, "reduction": reduction}
    shape = np.shape(reference.loss(spec.name, *_as64(inputs), **_as64(kw)))
    cot_rng = np.random.default_rng(seed_for(spec.name, case_name, seed) + 1)
    cotangent = cot_rng.standard_normal(shape).astype(NP_DTYPES[dtype])
    return Drawn(inputs, kw, cotangent)


def _as64(x):
    """The reference's view of drawn values: float arrays in float64, code in NumPy."""
    if isinstance(x, reference.PerFramework):
        return x.numpy
    if isinstance(x, dict):
        return {k: _as64(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_as64(v) for v in x)
    if is_float(x):
        return x.astype(np.float64)
    return x


def is_float(x) -> bool:
    """Whether ``x`` is a floating NumPy array, bfloat16 (ml_dtypes', kind 'V') included."""
    return isinstance(x, np.ndarray) and (x.dtype.kind == "f" or x.dtype == NP_DTYPES["bfloat16"])


def expected(spec, d: Drawn) -> tuple[np.ndarray, tuple]:
    inputs, kw = _as64(d.inputs), _as64(d.kw)
    value = reference.loss(spec.name, *inputs, **kw)
    grads = reference.vjp(spec.name, *inputs, d.cotangent.astype(np.float64), **kw)
    return value, grads


class OutsideDomain(Exception):
    """``draw_from``'s sampler options (sizes) are outside the loss's domain: its sampler or its
    shared checks refused what they drew."""


def draw_from(spec, rng: np.random.Generator, case_name: str, reduction: str, dtype: str = "float64",
              **sizes) -> Drawn:
    """A cell's inputs like ``draw``, from an explicit generator and with explicit sampler
    options ``sizes`` (they override the case's ``sample`` options): the inputs, the
    ``Sampled`` hyperparameters and then the cotangent all come from ``rng``, so ``(seed,
    case, reduction, sizes)`` reproduces the draw with ``np.random.default_rng(seed)``. The
    property-based tests use it. Raises ``OutsideDomain`` when the sampler or the spec's
    checks refuse the draw; anything the reference forward raises afterwards passes through."""
    try:
        inputs, kw = spec.draw(rng, case_name, NP_DTYPES[dtype], **sizes)
        kw = {**kw, "reduction": reduction}
        reference.validate(spec, tuple(np.asarray(x) for x in _as64(inputs)), _as64(kw))
    except Exception as e:  # noqa: BLE001  (whatever the sampler or the checks refuse)
        raise OutsideDomain(f"{spec.name} [{case_name}] with sampler options {sizes}: "
                            f"{type(e).__name__}: {e}") from e
    shape = np.shape(reference.loss(spec.name, *_as64(inputs), **_as64(kw)))
    cotangent = rng.standard_normal(shape).astype(NP_DTYPES[dtype])
    return Drawn(inputs, kw, cotangent)


# -- running one implementation ---------------------------------------------------

def on_differentiable(fn, spec, arrays: list, kw: dict):
    """``fn`` as a function of what gets a gradient alone (``spec.gradient_names(kw)``: the
    differentiable inputs, then the differentiable array hyperparameters given), the others
    held fixed."""
    positions = [spec.inputs.index(n) for n in spec.differentiable]
    params = list(spec.gradient_names(kw)[len(positions):])

    def call(*diff):
        full = list(arrays)
        for p, x in zip(positions, diff):
            full[p] = x
        return fn(*full, **{**kw, **dict(zip(params, diff[len(positions):]))})

    return call, [arrays[p] for p in positions] + [kw[k] for k in params]


def _framework_kw(kw: dict, framework: str, to_array) -> dict:
    def convert(v):
        if isinstance(v, reference.PerFramework):
            return getattr(v, framework)
        return to_array(v) if isinstance(v, np.ndarray) else v
    return {k: convert(v) for k, v in kw.items()}


def to_torch(x: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """A drawn NumPy array as a tensor of the same dtype (torch cannot read ml_dtypes' bfloat16:
    it goes through float32, which holds every bfloat16 value exactly)."""
    if isinstance(x, np.ndarray) and x.dtype == NP_DTYPES["bfloat16"]:
        return torch.as_tensor(x.astype(np.float32), device=device).to(torch.bfloat16)
    return torch.as_tensor(x, device=device)


def torch_arrays(d: Drawn, device: str = "cpu") -> tuple[list, dict]:
    kw = _framework_kw(d.kw, "torch", lambda v: to_torch(v, device))
    return [to_torch(x, device) for x in d.inputs], kw


def jax_arrays(d: Drawn, device: str = "cpu") -> tuple[list, dict]:
    dev = jax.devices("gpu" if device == "cuda" else "cpu")[0]
    kw = _framework_kw(d.kw, "jax", lambda v: jax.device_put(v, dev))
    return [jax.device_put(x, dev) for x in d.inputs], kw


def run_torch(fn, spec, d: Drawn, device: str) -> tuple[np.ndarray, tuple]:
    call, primals = on_differentiable(fn, spec, *torch_arrays(d, device))
    diff = [p.clone().requires_grad_(True) for p in primals]
    out = call(*diff)
    grads = torch.autograd.grad(out, diff, to_torch(d.cotangent, device), allow_unused=True)
    grads = tuple(np.zeros(t.shape) if g is None else g.detach().cpu().double().numpy() for g, t in zip(grads, diff))
    return out.detach().cpu().double().numpy(), grads


def jax_vjp_program(fn, spec, arrays: list, kw: dict):
    """``fn``'s forward and VJP as one ``jax.jit`` program, and its arguments but the cotangent:
    ``program(arrays, array_kw, cotangent) -> (value, grads)``. The arrays (inputs and array
    hyperparameters) are arguments, not constants baked into the program; the other
    hyperparameters are closed over (static).

    lossparity's own variants are traced under JAX's strict dtype promotion, which refuses an
    implicit promotion (a bool or int64 array times a float32 one) and changes no result: code
    that traces there runs the same for a user who sets ``jax_numpy_dtype_promotion='strict'``.
    A built-in (optax's, Keras's) is traced as the process is configured."""
    array_kw = {k: v for k, v in kw.items() if isinstance(v, jax.Array)}
    static_kw = {k: v for k, v in kw.items() if k not in array_kw}
    ours = getattr(fn, "framework", None) == "jax"

    def forward_vjp(arrays, array_kw, cotangent):
        with jax.numpy_dtype_promotion("strict") if ours else contextlib.nullcontext():
            call, primals = on_differentiable(fn, spec, list(arrays), {**static_kw, **array_kw})
            out, pullback = jax.vjp(call, *primals)
            return out, pullback(cotangent.astype(out.dtype))  # a built-in may answer in float64 under x64

    return jax.jit(forward_vjp), (arrays, array_kw)


def run_jax(fn, spec, d: Drawn, device: str, jit: bool = True) -> tuple[np.ndarray, tuple]:
    """The value and the VJP of ``d.cotangent``. Under ``jax.jit`` by default, as a training step
    runs: one program per cell, which XLA compiles in one go (and JAX's persistent cache keeps),
    where the eager path compiles every operation apart, for each shape and dtype; that made the
    matrix's JAX cells 2-3x slower. Eager JAX is checked against jit for every loss by
    ``tests/test_transforms.py`` (``jax.jit``). ``jit=False``: eager, for a function that reads
    its arrays' values (the adapters of built-ins that refuse an option the built-in lacks)."""
    arrays, kw = jax_arrays(d, device)
    cotangent = jax.numpy.asarray(d.cotangent)
    if jit:
        program, args = jax_vjp_program(fn, spec, arrays, kw)
        out, grads = program(*args, cotangent)
    else:
        call, primals = on_differentiable(fn, spec, arrays, kw)
        out, pullback = jax.vjp(call, *primals)
        grads = pullback(cotangent)
    return np.asarray(out, dtype=np.float64), tuple(np.asarray(g, dtype=np.float64) for g in grads)


def run_jax_cells(cells, seed: int = 0) -> dict:
    """The value and VJP of each JAX cell (``run_jax_calls``), ``{cell: (value, grads)}``, or
    ``{cell: the exception}`` for a cell that raised."""
    calls, failed = {}, {}
    for cell in cells:
        try:
            spec = reference.get(cell.loss)
            d = draw(spec, cell.case, cell.reduction, cell.dtype, seed)
            calls[cell] = (implementation(cell.variant, cell.loss), spec, d, cell.device)
        except Exception as e:  # noqa: BLE001  (the cell's own failure, reported by its test)
            failed[cell] = e
    return {**run_jax_calls(calls), **failed}


def run_jax_calls(calls: dict) -> dict:
    """``{key: (fn, spec, drawn, device)}`` to ``{key: (value, grads)}`` or ``{key: the
    exception}``, as ``run_jax`` computes them, from one ``jax.jit`` program that calls each
    one's forward+VJP program (``jax_vjp_program``) in turn: the same arithmetic, compiled
    once. Most of a JAX test's time is XLA's compile, and a program has a fixed cost besides
    its operations': the quick tier's 240 JAX cells of 8 losses compiled in 29.5 s as 240
    programs and in 12.4 s as 8. A call that fails to trace is left
    out with its exception, so an error belongs to its call; where the rest still fails to
    compile, each runs alone."""
    programs, out = {}, {}
    for key, (fn, spec, d, device) in calls.items():
        try:
            arrays, kw = jax_arrays(d, device)
            program, args = jax_vjp_program(fn, spec, arrays, kw)
            programs[key] = (program, (*args, jax.numpy.asarray(d.cotangent)))
        except Exception as e:  # noqa: BLE001  (the call's own failure, reported by its test)
            out[key] = e

    if not programs:
        return out

    def joint(keys):
        return dict(zip(keys, jax.jit(lambda args: [programs[k][0](*a) for k, a in zip(keys, args)])(
            [programs[k][1] for k in keys])))

    try:
        results = joint(list(programs))
    except Exception:  # noqa: BLE001  (find the calls that fail to trace, and leave them out)
        for key, (program, args) in programs.items():
            try:
                jax.eval_shape(program, *args)
            except Exception as e:  # noqa: BLE001
                out[key] = e
        keys = [k for k in programs if k not in out]
        try:
            results = joint(keys)
        except Exception:  # noqa: BLE001  (each alone, and each fails alone)
            results = {}
            for key in keys:
                try:
                    results[key] = programs[key][0](*programs[key][1])
                except Exception as e:  # noqa: BLE001
                    out[key] = e
    for key, (value, grads) in results.items():
        out[key] = (np.asarray(value, dtype=np.float64), tuple(np.asarray(g, dtype=np.float64) for g in grads))
    return out


def implementation(variant: str, loss: str):
    return (torch_impl if FRAMEWORK_OF[variant] == "torch" else jax_impl).get(loss, variant)


# -- comparing ---------------------------------------------------------------------

def errors(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """Largest absolute and relative error; NaN where both are NaN counts as equal."""
    if actual.shape != expected.shape:
        return float("inf"), float("inf")
    if actual.size == 0:
        return 0.0, 0.0
    both_nan = np.isnan(actual) & np.isnan(expected)
    same_inf = np.isinf(expected) & (actual == expected)
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity: masked just here
        diff = np.where(both_nan | same_inf, 0.0, np.abs(actual - expected))
    diff = np.where(np.isnan(diff), np.inf, diff)
    scale = np.abs(np.where(same_inf, 1.0, expected))
    rel = np.where(diff == 0, 0.0, diff / np.where(scale == 0, np.finfo(float).tiny, scale))
    return float(diff.max()), float(rel.max())


def tolerance_ratio(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> float:
    """The largest ``|actual - expected| / (atol + rtol |expected|)``: the comparison passes
    where it is at most 1. NaN where both are NaN, and equal infinities, count as equal."""
    if actual.shape != expected.shape:
        return float("inf")
    if actual.size == 0:
        return 0.0
    both_nan = np.isnan(actual) & np.isnan(expected)
    same_inf = np.isinf(expected) & (actual == expected)
    with np.errstate(invalid="ignore"):
        diff = np.where(both_nan | same_inf, 0.0, np.abs(actual - expected))
        diff = np.where(np.isnan(diff), np.inf, diff)
        allowed = atol + rtol * np.abs(np.where(np.isfinite(expected), expected, 0.0))
        return float(np.max(diff / allowed))


def close(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> bool:
    return actual.shape == expected.shape and bool(np.all(np.isclose(actual, expected, rtol=rtol, atol=atol,
                                                                      equal_nan=True)))


@dataclass
class Result:
    cell: Cell
    value_abs_err: float
    value_rel_err: float
    grad_abs_err: float
    grad_rel_err: float
    rtol: float
    atol: float
    passed: bool
    detail: str = ""

    def row(self) -> dict:
        c = self.cell
        return {"loss": c.loss, "case": c.case, "reduction": c.reduction, "framework": c.framework,
                "variant": c.variant, "dtype": c.dtype, "device": c.device,
                "value_abs_err": self.value_abs_err, "value_rel_err": self.value_rel_err,
                "grad_abs_err": self.grad_abs_err, "grad_rel_err": self.grad_rel_err,
                "rtol": self.rtol, "atol": self.atol,
                "passed": "xfail" if c.xfail_reason and not self.passed else self.passed,
                "xfail_reason": c.xfail_reason or ""}


def compare(cell: Cell, value, grads, want_value, want_grads) -> Result:
    rtol, atol = TOLERANCES[cell.dtype]
    v_abs, v_rel = errors(value, want_value)
    g_errs = [errors(g, w) for g, w in zip(grads, want_grads)] or [(0.0, 0.0)]
    ok = (close(value, want_value, rtol, atol) and len(grads) == len(want_grads)
          and all(close(g, w, rtol, atol) for g, w in zip(grads, want_grads)))
    return Result(cell, v_abs, v_rel, max(e[0] for e in g_errs), max(e[1] for e in g_errs), rtol, atol, ok)


def run_cell(cell: Cell, seed: int = 0, outputs: tuple | None = None) -> Result:
    """``cell`` against the reference; ``outputs``: its value and grads computed already (by
    ``run_jax_cells``), else the cell runs here."""
    spec = reference.get(cell.loss)
    d = draw(spec, cell.case, cell.reduction, cell.dtype, seed)
    want_value, want_grads = expected(spec, d)
    if outputs is None:
        runner = run_torch if cell.framework == "torch" else run_jax
        outputs = runner(implementation(cell.variant, cell.loss), spec, d, cell.device)
    value, grads = outputs
    result = compare(cell, value, grads, want_value, want_grads)
    if not result.passed:
        result.detail = describe_failure(spec, cell, value, grads, want_value, want_grads, seed,
                                         spec.gradient_names(d.kw))
    return result


# -- reproducers -------------------------------------------------------------------

def reproducer(cell: Cell, seed: int = 0) -> str:
    """Python that rebuilds the cell's inputs and calls the implementation, standalone."""
    if cell.framework == "torch":
        head = ("import torch\nimport reference, torch_impl\n"
                "from reports.matrix import draw, expected, on_differentiable, to_torch, torch_arrays")
        call = (f"fn = torch_impl.get({cell.loss!r}, {cell.variant!r})\n"
                f"f, primals = on_differentiable(fn, spec, *torch_arrays(d, {cell.device!r}))\n"
                "diff = [p.requires_grad_() for p in primals]\n"
                "out = f(*diff)\n"
                f"grads = torch.autograd.grad(out, diff, to_torch(d.cotangent, {cell.device!r}))")
    else:
        head = "import jax\nimport reference, jax_impl\nfrom reports.matrix import draw, expected, jax_arrays, jax_vjp_program"
        call = (f"fn = jax_impl.get({cell.loss!r}, {cell.variant!r})\n"
                f"program, args = jax_vjp_program(fn, spec, *jax_arrays(d, {cell.device!r}))  # jax.jit\n"
                "out, grads = program(*args, jax.numpy.asarray(d.cotangent))")
    return (f"{head}\n"
            f"spec = reference.get({cell.loss!r})\n"
            f"d = draw(spec, {cell.case!r}, {cell.reduction!r}, {cell.dtype!r}{f', seed={seed}' if seed else ''})"
            "  # seeded from loss and case\n"
            f"{call}\n"
            "want_value, want_grads = expected(spec, d)  # the reference, in float64")


def describe_failure(spec, cell, value, grads, want_value, want_grads, seed: int = 0, names=None) -> str:
    rtol, atol = TOLERANCES[cell.dtype]
    lines = [f"cell {cell.id} disagrees with the reference (rtol={rtol}, atol={atol})"]
    if len(grads) != len(want_grads):
        lines.append(f"  {len(grads)} gradients, the reference has {len(want_grads)}")
    parts = [("value", value, want_value)] + [(f"grad[{n}]", g, w)
                                              for n, g, w in zip(names or spec.differentiable, grads, want_grads)]
    for what, got, want in parts:
        if not close(got, want, rtol, atol):
            a, r = errors(got, want)
            lines.append(f"  {what}: abs err {a:.3g}, rel err {r:.3g}, shape {got.shape} vs {want.shape}")
            lines.append(f"    got      {np.array2string(np.ravel(got)[:6], precision=8)}")
            lines.append(f"    expected {np.array2string(np.ravel(want)[:6], precision=8)}")
    lines.append("reproduce with:\n" + reproducer(cell, seed))
    return "\n".join(lines)


# -- the reference against finite differences --------------------------------------

# Central differences with step h have truncation error O(h^2 f''') ~ 1e-12 and rounding
# error O(eps / h) ~ 1e-10 for the O(1) losses the samplers draw: 1e-6 leaves a margin.
FD_STEP, FD_RTOL, FD_ATOL = 1e-6, 1e-6, 1e-7


def finite_difference_vjp(name, inputs, kw, cotangent, step: float = FD_STEP):
    """The VJP of the reference forward by central differences in float64, one array per
    differentiable input (``step`` on each element in turn). The tests and the report's
    ``reference`` rows share it."""
    spec = reference.get(name)
    grads = []
    for input_name in spec.differentiable:
        i = spec.inputs.index(input_name)
        x = inputs[i]
        grad = np.zeros_like(x)
        for j in np.ndindex(x.shape):
            def at(delta):
                moved = list(inputs)
                moved[i] = x.copy()
                moved[i][j] += delta
                return np.sum(cotangent * reference.loss(name, *moved, **kw))
            grad[j] = (at(step) - at(-step)) / (2 * step)
        grads.append(grad)
    return grads
