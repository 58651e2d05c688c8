"""Bad input gets the same clear error from the reference, torch and JAX.

The bad inputs are declared on each spec (``LossSpec.bad_inputs``); the checks that
every loss shares (reduction, keywords, input count) are generated here.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import jax_impl
import reference
import torch_impl
from reports.matrix import Drawn, jax_arrays, seed_for, torch_arrays


def _reference(name, variant):
    return lambda *inputs, **kw: reference.loss(name, *inputs, **kw)


def _framework(pkg, to_arrays):
    def make(name, variant):
        fn = pkg.get(name, variant)

        def call(*inputs, **kw):
            arrays, kw = to_arrays(Drawn(tuple(inputs), kw, np.zeros(())))
            return fn(*arrays, **kw)
        return call
    return make


_torch = _framework(torch_impl, torch_arrays)
_jax = _framework(jax_impl, jax_arrays)


PACKAGES = {"reference": (_reference, ("spec",)), "torch": (_torch, torch_impl.VARIANTS),
            "jax": (_jax, jax_impl.VARIANTS)}


def _implementations():
    for package, (make, variants) in PACKAGES.items():
        for variant in variants:
            yield package, variant, make


def _valid(name):
    spec = reference.get(name)
    inputs, kw = spec.draw(np.random.default_rng(seed_for(name, spec.cases[0].name)))
    return spec, inputs, spec.bind(inputs, kw)


def _bad_params():
    for name in reference.names():
        for bad in reference.get(name).bad_inputs:
            for package, variant, _ in _implementations():
                yield pytest.param(name, bad, package, variant, id=f"{name}-{bad.description}-{package}.{variant}")


def _call(package, variant, name):
    make = PACKAGES[package][0]
    return make(name, variant)


@pytest.mark.parametrize("name, bad, package, variant", list(_bad_params()))
def test_bad_input_is_rejected(name, bad, package, variant):
    spec, inputs, kw = _valid(name)
    inputs, kw = bad.mutate(inputs, kw)
    with pytest.raises(bad.error, match=bad.match):
        _call(package, variant, name)(*inputs, **kw)


def _counting_reads(reads: list):
    """``describe`` for ``reference.validate`` that appends an array's name to ``reads`` each
    time a check reads its values."""
    def counted(n, x):
        info = reference.checks.numpy_info(n, x)
        bounds, values = info._bounds, info._values
        info._bounds = lambda ignore: (reads.append(n), bounds(ignore))[1]
        info._values = lambda: (reads.append(n), values())[1]
        return info
    return counted


def _accepted_without_value_checks(name, bad) -> bool:
    """Whether the reference takes ``bad`` within ``value_checks(False)``: only a value check
    rejects it."""
    spec, inputs, kw = _valid(name)
    inputs, kw = bad.mutate(inputs, kw)
    with reference.value_checks(False):
        try:
            reference.validate(spec, tuple(np.asarray(x) for x in inputs),
                               {k: (np.asarray(v) if k in spec.array_params and v is not None else v)
                                for k, v in kw.items()})
        except bad.error:
            return False
    return True


def _bad_reference_params():
    for name in reference.names():
        for bad in reference.get(name).bad_inputs:
            yield pytest.param(name, bad, id=f"{name}-{bad.description}")


@pytest.mark.parametrize("name, bad", list(_bad_reference_params()))
def test_without_value_checks_only_the_value_checks_are_skipped(name, bad):
    """Within ``reference.value_checks(False)`` the checks read no array's values, and a bad
    input that they reject without reading values (a shape, a dtype, a hyperparameter) is still
    rejected, with the same error. The three packages run the same checks on their own
    ``ArrayInfo``; ``tests/test_host_reads.py`` holds torch's to no read at all."""
    spec, inputs, kw = _valid(name)
    inputs, kw = bad.mutate(inputs, kw)
    inputs = tuple(np.asarray(x) for x in inputs)
    kw = {k: (np.asarray(v) if k in spec.array_params and v is not None else v) for k, v in kw.items()}
    reads = []
    counted = _counting_reads(reads)
    with pytest.raises(bad.error, match=bad.match):
        reference.validate(spec, inputs, kw, describe=counted)
    read_values = bool(reads)
    reads.clear()
    with reference.value_checks(False):
        if read_values:  # skipped now, unless a check that reads nothing rejects it too
            try:
                reference.validate(spec, inputs, kw, describe=counted)
            except bad.error:
                pass
        else:
            with pytest.raises(bad.error, match=bad.match):
                reference.validate(spec, inputs, kw, describe=counted)
    assert reads == [], f"{name}: the checks read {reads} within value_checks(False)"
    assert reference.checks.values_checked()


