"""Proofs of the cross-library differences that the regression family records.

Every ``Difference`` on a regression spec names a library function and the mapping that
reconciles it with lossparity; each test below checks one mapping against the real library
(torch, optax, Keras on the JAX backend) on inputs drawn from the specs' samplers, and
``test_every_regression_difference_has_a_proof`` keeps the recorded list and the proofs in step.

Keras 3 averages in float32 on the JAX backend even for float64 input (see
``test_keras_averages_in_float32_even_for_float64``), so every comparison with Keras runs in
float32 at the matrix's float32 tolerances; torch and optax are compared in float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jax_impl
import reference
import torch_impl
from jax_impl.core import keras
from reports.matrix import TOLERANCES, Cell, compare, draw, expected, run_jax, run_torch, seed_for

REDUCTIONS = ("none", "mean", "sum")
EPS = 1e-7  # keras.config.epsilon()

# (loss, library, builtin) of each recorded Difference -> the tests that prove it
PROOFS: dict[tuple[str, str, str], list[str]] = {}


def proves(loss: str, library: str, builtin: str):
    def mark(fn):
        PROOFS.setdefault((loss, library, builtin), []).append(fn.__name__)
        return fn
    return mark


# -- helpers -----------------------------------------------------------------------

def sampled(name: str, case: str | None = None, dtype=np.float64):
    """Inputs and hyperparameters of one case, drawn as the matrix draws them."""
    spec = reference.get(name)
    case = spec.case(case)
    return spec.draw(np.random.default_rng(seed_for(name, case.name)), case, dtype)


def as64(arrays):
    return tuple(np.asarray(a, np.float64) if np.asarray(a).dtype.kind == "f" else np.asarray(a) for a in arrays)


def assert_close(actual, want, dtype: str = "float64"):
    rtol, atol = TOLERANCES[dtype]
    actual = actual.detach().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    np.testing.assert_allclose(actual.astype(np.float64), np.asarray(want, np.float64), rtol=rtol, atol=atol)


def T(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a))


def keras_loss(name: str):
    return getattr(keras().losses, name)


def optax_losses():
    import optax
    return optax.losses


# -- mse_loss ----------------------------------------------------------------------

@proves("mse_loss", "optax", "optax.losses.squared_error")
def test_mse_loss_none_is_optax_squared_error():
    (x, y), _ = sampled("mse_loss")
    assert_close(optax_losses().squared_error(jnp.asarray(x), jnp.asarray(y)),
                 reference.loss("mse_loss", x, y, reduction="none"))
    assert_close(optax_losses().squared_error(jnp.asarray(x), jnp.asarray(y)),
                 F.mse_loss(T(x), T(y), reduction="none"))


# -- huber_loss --------------------------------------------------------------------

HUBER_CASES = ("default", "delta=0.5", "delta=2")


@proves("huber_loss", "optax", "optax.losses.huber_loss")
@pytest.mark.parametrize("case", HUBER_CASES)
def test_huber_loss_none_is_optax_huber_loss(case):
    (x, y), kw = sampled("huber_loss", case)
    delta = kw.get("delta", 1.0)
    want = reference.loss("huber_loss", x, y, reduction="none", delta=delta)
    assert_close(optax_losses().huber_loss(jnp.asarray(x), jnp.asarray(y), delta=delta), want)
    assert_close(F.huber_loss(T(x), T(y), reduction="none", delta=delta), want)


@proves("huber_loss", "torch", "torch.nn.functional.smooth_l1_loss")
@pytest.mark.parametrize("case", HUBER_CASES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_huber_is_delta_times_smooth_l1(case, reduction):
    (x, y), kw = sampled("huber_loss", case)
    d = kw.get("delta", 1.0)
    torch_huber = F.huber_loss(T(x), T(y), delta=d, reduction=reduction)
    assert_close(torch_huber, d * F.smooth_l1_loss(T(x), T(y), beta=d, reduction=reduction))
    assert_close(reference.loss("huber_loss", x, y, delta=d, reduction=reduction),
                 d * reference.loss("smooth_l1_loss", x, y, beta=d, reduction=reduction))
    if d != 1.0:  # the scale is real: without it they differ
        assert not np.allclose(torch_huber.numpy(), F.smooth_l1_loss(T(x), T(y), beta=d, reduction=reduction).numpy())


# -- poisson_nll_loss --------------------------------------------------------------

@proves("poisson_nll_loss", "torch", "torch.nn.functional.poisson_nll_loss")
def test_poisson_nll_loss_against_torch():
    (x, y), _ = sampled("poisson_nll_loss", "full")
    # Values and gradients agree; where target == 0 and full=True, torch's target gradient is NaN.
    y = y.copy()
    y[0, :2] = 0.0
    xt, yt = T(x).requires_grad_(), T(y).requires_grad_()
    out = F.poisson_nll_loss(xt, yt, full=True, reduction="sum")
    out.backward()
    assert_close(out, reference.loss("poisson_nll_loss", x, y, full=True, reduction="sum"))
    d_x, d_y = reference.vjp("poisson_nll_loss", x, y, np.array(1.0), full=True, reduction="sum")
    assert torch.isnan(yt.grad[0, :2]).all()
    assert np.isfinite(d_y).all()
    assert_close(d_y[0, :2], -x[0, :2])  # the true derivative there: -input
    zero = y == 0
    assert_close(yt.grad.numpy()[~zero], d_y[~zero])
    assert_close(xt.grad, d_x)
    for r in REDUCTIONS:  # the same call, argument for argument, without full
        assert_close(F.poisson_nll_loss(T(x), T(y), log_input=True, full=False, eps=1e-8, reduction=r),
                     reference.loss("poisson_nll_loss", x, y, log_input=True, full=False, eps=1e-8, reduction=r))
    # torch broadcasts the target and takes negative targets and rates; lossparity rejects them
    assert F.poisson_nll_loss(T(x), T(y[:1]), reduction="none").shape == x.shape
    with pytest.raises(ValueError, match="target"):
        reference.loss("poisson_nll_loss", x, y[:1])
    assert torch.isfinite(F.poisson_nll_loss(T(x), T(y - 10.0))).item()
    with pytest.raises(ValueError, match="target"):
        reference.loss("poisson_nll_loss", x, y - 10.0)
    assert torch.isnan(F.poisson_nll_loss(-T(np.abs(x)) - 0.1, T(y), log_input=False)).item()
    with pytest.raises(ValueError, match="input"):
        reference.loss("poisson_nll_loss", -np.abs(x) - 0.1, y, log_input=False)
    # size_average and reduce are dropped
    with pytest.warns(UserWarning):
        F.poisson_nll_loss(T(x), T(y), size_average=False)
    with pytest.raises(TypeError, match="size_average"):
        reference.loss("poisson_nll_loss", x, y, size_average=False)


@proves("poisson_nll_loss", "keras", "keras.losses.poisson")
@pytest.mark.parametrize("case", ("log_input=False", "log_input=False, full"))
def test_keras_poisson_is_the_rate_form_averaged_over_the_last_axis(case):
    (x, y), _ = sampled("poisson_nll_loss", case, np.float32)
    x64, y64 = as64((x, y))
    want = reference.loss("poisson_nll_loss", x64, y64, log_input=False, eps=1e-7, reduction="none").mean(-1)
    assert_close(keras_loss("poisson")(y, x), want, "float32")
    assert_close(reference.loss("poisson", y64, x64), want)


# -- gaussian_nll_loss -------------------------------------------------------------

@proves("gaussian_nll_loss", "numpy/jax ports", "maximum(var, eps)")
@pytest.mark.parametrize("case", ("var < eps (clamp, straight-through)",
                                  "var (N, 1) < eps (clamp, straight-through)"))
def test_maximum_port_zeroes_the_gradient_torch_passes_through(case):
    (x, y, v), kw = sampled("gaussian_nll_loss", case)
    eps = kw["eps"]
    below = v < eps
    assert below.any() and (~below).any()
    vt = T(v).requires_grad_()
    F.gaussian_nll_loss(T(x), T(y), vt, eps=eps, reduction="sum").backward()
    torch_grad = vt.grad.numpy()
    view = lambda var: var.reshape(var.shape + (1,)) if var.ndim < x.ndim else var  # noqa: E731

    def total(clamp):
        def f(var):
            c = clamp(view(var))
            return jnp.sum(0.5 * (jnp.log(c) + (x - y) ** 2 / c))
        return f

    port = jax.grad(total(lambda var: jnp.maximum(var, eps)))(jnp.asarray(v))
    mapped = jax.grad(total(lambda var: jax.lax.stop_gradient(jnp.maximum(var, eps))
                            + (var - jax.lax.stop_gradient(var))))(jnp.asarray(v))
    assert np.all(np.asarray(port)[below] == 0) and np.all(torch_grad[below] != 0)
    assert_close(np.asarray(port)[~below], torch_grad[~below])
    assert_close(mapped, torch_grad)
    # torch's own form: clamp a clone in place under no_grad
    vt2 = T(v).requires_grad_()
    c = view(vt2).clone()
    with torch.no_grad():
        c.clamp_(min=eps)
    (0.5 * (torch.log(c) + (T(x) - T(y)) ** 2 / c)).sum().backward()
    assert_close(vt2.grad, torch_grad)
    # and the reference is torch's
    assert_close(reference.vjp("gaussian_nll_loss", x, y, v, np.array(1.0), eps=eps, reduction="sum")[2], torch_grad)


@proves("gaussian_nll_loss", "torch", "torch.nn.functional.gaussian_nll_loss")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gaussian_nll_loss_float_var_and_broadcast_target(reduction):
    (x, y, v), _ = sampled("gaussian_nll_loss")
    assert_close(F.gaussian_nll_loss(T(x), T(y), 0.7, reduction=reduction),
                 reference.loss("gaussian_nll_loss", x, y, np.full_like(x, 0.7), reduction=reduction))
    out = F.gaussian_nll_loss(T(x), T(y[:1]), T(v), reduction=reduction)  # torch broadcasts target
    assert_close(out, reference.loss("gaussian_nll_loss", x, np.broadcast_to(y[:1], x.shape).copy(), v,
                                     reduction=reduction))
    with pytest.raises(ValueError, match="target"):
        reference.loss("gaussian_nll_loss", x, y[:1], v, reduction=reduction)


# -- squared_error (an alias of mse_loss) ------------------------------------------

def _alias_params():
    spec = reference.get("squared_error")
    for case in spec.cases:
        for reduction in spec.case_reductions(case):
            yield pytest.param(case.name, reduction, id=f"{case.name}-{reduction}")


@proves("squared_error", "torch", "torch.nn.functional.mse_loss")
@pytest.mark.parametrize("case, reduction", list(_alias_params()))
def test_squared_error_is_mse_loss(case, reduction):
    alias, target = reference.get("squared_error"), reference.get("mse_loss")
    assert alias.alias_of == "mse_loss" and alias.defaults == {"reduction": "none"}
    d = draw(alias, case, reduction, "float64")
    x, y = d.inputs
    want = reference.loss("mse_loss", x, y, reduction=reduction)
    assert_close(F.mse_loss(T(x), T(y), reduction=reduction), want)
    assert_close(reference.loss("squared_error", x, y, reduction=reduction), want)
    # implemented once: each variant of the alias is the target's, bit for bit
    for pkg, runner in ((torch_impl, run_torch), (jax_impl, run_jax)):
        for variant in pkg.VARIANTS:
            got = runner(pkg.get("squared_error", variant), alias, d, "cpu")
            base = runner(pkg.get("mse_loss", variant), target, d, "cpu")
            np.testing.assert_array_equal(got[0], base[0])
            for g, b in zip(got[1], base[1]):
                np.testing.assert_array_equal(g, b)
    assert reference.get("squared_error").differentiable == ("predictions", "targets")


@proves("squared_error", "optax", "optax.losses.squared_error")
def test_squared_error_targets_none_and_dtype():
    (x, y), _ = sampled("squared_error")
    assert_close(optax_losses().squared_error(jnp.asarray(x)), reference.loss("squared_error", x, np.zeros_like(x)))
    y_int = np.round(3 * y).astype(np.int64)
    assert_close(optax_losses().squared_error(jnp.asarray(x), jnp.asarray(y_int)),
                 reference.loss("squared_error", x, y_int.astype(x.dtype)))
    with pytest.raises(TypeError, match="targets"):
        reference.loss("squared_error", x, y_int)
    _rejects_none_targets("squared_error", x)


def _rejects_none_targets(name, x):
    """optax's ``targets=None`` is a TypeError naming ``targets`` in every package."""
    calls = [lambda: reference.loss(name, x, None)]
    calls += [lambda v=v: torch_impl.get(name, v)(T(x), None) for v in torch_impl.VARIANTS]
    calls += [lambda v=v: jax_impl.get(name, v)(jnp.asarray(x), None) for v in jax_impl.VARIANTS]
    for call in calls:
        with pytest.raises(TypeError, match="targets"):
            call()


