"""The classification family's recorded cross-library differences, each proved against the real library.

Every ``Difference`` entry of a classification loss states a mapping between lossparity's
loss and a torch, optax or Keras function. Each test below calls that library (torch 2.13,
optax 0.2.8, Keras 3 on the JAX backend) and the reference on inputs drawn from the family's
own samplers and checks the mapping, at the matrix's float64 tolerances unless it says why
not. Keras functions that average with ``keras.ops.mean`` compute in float32 whatever the
input's dtype, so those are compared in float32: Keras on float32 inputs against the
reference on the same (float32-rounded) numbers, at the matrix's float32 tolerances. A
mapping that holds only under a condition is checked where the condition holds and shown to
fail where it does not. ``test_every_difference_is_proved`` keeps the list of tests and the
list of recorded differences in step.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from scipy.special import expit, log_softmax, logsumexp, softmax

import reference
from jax_impl.core import keras
from reference.classification import DROPPED_OVERFLOW
from reports.matrix import TOLERANCES, seed_for

RTOL, ATOL = TOLERANCES["float64"]
RTOL32, ATOL32 = TOLERANCES["float32"]
PROVED: set[tuple[str, str, str]] = set()


def proves(*keys: tuple[str, str, str]):
    """Marks a test as the proof of the Differences ``(loss, library, builtin)``."""
    def mark(test):
        PROVED.update(keys)
        return test
    return mark


def rng_for(loss: str, what: str) -> np.random.Generator:
    return np.random.default_rng(seed_for(loss, f"differences/{what}"))


def ref(name: str, *inputs, **kw) -> np.ndarray:
    return reference.loss(name, *inputs, **{"reduction": "none", **kw})


def grad(name: str, *inputs, **kw) -> tuple:
    """The reference VJP of the sum of the per-example values."""
    kw = {"reduction": "sum", **kw}
    return reference.vjp(name, *inputs, np.ones(()), **kw)


def close(actual, expected, rtol=RTOL, atol=ATOL) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)


def close32(actual, expected) -> None:
    close(actual, expected, RTOL32, ATOL32)


def differs(actual, expected) -> np.ndarray:
    """Elementwise: not equal within the float64 tolerances (NaN differs from a number)."""
    a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return ~np.isclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)


def cases(name: str, *names: str) -> list:
    wanted = names or [c.name for c in reference.get(name).cases]
    return [pytest.param(c, id=c) for c in wanted]


def draw_case(name: str, case: str, dtype=np.float64):
    spec = reference.get(name)
    return spec.draw(rng_for(name, case), case, dtype)


def as64(xs):
    return tuple(x.astype(np.float64) if x.dtype.kind == "f" else x for x in xs)


def n(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64) if np.asarray(x).dtype.kind == "f" else np.asarray(x)


def t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x))


def onehot(labels, num_classes):
    return np.eye(num_classes)[labels]


@contextlib.contextmanager
def keras_epsilon(value):
    config = keras().config
    old = config.epsilon()
    config.set_epsilon(value)
    try:
        yield
    finally:
        config.set_epsilon(old)


def optax_grad(fn, x, *rest, **kw):
    """optax's autodiff gradient of the sum of ``fn(x, *rest, **kw)`` with respect to ``x``."""
    return n(jax.grad(lambda v: jnp.sum(fn(v, *rest, **kw)))(jnp.asarray(x)))


def torch_grad(fn, x, *rest, **kw):
    v = t(x).clone().requires_grad_(True)
    fn(v, *rest, **kw).sum().backward()
    return v.grad.numpy()


# ==================================================================================
# cross_entropy
# ==================================================================================

@proves(("cross_entropy", "optax", "optax.losses.softmax_cross_entropy_with_integer_labels"))
@pytest.mark.parametrize("case", cases("cross_entropy", "default", "unbatched", "K-dim"))
def test_cross_entropy_is_optax_integer_label_cross_entropy_on_the_class_axis(case):
    (x, y), _ = draw_case("cross_entropy", case)
    axis = -1 if x.ndim <= 2 else 1
    theirs = optax.losses.softmax_cross_entropy_with_integer_labels(x, y, axis=axis)
    close(theirs, ref("cross_entropy", x, y))
    close(n(theirs).mean(), reference.loss("cross_entropy", x, y))
    close(optax_grad(optax.losses.softmax_cross_entropy_with_integer_labels, x, y, axis=axis),
          grad("cross_entropy", x, y)[0])
    if x.ndim > 2:  # optax's default axis is the last, not torch's class axis
        moved = np.moveaxis(x, 1, -1)
        close(optax.losses.softmax_cross_entropy_with_integer_labels(moved, y), ref("cross_entropy", x, y))


_NONFINITE_ROW = "optax.losses.softmax_cross_entropy_with_integer_labels (a non-finite row)"


@proves(("cross_entropy", "optax", _NONFINITE_ROW), ("softmax_cross_entropy_with_integer_labels", "optax", _NONFINITE_ROW))
@pytest.mark.parametrize("name", ["cross_entropy", "softmax_cross_entropy_with_integer_labels"])
def test_a_row_without_a_finite_maximum_is_nan_where_optax_integer_labels_give_inf(name):
    (x, y), _ = draw_case(name, "non-finite logits")
    y[2:4] = (1, 2)  # at finite logits beside the +inf ones (reference.classification.nonfinite_rows)
    bad = ~np.isfinite(x.max(-1))
    assert bad[:4].all() and not bad[4:].any()
    ours, ours_grad = ref(name, x, y), grad(name, x, y)[0]
    assert np.isnan(ours[bad]).all() and np.isnan(ours_grad[bad]).all()
    assert np.isfinite(ours[~bad]).all() and np.isfinite(ours_grad[~bad]).all()
    # torch's cross_entropy and optax's softmax_cross_entropy (log_softmax) agree, NaN rows and all
    close(F.cross_entropy(t(x), t(y), reduction="none").detach(), ours)
    close(torch_grad(F.cross_entropy, x, t(y), reduction="none"), ours_grad)
    labels = onehot(y, x.shape[-1])
    close(optax.losses.softmax_cross_entropy(x, labels), ours)
    close(optax_grad(optax.losses.softmax_cross_entropy, x, labels), ours_grad)
    # optax's integer labels: the same on the finite rows; beside a +inf, +inf where the label's
    # logit is finite, and a gradient NaN at the +inf logits only
    theirs = n(optax.losses.softmax_cross_entropy_with_integer_labels(x, y))
    theirs_grad = optax_grad(optax.losses.softmax_cross_entropy_with_integer_labels, x, y)
    close(theirs[~bad], ours[~bad])
    close(theirs_grad[~bad], ours_grad[~bad])
    plus_inf = (x == np.inf).any(-1) & ~np.isnan(x).any(-1)
    finite_label = plus_inf & np.isfinite(np.take_along_axis(x, y[:, None], -1)[:, 0])
    assert finite_label.any() and (theirs[finite_label] == np.inf).all()
    assert (np.isnan(theirs_grad[plus_inf]) == (x[plus_inf] == np.inf)).all()


@proves(("cross_entropy", "optax", "optax.losses.softmax_cross_entropy + optax.smooth_labels"))
@pytest.mark.parametrize("case", cases("cross_entropy", "probabilities", "probabilities+K-dim"))
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_label_smoothing_is_optax_smooth_labels(case, eps):
    (x, p), _ = draw_case("cross_entropy", case)
    smoothed = optax.smooth_labels(p, eps, axis=1) if eps else p
    theirs = optax.losses.softmax_cross_entropy(x, smoothed, axis=1)
    close(theirs, ref("cross_entropy", x, p, label_smoothing=eps))
    # smooth_labels is (1 - eps) t + eps / C, torch's, not eps / (C - 1) on the wrong classes
    num_classes = x.shape[1]
    close(smoothed, (1 - eps) * p + eps / num_classes)
    # class indices: the same smoothing of one-hot targets
    (x, y), _ = draw_case("cross_entropy", "default")
    targets = optax.smooth_labels(onehot(y, x.shape[1]), eps)
    close(optax.losses.softmax_cross_entropy(x, targets), ref("cross_entropy", x, y, label_smoothing=eps))


