"""The segmentation family's recorded differences, each proved against the real library.

One test per mapping in ``reference/segmentation.py`` (``LossSpec.differences``):
optax 0.2.8's ``dice_loss``, ``binary_dice_loss``, ``multiclass_generalized_dice_loss``
and Keras 3's ``dice``, ``tversky`` (JAX backend), in float64. A mapping stated as an
equality is checked to float64 round-off (rtol 1e-12), tighter than the matrix's float64
tolerance, so that an epsilon of 1e-7 cannot hide in it.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import logit, softmax

import jax_impl
import reference
from jax_impl.core import keras

EXACT = dict(rtol=1e-12, atol=1e-15)


@pytest.fixture
def rng():
    return np.random.default_rng(20250704)


def _inputs(rng, shape=(2, 4, 4, 3)):
    """Logits, their softmax and one-hot targets (classes last), float64."""
    x = rng.standard_normal(shape)
    labels = rng.integers(shape[-1], size=shape[:-1])
    return x, softmax(x, axis=-1), np.eye(shape[-1])[labels]


def _sums(p, t, axes=(1, 2)):
    """I, P, T per (example, class)."""
    return (p * t).sum(axes), p.sum(axes), t.sum(axes)


@contextlib.contextmanager
def keras_epsilon(value):
    config = keras().config
    old = config.epsilon()
    config.set_epsilon(value)
    try:
        yield
    finally:
        config.set_epsilon(old)


def _np(x):
    return np.asarray(x, dtype=np.float64)


# -- dice_loss ---------------------------------------------------------------------

@pytest.mark.parametrize("class_reduction", ["mean", "sum", "none"])
def test_dice_loss_optax_reduction_is_class_reduction(rng, class_reduction):
    x, _, t = _inputs(rng)
    ours = reference.loss("dice_loss", x, t, class_reduction=class_reduction)
    theirs = _np(optax.losses.dice_loss(jnp.asarray(x), jnp.asarray(t), reduction=class_reduction))
    np.testing.assert_allclose(ours, theirs, **EXACT)
    assert ours.shape == ((2, 3) if class_reduction == "none" else (2,))
    # lossparity's own reduction then reduces those per-example values.
    np.testing.assert_allclose(reference.loss("dice_loss", x, t, reduction="mean"),
                               _np(optax.losses.dice_loss(jnp.asarray(x), jnp.asarray(t))).mean(), **EXACT)


def test_dice_loss_apply_softmax_false_equal_where_optax_accepts(rng):
    _, p, t = _inputs(rng)
    np.testing.assert_allclose(reference.loss("dice_loss", p, t, apply_softmax=False),
                               _np(optax.losses.dice_loss(jnp.asarray(p), jnp.asarray(t), apply_softmax=False)),
                               **EXACT)
    # Off the simplex optax refuses; lossparity computes the same formula (predictions in [0, 1]).
    q = 0.9 * p
    with pytest.raises(ValueError, match="sum to 1"):
        optax.losses.dice_loss(jnp.asarray(q), jnp.asarray(t), apply_softmax=False)
    i, s_p, s_t = _sums(q, t)
    want = (1.0 - (i + 1.0) / (0.5 * (s_p + s_t) + 1.0)).mean(-1)
    np.testing.assert_allclose(reference.loss("dice_loss", q, t, apply_softmax=False), want, **EXACT)


def test_dice_loss_axis_over_the_class_axis_is_keras_pooled_dice(rng):
    _, p, t = _inputs(rng)
    pooled = optax.losses.dice_loss(jnp.asarray(p), jnp.asarray(t), axis=(1, 2, 3), reduction="none", smooth=0.0,
                                    apply_softmax=False)
    with keras_epsilon(0.0):
        np.testing.assert_allclose(_np(pooled), _np(keras().losses.dice(t, p, axis=(1, 2, 3))), **EXACT)
    # optax's default class 'mean' then averages the batch; lossparity rejects such an axis.
    meaned = optax.losses.dice_loss(jnp.asarray(p), jnp.asarray(t), axis=(1, 2, 3), apply_softmax=False)
    assert np.shape(meaned) == ()
    with pytest.raises(ValueError, match="axis"):
        reference.loss("dice_loss", p, t, axis=(1, 2, 3), apply_softmax=False)


def test_keras_dice_is_optax_dice_without_smoothing_or_epsilon(rng):
    x, p, t = _inputs(rng)
    optax_value = _np(optax.losses.dice_loss(jnp.asarray(x), jnp.asarray(t), smooth=0.0, reduction="none"))
    with keras_epsilon(0.0):
        np.testing.assert_allclose(_np(keras().losses.dice(t, p, axis=(1, 2))), optax_value, **EXACT)
    # With Keras's 1e-7 the two differ, by at most 1e-7 / (P + T).
    keras_value = _np(keras().losses.dice(t, p, axis=(1, 2)))
    np.testing.assert_allclose(keras_value, reference.loss("dice", t, p, axis=(1, 2)), **EXACT)
    _, s_p, s_t = _sums(p, t)
    gap = np.abs(keras_value - optax_value)
    assert np.all(gap > 0) and np.all(gap <= 1e-7 / (s_p + s_t))


@pytest.mark.parametrize("smooth", [0.5, 3.0])
def test_dice_loss_smooth_is_twice_the_dice_form_smoothing(rng, smooth):
    _, p, t = _inputs(rng)
    i, s_p, s_t = _sums(p, t)
    dice_form = (2 * i + 2 * smooth) / (s_p + s_t + 2 * smooth)
    theirs = _np(optax.losses.dice_loss(jnp.asarray(p), jnp.asarray(t), smooth=smooth, apply_softmax=False,
                                        reduction="none"))
    np.testing.assert_allclose(1.0 - theirs, dice_form, **EXACT)
    np.testing.assert_allclose(1.0 - reference.loss("dice_loss", p, t, smooth=smooth, apply_softmax=False,
                                                    class_reduction="none"), dice_form, **EXACT)
    assert not np.allclose(1.0 - theirs, (2 * i + smooth) / (s_p + s_t + smooth))


def test_optax_dice_loss_gradient_is_nan_at_a_tiny_absent_class():
    """smooth=0, a class no target has, at softmax probabilities of about 1e-174: the values
    agree; optax's gradient is NaN (a * b**-2 with a = 0 and b**-2 = inf), lossparity's two JAX
    variants' are finite and equal the reference VJP. A class at probabilities of 1e-100
    (b**2 = 1e-200, in range) leaves optax's gradient finite: the cause is the overflow."""
    spec = reference.get("dice_loss")
    for absent_logit, optax_nan in ((-400.0, True), (-230.0, False)):
        x, t = spec.sampler(np.random.default_rng(0), absent_class=2, absent_logit=absent_logit)
        want = reference.loss("dice_loss", x, t, smooth=0.0, reduction="sum")
        (want_grad,) = reference.vjp("dice_loss", x, t, np.float64(1.0), smooth=0.0, reduction="sum")
        value, grad = jax.value_and_grad(lambda x: optax.losses.dice_loss(x, t, smooth=0.0).sum())(x)
        np.testing.assert_allclose(_np(value), want, **EXACT)
        assert np.isnan(_np(grad)).any() == optax_nan
        for variant in ("autodiff", "custom_vjp"):
            fn = jax_impl.get("dice_loss", variant)
            ours = jax.grad(lambda x: fn(jnp.asarray(x), jnp.asarray(t), smooth=0.0, reduction="sum"))(x)
            np.testing.assert_allclose(_np(ours), want_grad, rtol=1e-10, atol=1e-15)