@proves("squared_error", "keras", "keras.losses.mean_squared_error")
def test_keras_mean_squared_error_averages_rows():
    (x, y), _ = sampled("squared_error", dtype=np.float32)
    x64, y64 = as64((x, y))
    c = x.shape[-1]
    assert_close(keras().losses.mean_squared_error(y, x), reference.loss("squared_error", x64, y64).mean(-1), "float32")
    keras_sum = keras().losses.MeanSquaredError(reduction="sum")(y, x)
    ours_sum = reference.loss("squared_error", x64, y64, reduction="sum")
    assert_close(keras_sum, ours_sum / c, "float32")
    torch_sum = F.mse_loss(T(x64), T(y64), reduction="sum").item()
    assert_close(torch_sum, ours_sum)
    assert not np.isclose(float(keras_sum), torch_sum, rtol=0.1)  # Keras's sum is torch's over C
    assert_close(keras().losses.MeanSquaredError(reduction="sum_over_batch_size")(y, x),
                 F.mse_loss(T(x64), T(y64), reduction="mean"), "float32")


# -- l2_loss -----------------------------------------------------------------------

@proves("l2_loss", "torch", "torch.nn.functional.mse_loss")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_l2_loss_is_half_mse_loss(reduction):
    for case in reference.get("l2_loss").cases:
        (x, y), _ = sampled("l2_loss", case.name)
        assert_close(reference.loss("l2_loss", x, y, reduction=reduction),
                     0.5 * F.mse_loss(T(x), T(y), reduction=reduction))