def _shared_params():
    for name in reference.names():
        for package, variant, _ in _implementations():
            yield pytest.param(name, package, variant, id=f"{name}-{package}.{variant}")


@pytest.mark.parametrize("name, package, variant", list(_shared_params()))
def test_shared_checks(name, package, variant):
    spec, inputs, kw = _valid(name)
    fn = _call(package, variant, name)
    with pytest.raises(ValueError, match="reduction"):
        fn(*inputs, **{**kw, "reduction": "avg"})
    with pytest.raises(TypeError, match="size_averag"):
        fn(*inputs, **{**kw, "size_averag": True})
    with pytest.raises(TypeError, match="inputs"):
        fn(*inputs[:-1], **kw)


def _as_numpy_scalars(spec, kw: dict) -> dict:
    """Every number-valued hyperparameter (and each number in a tuple) as a NumPy scalar of its
    kind: np.float32 for a float, np.int64 for an int, np.bool_ for a bool."""
    def numpy(v):
        if isinstance(v, bool):
            return np.bool_(v)
        if isinstance(v, int):
            return np.int64(v)
        if isinstance(v, float):
            return np.float32(v) if float(np.float32(v)) == v else np.float64(v)
        if type(v) is tuple:
            return tuple(numpy(i) for i in v)
        return v
    return {k: v if k in spec.array_params else numpy(v) for k, v in kw.items()}


@pytest.mark.parametrize("name", reference.names())
def test_numpy_scalar_hyperparameters_are_python_numbers(name):
    """A hyperparameter given as a NumPy scalar (a config's np.float32(0.5), an axis from
    np.argmax) is the Python number it holds to every package, as the torch built-ins take it:
    each case's hyperparameters, all as NumPy scalars, validate to the very values the Python
    ones do, in Python types (so the implementations receive exactly what they would have)."""
    spec = reference.get(name)
    for case in spec.matrix_cases:
        inputs, kw = spec.draw(np.random.default_rng(seed_for(name, case.name)), case.name)
        kw = {k: (v.numpy if isinstance(v, reference.PerFramework) else v) for k, v in kw.items()}
        want = reference.validate(spec, inputs, kw)
        numpy_kw = _as_numpy_scalars(spec, kw)
        d = Drawn(tuple(inputs), numpy_kw, np.zeros(()))
        arrays, torch_kw = torch_arrays(d)
        for package, got in (("reference", reference.validate(spec, inputs, numpy_kw)),
                             ("torch", torch_impl.core.validate(name, tuple(arrays), torch_kw))):
            for k, v in want.items():
                if k in spec.array_params:
                    continue
                assert got[k] == v and type(got[k]) is type(v), (
                    f"{name} [{case.name}] {package}: {k}={numpy_kw[k]!r} validated to {got[k]!r}, "
                    f"where {v!r} gives {v!r}")


def _as_zero_dim(spec, kw: dict, make) -> dict:
    """Every number-valued hyperparameter (and each number in a tuple) as ``make(number)``, a 0-d
    array of some package."""
    def zero_dim(v):
        if type(v) is tuple:
            return tuple(zero_dim(i) for i in v)
        return make(v) if isinstance(v, (bool, int, float)) else v
    return {k: v if k in spec.array_params else zero_dim(v) for k, v in kw.items()}


