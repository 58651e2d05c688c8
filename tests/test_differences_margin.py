"""The margin family's recorded cross-library differences, each proved against the real library.

Every ``Difference`` entry of a margin loss states a mapping between lossparity's loss
and a torch, optax or Keras function. Each test below calls that library and the
reference on inputs drawn from the family's own samplers (float64) and checks the
mapping. A mapping that holds only under a condition is checked where the condition
holds and shown to fail where it does not. ``test_every_difference_is_proved`` keeps
the list of tests and the list of recorded differences in step.
"""

from __future__ import annotations

import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F

import reference
from jax_impl.core import keras
from reference import margin as M
from reports.matrix import TOLERANCES, seed_for

RTOL, ATOL = TOLERANCES["float64"]
PROVED: set[tuple[str, str, str]] = set()


def proves(loss: str, library: str, builtin: str):
    """Marks a test as the proof of the Difference (loss, library, builtin)."""
    def mark(test):
        PROVED.add((loss, library, builtin))
        return test
    return mark


def rng_for(loss: str, what: str) -> np.random.Generator:
    return np.random.default_rng(seed_for(loss, f"differences/{what}"))


def ref(name: str, *inputs, **kw) -> np.ndarray:
    return reference.loss(name, *inputs, **{"reduction": "none", **kw})


def close(actual, expected, rtol=RTOL, atol=ATOL) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)


def differs(actual, expected) -> np.ndarray:
    """Elementwise: not equal within the float64 tolerances."""
    return ~np.isclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=RTOL, atol=ATOL)


def cases(name: str) -> list:
    return [pytest.param(c.name, id=c.name) for c in reference.get(name).cases]


def draw_case(name: str, case: str):
    spec = reference.get(name)
    return spec.draw(rng_for(name, case), case)


def onehot(labels, num_classes):
    return np.eye(num_classes)[labels]


def wrong_hinges(x, y, margin):
    """``max(0, margin - x[y] + x[i])`` for the wrong classes, 0 at the true class."""
    z = margin - np.take_along_axis(x, y[..., None], -1) + x
    return np.where(onehot(y, x.shape[-1]) == 1, 0.0, np.maximum(z, 0.0))


def keras_labels(y):
    """Keras's conversion of {0, 1} labels, written out here (not the reference's helper)."""
    return 2.0 * y - 1.0 if np.all((y == 0) | (y == 1)) else y


# -- margin_ranking_loss -----------------------------------------------------------

@proves("margin_ranking_loss", "optax", "optax.losses.perceptron_loss")
@pytest.mark.parametrize("case", cases("margin_ranking_loss"))
def test_margin_ranking_loss_is_optax_perceptron_loss_of_a_shifted_score(case):
    (x1, x2, y), kw = draw_case("margin_ranking_loss", case)
    m = kw.get("margin", 0.0)
    close(optax.losses.perceptron_loss(x1 - x2 - m * y, y), ref("margin_ranking_loss", x1, x2, y, margin=m))
    if m == 0.0:
        close(optax.losses.perceptron_loss(x1 - x2, y), ref("margin_ranking_loss", x1, x2, y))
    else:  # without the shift the margin is lost
        assert differs(optax.losses.perceptron_loss(x1 - x2, y), ref("margin_ranking_loss", x1, x2, y, margin=m)).any()


@proves("margin_ranking_loss", "optax", "optax.losses.hinge_loss")
@pytest.mark.parametrize("case", cases("margin_ranking_loss"))
def test_margin_ranking_loss_is_optax_hinge_loss_of_a_shifted_score(case):
    (x1, x2, y), kw = draw_case("margin_ranking_loss", case)
    m = kw.get("margin", 0.0)
    close(optax.losses.hinge_loss(x1 - x2 + (1.0 - m) * y, y), ref("margin_ranking_loss", x1, x2, y, margin=m))
    # at margin 1 no shift: drawn off the kinks of margin 1
    x1, x2, y = M.sample_ranking(rng_for("margin_ranking_loss", f"{case}/m=1"), (3, 4), margin=1.0)
    close(optax.losses.hinge_loss(x1 - x2, y), ref("margin_ranking_loss", x1, x2, y, margin=1.0))