@proves("l2_loss", "optax", "optax.losses.squared_error")
def test_l2_loss_is_half_squared_error():
    (x, y), _ = sampled("l2_loss")
    want = reference.loss("l2_loss", x, y)
    assert_close(0.5 * optax_losses().squared_error(jnp.asarray(x), jnp.asarray(y)), want)
    assert_close(0.5 * reference.loss("squared_error", x, y), want)
    assert reference.get("l2_loss").alias_of is None  # its own loss: the factor changes the mathematics


@proves("l2_loss", "optax", "optax.losses.l2_loss")
def test_l2_loss_targets_none_and_dtype():
    (x, y), _ = sampled("l2_loss")
    assert_close(optax_losses().l2_loss(jnp.asarray(x)), reference.loss("l2_loss", x, np.zeros_like(x)))
    y_int = np.round(3 * y).astype(np.int64)
    assert_close(optax_losses().l2_loss(jnp.asarray(x), jnp.asarray(y_int)),
                 reference.loss("l2_loss", x, y_int.astype(x.dtype)))
    with pytest.raises(TypeError, match="targets"):
        reference.loss("l2_loss", x, y_int)
    _rejects_none_targets("l2_loss", x)


# -- log_cosh ----------------------------------------------------------------------

@proves("log_cosh", "optax", "optax.losses.log_cosh")
def test_optax_log_cosh_broadcasts_and_takes_none():
    (x, y), _ = sampled("log_cosh")
    got = optax_losses().log_cosh(jnp.asarray(x), jnp.asarray(y[:1]))  # no shape check in optax
    xb, yb = (np.ascontiguousarray(a) for a in np.broadcast_arrays(x, y[:1]))
    assert_close(got, reference.loss("log_cosh", xb, yb))
    with pytest.raises(ValueError, match="targets"):
        reference.loss("log_cosh", x, y[:1])
    assert_close(optax_losses().log_cosh(jnp.asarray(x)), reference.loss("log_cosh", x, np.zeros_like(x)))
    y_int = np.round(3 * y).astype(np.int64)
    assert_close(optax_losses().log_cosh(jnp.asarray(x), jnp.asarray(y_int)),
                 reference.loss("log_cosh", x, y_int.astype(x.dtype)))
    _rejects_none_targets("log_cosh", x)