@proves(("cross_entropy", "optax", "optax.losses.softmax_cross_entropy_with_integer_labels(where=...)"))
def test_cross_entropy_all_ignored_mean_is_nan_where_optax_where_gives_zero():
    (x, y), kw = draw_case("cross_entropy", "all_ignored")
    assert np.all(y == -100)
    kept = y != -100
    theirs = optax.losses.softmax_cross_entropy_with_integer_labels(x, np.where(kept, y, 0), where=kept)
    assert np.all(n(theirs) == 0.0)
    assert np.isnan(reference.loss("cross_entropy", x, y, reduction="mean"))
    assert reference.loss("cross_entropy", x, y, reduction="sum") == 0.0
    close(ref("cross_entropy", x, y), theirs)
    # torch agrees with the reference: NaN with a zero gradient
    v = t(x).requires_grad_(True)
    out = F.cross_entropy(v, t(y))
    out.backward()
    assert torch.isnan(out) and torch.all(v.grad == 0)
    # partly ignored: per example the same, but mean divides by the kept count, not by N
    (x, y), _ = draw_case("cross_entropy", "ignore_index")
    kept = y != -100
    theirs = n(optax.losses.softmax_cross_entropy_with_integer_labels(x, np.where(kept, y, 0), where=kept))
    close(theirs, ref("cross_entropy", x, y))
    close(theirs.sum() / kept.sum(), reference.loss("cross_entropy", x, y))
    assert differs(theirs.mean(), reference.loss("cross_entropy", x, y))


@proves(("cross_entropy", "torch", "torch.nn.functional.cross_entropy"))
@pytest.mark.parametrize("case", cases("cross_entropy", "weighted", "weighted+ignore_index+label_smoothing",
                                       "K-dim+weighted+ignore_index+label_smoothing",
                                       "probabilities+weighted+label_smoothing"))