# -- hinge_embedding_loss ----------------------------------------------------------

@proves("hinge_embedding_loss", "optax", "optax.losses.hinge_loss")
@pytest.mark.parametrize("case", cases("hinge_embedding_loss"))
def test_hinge_embedding_loss_against_optax_hinge_loss(case):
    (x, y), kw = draw_case("hinge_embedding_loss", case)
    m = kw.get("margin", 1.0)
    ours = ref("hinge_embedding_loss", x, y, margin=m)
    close(np.where(y == 1, x, optax.losses.hinge_loss(x + 1.0 - m, np.ones_like(x))), ours)
    # not the same loss despite the name
    assert differs(optax.losses.hinge_loss(x, y), ours).any()


# -- soft_margin_loss --------------------------------------------------------------

@proves("soft_margin_loss", "optax", "optax.losses.sigmoid_binary_cross_entropy")
@pytest.mark.parametrize("case", cases("soft_margin_loss"))
def test_soft_margin_loss_is_optax_sigmoid_bce_on_01_labels(case):
    (x, y), _ = draw_case("soft_margin_loss", case)
    close(optax.losses.sigmoid_binary_cross_entropy(x, (1.0 + y) / 2.0), ref("soft_margin_loss", x, y))
    # the labels must be mapped: {-1, 1} as they are is another loss
    assert differs(optax.losses.sigmoid_binary_cross_entropy(x, y), ref("soft_margin_loss", x, y)).any()


@proves("soft_margin_loss", "torch", "torch.nn.functional.soft_margin_loss")
@pytest.mark.parametrize("dtype, low", [(np.float32, 80.0), (np.float64, 700.0)], ids=["float32", "float64"])
def test_torch_soft_margin_loss_overflows_where_the_reference_does_not(dtype, low):
    x, y = M.sample_soft_margin(rng_for("soft_margin_loss", f"overflow/{dtype.__name__}"), (8, 8), scale=10.0,
                                low=low)
    x, y = x.astype(dtype), y.astype(dtype)
    threshold = np.log(np.finfo(dtype).max)
    beyond = -y.astype(np.float64) * x > threshold
    assert beyond.any() and (~beyond).any(), "the draw must straddle log(finfo.max)"

    xt = torch.tensor(x, requires_grad=True)
    value = F.soft_margin_loss(xt, torch.tensor(y), reduction="none")
    (grad,) = torch.autograd.grad(value.sum(), xt)
    value, grad = value.detach().numpy(), grad.numpy()
    want = ref("soft_margin_loss", x.astype(np.float64), y.astype(np.float64))
    (want_grad,) = reference.vjp("soft_margin_loss", x.astype(np.float64), y.astype(np.float64),
                                 np.ones(x.shape), reduction="none")
    rtol, atol = TOLERANCES[np.dtype(dtype).name]
    # below the threshold: equal
    close(value[~beyond], want[~beyond], rtol, atol)
    close(grad[~beyond], want_grad[~beyond], rtol, atol)
    # beyond it: torch inf and NaN, the reference about -y x and -y
    assert np.all(np.isposinf(value[beyond])) and np.all(np.isnan(grad[beyond]))
    assert np.all(np.isfinite(want)) and np.all(np.isfinite(want_grad))
    close(want[beyond], (-y * x)[beyond].astype(np.float64), rtol=1e-12, atol=0)
    close(want_grad[beyond], -y[beyond], rtol=1e-12, atol=0)


# -- multilabel_soft_margin_loss ---------------------------------------------------