@proves("log_cosh", "keras", "keras.losses.log_cosh")
@pytest.mark.parametrize("case", [c.name for c in reference.get("log_cosh").cases])
def test_keras_log_cosh_is_log_cosh_averaged_over_the_last_axis(case):
    (x, y), _ = sampled("log_cosh", case, np.float32)
    assert_close(keras().losses.log_cosh(y, x), reference.loss("log_cosh", *as64((x, y))).mean(-1), "float32")


def test_log_cosh_stays_finite_in_float32_at_1e4():
    """The stable form: |d| ~ 1e4 in float32, where log(cosh(d)) overflows, in every variant."""
    (x, y), _ = sampled("log_cosh", "large errors, |d| in [95, 150]", np.float32)
    y = (x - 80.0 * (x - y)).astype(np.float32)  # |d| up to 1.2e4
    d = np.abs(x.astype(np.float64) - y)
    assert d.max() > 1e4
    assert np.isinf(np.asarray(jnp.log(jnp.cosh(jnp.asarray(x - y))))).all()  # the naive form overflows
    want = optax_losses().log_cosh(jnp.asarray(x), jnp.asarray(y))
    assert_close(want, d - np.log(2.0), "float32")
    spec = reference.get("log_cosh")
    for pkg, runner in ((torch_impl, run_torch), (jax_impl, run_jax)):
        for variant in pkg.VARIANTS:
            d_ = draw(spec, spec.cases[0].name, "none", "float32")
            d_.inputs, d_.cotangent = (x, y), np.ones(x.shape, np.float32)
            value, (g_x, g_y) = runner(pkg.get("log_cosh", variant), spec, d_, "cpu")
            assert_close(value, want, "float32")
            assert_close(g_x, np.sign(x.astype(np.float64) - y), "float32")
            assert_close(g_y, -np.sign(x.astype(np.float64) - y), "float32")


