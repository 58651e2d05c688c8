"""Second-order gradients and function transforms, generated from the registry.

One test per loss x case x reduction x check x variant, in float64, nothing written per loss:

- ``gradgradcheck``: ``torch.autograd.gradgradcheck`` on the ``module`` and ``function``
  variants (the hand-written backward must itself be differentiable);
- ``torch.func.grad``: ``torch.func.grad`` of the output dotted with the cell's cotangent,
  through the ``function`` variant, equals ``torch.autograd.grad``;
- ``torch.func.vmap``: ``torch.func.vmap`` over a leading batch of 3 stacked draws (integer
  and bool inputs stacked too) equals the loop of 3 calls, for the values and for the
  gradient under ``vmap(grad)``;
- ``torch.compile``: ``torch.compile(fullgraph=True, dynamic=True)`` of the ``module`` and
  ``function`` variants (every shape and number symbolic from the first trace; for a
  ``function`` variant AOTAutograd traces the hand-written backward, and a call with no input
  requiring grad is checked too) gives eager's value and gradient;
- ``jax.jit``: the eager value and VJP (op by op) equal the reference's and the jitted call's
  (the matrix runs JAX under jit);
- ``jax.grad``: the jitted ``jax.grad`` of the cotangent-dotted scalar equals the reference VJP;
- ``jax.vmap``: ``jax.vmap`` over 3 stacked draws equals the reference's loop, for the values
  and for ``vmap(grad)``;
- ``jax.hvp``: the Hessian-vector product ``jax.jvp(jax.grad(f), ...)`` along a random
  direction equals central finite differences of the reference VJP along it.

``test_torch_compile_across_cases`` also feeds one compiled function every case of a loss in
turn, as a training script's shapes and hyperparameters change: dynamo recompiles, makes the
changing sizes and numbers symbolic, and must still give eager's values and gradients.

Every array (integer targets and array hyperparameters included) is an argument of the
transformed function, so nothing that must be traced is a closure constant. A check known to
fail for a genuine reason is declared on the spec (``XFail(check=...)``) and runs as
``xfail(strict=True)``. A failing test prints the call that reproduces it.

``make test`` runs every check but ``jax.jit`` on every loss's default case (under its default
reduction), and the torch checks also on the cases whose hyperparameters change the second-order
code path (weights, ignore_index, label smoothing, masks): a hand-written backward is
differentiated again only in torch, while JAX differentiates its VJP rule itself. The other
cells, and ``jax.jit`` (eager JAX compiles each operation apart; ``make test``'s matrix runs every
JAX cell under jit), are ``slow``: ``make report`` runs them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import jax
import jax.numpy as jnp
import jax_impl
import reference
import torch_impl
from reports.matrix import FD_ATOL, FD_RTOL, FD_STEP, TOLERANCES, _as64, draw, jax_arrays, torch_arrays

RTOL, ATOL = TOLERANCES["float64"]
N_BATCH = 3  # the draws stacked under vmap

CHECKS = {
    "gradgradcheck": ("module", "function"),
    "torch.func.grad": ("function",),
    "torch.func.vmap": ("function",),
    "torch.compile": ("module", "function"),
    "jax.jit": ("autodiff", "custom_vjp"),
    "jax.grad": ("autodiff", "custom_vjp"),
    "jax.vmap": ("autodiff", "custom_vjp"),
    "jax.hvp": ("autodiff", "custom_vjp"),
}

# Checks that run only in the slow tier (the report runs them): see ``_fast``.
SLOW_CHECKS = {"jax.jit", "torch.compile"}

# Checks run under each case's first reduction only: ``torch.compile`` costs ~0.5 s a cell (its
# trace, and AOTAutograd's of the backward), and ``test_torch_compile_across_cases`` runs every
# reduction.
ONE_REDUCTION_CHECKS = {"torch.compile"}

# Hyperparameters whose cases take another path through a backward (and its derivative).
SECOND_ORDER_KEYS = {"weight", "pos_weight", "class_weights", "weights", "where", "ignore_index",
                     "label_smoothing", "linear_bias"}


# -- splitting a call into what is differentiated, what is traced, what is static --------

class Parts:
    """A cell's arguments split the way the transforms take them: the differentiable inputs,
    the differentiable array hyperparameters (``linear_bias``), the other inputs, the other
    array hyperparameters, and the static hyperparameters (``reduction``, code)."""

    def __init__(self, spec, inputs: list, kw: dict, is_array):
        self.spec = spec
        self.diff_pos = [spec.inputs.index(n) for n in spec.differentiable]
        self.other_pos = [i for i in range(len(spec.inputs)) if i not in self.diff_pos]
        self.diff_keys = list(spec.gradient_names(kw)[len(self.diff_pos):])
        self.array_keys = [k for k, v in kw.items() if is_array(v) and k not in self.diff_keys]
        self.static = {k: v for k, v in kw.items() if k not in self.diff_keys and k not in self.array_keys}
        self.dinputs = tuple(inputs[i] for i in self.diff_pos)
        self.dparams = tuple(kw[k] for k in self.diff_keys)
        self.others = tuple(inputs[i] for i in self.other_pos)
        self.arrays = tuple(kw[k] for k in self.array_keys)

    @property
    def args(self) -> tuple:
        return self.dinputs, self.dparams, self.others, self.arrays

    def call(self, fn, dinputs, dparams, others, arrays):
        full = [None] * len(self.spec.inputs)
        for i, x in zip(self.diff_pos, dinputs):
            full[i] = x
        for i, x in zip(self.other_pos, others):
            full[i] = x
        kw = {**self.static, **dict(zip(self.diff_keys, dparams)), **dict(zip(self.array_keys, arrays))}
        return fn(*full, **kw)


def _torch_parts(spec, d):
    inputs, kw = torch_arrays(d)
    return Parts(spec, inputs, kw, lambda v: isinstance(v, torch.Tensor))


def _jax_parts(spec, d):
    inputs, kw = jax_arrays(d)
    return Parts(spec, inputs, kw, lambda v: isinstance(v, jax.Array))


def _draws(spec, case, reduction):
    """``N_BATCH`` draws of one case (the first is the matrix's), every draw with the first's
    hyperparameters, so they can be stacked."""
    draws = [draw(spec, case, reduction, "float64", seed=s) for s in range(N_BATCH)]
    for d in draws[1:]:
        d.kw = draws[0].kw
    return draws


def _unstackable(draws) -> str | None:
    """Why the draws cannot be stacked for vmap (the sampler drew other shapes for another seed,
    as ctc_loss's concatenated targets, whose length is the sum of random target lengths)."""
    shapes = [[np.shape(x) for x in d.inputs] for d in draws]
    if any(s != shapes[0] for s in shapes[1:]):
        return f"the case's draws differ in shape from seed to seed ({shapes}): nothing to stack for vmap"
    return None


def _reference_grads(spec, d, inputs=None, kw=None) -> tuple:
    """The reference VJP under the cell's cotangent (inputs and kw default to the draw's)."""
    inputs = _as64(d.inputs) if inputs is None else inputs
    kw = _as64(d.kw) if kw is None else kw
    return reference.vjp(spec.name, *inputs, d.cotangent.astype(np.float64), **kw)


# -- comparing ------------------------------------------------------------------------

def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _assert_close(what: str, got, want, rtol=RTOL, atol=ATOL):
    got, want = _numpy(got), _numpy(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    ok = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    if not ok.all():
        with np.errstate(invalid="ignore"):
            err = np.where(ok, 0.0, np.abs(got - want))
        err = np.where(np.isnan(err), np.inf, err)
        i = np.unravel_index(np.argmax(err), err.shape) if err.ndim else ()
        raise AssertionError(f"{what}: {int((~ok).sum())} of {ok.size} entries differ (rtol={rtol}, atol={atol}); "
                             f"worst at {i}: got {got[i]!r}, expected {want[i]!r}\n"
                             f"  got      {np.array2string(np.ravel(got)[:6], precision=8)}\n"
                             f"  expected {np.array2string(np.ravel(want)[:6], precision=8)}")


def _assert_all_close(what: str, names, got, want, **tol):
    got, want = list(got), list(want)
    assert len(got) == len(want), f"{what}: {len(got)} arrays, expected {len(want)}"
    for n, g, w in zip(names, got, want):
        _assert_close(f"{what}[{n}]", g, w, **tol)


# -- torch ------------------------------------------------------------------------------

def check_gradgradcheck(name, case, reduction, variant):
    spec = reference.get(name)
    p = _torch_parts(spec, draw(spec, case, reduction, "float64"))
    fn = torch_impl.get(name, variant)
    n = len(p.dinputs)

    def f(*diff):
        return p.call(fn, diff[:n], diff[n:], p.others, p.arrays)

    primals = [x.clone().requires_grad_(True) for x in p.dinputs + p.dparams]
    assert torch.autograd.gradgradcheck(f, primals)


def _torch_scalar(fn, p):
    def scalar(dinputs, dparams, others, arrays, cotangent):
        return (p.call(fn, dinputs, dparams, others, arrays) * cotangent).sum()
    return scalar


def _autograd(fn, p, cotangent):
    diff = [x.clone().requires_grad_(True) for x in p.dinputs + p.dparams]
    n = len(p.dinputs)
    out = p.call(fn, diff[:n], diff[n:], p.others, p.arrays)
    grads = torch.autograd.grad(out, diff, cotangent, allow_unused=True)
    return out.detach(), [torch.zeros_like(x) if g is None else g for x, g in zip(diff, grads)]


def _torch_cell(name, case, reduction):
    """A float64 cell's spec, draw, parts and cotangent (as a tensor)."""
    spec = reference.get(name)
    d = draw(spec, case, reduction, "float64")
    return spec, d, _torch_parts(spec, d), torch.as_tensor(d.cotangent)


def check_torch_func_grad(name, case, reduction, variant):
    spec, d, p, cotangent = _torch_cell(name, case, reduction)
    fn = torch_impl.get(name, variant)
    got = torch.func.grad(_torch_scalar(fn, p), argnums=(0, 1))(*p.args, cotangent)
    _, want = _autograd(fn, p, cotangent)
    _assert_all_close("torch.func.grad", spec.gradient_names(d.kw), [*got[0], *got[1]], want)


def check_torch_func_vmap(name, case, reduction, variant):
    spec = reference.get(name)
    draws = _draws(spec, case, reduction)
    if reason := _unstackable(draws):
        pytest.skip(reason)
    parts = [_torch_parts(spec, d) for d in draws]
    p = parts[0]
    fn = torch_impl.get(name, variant)
    cotangents = [torch.as_tensor(d.cotangent) for d in draws]

    def stack(get):
        return tuple(torch.stack(xs) for xs in zip(*(get(q) for q in parts)))

    dinputs, others = stack(lambda q: q.dinputs), stack(lambda q: q.others)
    batch = (dinputs, p.dparams, others, p.arrays)
    in_dims = (0, None, 0, None)

    got = torch.func.vmap(lambda *a: p.call(fn, *a), in_dims=in_dims)(*batch)
    loop = [_autograd(fn, q, c) for q, c in zip(parts, cotangents)]
    _assert_close("torch.func.vmap value", got, torch.stack([v for v, _ in loop]))

    grad = torch.func.grad(_torch_scalar(fn, p), argnums=(0, 1))
    got = torch.func.vmap(grad, in_dims=in_dims + (0,))(*batch, torch.stack(cotangents))
    want = [torch.stack(gs) for gs in zip(*(g for _, g in loop))]
    _assert_all_close("torch.func.vmap(torch.func.grad)", spec.gradient_names(draws[0].kw),
                      [*got[0], *got[1]], want)


def _compiled(fn, **options):
    """``torch.compile(fn, fullgraph=True)``, from an empty cache: the variants of all losses
    share a few wrapper functions, whose compiled code dynamo keeps per code object."""
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, **options)


def check_torch_compile(name, case, reduction, variant):
    spec, d, p, cotangent = _torch_cell(name, case, reduction)
    fn = torch_impl.get(name, variant)
    # AOTAutograd traces the hand-written backward of a ``function`` variant; a ``module``
    # variant's backward is torch's own, so dynamo's trace is what is checked there.
    compiled = _compiled(fn, dynamic=True, backend="aot_eager" if variant == "function" else "eager")
    got_value, got = _autograd(compiled, p, cotangent)
    want_value, want = _autograd(fn, p, cotangent)
    _assert_close("torch.compile value", got_value, want_value)
    _assert_all_close("torch.compile gradient", spec.gradient_names(d.kw), got, want)
    if variant == "function":  # with no input requiring grad, dynamo traces the forward alone
        _assert_close("torch.compile value, no input requiring grad", p.call(compiled, *p.args), want_value)


def compile_across_cases(name: str, variant: str, cells=None, dynamic=None, values_without_grad=False) -> None:
    """One ``torch.compile(fullgraph=True)`` of ``name``'s ``variant`` fed each (case, reduction)
    of ``cells`` in turn (default: every case of the spec under each of its reductions), each
    value and gradient compared with eager's. Dynamo (backend ``eager``: what is checked is its
    trace) recompiles as the shapes and hyperparameters change; past the first change it traces
    them as symbols (``dynamic=True``: from the first trace). ``values_without_grad`` also calls
    it with no input requiring grad, as an evaluation loop does. It must not fall back to eager:
    the recompile limit is raised, and reaching it fails the test."""
    spec = reference.get(name)
    cells = cells or [(c.name, r) for c in spec.cases for r in spec.case_reductions(c)]
    fn = torch_impl.get(name, variant)
    with torch._dynamo.config.patch(recompile_limit=len(cells) + 8, fail_on_recompile_limit_hit=True):
        compiled = _compiled(fn, backend="eager", dynamic=dynamic)
        for case, reduction in cells:
            _, d, p, cotangent = _torch_cell(name, case, reduction)
            try:
                got_value, got = _autograd(compiled, p, cotangent)
            except Exception as e:  # noqa: BLE001
                raise AssertionError(f"[{case}, reduction={reduction!r}], after {cells[:cells.index((case, reduction))]}: "
                                     f"{type(e).__name__}: {e}") from e
            want_value, want = _autograd(fn, p, cotangent)
            what = f"torch.compile [{case}, reduction={reduction!r}]"
            _assert_close(f"{what} value", got_value, want_value)
            _assert_all_close(f"{what} gradient", spec.gradient_names(d.kw), got, want)
            if values_without_grad:
                _assert_close(f"{what} value, no input requiring grad", p.call(compiled, *p.args), want_value)


# -- JAX ----------------------------------------------------------------------------------
#
# XLA's compilation is most of a JAX check's cost (~0.1-0.5 s a program, the run itself well
# under 1 ms), so the four checks of one (loss, case, reduction, variant) are one jitted
# program, compiled once and cached; each test reads its part. Where the joint program fails
# to trace or compile, each check jits its own part, so a failure belongs to its check alone.

def _jax_scalar(fn, p):
    def scalar(dinputs, dparams, others, arrays, cotangent):
        return jnp.sum(p.call(fn, dinputs, dparams, others, arrays) * cotangent)
    return scalar


class _JaxCell:
    """Everything the JAX checks of one (loss, case, reduction, variant) need: the draws, the
    expected values from the reference, and each check's part as a function of arrays."""

    def __init__(self, name, case, reduction, variant):
        spec = self.spec = reference.get(name)
        self.draws = _draws(spec, case, reduction)
        d = self.d = self.draws[0]
        self.parts = [_jax_parts(spec, x) for x in self.draws]
        p = self.p = self.parts[0]
        self.names = spec.gradient_names(d.kw)
        fn = jax_impl.get(name, variant)
        scalar = _jax_scalar(fn, p)
        grad = jax.grad(scalar, argnums=(0, 1))
        rng = np.random.default_rng(7)
        self.direction = (tuple(rng.standard_normal(np.shape(x)) for x in p.dinputs),
                          tuple(rng.standard_normal(np.shape(x)) for x in p.dparams))

        def flat(grads):
            return [*grads[0], *grads[1]]

        def jit_part(dinputs, dparams, others, arrays, cotangent, *_):
            value, pullback = jax.vjp(lambda a, b: p.call(fn, a, b, others, arrays), dinputs, dparams)
            return value, flat(pullback(cotangent))

        def grad_part(dinputs, dparams, others, arrays, cotangent, *_):
            return flat(grad(dinputs, dparams, others, arrays, cotangent))

        def hvp_part(dinputs, dparams, others, arrays, cotangent, direction, *_):
            return flat(jax.jvp(lambda a, b: grad(a, b, others, arrays, cotangent), (dinputs, dparams), direction)[1])

        def vmap_part(dinputs, dparams, others, arrays, cotangent, direction, batch):
            b_dinputs, b_others, b_cotangents = batch
            in_axes = (0, None, 0, None)
            value = jax.vmap(lambda *a: p.call(fn, *a), in_axes=in_axes)(b_dinputs, dparams, b_others, arrays)
            grads = jax.vmap(grad, in_axes=in_axes + (0,))(b_dinputs, dparams, b_others, arrays, b_cotangents)
            return value, flat(grads)

        self.functions = {"jax.jit": jit_part, "jax.grad": grad_part, "jax.hvp": hvp_part, "jax.vmap": vmap_part}
        self.unstackable = _unstackable(self.draws)

        def stack(get):
            return tuple(jnp.stack(xs) for xs in zip(*(get(q) for q in self.parts)))

        if self.unstackable:
            del self.functions["jax.vmap"]
            batch = None
        else:
            batch = (stack(lambda q: q.dinputs), stack(lambda q: q.others),
                     jnp.stack([jnp.asarray(x.cotangent) for x in self.draws]))
        self.args = (*p.args, jnp.asarray(d.cotangent), jax.tree.map(jnp.asarray, self.direction), batch)
        self._results = None

    def result(self, check):
        """The jitted part of ``check``, from the joint program where it compiles."""
        if self._results is None:
            try:
                self._results = jax.jit(lambda *a: {c: f(*a) for c, f in self.functions.items()})(*self.args)
            except Exception:  # noqa: BLE001  (each check then runs its own part, and fails alone)
                self._results = {}
        if check in self._results:
            return self._results[check]
        return jax.jit(self.functions[check])(*self.args)


_JAX_CELLS: dict = {}


def _jax_cell(name, case, reduction, variant) -> _JaxCell:
    key = (name, case, reduction, variant)
    if key not in _JAX_CELLS:
        if len(_JAX_CELLS) >= 4:  # the tests of one cell run together: keep the last few
            _JAX_CELLS.pop(next(iter(_JAX_CELLS)))
        _JAX_CELLS[key] = _JaxCell(*key)
    return _JAX_CELLS[key]


def check_jax_jit(name, case, reduction, variant):
    c = _jax_cell(name, case, reduction, variant)
    value, grads = c.result("jax.jit")
    # The matrix runs JAX under jit; here the eager call (op by op, each operation compiled
    # apart) is held to the reference and to the jitted call at float64's tolerance.
    eager_value, eager_grads = c.functions["jax.jit"](*c.args)
    _assert_close("eager value", eager_value, reference.loss(name, *_as64(c.d.inputs), **_as64(c.d.kw)))
    _assert_all_close("eager VJP", c.names, eager_grads, _reference_grads(c.spec, c.d))
    _assert_close("jax.jit value against eager", value, eager_value)
    _assert_all_close("jax.jit VJP against eager", c.names, grads, eager_grads)


def check_jax_grad(name, case, reduction, variant):
    c = _jax_cell(name, case, reduction, variant)
    _assert_all_close("jax.grad", c.names, c.result("jax.grad"), _reference_grads(c.spec, c.d))


def check_jax_vmap(name, case, reduction, variant):
    c = _jax_cell(name, case, reduction, variant)
    if c.unstackable:
        pytest.skip(c.unstackable)
    value, grads = c.result("jax.vmap")
    kw = _as64(c.d.kw)
    _assert_close("jax.vmap value", value, np.stack([reference.loss(name, *_as64(d.inputs), **kw) for d in c.draws]))
    want = [np.stack(gs) for gs in zip(*(_reference_grads(c.spec, d) for d in c.draws))]
    _assert_all_close("jax.vmap(jax.grad)", c.names, grads, want)


def check_jax_hvp(name, case, reduction, variant):
    c = _jax_cell(name, case, reduction, variant)
    got = c.result("jax.hvp")
    # Central differences of the reference VJP along the same direction.
    p, (v_inputs, v_params) = c.p, c.direction
    inputs, kw = list(_as64(c.d.inputs)), _as64(c.d.kw)

    def moved(t):
        xs = list(inputs)
        for i, v in zip(p.diff_pos, v_inputs):
            xs[i] = xs[i] + t * v
        return _reference_grads(c.spec, c.d, xs, {**kw, **{k: kw[k] + t * v for k, v in zip(p.diff_keys, v_params)}})

    want = [(a - b) / (2 * FD_STEP) for a, b in zip(moved(FD_STEP), moved(-FD_STEP))]
    _assert_all_close("jax.hvp", c.names, got, want, rtol=FD_RTOL, atol=FD_ATOL)


RUN = {
    "gradgradcheck": check_gradgradcheck,
    "torch.func.grad": check_torch_func_grad,
    "torch.func.vmap": check_torch_func_vmap,
    "torch.compile": check_torch_compile,
    "jax.jit": check_jax_jit,
    "jax.grad": check_jax_grad,
    "jax.vmap": check_jax_vmap,
    "jax.hvp": check_jax_hvp,
}


def run(check: str, name: str, case: str, reduction: str, variant: str) -> None:
    """One transform test; raises AssertionError (or the transform's own error) where it fails."""
    RUN[check](name, case, reduction, variant)


def reproducer(check, name, case, reduction, variant) -> str:
    return ("import sys; sys.path.insert(0, 'tests')  # from the repository root\n"
            "import test_transforms\n"
            f"test_transforms.run({check!r}, {name!r}, {case!r}, {reduction!r}, {variant!r})")


# -- the tests ------------------------------------------------------------------------------

def _fast(spec, case, reduction, check) -> bool:
    """Whether ``make test`` runs ``check`` on (case, reduction): the default case under the
    loss's default reduction, and for the torch checks the cases that set a second-order
    hyperparameter, under ``mean`` (where a weighted mean's denominator enters the derivative).
    ``jax.jit`` is ``slow`` everywhere: its eager run compiles every operation apart (55 s of a
    cold ``make test`` on 2 cores), and in ``make test`` every JAX matrix cell runs under jit."""
    if check in SLOW_CHECKS:
        return False
    reductions = spec.case_reductions(case)
    if case is spec.cases[0]:
        default = spec.defaults.get("reduction")
        return reduction == (default if default in reductions else reductions[0])
    if check.startswith("jax.") or SECOND_ORDER_KEYS.isdisjoint(case):
        return False
    return reduction == ("mean" if "mean" in reductions else reductions[0])


def _params():
    for name in reference.names():
        spec = reference.get(name)
        for case in spec.cases:
            for reduction in spec.case_reductions(case):
                for check, variants in CHECKS.items():
                    if check in ONE_REDUCTION_CHECKS and reduction != spec.case_reductions(case)[0]:
                        continue
                    for variant in variants:
                        marks = [] if _fast(spec, case, reduction, check) else [pytest.mark.slow]
                        reason = spec.check_xfail_reason(check, variant, case.name, reduction)
                        if reason:
                            marks.append(pytest.mark.xfail(strict=True, reason=reason))
                        yield pytest.param(check, name, case.name, reduction, variant, marks=marks,
                                           id=f"{name}-{case.name}-{reduction}-{check}-{variant}")


@pytest.mark.parametrize("check, name, case, reduction, variant", list(_params()))
def test_transform(check, name, case, reduction, variant):
    try:
        run(check, name, case, reduction, variant)
    except Exception as e:  # noqa: BLE001  (any failure gets the reproducer)
        raise AssertionError(f"{check} over {name} [{case}, reduction={reduction!r}] ({variant}) failed: "
                             f"{type(e).__name__}: {e}\nreproduce with:\n"
                             f"{reproducer(check, name, case, reduction, variant)}") from e


@pytest.mark.slow
@pytest.mark.parametrize("name, variant", [(n, v) for n in reference.names() for v in ("module", "function")])
def test_torch_compile_across_cases(name, variant):
    try:
        compile_across_cases(name, variant)
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"torch.compile across the cases of {name} ({variant}) failed: {e}\nreproduce with:\n"
                             "import sys; sys.path.insert(0, 'tests')  # from the repository root\n"
                             f"import test_transforms; test_transforms.compile_across_cases({name!r}, {variant!r})") from e


# What dynamo (torch 2.13) got wrong, before the wrappers kept it from it; each sequence failed
# on the code before (a (case, reduction) list, and whether every size is symbolic from the
# first trace): a class axis made symbolic, then answered ``1 in (axis,)`` False (a mean over all
# the elements: gradients 5,000 times off, no error); a softmax residual moved to the last axis,
# whose strides the backward read a batch size from (gradients 3 times too large, no error); a
# loss that is a view of its class losses (the same, a reshape that raised); a classmethod
# backward; the value checks' ContextVar, which dynamo cannot trace; a ``function`` variant
# called with no input requiring grad (a forward whose signature hid its inputs' count).
COMPILE_SEQUENCES = {
    "binary_focal_crossentropy": ([("axis=0", "mean"), ("3-D, axis=1", "mean")], None),
    "softmax_cross_entropy": ([("default", "mean"), ("axis=0", "mean")], None),
    "dice_loss": ([("ignore_background, class_weights, class_reduction=none", "none")], True),
    "cosine_distance": ([("default", "mean")], None),
    "cross_entropy": ([("default", "mean"), ("weighted", "mean"), ("ignore_index", "mean")], None),
}


@pytest.mark.parametrize("name, variant", [(n, v) for n in COMPILE_SEQUENCES for v in ("module", "function")])
def test_torch_compile_sequences_that_went_wrong(name, variant):
    compile_across_cases(name, variant, *COMPILE_SEQUENCES[name], values_without_grad=True)