@proves("multilabel_soft_margin_loss", "optax", "optax.losses.sigmoid_binary_cross_entropy")
@pytest.mark.parametrize("case", cases("multilabel_soft_margin_loss"))
def test_multilabel_soft_margin_loss_is_the_class_mean_of_optax_sigmoid_bce(case):
    (x, y), kw = draw_case("multilabel_soft_margin_loss", case)
    w = kw.get("weight")
    w_or_1 = np.ones(x.shape[-1]) if w is None else w
    elementwise = np.asarray(optax.losses.sigmoid_binary_cross_entropy(x, y))
    close((w_or_1 * elementwise).mean(axis=-1), ref("multilabel_soft_margin_loss", x, y, weight=w))
    # the class mean, not the class sum
    assert np.all(differs((w_or_1 * elementwise).sum(axis=-1), ref("multilabel_soft_margin_loss", x, y, weight=w)))


# -- multi_margin_loss -------------------------------------------------------------

@proves("multi_margin_loss", "optax", "optax.losses.multiclass_hinge_loss")
def test_multi_margin_loss_against_optax_multiclass_hinge_loss():
    # C = 2: one wrong class, so always exact
    x, y = M.sample_multi_margin(rng_for("multi_margin_loss", "C=2"), n=40, num_classes=2)
    close(2 * ref("multi_margin_loss", x, y), optax.losses.multiclass_hinge_loss(x, y))

    # C = 4: exact where at most one wrong hinge is active, a strict bound elsewhere
    num_classes = 4
    x, y = M.sample_multi_margin(rng_for("multi_margin_loss", "C=4"), n=300, num_classes=num_classes)
    weston_watkins = num_classes * ref("multi_margin_loss", x, y)
    crammer_singer = np.asarray(optax.losses.multiclass_hinge_loss(x, y))
    active = (wrong_hinges(x, y, 1.0) > 0).sum(-1)
    one, many = active <= 1, active >= 2
    assert one.sum() >= 10 and many.sum() >= 10, "the draw must hold both kinds of rows"
    close(weston_watkins[one], crammer_singer[one])
    assert np.all(differs(weston_watkins[many], crammer_singer[many]))
    assert np.all(crammer_singer[many] < weston_watkins[many])
    assert np.all(weston_watkins <= (num_classes - 1) * crammer_singer * (1 + RTOL) + ATOL)

    # margin m > 0: optax at margin 1 on x / m, scaled by m
    for m in (0.5, 2.0):
        x, y = M.sample_multi_margin(rng_for("multi_margin_loss", f"m={m}"), n=200, num_classes=num_classes, margin=m)
        scaled = m * np.asarray(optax.losses.multiclass_hinge_loss(x / m, y))
        close(scaled, wrong_hinges(x, y, m).max(-1))
        one = (wrong_hinges(x, y, m) > 0).sum(-1) <= 1
        assert one.any() and (~one).any()
        close(num_classes * ref("multi_margin_loss", x, y, margin=m)[one], scaled[one])
        assert np.all(differs(num_classes * ref("multi_margin_loss", x, y, margin=m)[~one], scaled[~one]))


@proves("multi_margin_loss", "optax", "optax.losses.multiclass_perceptron_loss")
def test_multi_margin_loss_against_optax_multiclass_perceptron_loss():
    x, y = M.sample_multi_margin(rng_for("multi_margin_loss", "perceptron C=4"), n=200, num_classes=4, margin=0.0)
    perceptron = np.asarray(optax.losses.multiclass_perceptron_loss(x, y))
    close(perceptron, wrong_hinges(x, y, 0.0).max(-1))
    # not Weston-Watkins at margin 0 once two wrong classes beat the true one
    many = (wrong_hinges(x, y, 0.0) > 0).sum(-1) >= 2
    assert many.any() and np.all(differs(4 * ref("multi_margin_loss", x, y, margin=0.0)[many], perceptron[many]))

    x, y = M.sample_multi_margin(rng_for("multi_margin_loss", "perceptron C=2"), n=40, num_classes=2, margin=0.0)
    close(2 * ref("multi_margin_loss", x, y, margin=0.0), optax.losses.multiclass_perceptron_loss(x, y))