# -- Keras's regression losses -----------------------------------------------------

KERAS_NAMED = ("mean_absolute_percentage_error", "mean_squared_logarithmic_error", "poisson")
KERAS_CLASSES = {"mean_absolute_percentage_error": "MeanAbsolutePercentageError",
                 "mean_squared_logarithmic_error": "MeanSquaredLogarithmicError", "poisson": "Poisson"}


def _clip(t):
    return t.clamp(min=EPS)


# The torch mappings as the Differences state them, with reduction 'none' then the row mean,
# and their sums over every element (torch's reduction='sum').
TORCH_MAPPINGS = {
    "mean_absolute_percentage_error": lambda y, x, r="none": 100 * F.l1_loss(
        x, y, reduction=r, weight=1 / _clip(torch.abs(y))),
    "mean_squared_logarithmic_error": lambda y, x, r="none": F.mse_loss(
        torch.log1p(_clip(x)), torch.log1p(_clip(y)), reduction=r),
    "poisson": lambda y, x, r="none": F.poisson_nll_loss(x, y, log_input=False, full=False, eps=1e-7, reduction=r),
}


def _keras_case_params(names=KERAS_NAMED, reductions=True):
    for name in names:
        spec = reference.get(name)
        for case in spec.cases:
            for reduction in (spec.case_reductions(case) if reductions else ("none",)):
                yield pytest.param(name, case.name, reduction, id=f"{name}-{case.name}-{reduction}")


@proves("mean_absolute_percentage_error", "torch", "torch.nn.functional.l1_loss")
@proves("mean_squared_logarithmic_error", "torch", "torch.nn.functional.mse_loss")
@proves("poisson", "torch", "torch.nn.functional.poisson_nll_loss")
@pytest.mark.parametrize("name, case, reduction", list(_keras_case_params(reductions=False)))
def test_keras_losses_are_torch_losses_averaged_over_the_last_axis(name, case, reduction):
    (y, x), _ = sampled(name, case)
    yt = T(y).to(torch.float64)
    want = reference.loss(name, y, x)
    assert_close(TORCH_MAPPINGS[name](yt, T(x)).mean(-1), want)
    if name == "poisson":
        assert_close(reference.loss("poisson_nll_loss", x, y.astype(x.dtype), log_input=False, eps=1e-7,
                                    reduction="none").mean(-1), want)