def test_keras_tversky_alpha_beta_swap_with_optax(rng):
    _, p, t = _inputs(rng)
    a, b = 0.3, 0.7

    def optax_tversky(alpha, beta):
        return _np(optax.losses.dice_loss(jnp.asarray(p), jnp.asarray(t), alpha=alpha, beta=beta, smooth=0.0,
                                          apply_softmax=False, reduction="none"))

    with keras_epsilon(0.0):
        keras_value = _np(keras().losses.tversky(t, p, alpha=a, beta=b, axis=(1, 2)))
    np.testing.assert_allclose(keras_value, optax_tversky(b, a), **EXACT)
    assert not np.allclose(keras_value, optax_tversky(a, b))
    # lossparity's two losses keep their libraries' conventions (Keras's epsilon included).
    np.testing.assert_allclose(reference.loss("tversky", t, p, alpha=a, beta=b, axis=(1, 2)),
                               _np(keras().losses.tversky(t, p, alpha=a, beta=b, axis=(1, 2))), **EXACT)
    np.testing.assert_allclose(reference.loss("dice_loss", p, t, alpha=b, beta=a, smooth=0.0, apply_softmax=False,
                                              class_reduction="none"), optax_tversky(b, a), **EXACT)


# -- binary_dice_loss --------------------------------------------------------------

def test_binary_dice_loss_apply_sigmoid_false(rng):
    p = rng.uniform(0.05, 0.95, size=(2, 4, 4))
    t = (rng.random((2, 4, 4)) < 0.5).astype(np.float64)
    with pytest.raises(ValueError, match="sum to 1"):
        optax.losses.binary_dice_loss(jnp.asarray(p), jnp.asarray(t), apply_sigmoid=False)
    np.testing.assert_allclose(reference.loss("binary_dice_loss", p, t, apply_sigmoid=False),
                               _np(optax.losses.binary_dice_loss(jnp.asarray(logit(p)), jnp.asarray(t))),
                               rtol=1e-10, atol=1e-12)  # sigmoid(logit(p)) == p to a few ulps