def test_cross_entropy_weighted_mean_denominator(case):
    (x, y), kw = draw_case("cross_entropy", case)
    w = kw["weight"]
    ours = ref("cross_entropy", x, y, **kw)
    theirs = F.cross_entropy(t(x), t(y), weight=t(w), label_smoothing=kw.get("label_smoothing", 0.0),
                             reduction="mean")
    close(theirs, reference.loss("cross_entropy", x, y, **{**kw, "reduction": "mean"}))
    if y.dtype.kind == "f":  # probabilities: divided by the number of elements N d1 ...
        close(theirs, ours.sum() / (x.size // x.shape[1]))
    else:  # indices: by the weights of the targets that count
        kept = y != -100
        close(theirs, ours.sum() / w[np.where(kept, y, 0)][kept].sum())
        assert differs(theirs, ours.mean())


@proves(("cross_entropy", "keras", "keras.losses.categorical_crossentropy"))
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_label_smoothing_and_weighted_mean_against_keras(eps):
    (x, p), _ = draw_case("cross_entropy", "probabilities")
    k = keras()
    theirs = n(k.losses.categorical_crossentropy(p, x, from_logits=True, label_smoothing=eps, axis=1))
    close(theirs, ref("cross_entropy", x, p, label_smoothing=eps))
    close(theirs.mean(), reference.loss("cross_entropy", x, p, label_smoothing=eps))
    if eps:  # eps / (C - 1) on the wrong classes is another loss
        num_classes = x.shape[1]
        wrong = (1 - eps) * p + eps / (num_classes - 1) * (1 - p)
        assert differs(ref("cross_entropy", x, wrong), theirs).all()
    # Keras's weighted mean divides by the number of samples, torch's by the weight sum
    (x, y), kw = draw_case("cross_entropy", "weighted")
    w = kw["weight"]
    sample_weight = w[y]
    keras_mean = n(k.losses.CategoricalCrossentropy(from_logits=True)(onehot(y, x.shape[1]), x,
                                                                      sample_weight=sample_weight))
    per_example = ref("cross_entropy", x, y)
    close(keras_mean, (sample_weight * per_example).sum() / len(y))
    close(reference.loss("cross_entropy", x, y, weight=w), (sample_weight * per_example).sum() / sample_weight.sum())


# ==================================================================================
# nll_loss
# ==================================================================================

@proves(("nll_loss", "optax", "optax.losses.softmax_cross_entropy_with_integer_labels"))
@pytest.mark.parametrize("case", cases("nll_loss", "default", "unbatched"))
def test_nll_loss_of_log_softmax_is_optax_integer_label_cross_entropy_in_value_only(case):
    (logp, y), _ = draw_case("nll_loss", case)
    rng = rng_for("nll_loss", case)
    x = logp + rng.standard_normal(logp.shape[:-1] + (1,)) if logp.ndim > 1 else logp + 0.7  # logits of logp
    close(log_softmax(x, axis=-1), logp)
    theirs = optax.losses.softmax_cross_entropy_with_integer_labels(x, y)
    close(theirs, ref("nll_loss", logp, y))
    # gradients: nll_loss's is -onehot with respect to log-probabilities; optax's is softmax - onehot
    nll_grad = grad("nll_loss", logp, y)[0]
    close(nll_grad, -onehot(y, x.shape[-1]))
    assert differs(optax_grad(optax.losses.softmax_cross_entropy_with_integer_labels, x, y), nll_grad).any()
    close(optax_grad(optax.losses.softmax_cross_entropy_with_integer_labels, x, y),
          softmax(x, axis=-1) + nll_grad)


@proves(("nll_loss", "torch", "torch.nn.functional.nll_loss"))
def test_nll_loss_weighted_mean_and_all_ignored_against_torch():
    (x, y), kw = draw_case("nll_loss", "weighted+ignore_index")
    w = kw["weight"]
    kept = y != -100
    theirs = F.nll_loss(t(x), t(y), weight=t(w))
    close(theirs, ref("nll_loss", x, y, weight=w).sum() / w[np.where(kept, y, 0)][kept].sum())
    close(theirs, reference.loss("nll_loss", x, y, weight=w))
    assert differs(theirs, ref("nll_loss", x, y, weight=w).mean())
    (x, y), kw = draw_case("nll_loss", "all_ignored_mean")
    v = t(x).requires_grad_(True)
    out = F.nll_loss(v, t(y), weight=t(kw["weight"]))
    out.backward()
    assert torch.isnan(out) and torch.all(v.grad == 0)
    assert np.isnan(reference.loss("nll_loss", x, y, **kw))
    assert np.all(grad("nll_loss", x, y, **{**kw, "reduction": "mean"})[0] == 0)


# ==================================================================================
# binary_cross_entropy, binary_cross_entropy_with_logits
# ==================================================================================

@proves(("binary_cross_entropy", "torch", "torch.nn.functional.binary_cross_entropy (backward)"))
def test_binary_cross_entropy_torch_backward_away_from_and_at_the_clamp():
    (x, y), kw = draw_case("binary_cross_entropy", "weighted")
    w = kw["weight"]
    xv, yv = t(x).requires_grad_(True), t(y).requires_grad_(True)
    F.binary_cross_entropy(xv, yv, weight=t(w), reduction="sum").backward()
    dx, dy = grad("binary_cross_entropy", x, y, weight=w)
    close(xv.grad, dx)
    close(yv.grad, dy)
    close(xv.grad, w * (x - y) / (x * (1 - x)))
    # at 0, 1 and 1e-50 the logs are clamped at -100: torch's gradients are not the clamped forward's
    (x, y), kw = draw_case("binary_cross_entropy", "saturated")
    w = kw["weight"]
    xv, yv = t(x).requires_grad_(True), t(y).requires_grad_(True)
    F.binary_cross_entropy(xv, yv, weight=t(w), reduction="sum").backward()
    dx, dy = grad("binary_cross_entropy", x, y, weight=w)
    interior = (x > 0.01) & (x < 0.99)
    close(xv.grad.numpy()[interior], dx[interior])
    close(yv.grad.numpy()[interior], dy[interior])
    edge = ~interior
    close(xv.grad.numpy()[edge], (w * (x - y) / np.maximum(x * (1 - x), 1e-12))[edge])
    assert differs(xv.grad.numpy()[edge], dx[edge]).all()
    assert np.isinf(yv.grad.numpy()[(x == 0) | (x == 1)]).all()
    assert np.all(np.abs(dy[edge]) <= 100 * w.max() + 1e-9)
    close(ref("binary_cross_entropy", x, y, weight=w),
          F.binary_cross_entropy(t(x), t(y), weight=t(w), reduction="none"))


@proves(("binary_cross_entropy", "keras", "keras.losses.binary_crossentropy"))
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_binary_cross_entropy_against_keras_clip_mean_and_half_eps_smoothing(eps):
    (x, y), _ = draw_case("binary_cross_entropy", "default", np.float32)
    theirs = keras().losses.binary_crossentropy(y, x, label_smoothing=eps)
    x64, y64 = as64((x, y))
    clipped = np.clip(x64, 1e-7, 1 - 1e-7)
    smoothed = y64 * (1 - eps) + 0.5 * eps
    close32(theirs, ref("binary_cross_entropy", clipped, smoothed).mean(-1))
    if eps:  # eps / C over the C columns (cross_entropy's form) is another loss
        other = y64 * (1 - eps) + eps / x.shape[-1]
        assert differs(ref("binary_cross_entropy", clipped, other).mean(-1), n(theirs)).all()
    # the clip against the -100 clamp: at p = 1e-9 with y = 1 Keras costs -log(1e-7), torch -log(1e-9)
    x, y = x.copy(), np.ones_like(y)
    x[:, 0] = 1e-9
    x64, y64 = as64((x, y))
    close32(keras().losses.binary_crossentropy(y, x), ref("binary_cross_entropy", np.clip(x64, 1e-7, 1), y64).mean(-1))
    close(ref("binary_cross_entropy", x64, y64)[:, 0], -np.log(x64[:, 0]))
    assert differs(ref("binary_cross_entropy", x64, y64)[:, 0], -np.log(1e-7)).all()


@proves(("binary_cross_entropy", "optax", "optax.losses.sigmoid_binary_cross_entropy"))
def test_binary_cross_entropy_is_optax_sigmoid_bce_of_the_logit_unless_clamped():
    (x, y), _ = draw_case("binary_cross_entropy", "default")
    logits = np.log(x) - np.log1p(-x)
    close(optax.losses.sigmoid_binary_cross_entropy(logits, y), ref("binary_cross_entropy", x, y))
    # beyond e^-100 torch's clamp holds the log at -100; optax's exact log-sigmoid does not
    tiny = np.full((2, 3), 1e-50)
    labels = np.ones_like(tiny)
    close(ref("binary_cross_entropy", tiny, labels), 100.0)
    close(optax.losses.sigmoid_binary_cross_entropy(np.log(tiny) - np.log1p(-tiny), labels), -np.log(1e-50))


@proves(("binary_cross_entropy_with_logits", "optax", "optax.losses.sigmoid_binary_cross_entropy"))
@pytest.mark.parametrize("case", cases("binary_cross_entropy_with_logits", "default"))
def test_binary_cross_entropy_with_logits_is_optax_sigmoid_bce(case):
    (x, y), _ = draw_case("binary_cross_entropy_with_logits", case)
    close(optax.losses.sigmoid_binary_cross_entropy(x, y), ref("binary_cross_entropy_with_logits", x, y))
    close(optax_grad(optax.losses.sigmoid_binary_cross_entropy, x, y),
          grad("binary_cross_entropy_with_logits", x, y)[0])
    # a 3-D input too, elementwise
    x3, y3 = reference.get("binary_cross_entropy_with_logits").sample(rng_for("bcewl", "3-D"), shape=(2, 3, 4))
    close(optax.losses.sigmoid_binary_cross_entropy(x3, y3), ref("binary_cross_entropy_with_logits", x3, y3))


@proves(("binary_cross_entropy_with_logits", "keras", "keras.losses.binary_crossentropy(from_logits=True)"))
def test_binary_cross_entropy_with_logits_is_keras_from_logits_averaged_over_the_last_axis():
    (x, y), _ = draw_case("binary_cross_entropy_with_logits", "default", np.float32)
    theirs = keras().losses.binary_crossentropy(y, x, from_logits=True)
    close32(theirs, ref("binary_cross_entropy_with_logits", *as64((x, y))).mean(-1))
    assert theirs.shape == x.shape[:-1]


# ==================================================================================
# kl_div
# ==================================================================================

@proves(("kl_div", "optax", "optax.losses.kl_divergence / kl_divergence_with_log_targets"))
@pytest.mark.parametrize("case", cases("kl_div"))
def test_kl_div_reductions_against_optax(case):
    (x, u), kw = draw_case("kl_div", case)
    fn = optax.losses.kl_divergence_with_log_targets if kw.get("log_target") else optax.losses.kl_divergence
    close(fn(x, u, axis=()), reference.loss("kl_div", x, u, reduction="none", **kw))
    per_row = n(fn(x, u))
    close(per_row.sum(), reference.loss("kl_div", x, u, reduction="sum", **kw))
    close(per_row.sum() / u.size, reference.loss("kl_div", x, u, reduction="mean", **kw))
    batchmean = reference.loss("kl_div", x, u, reduction="batchmean", **kw)
    if x.ndim == 2:
        close(per_row.mean(), batchmean)
    else:  # 3-D: the per-sample sums, averaged over the batch, not the per-row mean
        close(per_row.reshape(x.shape[0], -1).sum(-1).mean(), batchmean)
        assert differs(per_row.mean(), batchmean)


@proves(("kl_div", "keras", "keras.losses.kl_divergence"))
def test_kl_div_against_keras_probabilities_clipped():
    (x, p), _ = draw_case("kl_div", "default")
    q = np.exp(x)  # Keras takes probabilities as y_pred
    theirs = keras().losses.kl_divergence(p, q)
    close(theirs, ref("kl_div", np.log(np.clip(q, 1e-7, 1)), np.clip(p, 1e-7, 1)).sum(-1))
    close(theirs, ref("kl_div", x, p).sum(-1))
    # zero targets: Keras clips them to 1e-7, the reference's xlogy counts 0
    (x, p), _ = draw_case("kl_div", "zero_targets")
    theirs = n(keras().losses.kl_divergence(p, np.exp(x)))
    close(theirs, ref("kl_div", x, np.clip(p, 1e-7, 1)).sum(-1))
    assert differs(theirs, ref("kl_div", x, p).sum(-1))[(p == 0).any(-1)].all()


@proves(("kl_div", "torch", "torch.nn.functional.kl_div"))
@pytest.mark.parametrize("case", cases("kl_div", "default", "3-D"))
def test_kl_div_mean_and_batchmean_against_torch(case):
    (x, p), _ = draw_case("kl_div", case)
    elements = ref("kl_div", x, p)
    with pytest.warns(UserWarning, match="batchmean"):
        torch_mean = F.kl_div(t(x), t(p), reduction="mean")
    close(torch_mean, elements.sum() / x.size)
    close(F.kl_div(t(x), t(p), reduction="batchmean"), elements.sum() / x.shape[0])
    close(reference.loss("kl_div", x, p, reduction="batchmean"), elements.sum() / x.shape[0])
    close(reference.loss("kl_div", x, p, reduction="mean"), elements.sum() / x.size)


# ==================================================================================
# linear_cross_entropy (reference/linear.py, classification family)
# ==================================================================================

@proves(("linear_cross_entropy", "torch", "torch.nn.functional.linear_cross_entropy"))
@pytest.mark.parametrize("chunk_size", [None, 2, 3])
def test_linear_cross_entropy_chunk_size_is_torch_batch_chunk_size(chunk_size):
    (x, w, y), _ = draw_case("linear_cross_entropy", "default")
    options = None if chunk_size is None else torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk_size,
                                                                                 chunking_method=None)
    xv, wv = t(x).requires_grad_(True), t(w).requires_grad_(True)
    out = F.linear_cross_entropy(xv, wv, t(y), reduction="sum", options=options)
    out.backward()
    close(out.detach(), reference.loss("linear_cross_entropy", x, w, y, reduction="sum", chunk_size=chunk_size))
    dx, dw = grad("linear_cross_entropy", x, w, y, chunk_size=chunk_size)
    close(xv.grad, dx)
    close(wv.grad, dw)
    # lossparity's chunks take label smoothing too, with the unchunked value
    close(reference.loss("linear_cross_entropy", x, w, y, label_smoothing=0.2, chunk_size=chunk_size),
          F.linear_cross_entropy(t(x), t(w), t(y), label_smoothing=0.2))


@proves(("linear_cross_entropy", "torch", "torch.nn.functional.linear_cross_entropy"))
def test_linear_cross_entropy_under_autocast_projects_in_the_autocast_dtype_in_torch_only():
    import torch_impl
    (x, w, y), _ = draw_case("linear_cross_entropy", "default", np.float32)
    xt, wt = t(x).requires_grad_(True), t(w).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theirs = F.linear_cross_entropy(xt, wt, t(y))
        ours = [torch_impl.get("linear_cross_entropy", v)(xt, wt, t(y)) for v in ("module", "function")]
    # torch's: linear in the autocast dtype, then cross_entropy in float32
    torch.testing.assert_close(theirs, F.cross_entropy(F.linear(xt.bfloat16(), wt.bfloat16()).float(), t(y)),
                               rtol=RTOL32, atol=ATOL32)
    want = reference.loss("linear_cross_entropy", *as64((x, w)), y)  # the float32 numbers, in float64
    assert abs(theirs.item() - want) > RTOL32 * abs(want) + ATOL32  # bfloat16's rounding of the logits
    for loss in ours:
        assert loss.dtype == torch.float32
        close32(loss.detach(), want)
        dx, dw = torch.autograd.grad(loss, (xt, wt))
        want_dx, want_dw = reference.vjp("linear_cross_entropy", *as64((x, w)), y, np.ones(()))
        close32(dx, want_dx)
        close32(dw, want_dw)


@proves(("linear_cross_entropy", "torch", "torch.nn.functional.cross_entropy"))
def test_linear_cross_entropy_is_cross_entropy_of_the_logits_with_ignore_index_minus_100():
    (x, w, y), kw = draw_case("linear_cross_entropy", "default")
    rng = rng_for("linear_cross_entropy", "bias")
    b = rng.standard_normal(w.shape[0])
    y = y.copy()
    y[1] = -100
    logits = x @ w.T + b
    close(reference.loss("linear_cross_entropy", x, w, y, linear_bias=b),
          F.cross_entropy(t(logits), t(y)))
    close(reference.loss("linear_cross_entropy", x, w, y, linear_bias=b),
          reference.loss("cross_entropy", logits, y, ignore_index=-100))


@proves(("linear_cross_entropy", "optax", "optax.losses.softmax_cross_entropy_with_integer_labels"))
def test_linear_cross_entropy_against_optax_with_where_and_smoothed_one_hot():
    (x, w, y), _ = draw_case("linear_cross_entropy", "default")
    y = y.copy()
    y[[0, 3]] = -100
    logits = x @ w.T
    kept = y != -100
    safe = np.where(kept, y, 0)
    per_row = n(optax.losses.softmax_cross_entropy_with_integer_labels(logits, safe, where=kept))
    close(per_row, reference.loss("linear_cross_entropy", x, w, y, reduction="none"))
    close(per_row.sum() / kept.sum(), reference.loss("linear_cross_entropy", x, w, y))
    smoothed = optax.smooth_labels(onehot(safe, w.shape[0]), 0.1)
    per_row = np.where(kept, n(optax.losses.softmax_cross_entropy(logits, smoothed)), 0.0)
    close(per_row, reference.loss("linear_cross_entropy", x, w, y, reduction="none", label_smoothing=0.1))


# ==================================================================================
# softmax_cross_entropy_with_integer_labels, softmax_cross_entropy, safe, poly (optax)
# ==================================================================================

@proves(("softmax_cross_entropy_with_integer_labels", "torch", "torch.nn.functional.cross_entropy"))
@pytest.mark.parametrize("case", cases("softmax_cross_entropy_with_integer_labels", "default", "unbatched",
                                       "3-D, last axis", "axis=1 of 3-D (torch's class axis)", "axis=0"))
def test_integer_labels_is_torch_cross_entropy_with_the_class_axis_moved_to_1(case):
    (x, y), kw = draw_case("softmax_cross_entropy_with_integer_labels", case)
    axis = kw.get("axis", -1)
    ours = ref("softmax_cross_entropy_with_integer_labels", x, y, **kw)
    moved = np.moveaxis(x, axis, 1) if x.ndim > 1 else x
    close(F.cross_entropy(t(moved), t(y), reduction="none"), ours)
    if x.ndim > 1:
        close(ref("cross_entropy", moved, y), ours)
        close(torch_grad(lambda v: F.cross_entropy(v.movedim(axis, 1), t(y), reduction="none"), x),
              grad("softmax_cross_entropy_with_integer_labels", x, y, **kw)[0])
    if x.ndim == 3 and axis == -1:  # without the move, torch reads axis 1 as the classes
        with pytest.raises((RuntimeError, ValueError, IndexError)):
            F.cross_entropy(t(x), t(y), reduction="none")


@proves(("softmax_cross_entropy_with_integer_labels", "torch", "torch.nn.functional.cross_entropy(ignore_index=...)"))
def test_integer_labels_per_example_where_is_ignore_index_except_for_mean():
    (x, y), kw = draw_case("softmax_cross_entropy_with_integer_labels", "where per example")
    m = kw["where"]
    assert not m.all()
    target = t(np.where(m, y, -100))
    close(F.cross_entropy(t(x), target, reduction="none"), ref("softmax_cross_entropy_with_integer_labels", x, y, **kw))
    ours_mean = reference.loss("softmax_cross_entropy_with_integer_labels", x, y, **kw, reduction="mean")
    close(F.cross_entropy(t(x), target, reduction="sum") / m.size, ours_mean)
    assert differs(F.cross_entropy(t(x), target, reduction="mean"), ours_mean)
    close(ref("softmax_cross_entropy_with_integer_labels", x, y, **kw),
          ref("cross_entropy", x, np.where(m, y, -100)))


@proves(("softmax_cross_entropy_with_integer_labels", "optax",
         "optax.losses.softmax_cross_entropy_with_integer_labels(where=<logits' shape>)"))
def test_integer_labels_per_logit_where_drops_classes_from_the_normalizer():
    (x, y), kw = draw_case("softmax_cross_entropy_with_integer_labels", "where per logit, a row with nothing kept")
    m = kw["where"]
    theirs = n(optax.losses.softmax_cross_entropy_with_integer_labels(x, y, where=m))
    ours = ref("softmax_cross_entropy_with_integer_labels", x, y, **kw)
    close(theirs, ours)
    rows = m.any(-1)
    picked = np.take_along_axis(x, y[:, None], -1)[:, 0]
    lse = np.where(rows, logsumexp(np.where(m, x, -np.inf), axis=-1), 0.0)
    close(ours, np.where(rows, lse - picked, 0.0))
    assert not rows.all() and np.all(ours[~rows] == 0)
    # a label on a masked class: its logit is taken, the normalizer leaves it out, the loss can be negative
    x2 = np.array([[0.0, 0.0, 5.0]])
    y2 = np.array([2])
    m2 = np.array([[True, True, False]])
    value = ref("softmax_cross_entropy_with_integer_labels", x2, y2, where=m2)
    close(value, np.log(2.0) - 5.0)
    close(optax.losses.softmax_cross_entropy_with_integer_labels(x2, y2, where=m2), value)
    # torch's ignored classes stay in the denominator: cross_entropy is the unmasked loss
    assert differs(ref("cross_entropy", x2, y2), value).all()


@proves(("softmax_cross_entropy_with_integer_labels", "optax", "optax.losses (no reduction)"),
        ("softmax_cross_entropy", "optax", "optax.losses (no reduction)"))
@pytest.mark.parametrize("name, case", [
    ("softmax_cross_entropy_with_integer_labels", "where per example"),
    ("softmax_cross_entropy_with_integer_labels", "axis=(2, 1), flat index in that order"),
    ("softmax_cross_entropy", "where per logit, a row with nothing kept"),
    ("softmax_cross_entropy", "axis=None")])
def test_optax_named_reductions_are_plain_mean_and_sum(name, case):
    (x, y), kw = draw_case(name, case)
    theirs = n(getattr(optax.losses, name)(x, y, **kw))
    close(theirs, ref(name, x, y, **kw))
    close(theirs.mean(), reference.loss(name, x, y, **kw, reduction="mean"))
    close(theirs.sum(), reference.loss(name, x, y, **kw, reduction="sum"))
    assert reference.get(name).defaults["reduction"] == "none"


@proves(("softmax_cross_entropy", "torch", "torch.nn.functional.cross_entropy"))
@pytest.mark.parametrize("case", cases("softmax_cross_entropy", "default", "unbatched", "3-D, last axis",
                                       "axis=1 of 3-D (torch's class axis)", "axis=0"))
def test_softmax_cross_entropy_is_torch_probability_cross_entropy_with_the_class_axis_moved(case):
    (x, p), kw = draw_case("softmax_cross_entropy", case)
    axis = kw.get("axis", -1)
    mx, mp = (np.moveaxis(x, axis, 1), np.moveaxis(p, axis, 1)) if x.ndim > 1 else (x, p)
    ours = ref("softmax_cross_entropy", x, p, **kw)
    close(F.cross_entropy(t(mx), t(mp), reduction="none"), ours)
    close(ref("cross_entropy", mx, mp), ours)
    close(torch_grad(lambda v: F.cross_entropy(v.movedim(axis, 1) if v.dim() > 1 else v, t(mp), reduction="none"), x),
          grad("softmax_cross_entropy", x, p, **kw)[0])


@proves(("softmax_cross_entropy", "optax", "optax.losses.softmax_cross_entropy(where=...)"))
@pytest.mark.parametrize("case", cases("softmax_cross_entropy", "where per logit, a row with nothing kept",
                                       "where per example"))
def test_softmax_cross_entropy_where_masks_normalizer_and_sum(case):
    (x, p), kw = draw_case("softmax_cross_entropy", case)
    m = np.broadcast_to(kw["where"][..., None] if kw["where"].ndim < x.ndim else kw["where"], x.shape)
    ours = ref("softmax_cross_entropy", x, p, **kw)
    close(optax.losses.softmax_cross_entropy(x, p, where=kw["where"]), ours)
    logp = n(jax.nn.log_softmax(x, axis=-1, where=m))
    close(-np.where(m, p * np.where(m, logp, 0.0), 0.0).sum(-1), ours)
    empty = ~m.any(-1)
    assert empty.any() and np.all(ours[empty] == 0)
    close(optax_grad(lambda v: optax.losses.softmax_cross_entropy(v, p, where=kw["where"]), x),
          grad("softmax_cross_entropy", x, p, **kw)[0])
    # torch has no mask: the every-target-ignored mean is NaN there
    assert torch.isnan(F.cross_entropy(t(x), t(np.full(x.shape[0], -100))))


@proves(("softmax_cross_entropy", "optax", "optax.losses.safe_softmax_cross_entropy"),
        ("safe_softmax_cross_entropy", "optax", "optax.losses.softmax_cross_entropy"))
@pytest.mark.parametrize("case", cases("safe_softmax_cross_entropy", "zero labels",
                                       "-inf logits where the labels are 0", "-inf logits, one-hot labels"))
def test_safe_softmax_cross_entropy_is_finite_where_softmax_cross_entropy_is_nan(case):
    (x, p), _ = draw_case("safe_softmax_cross_entropy", case)
    safe = ref("safe_softmax_cross_entropy", x, p)
    close(optax.losses.safe_softmax_cross_entropy(x, p), safe)
    close(optax_grad(optax.losses.safe_softmax_cross_entropy, x, p), grad("safe_softmax_cross_entropy", x, p)[0])
    assert np.all(np.isfinite(safe)) and np.all(np.isfinite(grad("safe_softmax_cross_entropy", x, p)[0]))
    if np.isinf(x).any():
        bad = np.isinf(x).any(-1)
        assert np.isnan(n(optax.losses.softmax_cross_entropy(x, p))[bad]).all()
        with np.errstate(invalid="ignore"):
            assert np.isnan(ref("softmax_cross_entropy", x, p)[bad]).all()
        kept = np.isfinite(x)
        close(ref("softmax_cross_entropy", x, p, where=kept), safe)
        close(optax.losses.softmax_cross_entropy(x, p, where=kept), safe)
        close(grad("softmax_cross_entropy", x, p, where=kept)[0], grad("safe_softmax_cross_entropy", x, p)[0])
    else:
        close(ref("softmax_cross_entropy", x, p), safe)
        close(optax.losses.softmax_cross_entropy(x, p), safe)


@proves(("safe_softmax_cross_entropy", "torch", "torch.nn.functional.cross_entropy"))
@pytest.mark.parametrize("case", cases("safe_softmax_cross_entropy", "default", "zero labels",
                                       "-inf logits where the labels are 0"))
def test_safe_softmax_cross_entropy_against_torch(case):
    (x, p), _ = draw_case("safe_softmax_cross_entropy", case)
    theirs = F.cross_entropy(t(x), t(p), reduction="none").numpy()
    safe = ref("safe_softmax_cross_entropy", x, p)
    finite = np.isfinite(x).all(-1)
    close(theirs[finite], safe[finite])
    if not finite.all():
        assert np.isnan(theirs[~finite]).all() and np.isfinite(safe[~finite]).all()


@proves(("poly_loss_cross_entropy", "optax", "optax.losses.softmax_cross_entropy"))
@pytest.mark.parametrize("case", cases("poly_loss_cross_entropy", "default", "epsilon=-1",
                                       "epsilon=0 (the cross entropy)"))
def test_poly_loss_is_cross_entropy_plus_epsilon_times_wrong_mass(case):
    (x, p), kw = draw_case("poly_loss_cross_entropy", case)
    eps = kw.get("epsilon", 2.0)
    extra = (p * (1 - softmax(x, axis=-1))).sum(-1)
    ours = ref("poly_loss_cross_entropy", x, p, **kw)
    close(n(optax.losses.softmax_cross_entropy(x, p)) + eps * extra, ours)
    close(F.cross_entropy(t(x), t(p), reduction="none").numpy() + eps * extra, ours)
    close(n(optax.losses.poly_loss_cross_entropy(x, p, epsilon=eps)), ours)
    if eps == 0:
        close(ref("softmax_cross_entropy", x, p), ours)


# -- optax broadcasts and casts labels; lossparity requires one shape and dtype -------

_BROADCASTING = [
    ("softmax_cross_entropy", optax.losses.softmax_cross_entropy),
    ("safe_softmax_cross_entropy", optax.losses.safe_softmax_cross_entropy),
    ("poly_loss_cross_entropy", optax.losses.poly_loss_cross_entropy),
    ("sigmoid_binary_cross_entropy", optax.losses.sigmoid_binary_cross_entropy),
    ("sigmoid_focal_loss", optax.losses.sigmoid_focal_loss),
    ("kl_divergence", optax.losses.kl_divergence),
    ("kl_divergence_with_log_targets", optax.losses.kl_divergence_with_log_targets),
    ("generalized_kl_divergence", optax.losses.generalized_kl_divergence),
]


@proves(*[(name, "optax", "optax.losses (broadcasting)") for name, _ in _BROADCASTING])
@pytest.mark.parametrize("name, fn", [pytest.param(nm, f, id=nm) for nm, f in _BROADCASTING])
def test_optax_broadcasts_labels_lossparity_requires_their_shape(name, fn):
    (x, y), _ = draw_case(name, "default")
    row = y[:1]
    close(fn(x, row), ref(name, x, np.broadcast_to(row, x.shape).copy()))
    with pytest.raises(ValueError, match=reference.get(name).inputs[1]):
        ref(name, x, row)
    if name in ("sigmoid_binary_cross_entropy", "sigmoid_focal_loss"):  # optax casts integer labels
        hard = np.round(y)
        close(fn(x, hard.astype(np.int64)), ref(name, x, hard))
        with pytest.raises(TypeError, match="labels"):
            ref(name, x, hard.astype(np.int64))


# ==================================================================================
# sigmoid_binary_cross_entropy (alias), sigmoid_focal_loss
# ==================================================================================

@proves(("sigmoid_binary_cross_entropy", "torch", "torch.nn.functional.binary_cross_entropy_with_logits"))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_sigmoid_binary_cross_entropy_is_torch_bce_with_logits(reduction):
    (x, y), _ = draw_case("sigmoid_binary_cross_entropy", "3-D")
    ours = reference.loss("sigmoid_binary_cross_entropy", x, y, reduction=reduction)
    close(F.binary_cross_entropy_with_logits(t(x), t(y), reduction=reduction), ours)
    close(reference.loss("binary_cross_entropy_with_logits", x, y, reduction=reduction), ours)
    xv, yv = t(x).requires_grad_(True), t(y).requires_grad_(True)
    F.binary_cross_entropy_with_logits(xv, yv, reduction="sum").backward()
    dx, dy = grad("sigmoid_binary_cross_entropy", x, y)
    close(xv.grad, dx)
    close(yv.grad, dy)
    assert reference.get("sigmoid_binary_cross_entropy").alias_of == "binary_cross_entropy_with_logits"


def _direct_focal(x, y, gamma):
    """optax's sigmoid_focal_loss before 0.2.5: (1 - p_t)^gamma from p = sigmoid(x) directly."""
    p = jax.nn.sigmoid(x)
    p_t = p * y + (1 - p) * (1 - y)
    return optax.losses.sigmoid_binary_cross_entropy(x, y) * (1 - p_t) ** gamma


@proves(("sigmoid_focal_loss", "optax", "optax.losses.sigmoid_focal_loss (before 0.2.5)"))
@pytest.mark.parametrize("case", cases("sigmoid_focal_loss", "saturated: logits of 1e4",
                                       "saturated: logits of 1e4, gamma=0.5",
                                       "saturated: logits of 1e4, gamma=0, alpha=0.25"))
def test_sigmoid_focal_loss_is_finite_at_saturated_logits_in_float32(case):
    (x, y), kw = draw_case("sigmoid_focal_loss", case, np.float32)
    ours = ref("sigmoid_focal_loss", *as64((x, y)), **kw)
    ours_grad = grad("sigmoid_focal_loss", *as64((x, y)), **kw)[0]
    theirs = n(optax.losses.sigmoid_focal_loss(x, y, **kw))
    theirs_grad = optax_grad(optax.losses.sigmoid_focal_loss, x, y, **kw)
    assert np.isfinite(theirs).all() and np.isfinite(theirs_grad).all()
    close32(theirs, ours)
    close32(theirs_grad, ours_grad)
    # and wrong-side logits of 1e4: loss 1e4, gradient +-1
    wrong = np.where(y == 1, -1e4, 1e4).astype(np.float32)
    close32(optax.losses.sigmoid_focal_loss(wrong, y, **kw), ref("sigmoid_focal_loss", *as64((wrong, y)), **kw))
    close32(optax_grad(optax.losses.sigmoid_focal_loss, wrong, y, **kw),
            grad("sigmoid_focal_loss", *as64((wrong, y)), **kw)[0])
    # the direct form gives NaN gradients where gamma < 1 meets an easy saturated example:
    # gamma (1 - p_t)^(gamma - 1) is infinite at 1 - p_t = 0, times a zero slope
    gamma = kw.get("gamma", 2.0)
    direct_grad = n(jax.grad(lambda v: jnp.sum(_direct_focal(v, y, gamma)))(jnp.asarray(x)))
    if gamma < 1:
        assert np.isnan(direct_grad).any()
    else:
        assert np.isfinite(direct_grad).all()


@proves(("sigmoid_focal_loss", "torch", "torch.nn.functional.binary_cross_entropy_with_logits"))
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_sigmoid_focal_loss_at_gamma_0_is_weighted_torch_bce_with_logits(alpha):
    (x, y), _ = draw_case("sigmoid_focal_loss", "default")
    bce = F.binary_cross_entropy_with_logits(t(x), t(y), reduction="none").numpy()
    weight = 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
    close(weight * bce, ref("sigmoid_focal_loss", x, y, gamma=0.0, alpha=alpha))
    assert differs(weight * bce, ref("sigmoid_focal_loss", x, y, alpha=alpha)).all()


# ==================================================================================
# kl_divergence, kl_divergence_with_log_targets, generalized_kl_divergence, convex_kl_divergence
# ==================================================================================

def _axes(axis, ndim):
    return tuple(range(ndim)) if axis is None else axis


@proves(("kl_divergence", "torch", "torch.nn.functional.kl_div"))
@pytest.mark.parametrize("case", cases("kl_divergence", "default", "axis=0", "axis=(1, 2)", "axis=None", "where"))
def test_kl_divergence_is_torch_kl_div_summed_along_axis(case):
    (x, p), kw = draw_case("kl_divergence", case)
    elements = F.kl_div(t(x), t(p), reduction="none").numpy()
    if kw.get("where") is not None:
        elements = np.where(kw["where"], elements, 0.0)
    ours = ref("kl_divergence", x, p, **kw)
    close(elements.sum(_axes(kw.get("axis", -1), x.ndim)), ours)
    if case == "default":
        close(F.kl_div(t(x), t(p), reduction="batchmean"), ours.mean())
        close(reference.loss("kl_div", x, p, reduction="batchmean"), ours.mean())
        close(ref("kl_div", x, p).sum(-1), ours)


@proves(("kl_divergence", "optax", "optax.losses.kl_divergence (target gradient)"))
def test_kl_divergence_target_gradient_against_optax():
    (x, p), _ = draw_case("kl_divergence", "zero targets")
    zero = p == 0
    assert zero.any()
    close(optax.losses.kl_divergence(x, p), ref("kl_divergence", x, p))
    theirs = n(jax.grad(lambda v: jnp.sum(optax.losses.kl_divergence(jnp.asarray(x), v)))(jnp.asarray(p)))
    ours = grad("kl_divergence", x, p)[1]
    assert np.isnan(theirs[zero]).all() and np.isnan(ours[zero]).all()
    close(theirs[~zero], ours[~zero])
    close(ours[~zero], np.log(p[~zero]) + 1 - x[~zero])


@proves(("kl_divergence_with_log_targets", "torch", "torch.nn.functional.kl_div(log_target=True)"))
@pytest.mark.parametrize("case", cases("kl_divergence_with_log_targets", "default", "axis=(1, 2)", "where, axis=0"))
def test_kl_divergence_with_log_targets_is_torch_kl_div_log_target(case):
    (x, u), kw = draw_case("kl_divergence_with_log_targets", case)
    elements = F.kl_div(t(x), t(u), reduction="none", log_target=True).numpy()
    if kw.get("where") is not None:
        elements = np.where(kw["where"], elements, 0.0)
    close(elements.sum(_axes(kw.get("axis", -1), x.ndim)), ref("kl_divergence_with_log_targets", x, u, **kw))
    close(ref("kl_divergence_with_log_targets", x, u, **kw), ref("kl_divergence", x, np.exp(u), **kw))


@proves(("generalized_kl_divergence", "torch", "torch.nn.functional.kl_div"))
@pytest.mark.parametrize("case", cases("generalized_kl_divergence", "default", "axis=0", "where"))
def test_generalized_kl_divergence_is_torch_kl_div_plus_mass_difference(case):
    (x, p), kw = draw_case("generalized_kl_divergence", case)
    elements = F.kl_div(t(x), t(p), reduction="none").numpy() + np.exp(x) - p
    if kw.get("where") is not None:
        elements = np.where(kw["where"], elements, 0.0)
    close(elements.sum(kw.get("axis", -1)), ref("generalized_kl_divergence", x, p, **kw))


@proves(("generalized_kl_divergence", "optax", "optax.losses.kl_divergence"))
@pytest.mark.parametrize("case", cases("generalized_kl_divergence", "default", "normalized (= kl_divergence)"))
def test_generalized_kl_divergence_is_kl_divergence_plus_mass_difference(case):
    (x, p), kw = draw_case("generalized_kl_divergence", case)
    ours = ref("generalized_kl_divergence", x, p)
    close(n(optax.losses.kl_divergence(x, p)) + (np.exp(x) - p).sum(-1), ours)
    if case.startswith("normalized"):
        close(optax.losses.kl_divergence(x, p), ours)
    else:
        assert differs(optax.losses.kl_divergence(x, p), ours).all()


@proves(("convex_kl_divergence", "optax", "optax.losses.generalized_kl_divergence"))
@pytest.mark.parametrize("case", cases("convex_kl_divergence"))
def test_convex_kl_divergence_is_generalized_kl_divergence(case):
    (x, p), kw = draw_case("convex_kl_divergence", case)
    ours = ref("convex_kl_divergence", x, p, **kw)
    close(ref("generalized_kl_divergence", x, p, **kw), ours)
    close(optax.losses.generalized_kl_divergence(x, p, **kw), ours)
    with pytest.warns(DeprecationWarning):
        close(optax.losses.convex_kl_divergence(x, p, **kw), ours)
    assert reference.get("convex_kl_divergence").alias_of == "generalized_kl_divergence"


@proves(("generalized_kl_divergence", "optax", "optax.losses.generalized_kl_divergence (where)"),
        ("convex_kl_divergence", "optax", "optax.losses.generalized_kl_divergence (where)"))
def test_optax_generalized_kl_divergence_gradient_is_nan_at_a_dropped_overflowing_entry():
    (x, p), kw = draw_case("generalized_kl_divergence", DROPPED_OVERFLOW)
    where = kw["where"]
    assert not where.reshape(-1, x.shape[-1])[0].any() and np.all(x.reshape(-1, x.shape[-1])[0] == 1e4)

    def optax_sum(x, masked=False):
        return optax.losses.generalized_kl_divergence(jnp.where(where, x, 0.0) if masked else x, p, where=where).sum()

    close(optax_sum(x), ref("generalized_kl_divergence", x, p, where=where).sum())
    want = grad("generalized_kl_divergence", x, p, where=where)[0]
    assert np.isfinite(want).all() and np.all(want[~where] == 0)
    got = np.asarray(jax.grad(optax_sum)(x))
    overflowing = ~where & (x > 709.0)  # dropped, and exp overflows even in float64
    assert overflowing.any() and np.isnan(got[overflowing]).all()
    close(got[where], want[where])
    close(jax.grad(lambda x: optax_sum(x, masked=True))(x), want)  # the mapping


# ==================================================================================
# Keras: categorical_generalized_cross_entropy, binary_focal_crossentropy,
# categorical_focal_crossentropy
# ==================================================================================

@proves(("categorical_generalized_cross_entropy", "keras",
         "keras.losses.categorical_generalized_cross_entropy (a true-class probability of 0)"))
def test_keras_generalized_cross_entropy_gradient_is_nan_beside_a_zero_true_class_probability():
    name = "categorical_generalized_cross_entropy"
    (y, p), kw = draw_case(name, "true-class probabilities of exactly 0 and 1")
    q = kw.get("q", 0.5)
    loss = keras().losses.categorical_generalized_cross_entropy
    close(loss(y, p, q=q), ref(name, y, p, **kw))
    ours = grad(name, y, p, **kw)[0]
    theirs = n(jax.grad(lambda v: jnp.sum(loss(y, v, q=q)))(jnp.asarray(p)))
    zero_true = np.take_along_axis(p, y[..., None], -1)[..., 0] == 0
    assert zero_true.any()
    close(theirs[~zero_true], ours[~zero_true])
    others = (onehot(y, p.shape[-1]) == 0) & zero_true[..., None]
    assert np.isnan(theirs[others]).all() and (ours[others] == 0).all()


@proves(("categorical_generalized_cross_entropy", "keras", "keras.losses.categorical_generalized_cross_entropy"))
@pytest.mark.parametrize("case", cases("categorical_generalized_cross_entropy"))
def test_categorical_generalized_cross_entropy_against_keras(case):
    (y, p), kw = draw_case("categorical_generalized_cross_entropy", case)
    q = kw.get("q", 0.5)
    k = keras()
    ours = ref("categorical_generalized_cross_entropy", y, p, **kw)
    theirs = k.losses.categorical_generalized_cross_entropy(y, p, q=q)
    assert n(theirs).dtype == np.float64
    close(theirs, ours)
    # the Loss class casts to its dtype, floatx (float32), whatever the inputs' dtype
    (y32, p32), _ = draw_case("categorical_generalized_cross_entropy", case, np.float32)
    loss_object = k.losses.CategoricalGeneralizedCrossEntropy(q=q, reduction=None)
    assert loss_object(y, p).dtype == np.float32
    close32(loss_object(y32, p32), ref("categorical_generalized_cross_entropy", *as64((y32, p32)), **kw))
    # Keras truncates float labels and one-hot encodes an out-of-range label to zeros (loss 1/q)
    close(k.losses.categorical_generalized_cross_entropy(y + 0.7, p, q=q), ours)
    with pytest.raises(TypeError, match="y_true"):
        ref("categorical_generalized_cross_entropy", y + 0.7, p, **kw)
    out_of_range = np.full_like(y, p.shape[-1])
    close(k.losses.categorical_generalized_cross_entropy(out_of_range, p, q=q), np.full(y.shape, 1 / q))
    with pytest.raises(IndexError, match="y_true"):
        ref("categorical_generalized_cross_entropy", out_of_range, p, **kw)
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="q"):
            k.losses.CategoricalGeneralizedCrossEntropy(q=bad)
        with pytest.raises(ValueError, match="q"):
            ref("categorical_generalized_cross_entropy", y, p, q=bad)