@proves("multi_margin_loss", "keras", "keras.losses.categorical_hinge")
def test_multi_margin_loss_against_keras_categorical_hinge():
    k = keras()
    for num_classes in (2, 4):
        x, y = M.sample_multi_margin(rng_for("multi_margin_loss", f"keras C={num_classes}"), n=300,
                                     num_classes=num_classes)
        keras_value = np.asarray(k.losses.categorical_hinge(onehot(y, num_classes), x))
        wrong_max = np.where(onehot(y, num_classes) == 1, -np.inf, x).max(-1)
        x_true = np.take_along_axis(x, y[:, None], -1)[:, 0]
        close(keras_value, np.maximum(0.0, 1.0 - x_true + np.maximum(0.0, wrong_max)))
        padded = np.concatenate([x, np.zeros((x.shape[0], 1))], -1)
        close(keras_value, optax.losses.multiclass_hinge_loss(padded, y))

        crammer_singer = np.asarray(optax.losses.multiclass_hinge_loss(x, y))
        nonneg = wrong_max >= 0
        assert nonneg.sum() >= 10 and (~nonneg).sum() >= 10
        close(keras_value[nonneg], crammer_singer[nonneg])
        # every wrong score negative: the true class's 0 wins neg; Keras charges more wherever it is active
        more = ~nonneg & (keras_value > 0)
        assert more.any() and np.all(keras_value[more] > crammer_singer[more])
        if num_classes == 2:
            close(keras_value[nonneg], 2 * ref("multi_margin_loss", x, y)[nonneg])
            assert np.all(differs(keras_value[more], 2 * ref("multi_margin_loss", x, y)[more]))


# -- hinge_loss --------------------------------------------------------------------

@proves("hinge_loss", "torch", "torch.nn.functional.margin_ranking_loss")
@pytest.mark.parametrize("case", cases("hinge_loss"))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_hinge_loss_is_torch_margin_ranking_loss_against_zero(case, reduction):
    (x, y), _ = draw_case("hinge_loss", case)
    xt = torch.tensor(x)
    got = F.margin_ranking_loss(xt, torch.zeros_like(xt), torch.tensor(y), margin=1.0, reduction=reduction)
    close(got.numpy(), ref("hinge_loss", x, y, reduction=reduction))


@proves("hinge_loss", "keras", "keras.losses.hinge")
@pytest.mark.parametrize("binary", [False, True], ids=["signed labels", "binary labels"])
@pytest.mark.parametrize("case", cases("hinge_loss"))
def test_keras_hinge_is_the_last_axis_mean_of_hinge_loss(case, binary):
    (x, y), _ = draw_case("hinge_loss", case)
    y_keras = (y + 1.0) / 2.0 if binary else y
    got = np.asarray(keras().losses.hinge(y_keras, x))
    close(got, ref("hinge_loss", x, keras_labels(y_keras)).mean(axis=-1))
    if binary:  # the conversion matters: {0, 1} taken as they are is another loss
        assert differs(got, np.maximum(0.0, 1.0 - y_keras * x).mean(axis=-1)).any()


@proves("hinge_loss", "optax", "optax.losses.hinge_loss")
def test_optax_hinge_loss_broadcasts_where_hinge_loss_refuses():
    x, y = M.sample_hinge(rng_for("hinge_loss", "broadcast"), (3, 4))
    row = y[0]  # (4,) labels, broadcast over the 3 rows by optax
    got = np.asarray(optax.losses.hinge_loss(x, row))
    assert got.shape == (3, 4)
    close(got, ref("hinge_loss", *np.broadcast_arrays(x, row)))
    with pytest.raises(ValueError, match="targets"):
        ref("hinge_loss", x, row)
    with pytest.raises(ValueError, match="Shape mismatch"):  # optax's perceptron_loss does check
        optax.losses.perceptron_loss(x, row)