@pytest.mark.parametrize("name", reference.names())
def test_zero_dim_array_hyperparameters_are_python_numbers(name):
    """A hyperparameter given as a 0-d array (a NumPy array, a torch tensor, a concrete JAX
    array: a margin kept as a tensor) is the number it holds to every package, as torch's
    built-ins take a 0-d tensor: the first case's hyperparameters, each as a 0-d array of the
    package, validate to the very values the Python numbers do, in Python types. A tensor that
    requires grad is refused, naming the hyperparameter: its gradient would be lost."""
    import jax.numpy as jnp
    import torch
    spec = reference.get(name)
    case = spec.cases[0]
    inputs, kw = spec.draw(np.random.default_rng(seed_for(name, case.name)), case.name)
    kw = {**spec.defaults, **{k: (v.numpy if isinstance(v, reference.PerFramework) else v) for k, v in kw.items()}}
    want = reference.validate(spec, inputs, kw)

    def float64_tensor(v):  # torch.tensor(0.4) is float32, which holds 0.4000000059604645
        return torch.tensor(v, dtype=torch.float64) if type(v) is float else torch.tensor(v)

    d = Drawn(tuple(inputs), kw, np.zeros(()))
    arrays, torch_kw = torch_arrays(d)
    jax_inputs, jax_kw = jax_arrays(d)
    for package, got in (
            ("reference", reference.validate(spec, inputs, _as_zero_dim(spec, kw, np.array))),
            ("torch", torch_impl.core.validate(name, tuple(arrays), _as_zero_dim(spec, torch_kw, float64_tensor))),
            ("jax", jax_impl.core.validate(name, tuple(jax_inputs), _as_zero_dim(spec, jax_kw, jnp.asarray))[1])):
        for k, v in want.items():
            if k not in spec.array_params:
                assert got[k] == v and type(got[k]) is type(v), f"{name} {package}: {k} validated to {got[k]!r}, not {v!r}"
    floats = [k for k, v in want.items() if type(v) is float and k not in spec.array_params]
    if floats:
        k = floats[0]
        with pytest.raises(TypeError, match=f"{k} must be a number; got a tensor that requires grad"):
            torch_impl.get(name, "function")(*arrays, **{**torch_kw, k: torch.tensor(want[k], requires_grad=True)})


def test_numpy_scalar_hyperparameters_keep_the_dtype():
    """End to end, where it showed: JAX promotes a float32 input with an np.float64 scalar (or a
    0-d float64 array) to float64 (neither is weakly typed); the axis np.int64(-1) broke torch's
    and JAX's optax ports (``'numpy.int64' object is not iterable``) while the reference took it;
    torch's ``huber_loss`` takes ``delta=torch.tensor(0.5)``, and so do both torch variants."""
    x = np.linspace(-2.0, 2.0, 12, dtype=np.float32).reshape(3, 4)
    y = x[::-1].copy()
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F
    for variant in jax_impl.VARIANTS:
        for delta in (np.float64(0.5), jnp.asarray(0.5, dtype=jnp.float64)):
            out = jax_impl.get("huber_loss", variant)(x, y, delta=delta)
            assert out.dtype == np.float32, (variant, delta, out.dtype)
    for variant in torch_impl.VARIANTS:  # torch's own takes a 0-d tensor too
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        torch.testing.assert_close(torch_impl.get("huber_loss", variant)(tx, ty, delta=torch.tensor(0.5)),
                                   F.huber_loss(tx, ty, delta=torch.tensor(0.5)))
    p = np.full((3, 4), 0.25)
    for make_call in (_torch, _jax):
        for variant in PACKAGES["torch" if make_call is _torch else "jax"][1]:
            got = make_call("kl_divergence", variant)(np.log(p), p, axis=np.int64(-1))
            assert np.allclose(np.asarray(got), reference.loss("kl_divergence", np.log(p), p, axis=-1))


def test_unknown_loss_suggests_close_names():
    with pytest.raises(KeyError, match="did you mean mse_loss"):
        reference.get("mse_los")
    with pytest.raises(KeyError, match="did you mean"):
        torch_impl.get("mse_los", "module")
    with pytest.raises(ValueError, match="variant"):
        jax_impl.get("mse_loss", "module")


def test_reference_vjp_checks_the_cotangent():
    spec, inputs, kw = _valid("mse_loss")
    with pytest.raises(ValueError, match="cotangent"):
        reference.vjp("mse_loss", *inputs, np.ones(3), **{**kw, "reduction": "none"})


def test_importing_jax_impl_leaves_precision_alone():
    code = "import jax_impl, jax; assert not jax.config.jax_enable_x64"
    subprocess.run([sys.executable, "-c", code], check=True)


JAX_WITHOUT_X64 = """
import warnings
import numpy as np, jax
assert not jax.config.jax_enable_x64
import reference
from reports import matrix
warnings.simplefilter("error")  # a dtype JAX cannot give (int64, float64) would warn
rtol, atol = matrix.TOLERANCES["float32"]
failures = []
for name in reference.names():
    spec = reference.get(name)
    case = matrix.half_case(spec, "float32")  # the default case, or the first that admits float32
    reduction = spec.case_reductions(case)[0]
    d = matrix.draw(spec, case.name, reduction, "float32")  # integer labels stay NumPy's int64
    want_value, want_grads = matrix.expected(spec, d)
    results = matrix.run_jax_calls({v: (matrix.implementation(v, name), spec, d, "cpu")
                                    for v in matrix.FRAMEWORKS["jax"]})  # both under one jax.jit
    for variant, result in results.items():
        if isinstance(result, BaseException):
            failures.append(f"{name} [{case.name}] {variant}: raised {type(result).__name__}: {result}")
            continue
        value, grads = result
        if not (matrix.close(value, want_value, rtol, atol)
                and all(matrix.close(g, w, rtol, atol) for g, w in zip(grads, want_grads))):
            failures.append(f"{name} [{case.name}] {variant}: differs from the reference")
print("\\n".join(failures))
raise SystemExit(1 if failures else 0)
"""