@proves(("categorical_generalized_cross_entropy", "torch", "torch.nn.functional.nll_loss"))
def test_categorical_generalized_cross_entropy_limits_are_torch_nll_losses():
    (y, p), _ = draw_case("categorical_generalized_cross_entropy", "default")
    log_p = np.log(p)
    ce = F.nll_loss(t(log_p), t(y), reduction="none").numpy()
    mae = 1.0 + F.nll_loss(t(p), t(y), reduction="none").numpy()
    picked = np.take_along_axis(log_p, y[:, None], -1)[:, 0]
    # (1 - p^q) / q = -log p - q log^2 p / 2 - ...: within q log^2 p of the limit (and round-off)
    for q in (1e-8, 1e-6):
        ours = ref("categorical_generalized_cross_entropy", y, p, q=q)
        assert np.all(np.abs(ours - ce) <= q * picked ** 2 + 1e-7)
    assert differs(ref("categorical_generalized_cross_entropy", y, p, q=0.5), ce).all()
    # q -> 1: (1 - p^q) / q -> 1 - p
    q = 1 - 1e-9
    ours = ref("categorical_generalized_cross_entropy", y, p, q=q)
    assert np.all(np.abs(ours - mae) <= 1e-9 * (1 + np.abs(picked)) * 2 + 1e-12)