# -- perceptron_loss ---------------------------------------------------------------

@proves("perceptron_loss", "torch", "torch.nn.functional.margin_ranking_loss")
@pytest.mark.parametrize("case", cases("perceptron_loss"))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_perceptron_loss_is_torch_margin_ranking_loss_against_zero(case, reduction):
    (x, y), _ = draw_case("perceptron_loss", case)
    xt = torch.tensor(x)
    got = F.margin_ranking_loss(xt, torch.zeros_like(xt), torch.tensor(y), margin=0.0, reduction=reduction)
    close(got.numpy(), ref("perceptron_loss", x, y, reduction=reduction))


# -- sparsemax_loss ----------------------------------------------------------------

@proves("sparsemax_loss", "optax", "optax.losses.multiclass_sparsemax_loss")
@pytest.mark.parametrize("case", cases("sparsemax_loss"))
def test_sparsemax_loss_is_optax_multiclass_sparsemax_loss_of_zero_and_x(case):
    (x, y), _ = draw_case("sparsemax_loss", case)
    scores = np.stack([np.zeros_like(x), x], -1).reshape(-1, 2)
    got = np.asarray(optax.losses.multiclass_sparsemax_loss(scores, y.reshape(-1).astype(np.int64)))
    close(got.reshape(x.shape), ref("sparsemax_loss", x, y))


@proves("sparsemax_loss", "optax", "optax.losses.sparsemax_loss")
def test_optax_sparsemax_loss_counts_any_nonzero_label_as_one():
    x, y = M.sample_sparsemax(rng_for("sparsemax_loss", "labels"), (4, 5))
    t = np.where(y == 1, np.array([2, -1, 1, 7, 1])[None, :], 0)  # nonzero labels other than 1
    close(optax.losses.sparsemax_loss(x, t), ref("sparsemax_loss", x, t != 0))
    close(optax.losses.sparsemax_loss(x, 0.5 * t), ref("sparsemax_loss", x, t != 0))  # float labels too
    with pytest.raises(ValueError, match="labels"):
        ref("sparsemax_loss", x, t)
    with pytest.raises(TypeError, match="labels"):
        ref("sparsemax_loss", x, 0.5 * t)


# -- multiclass_hinge_loss, multiclass_perceptron_loss -----------------------------

def _torch_max_over_wrong_ranking_hinges(x, y, margin):
    xt, yt = torch.tensor(x), torch.tensor(y)
    x_true = torch.gather(xt, -1, yt.unsqueeze(-1)).expand_as(xt)
    hinges = F.margin_ranking_loss(x_true, xt, torch.ones_like(xt), margin=margin, reduction="none")
    wrong = yt.unsqueeze(-1) != torch.arange(x.shape[-1])
    return torch.where(wrong, hinges, torch.tensor(-np.inf, dtype=xt.dtype)).amax(-1).numpy()


@proves("multiclass_hinge_loss", "torch", "torch.nn.functional.margin_ranking_loss")
@pytest.mark.parametrize("case", cases("multiclass_hinge_loss"))
def test_multiclass_hinge_loss_is_the_largest_torch_ranking_hinge(case):
    (x, y), _ = draw_case("multiclass_hinge_loss", case)
    close(_torch_max_over_wrong_ranking_hinges(x, y, 1.0), ref("multiclass_hinge_loss", x, y))


@proves("multiclass_perceptron_loss", "torch", "torch.nn.functional.margin_ranking_loss")
@pytest.mark.parametrize("case", cases("multiclass_perceptron_loss"))
def test_multiclass_perceptron_loss_is_the_largest_torch_ranking_hinge_at_margin_0(case):
    (x, y), _ = draw_case("multiclass_perceptron_loss", case)
    close(_torch_max_over_wrong_ranking_hinges(x, y, 0.0), ref("multiclass_perceptron_loss", x, y))


# -- multiclass_sparsemax_loss -----------------------------------------------------