@proves("mean_absolute_percentage_error", "keras", "keras.losses.Loss(reduction=...)")
@proves("mean_squared_logarithmic_error", "keras", "keras.losses.Loss(reduction=...)")
@proves("poisson", "keras", "keras.losses.Loss(reduction=...)")
@pytest.mark.parametrize("name", KERAS_NAMED)
def test_keras_sum_is_not_torch_sum(name):
    (y, x), _ = sampled(name, dtype=np.float32)
    y64, x64 = as64((y, x))
    cls = getattr(keras().losses, KERAS_CLASSES[name])
    ours_sum = reference.loss(name, y64, x64, reduction="sum")
    assert_close(cls(reduction="sum")(y, x), ours_sum, "float32")
    assert_close(cls(reduction="sum_over_batch_size")(y, x), reference.loss(name, y64, x64, reduction="mean"),
                 "float32")
    torch_sum = TORCH_MAPPINGS[name](T(y64), T(x64), "sum").item()
    c = x.shape[-1]
    assert_close(torch_sum / c, ours_sum)  # Keras's sum is torch's divided by C ...
    assert not np.isclose(float(cls(reduction="sum")(y, x)), torch_sum, rtol=0.1)  # ... so not torch's
    torch_mean = TORCH_MAPPINGS[name](T(y64), T(x64), "mean").item()
    if name == "mean_absolute_percentage_error":  # torch's weighted mean divides by the sum of the weights
        weight = 1 / np.maximum(np.abs(y64), EPS)
        assert_close(torch_mean, ours_sum * c / weight.sum())
        assert not np.isclose(torch_mean, reference.loss(name, y64, x64, reduction="mean"), rtol=0.01)
    else:
        assert_close(torch_mean, reference.loss(name, y64, x64, reduction="mean"))


@proves("mean_absolute_percentage_error", "keras", "keras.config.epsilon()")
@proves("mean_squared_logarithmic_error", "keras", "keras.config.epsilon()")
@proves("poisson", "keras", "keras.config.epsilon()")
@pytest.mark.parametrize("name, case", [("mean_absolute_percentage_error", "|y_true| < epsilon (clipped)"),
                                        ("mean_squared_logarithmic_error", "y_pred <= 0 (clipped at epsilon)"),
                                        ("poisson", "small rates (epsilon shows)")])
def test_keras_reads_its_epsilon_from_the_global_config(name, case):
    k = keras()
    (y, x), _ = sampled(name, case, np.float32)
    ours = reference.loss(name, *as64((y, x)))
    assert k.config.epsilon() == EPS
    assert_close(keras_loss(name)(y, x), ours, "float32")
    old = k.config.epsilon()
    try:
        k.config.set_epsilon(1e-2)
        moved = np.asarray(keras_loss(name)(y, x))
        with pytest.raises(NotImplementedError, match="epsilon"):
            jax_impl.builtin(name)(jnp.asarray(y), jnp.asarray(x))
    finally:
        k.config.set_epsilon(old)
    rtol, atol = TOLERANCES["float32"]
    assert not np.allclose(moved, ours, rtol=rtol, atol=atol)


@proves("mean_absolute_percentage_error", "keras", "keras.src.losses.loss.squeeze_or_expand_to_same_rank")
@proves("mean_squared_logarithmic_error", "keras", "keras.src.losses.loss.squeeze_or_expand_to_same_rank")
@pytest.mark.parametrize("name", ("mean_absolute_percentage_error", "mean_squared_logarithmic_error"))
def test_keras_matches_ranks_lossparity_wants_one_shape(name):
    (y, x), _ = sampled(name, "vector", np.float32)  # (N,)
    got = keras_loss(name)(y, x[:, None])  # Keras expands the 1-d y_true
    assert got.shape == y.shape
    assert_close(got, reference.loss(name, *as64((y[:, None], x[:, None]))), "float32")
    with pytest.raises(ValueError, match="y_true"):
        reference.loss(name, y, x[:, None])
    (y, x), _ = sampled(name, dtype=np.float32)  # (N, M)
    got = keras_loss(name)(y, x[..., None])  # Keras squeezes y_pred
    assert_close(got, reference.loss(name, *as64((y, x))), "float32")
    with pytest.raises(ValueError, match="y_true"):
        reference.loss(name, y, x[..., None])