def _keras_binary_focal(y, x, upper, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False,
                        label_smoothing=0.0, axis=-1):
    """Keras's binary_focal_crossentropy transcribed line by line, in float64, with its clip's upper
    bound ``upper`` (Keras's 1 - epsilon())."""
    y = y.astype(np.float64)
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    p = expit(x) if from_logits else x
    output = np.clip(p, 1e-7, upper)
    bce = -(y * np.log(output) + (1.0 - y) * np.log(1.0 - output))
    p_t = y * p + (1 - y) * (1 - p)
    focal_bce = (1.0 - p_t) ** gamma * bce
    if apply_class_balancing:
        focal_bce = (y * alpha + (1 - y) * (1 - alpha)) * focal_bce
    return focal_bce.mean(axis)


FLOAT32_UPPER_CLIP = float(np.float32(1 - 1e-7))  # 1 - 2^-23: 1 - 1e-7 rounded to float32


@proves(("binary_focal_crossentropy", "keras", "keras.losses.binary_focal_crossentropy"),
        ("binary_focal_crossentropy", "keras", "keras.losses.binary_focal_crossentropy (float32 clip)"))
@pytest.mark.parametrize("case", cases("binary_focal_crossentropy") + ["clipped probabilities (0, 1, 1e-9)"])
def test_binary_focal_crossentropy_against_keras(case):
    # float64 inputs: float64 arrays holding float32-rounded means (ops.mean computes in float32)
    (y, x), kw = draw_case("binary_focal_crossentropy", case)
    theirs64 = keras().losses.binary_focal_crossentropy(y, x, **kw)
    assert theirs64.dtype == np.float64
    ours = ref("binary_focal_crossentropy", y, x, **kw)
    close32(theirs64, ours)
    close(_keras_binary_focal(y, x, 1 - 1e-7, **kw), ours)
    relative = np.abs(n(theirs64) - ours) / np.maximum(np.abs(ours), 1e-30)
    assert relative.max() > 1e-12  # not float64 arithmetic
    # float32 inputs: Keras's upper clip is 1 - 2^-23
    (y, x), kw = draw_case("binary_focal_crossentropy", case, np.float32)
    theirs = keras().losses.binary_focal_crossentropy(y, x, **kw)
    assert theirs.dtype == np.float32
    y64, x64 = as64((y, x))
    ours = ref("binary_focal_crossentropy", y64, x64, **kw)
    close32(theirs, _keras_binary_focal(y64, x64, FLOAT32_UPPER_CLIP, **kw))
    p = expit(x64) if kw.get("from_logits") else x64
    weight = 1 - y64 if not kw.get("label_smoothing") else np.ones_like(y64)
    at_upper = ((p >= 1 - 1e-7) & (weight > 0)).any(kw.get("axis", -1))
    if at_upper.any():
        assert differs(n(theirs), ours)[at_upper].any()
    close32(n(theirs)[~at_upper], ours[~at_upper])