@pytest.mark.parametrize("smooth", [1.0, 0.0])
def test_binary_dice_loss_is_dice_loss_of_one_channel(rng, smooth):
    x = rng.standard_normal((2, 4, 4))
    t = (rng.random((2, 4, 4)) < 0.5).astype(np.float64)
    via_dice = _np(optax.losses.dice_loss(jnp.asarray(x[..., None]), jnp.asarray(t[..., None]), smooth=smooth))
    np.testing.assert_allclose(_np(optax.losses.binary_dice_loss(jnp.asarray(x), jnp.asarray(t), smooth=smooth)),
                               via_dice, **EXACT)
    np.testing.assert_allclose(reference.loss("binary_dice_loss", x, t, smooth=smooth),
                               reference.loss("dice_loss", x[..., None], t[..., None], smooth=smooth), **EXACT)


# -- multiclass_generalized_dice_loss ------------------------------------------------

@pytest.mark.parametrize("ignore_background", [False, True])
def test_generalized_dice_is_dice_loss_with_target_weights(rng, ignore_background):
    x, _, t = _inputs(rng)
    f = t.sum(axis=(0, 1, 2))
    u = 1.0 / (f ** 2 + 1e-7)
    w = 3 * u / u.sum()  # normalized over all three classes, background included
    via_dice = _np(optax.losses.dice_loss(jnp.asarray(x), jnp.asarray(t), class_weights=jnp.asarray(w),
                                          reduction="none", ignore_background=ignore_background)).mean()
    theirs = _np(optax.losses.multiclass_generalized_dice_loss(jnp.asarray(x), jnp.asarray(t),
                                                               ignore_background=ignore_background))
    np.testing.assert_allclose(theirs, via_dice, **EXACT)
    np.testing.assert_allclose(reference.loss("multiclass_generalized_dice_loss", x, t,
                                              ignore_background=ignore_background), theirs, **EXACT)
    np.testing.assert_allclose(reference.loss("dice_loss", x, t, class_weights=w, class_reduction="none",
                                              ignore_background=ignore_background).mean(), theirs, **EXACT)


def test_generalized_dice_is_not_sudre_ratio_of_sums(rng):
    x, p, t = _inputs(rng)
    f = t.sum(axis=(0, 1, 2))
    u = 1.0 / (f ** 2 + 1e-7)
    w = 3 * u / u.sum()
    i, s_p, s_t = _sums(p, t)
    mean_of_ratios = (w * (1.0 - (2 * i + 2) / (s_p + s_t + 2))).mean()
    ratio_of_sums = (1.0 - 2 * (w * i).sum(-1) / (w * (s_p + s_t)).sum(-1)).mean()
    theirs = _np(optax.losses.multiclass_generalized_dice_loss(jnp.asarray(x), jnp.asarray(t)))
    np.testing.assert_allclose(theirs, mean_of_ratios, **EXACT)
    assert abs(theirs - ratio_of_sums) > 1e-3


# -- dice (Keras) ---------------------------------------------------------------------

@pytest.mark.parametrize("axis", [None, (1, 2, 3), (1, 2)])
def test_keras_dice_class_reduces_with_a_plain_mean(rng, axis):
    _, p, t = _inputs(rng)
    theirs = _np(keras().losses.Dice(axis=axis, dtype="float64")(t, p))
    np.testing.assert_allclose(reference.loss("dice", t, p, axis=axis, reduction="mean"), theirs, **EXACT)


def test_keras_dice_casts_integer_labels(rng):
    _, p, t = _inputs(rng)
    labels = t.astype(np.int64)
    np.testing.assert_allclose(_np(keras().losses.dice(labels, p, axis=(1, 2))),
                               reference.loss("dice", labels.astype(p.dtype), p, axis=(1, 2)), **EXACT)
    with pytest.raises(TypeError, match="y_true"):
        reference.loss("dice", labels, p, axis=(1, 2))


# -- tversky (Keras) -------------------------------------------------------------------

@pytest.mark.parametrize("axis", [None, (1, 2)])
def test_keras_tversky_half_half_is_dice_with_twice_the_epsilon(rng, axis):
    _, p, t = _inputs(rng)
    e = keras().config.epsilon()
    tversky = _np(keras().losses.tversky(t, p, alpha=0.5, beta=0.5, axis=axis))
    with keras_epsilon(2 * e):
        np.testing.assert_allclose(tversky, _np(keras().losses.dice(t, p, axis=axis)), **EXACT)
    dice_same_epsilon = _np(keras().losses.dice(t, p, axis=axis))
    assert np.all(np.abs(tversky - dice_same_epsilon) > 0)
    np.testing.assert_allclose(reference.loss("tversky", t, p, axis=axis), tversky, **EXACT)