def test_jax_without_float64():
    """JAX as users run it, float64 off (the tests turn it on in their own process): every loss's
    default case in float32, with NumPy's int64 labels, through both JAX variants under jit,
    agrees with the reference within the float32 tolerance, without a warning."""
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    result = subprocess.run([sys.executable, "-c", JAX_WITHOUT_X64], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


LABEL_POOLS = {"float": [-1.0, 0.0, 1.0, 2.0, 0.5, -100.0, np.inf, -np.inf, np.nan, 3e38],
               "int": [-1, 0, 1, 2, 3, -100], "bool": [0, 1]}


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16", "int64", "int32", "uint8", "bool"])
def test_torch_array_bounds_are_numpys(dtype):
    """torch's ``bounds(ignore)`` and ``abs_bounds()`` (the label checks' readings, written
    without bool tensors for speed) give what the plain NumPy definition gives, on arrays of a
    few label values with each of them, and one absent, ignored."""
    import torch
    from reference import checks
    from torch_impl.core import TensorInfo
    torch_dtype = getattr(torch, dtype)
    kind = "bool" if dtype == "bool" else "float" if torch_dtype.is_floating_point else "int"
    pool = [v for v in LABEL_POOLS[kind] if dtype != "uint8" or v >= 0]
    rng = np.random.default_rng(0)
    for _ in range(300):
        values = rng.choice(pool, size=min(len(pool), int(rng.integers(1, 4))), replace=False)
        t = torch.tensor(rng.choice(values, size=int(rng.integers(1, 20)))).to(torch_dtype)
        a = t.double().numpy()  # every value above is exact in every dtype (3e38 is inf in float16)
        ours, plain = TensorInfo("x", t), checks.numpy_info("x", a)
        for ignore in [None, 7, *(float(v) if kind == "float" else int(v) for v in values)]:
            got, want = ours.bounds(ignore), plain.bounds(ignore)
            assert (got is None) == (want is None) and (got is None or np.array_equal(got, want, equal_nan=True)), \
                f"TensorInfo('x', torch.tensor({t.tolist()}, dtype=torch.{dtype})).bounds({ignore!r}): {got} != {want}"
        if kind != "bool":
            assert np.array_equal(ours.abs_bounds(), plain.abs_bounds(), equal_nan=True), t.tolist()


def _bad_compiled_params():
    for name in reference.names():
        for bad in reference.get(name).bad_inputs:
            for variant in torch_impl.VARIANTS:
                yield pytest.param(name, bad, variant, id=f"{name}-{bad.description}-torch.{variant}",
                                   marks=pytest.mark.slow)


@pytest.mark.parametrize("name, bad, variant", list(_bad_compiled_params()))
def test_bad_input_under_torch_compile(name, bad, variant):
    """Under ``torch.compile`` a bad shape, dtype or hyperparameter gets eager's error; with
    ``fullgraph=True`` dynamo reports it as ``Unsupported`` ("Observed exception", as it does any
    exception raised while it traces), naming the error and its message. A bad value is not
    checked while dynamo traces (``checks.value_checks``), as under ``jax.jit``."""
    if _accepted_without_value_checks(name, bad):
        pytest.skip("a value check: skipped under torch.compile, as under jax.jit")
    spec, inputs, kw = _valid(name)
    inputs, kw = bad.mutate(inputs, kw)
    arrays, kw = torch_arrays(Drawn(tuple(inputs), kw, np.zeros(())))
    fn = torch_impl.get(name, variant)
    torch._dynamo.reset()
    with pytest.raises(bad.error, match=bad.match):
        torch.compile(fn, backend="eager")(*arrays, **kw)
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.Unsupported) as raised:
        torch.compile(fn, fullgraph=True, backend="eager")(*arrays, **kw)
    message = str(raised.value)
    assert f"raised exception {bad.error.__name__}(" in message, message
    assert re.search(bad.match, message), message