@proves(("binary_focal_crossentropy", "keras", "keras.losses.binary_crossentropy"))
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("from_logits", [False, True])
def test_binary_focal_crossentropy_at_gamma_0_is_keras_binary_crossentropy(eps, from_logits):
    case = "from_logits" if from_logits else "default"
    (y, x), _ = draw_case("binary_focal_crossentropy", case)
    ours = ref("binary_focal_crossentropy", y, x, gamma=0.0, label_smoothing=eps, from_logits=from_logits)
    p = expit(x) if from_logits else x
    close(ref("binary_cross_entropy", np.clip(p, 1e-7, 1 - 1e-7), y * (1 - eps) + 0.5 * eps).mean(-1), ours)
    (y, x), _ = draw_case("binary_focal_crossentropy", case, np.float32)
    theirs = keras().losses.binary_crossentropy(y, x, label_smoothing=eps, from_logits=from_logits)
    close32(theirs, ref("binary_focal_crossentropy", *as64((y, x)), gamma=0.0, label_smoothing=eps,
                        from_logits=from_logits))


@proves(("binary_focal_crossentropy", "optax", "optax.losses.sigmoid_focal_loss"))
@pytest.mark.parametrize("balanced, alpha, gamma", [(False, 0.25, 2.0), (True, 0.25, 2.0), (True, 0.75, 0.5)])
def test_binary_focal_crossentropy_from_logits_is_optax_focal_loss_averaged(balanced, alpha, gamma):
    (y, x), _ = draw_case("binary_focal_crossentropy", "from_logits")
    ours = ref("binary_focal_crossentropy", y, x, from_logits=True, apply_class_balancing=balanced, alpha=alpha,
               gamma=gamma)
    theirs = n(optax.losses.sigmoid_focal_loss(x, y, alpha=alpha if balanced else None, gamma=gamma)).mean(-1)
    close(theirs, ours)
    # where Keras's clip holds the sigmoid of a wrong-side logit (|x| in [20, 30]) they part
    (y, x), _ = draw_case("binary_focal_crossentropy", "from_logits, clipped sigmoids (|logits| in [20, 30])")
    ours = ref("binary_focal_crossentropy", y, x, from_logits=True, gamma=0.0)
    theirs = n(optax.losses.sigmoid_focal_loss(x, y, gamma=0.0)).mean(-1)
    wrong_side = ((np.abs(x) >= 20) & (np.sign(x) != 2 * y - 1)).any(-1)
    assert wrong_side.any() and differs(theirs, ours)[wrong_side].all()
    close(theirs[~wrong_side], ours[~wrong_side], atol=1e-6)  # the correct side's clip costs < 1e-7 per element