@proves("mean_squared_logarithmic_error", "keras", "keras.losses.mean_squared_logarithmic_error")
def test_msle_log1p_is_kerass_log_of_one_plus_without_its_rounding():
    (y, x), _ = sampled("mean_squared_logarithmic_error", "y_pred <= 0 (clipped at epsilon)")
    clipped = np.maximum(x, EPS)
    assert_close(np.log(clipped + 1), np.log1p(clipped))  # the same function in float64
    # small predictions (the sampler's, scaled by 1e-4) against zero counts, in float32
    x_small, y0 = (1e-4 * np.abs(x)).astype(np.float32), np.zeros(y.shape, np.float32)
    truth = reference.loss("mean_squared_logarithmic_error", *as64((y0, x_small)))
    keras_err = np.max(np.abs(np.asarray(keras_loss("mean_squared_logarithmic_error")(y0, x_small), np.float64)
                              - truth) / truth)
    ours = [torch_impl.get("mean_squared_logarithmic_error", v)(T(y0), T(x_small)).numpy()
            for v in torch_impl.VARIANTS]
    ours += [np.asarray(jax_impl.get("mean_squared_logarithmic_error", v)(jnp.asarray(y0), jnp.asarray(x_small)))
             for v in jax_impl.VARIANTS]
    ours_err = max(np.max(np.abs(o.astype(np.float64) - truth) / truth) for o in ours)
    assert ours_err < 1e-5 < keras_err, (ours_err, keras_err)


@proves("poisson", "keras", "keras.losses.poisson")
def test_keras_poisson_broadcasts_and_takes_negative_values():
    (y, x), _ = sampled("poisson", dtype=np.float32)
    got = keras_loss("poisson")(y[:1], x)  # (1, C) against (N, C): broadcast
    yb, xb = (np.ascontiguousarray(a) for a in np.broadcast_arrays(y[:1], x))
    assert_close(got, reference.loss("poisson", *as64((yb, xb))), "float32")
    with pytest.raises(ValueError, match="y_true"):
        reference.loss("poisson", y[:1], x)
    assert np.isnan(np.asarray(keras_loss("poisson")(y + 1, -x))).all()  # a negative rate: NaN
    with pytest.raises(ValueError, match="y_pred"):
        reference.loss("poisson", y, -x)


# -- the Keras oracle, in the dtype Keras can honour ------------------------------

def test_keras_averages_in_float32_even_for_float64():
    """Why the Keras built-ins refuse float64: keras.ops.mean casts float64 to float32."""
    x = np.full((2, 3), 1.0 + 2.0 ** -40)  # not representable in float32
    assert np.asarray(keras().ops.mean(x, axis=-1)).dtype == np.float64
    np.testing.assert_array_equal(np.asarray(keras().ops.mean(x, axis=-1)), np.ones(2))  # the 2^-40 is gone
    assert np.asarray(jnp.mean(jnp.asarray(x), axis=-1))[0] == 1.0 + 2.0 ** -40
    for name in KERAS_NAMED:
        (y, p), _ = sampled(name)
        with pytest.raises(NotImplementedError, match="float32"):
            jax_impl.builtin(name)(jnp.asarray(y), jnp.asarray(p))


@pytest.mark.parametrize("name, case, reduction", list(_keras_case_params()))
def test_keras_oracle_in_float32(name, case, reduction):
    """Keras's own loss (value and JAX gradient w.r.t. y_pred) against the reference, as a float32
    matrix cell: the reference in float64 from the same float32 inputs, float32 tolerances."""
    spec = reference.get(name)
    d = draw(spec, case, reduction, "float32")
    value, grads = run_jax(jax_impl.builtin(name), spec, d, "cpu")
    want_value, want_grads = expected(spec, d)
    result = compare(Cell(name, case, reduction, "autodiff", "float32"), value, grads, want_value, want_grads)
    assert result.passed, (result.value_abs_err, result.grad_abs_err)


# -- every recorded difference has its proof ---------------------------------------

def test_every_regression_difference_has_a_proof():
    recorded = {(name, d.library, d.builtin) for name in reference.names()
                if reference.get(name).family == "regression" for d in reference.get(name).differences}
    assert recorded == set(PROOFS), {"unproved": sorted(recorded - set(PROOFS)),
                                     "proving nothing recorded": sorted(set(PROOFS) - recorded)}