@proves("multiclass_sparsemax_loss", "optax", "optax.losses.sparsemax_loss")
def test_two_class_sparsemax_loss_is_optax_binary_sparsemax_loss_of_the_difference():
    s, y = M.sample_multiclass_sparsemax(rng_for("multiclass_sparsemax_loss", "C=2"), n=40, num_classes=2)
    close(optax.losses.sparsemax_loss(s[:, 1] - s[:, 0], y), ref("multiclass_sparsemax_loss", s, y))
    # the score difference matters, not the second score alone (unless the first is 0)
    assert differs(optax.losses.sparsemax_loss(s[:, 1], y), ref("multiclass_sparsemax_loss", s, y)).any()


# -- squared_hinge -----------------------------------------------------------------

@proves("squared_hinge", "optax", "optax.losses.hinge_loss")
@pytest.mark.parametrize("case", cases("squared_hinge"))
def test_squared_hinge_is_the_last_axis_mean_of_squared_optax_hinge_loss(case):
    (y, x), _ = draw_case("squared_hinge", case)
    y2 = keras_labels(y.astype(np.float64))
    close((np.asarray(optax.losses.hinge_loss(x, y2)) ** 2).mean(axis=-1), ref("squared_hinge", y, x))


@proves("squared_hinge", "keras", "keras.losses.squared_hinge")
@pytest.mark.parametrize("case", cases("squared_hinge"))
def test_keras_squared_hinge_agrees_on_accepted_labels_and_leaves_mixed_labels_unconverted(case):
    (y, x), _ = draw_case("squared_hinge", case)
    got = keras().losses.squared_hinge(y, x)
    assert got.dtype == np.float64  # Keras honours float64 on the JAX backend
    close(got, ref("squared_hinge", y, x))

    mixed = M._mixed_labels(y.astype(np.float64))  # -1, 0 and 1 together: Keras converts nothing
    want = np.where(mixed == 0, 1.0, np.maximum(0.0, 1.0 - mixed * x) ** 2).mean(axis=-1)
    close(keras().losses.squared_hinge(mixed, x), want)
    with pytest.raises(ValueError, match="y_true"):
        ref("squared_hinge", mixed, x)


# -- categorical_hinge -------------------------------------------------------------

@proves("categorical_hinge", "optax", "optax.losses.multiclass_hinge_loss")
@pytest.mark.parametrize("case", ["default", "negative wrong scores", "integer labels", "bool labels", "unbatched"])
def test_categorical_hinge_is_optax_multiclass_hinge_loss_with_a_zero_score_appended(case):
    (y_true, x), _ = draw_case("categorical_hinge", case)
    labels = np.argmax(y_true, axis=-1)
    ours = ref("categorical_hinge", y_true, x)
    padded = np.concatenate([x, np.zeros(x.shape[:-1] + (1,))], -1)
    close(optax.losses.multiclass_hinge_loss(padded, labels), ours)

    crammer_singer = np.asarray(optax.losses.multiclass_hinge_loss(x, labels))
    wrong_max = np.where(onehot(labels, x.shape[-1]) == 1, -np.inf, x).max(-1)
    nonneg = wrong_max >= 0
    close(np.asarray(ours)[nonneg], crammer_singer[nonneg])
    # every wrong score negative: max(0, 1 - x[y]), above Crammer-Singer wherever active
    x_true = np.take_along_axis(x, np.asarray(labels)[..., None], -1)[..., 0]
    close(np.asarray(ours)[~nonneg], np.maximum(0.0, 1.0 - x_true)[~nonneg])
    more = ~nonneg & (np.asarray(ours) > 0)
    assert np.all(np.asarray(ours)[more] > crammer_singer[more])
    if case == "negative wrong scores":
        assert more.any()


def test_every_difference_is_proved():
    recorded = {(name, d.library, d.builtin) for name in reference.names()
                if reference.get(name).family == "margin" for d in reference.get(name).differences}
    assert recorded == PROVED