@proves(("binary_focal_crossentropy", "keras", "keras.config.epsilon()"),
        ("categorical_focal_crossentropy", "keras", "keras.config.epsilon()"))
@pytest.mark.parametrize("name, case", [
    ("binary_focal_crossentropy", "from_logits, clipped sigmoids (|logits| in [20, 30])"),
    ("categorical_focal_crossentropy", "from_logits, clipped softmax (two logits of 30)")])
def test_keras_focal_losses_follow_keras_epsilon_at_its_default(name, case):
    (y, x), kw = draw_case(name, case)
    fn = getattr(keras().losses, name)
    ours = ref(name, y, x, **kw)
    same = close32 if name == "binary_focal_crossentropy" else close  # ops.mean computes in float32
    same(fn(y, x, **kw), ours)
    with keras_epsilon(1e-4):
        assert differs(fn(y, x, **kw), ours).any()


@proves(("binary_focal_crossentropy", "keras", "keras.losses.Loss(reduction=...)"),
        ("categorical_focal_crossentropy", "keras", "keras.losses.Loss(reduction=...)"))
@pytest.mark.parametrize("name, cls, case", [
    ("binary_focal_crossentropy", "BinaryFocalCrossentropy", "apply_class_balancing"),
    ("categorical_focal_crossentropy", "CategoricalFocalCrossentropy", "from_logits, label_smoothing=0.2")])
def test_keras_focal_loss_classes_reduce_as_mean_and_sum(name, cls, case):
    (y, x), kw = draw_case(name, case, np.float32)
    y64, x64 = as64((y, x))
    loss_class = getattr(keras().losses, cls)
    close32(loss_class(**kw)(y, x), reference.loss(name, y64, x64, **kw, reduction="mean"))
    close32(loss_class(**kw, reduction="sum")(y, x), reference.loss(name, y64, x64, **kw, reduction="sum"))
    close32(loss_class(**kw, reduction=None)(y, x), ref(name, y64, x64, **kw))


@proves(("categorical_focal_crossentropy", "keras", "keras.losses.categorical_focal_crossentropy(alpha=[...])"))
def test_categorical_focal_crossentropy_per_class_alpha_scales_the_true_class():
    (y, x), _ = draw_case("categorical_focal_crossentropy", "default")
    alpha = [0.1, 0.4, 0.7, 1.0, 1.3]
    theirs = keras().losses.categorical_focal_crossentropy(y, x, alpha=alpha)
    close(theirs, np.asarray(alpha)[np.argmax(y, -1)] * ref("categorical_focal_crossentropy", y, x, alpha=1.0))
    close(keras().losses.categorical_focal_crossentropy(y, x), ref("categorical_focal_crossentropy", y, x))
    with pytest.raises(TypeError, match="alpha"):
        ref("categorical_focal_crossentropy", y, x, alpha=alpha)


@proves(("categorical_focal_crossentropy", "keras",
         "keras.losses.categorical_focal_crossentropy(label_smoothing=...)"))
def test_categorical_focal_crossentropy_smooths_with_the_last_axis_size():
    (y, x), kw = draw_case("categorical_focal_crossentropy", "axis=0, label_smoothing=0.1 (C from the last axis)")
    eps, axis = kw["label_smoothing"], kw["axis"]
    assert y.shape[axis] != y.shape[-1]
    ours = ref("categorical_focal_crossentropy", y, x, **kw)
    close(keras().losses.categorical_focal_crossentropy(y, x, **kw), ours)
    close(ref("categorical_focal_crossentropy", y * (1 - eps) + eps / y.shape[-1], x, axis=axis), ours)
    along_axis = ref("categorical_focal_crossentropy", y * (1 - eps) + eps / y.shape[axis], x, axis=axis)
    assert differs(along_axis, ours).all()


@proves(("categorical_focal_crossentropy", "torch", "torch.nn.functional.cross_entropy"))
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_categorical_focal_crossentropy_at_gamma_0_is_alpha_torch_cross_entropy(eps):
    (y, x), _ = draw_case("categorical_focal_crossentropy", "from_logits")
    alpha = 0.25
    ours = ref("categorical_focal_crossentropy", y, x, alpha=alpha, gamma=0.0, from_logits=True,
               label_smoothing=eps)
    close(alpha * F.cross_entropy(t(x), t(y), label_smoothing=eps, reduction="none").numpy(), ours)
    # the clip breaks it where the softmax leaves [1e-7, 1 - 1e-7]
    (y, x), _ = draw_case("categorical_focal_crossentropy", "from_logits, clipped softmax (two logits of 30)")
    ours = ref("categorical_focal_crossentropy", y, x, alpha=alpha, gamma=0.0, from_logits=True, label_smoothing=0.1)
    theirs = alpha * F.cross_entropy(t(x), t(y), label_smoothing=0.1, reduction="none").numpy()
    assert differs(theirs, ours).all()


@pytest.mark.parametrize("case", cases("categorical_focal_crossentropy"))
def test_categorical_focal_crossentropy_equals_keras_in_float64(case):
    """Not a Difference: the builtin oracle's mapping, repeated here with Keras's dtype checked."""
    (y, x), kw = draw_case("categorical_focal_crossentropy", case)
    theirs = keras().losses.categorical_focal_crossentropy(y, x, **kw)
    assert theirs.dtype == np.float64
    close(theirs, ref("categorical_focal_crossentropy", y, x, **kw))


def test_every_difference_is_proved():
    recorded = {(name, d.library, d.builtin) for name in reference.names()
                if reference.get(name).family == "classification" for d in reference.get(name).differences}
    assert recorded == PROVED
