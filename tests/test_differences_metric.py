"""The metric family's recorded cross-library differences, each proved against the real library.

Every ``Difference`` on a metric spec (cosine_embedding_loss, triplet_margin_loss,
triplet_margin_with_distance_loss, cosine_similarity, cosine_distance, ntxent,
ranking_softmax_loss, circle) states a mapping between lossparity's loss and a torch, optax
or Keras function. Each test below calls that library (Keras on the JAX backend) and
lossparity on inputs drawn from the family's own samplers, in float64, and checks the
mapping; a mapping that holds only under a condition is checked where the condition holds
and shown to fail where it does not. ``test_every_metric_difference_is_proved`` keeps the
recorded differences and the proofs in step.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F

import jax_impl
import reference
import torch_impl
from jax_impl.core import keras
from reference import metric as M
from reports.matrix import TOLERANCES, seed_for

RTOL, ATOL = TOLERANCES["float64"]
REDUCTIONS = ("none", "mean", "sum")
PROVED: set[tuple[str, str, str]] = set()


def proves(loss: str, library: str, builtin: str):
    """Marks a test as a proof of the Difference (loss, library, builtin)."""
    def mark(test):
        PROVED.add((loss, library, builtin))
        return test
    return mark


# -- helpers -----------------------------------------------------------------------

def draw_case(name: str, case: str | None = None):
    """Inputs (float64 NumPy) and the case's hyperparameters, drawn as the matrix draws them."""
    spec = reference.get(name)
    case = spec.case(case)
    return spec.draw(np.random.default_rng(seed_for(name, case.name)), case)


def cases(name: str) -> list:
    return [pytest.param(c.name, id=c.name) for c in reference.get(name).cases]


def ref(name: str, *inputs, **kw) -> np.ndarray:
    return reference.loss(name, *inputs, **{"reduction": "none", **kw})


def close(actual, expected, rtol=RTOL, atol=ATOL) -> None:
    actual = actual.detach().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    np.testing.assert_allclose(actual.astype(np.float64), np.asarray(expected, np.float64), rtol=rtol, atol=atol)


def differs(actual, expected) -> np.ndarray:
    """Elementwise: not equal within the float64 tolerances."""
    actual = actual.detach().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    return ~np.isclose(actual.astype(np.float64), np.asarray(expected, np.float64), rtol=RTOL, atol=ATOL)


def T(a, grad: bool = False) -> torch.Tensor:
    t = torch.as_tensor(np.array(a))
    return t.requires_grad_(True) if grad else t


def torch_grad(fn, *xs):
    """Value and gradients of sum(fn(*xs)) with respect to every x (NumPy in, NumPy out)."""
    ts = [T(x, grad=True) for x in xs]
    out = fn(*ts)
    grads = torch.autograd.grad(out.sum(), ts)
    return out.detach().numpy(), [g.numpy() for g in grads]


def jax_grad(fn, *xs):
    """Value and gradients of sum(fn(*xs)) with respect to every x (NumPy in, NumPy out)."""
    out, pullback = jax.vjp(fn, *[jnp.asarray(x) for x in xs])
    grads = pullback(jnp.ones_like(out))
    return np.asarray(out), [np.asarray(g) for g in grads]


def ref_grad(name, *inputs, **kw):
    """The reference's gradient of sum(loss) with reduction 'none'."""
    kw = {"reduction": "none", **kw}
    value = reference.loss(name, *inputs, **kw)
    return value, reference.vjp(name, *inputs, np.ones_like(value), **kw)


# == cosine_embedding_loss ===========================================================

@proves("cosine_embedding_loss", "torch", "torch.nn.functional.cosine_similarity")
@pytest.mark.parametrize("case", ["default", "margin=0.5", "unbatched"])
def test_cosine_embedding_loss_is_one_minus_torch_cosine_similarity_away_from_zero(case):
    (x1, x2, _), kw = draw_case("cosine_embedding_loss", case)
    ours = ref("cosine_embedding_loss", x1, x2, np.ones(x1.shape[:-1], np.int64), margin=kw.get("margin", 0.0))
    theirs = 1.0 - F.cosine_similarity(T(x1), T(x2), dim=-1)
    # the 1e-12 added to each squared norm changes cos by a relative 1e-12 / |x|^2 at most
    scale = 1e-12 / min((x1 * x1).sum(-1).min(), (x2 * x2).sum(-1).min())
    close(ours, theirs, rtol=0.0, atol=4 * scale + 1e-15)


@proves("cosine_embedding_loss", "torch", "torch.nn.functional.cosine_similarity")
def test_at_a_zero_vector_both_cosines_are_0_but_their_gradients_differ():
    (x1, x2, _), _ = draw_case("cosine_embedding_loss")
    x1 = x1.copy()
    x1[0] = 0.0
    target = np.ones(len(x1), np.int64)
    value, (d_x1, _) = ref_grad("cosine_embedding_loss", x1, x2, target)
    t_value, (t_x1, _) = torch_grad(lambda a, b: F.cosine_similarity(a, b, dim=-1), x1, x2)
    assert value[0] == 1.0 and t_value[0] == 0.0  # cos = 0 in both
    unit = x2[0] / np.linalg.norm(x2[0])
    close(-d_x1[0], unit / 1e-6, rtol=1e-9)  # d cos / d x1 = x2 / (1e-6 |x2|): sqrt(1e-12) divides
    close(t_x1[0], unit / 1e-8, rtol=1e-9)   # torch: x2 / (eps |x2|), eps = 1e-8 clamps the norm
    assert np.all(differs(-d_x1[0], t_x1[0]))


@proves("cosine_embedding_loss", "optax", "optax.losses.cosine_similarity, optax.losses.cosine_distance")
@pytest.mark.parametrize("case", cases("cosine_embedding_loss"))
def test_cosine_embedding_loss_from_optax_cosine_with_epsilon_1e_12(case):
    (x1, x2, y), kw = draw_case("cosine_embedding_loss", case)
    margin = kw.get("margin", 0.0)
    ours = ref("cosine_embedding_loss", x1, x2, y, margin=margin)
    distance = np.asarray(optax.losses.cosine_distance(x1, x2, epsilon=1e-12))
    similarity = np.asarray(optax.losses.cosine_similarity(x1, x2, epsilon=1e-12))
    mapped = np.where(y == 1, distance, np.maximum(0.0, similarity - margin))
    close(ours, mapped, rtol=1e-10, atol=1e-12)
    if case == "zero vectors":  # exactly at zero vectors: cos = 0 in both
        assert ours[0] == mapped[0] == 1.0 and ours[1] == mapped[1] == max(0.0, -margin)


@proves("cosine_embedding_loss", "keras", "keras.losses.cosine_similarity")
@pytest.mark.parametrize("case", ["default", "margin=0.5", "unbatched"])
def test_cosine_embedding_loss_is_one_plus_keras_cosine_similarity(case):
    (x1, x2, _), _ = draw_case("cosine_embedding_loss", case)
    ones = np.ones(x1.shape[:-1], np.int64)
    ours = ref("cosine_embedding_loss", x1, x2, ones)
    theirs = keras().losses.cosine_similarity(jnp.asarray(x2), jnp.asarray(x1))  # -cos, (y_true, y_pred)
    assert np.asarray(theirs).dtype == np.float64
    close(ours, 1.0 + np.asarray(theirs), rtol=1e-10, atol=1e-12)
    close(-np.asarray(theirs), M.cosine(x1, x2), rtol=1e-10, atol=1e-12)  # Keras's value is -cos


# == triplet_margin_loss ==============================================================

def _optax_triplet(a, p, n, k, margin, eps):
    return np.asarray(optax.losses.triplet_margin_loss(a, p, n, norm_degree=k, margin=margin, eps=eps))


@proves("triplet_margin_loss", "optax", "optax.losses.triplet_margin_loss")
@pytest.mark.parametrize("case", ["default", "margin=0.5", "zero distance"])
def test_triplet_margin_loss_is_optax_for_even_p_without_eps(case):
    (a, p, n), kw = draw_case("triplet_margin_loss", case)
    margin = kw.get("margin", 1.0)
    ours = ref("triplet_margin_loss", a, p, n, margin=margin, p=2, eps=0.0)
    tiny = np.finfo(np.float64).tiny
    close(ours, _optax_triplet(a, p, n, 2, margin, tiny))
    # gradients too; at the zero distance of 'zero distance' optax's eps=0 gives NaN, ours 0
    _, ours_g = ref_grad("triplet_margin_loss", a, p, n, margin=margin, p=2, eps=0.0)
    _, optax_g = jax_grad(lambda x, y, z: optax.losses.triplet_margin_loss(x, y, z, margin=margin, eps=tiny), a, p, n)
    for g, h in zip(ours_g, optax_g):
        close(g, h)
    if case == "zero distance":
        _, nan_g = jax_grad(lambda x, y, z: optax.losses.triplet_margin_loss(x, y, z, margin=margin, eps=0.0), a, p, n)
        assert np.isnan(nan_g[0][0]).all() and np.isfinite(ours_g[0][0]).all()


@proves("triplet_margin_loss", "optax", "optax.losses.triplet_margin_loss")
def test_optax_triplet_eps_inside_the_sum_and_odd_degrees_differ():
    (a, p, n), _ = draw_case("triplet_margin_loss", "p=3")
    # optax's default eps=1e-6 under the root against torch's 1e-6 on each component
    inside, ours = _optax_triplet(a, p, n, 2, 1.0, 1e-6), ref("triplet_margin_loss", a, p, n)
    active = (inside > 0) | (ours > 0)
    assert active.any() and np.all(differs(inside, ours)[active])
    # no absolute value: an odd degree sums signed cubes (a wrong value or NaN under the root)
    odd = _optax_triplet(a, p, n, 3, 1.0, 0.0)
    ours = ref("triplet_margin_loss", a, p, n, p=3, eps=0.0)
    assert np.any(np.isnan(odd) | differs(odd, ours))


@proves("triplet_margin_loss", "torch", "torch.nn.functional.pairwise_distance")
@pytest.mark.parametrize("case", ["default", "p=1", "p=3", "p=inf", "eps=0.1"])
def test_pairwise_distance_adds_eps_to_each_component(case):
    (a, p, n), kw = draw_case("triplet_margin_loss", case)
    q, eps = kw.get("p", 2), kw.get("eps", 1e-6)
    d = a.shape[-1]
    self_distance = F.pairwise_distance(T(a), T(a), p=q, eps=eps).numpy()
    close(self_distance, np.full(len(a), eps * d ** (1.0 / q) if q != math.inf else eps))
    forward, backward = (F.pairwise_distance(T(x), T(y), p=q, eps=eps).numpy() for x, y in ((a, p), (p, a)))
    close(forward, np.linalg.norm(a - p + eps, ord=q, axis=-1))
    close(backward, np.linalg.norm(p - a + eps, ord=q, axis=-1))
    assert np.any(differs(forward, backward))  # d(x, y) != d(y, x)
    close(F.pairwise_distance(T(a), T(p), p=q, eps=0.0), np.linalg.norm(a - p, ord=q, axis=-1))
    textbook = np.maximum(np.linalg.norm(a - p, ord=q, axis=-1) - np.linalg.norm(a - n, ord=q, axis=-1)
                          + kw.get("margin", 1.0), 0.0)
    close(ref("triplet_margin_loss", a, p, n, p=q, eps=0.0), textbook)
    close(F.triplet_margin_loss(T(a), T(p), T(n), p=q, eps=0.0, reduction="none"), textbook)


# == triplet_margin_with_distance_loss =================================================

@proves("triplet_margin_with_distance_loss", "torch", "torch.nn.functional.triplet_margin_with_distance_loss")
def test_torch_broadcasts_the_triplet_and_lossparity_asks_for_it_explicitly():
    (a, p, n), _ = draw_case("triplet_margin_with_distance_loss")
    n1 = n[:1]  # one negative for every anchor
    theirs = F.triplet_margin_with_distance_loss(T(a), T(p), T(n1), reduction="none")
    for pkg, variant in ((torch_impl, "module"), (torch_impl, "function")):
        with pytest.raises(ValueError, match="negative"):
            pkg.get("triplet_margin_with_distance_loss", variant)(T(a), T(p), T(n1), reduction="none")
    with pytest.raises(ValueError, match="negative"):
        ref("triplet_margin_with_distance_loss", a, p, n1)
    a_b, p_b, n_b = torch.broadcast_tensors(T(a), T(p), T(n1))
    close(torch_impl.get("triplet_margin_with_distance_loss", "module")(a_b, p_b, n_b, reduction="none"), theirs)
    close(ref("triplet_margin_with_distance_loss", a_b.numpy(), p_b.numpy(), n_b.numpy()), theirs)


@proves("triplet_margin_with_distance_loss", "torch", "torch.nn.functional.cosine_similarity")
@pytest.mark.parametrize("case", ["cosine distance", "cosine distance, swap"])
def test_matrix_cosine_distance_against_torch_documented_cosine_distance(case):
    (a, p, n), kw = draw_case("triplet_margin_with_distance_loss", case)
    ours = ref("triplet_margin_with_distance_loss", a, p, n, distance_function=M.COSINE_DISTANCE,
               swap=kw.get("swap", False))
    theirs = F.triplet_margin_with_distance_loss(
        T(a), T(p), T(n), distance_function=lambda x, y: 1.0 - F.cosine_similarity(x, y), swap=kw.get("swap", False),
        reduction="none")
    scale = 1e-12 / min((x * x).sum(-1).min() for x in (a, p, n))
    close(ours, theirs, rtol=0.0, atol=8 * scale + 1e-15)


# == cosine_similarity and cosine_distance (optax) ====================================

@proves("cosine_similarity", "optax", "optax.losses.cosine_similarity")
@proves("cosine_distance", "optax", "optax.losses.cosine_distance")
@pytest.mark.parametrize("name", ["cosine_similarity", "cosine_distance"])
def test_a_zero_vector_is_nan_with_optax_default_epsilon_and_finite_above_0(name):
    (x, y), kw = draw_case(name, "epsilon=0.1, zero and small vectors")
    optax_fn = getattr(optax.losses, name)
    # epsilon = 0 (both defaults): NaN exactly at the zero rows 0 and 1, in optax and in all five
    theirs, theirs_g = jax_grad(lambda a, b: optax_fn(a, b), x, y)
    nan = np.isnan(theirs)
    assert nan.tolist() == [True, True, False, False, False]
    ours = ref(name, x, y)
    assert np.array_equal(np.isnan(ours), nan)
    close(ours[~nan], theirs[~nan])
    assert np.isnan(theirs_g[0][0]).all() and np.isnan(reference.vjp(name, x, y, np.ones(5))[0][0]).all()
    for variant in ("module", "function"):
        assert np.array_equal(np.isnan(torch_impl.get(name, variant)(T(x), T(y)).numpy()), nan)
    for variant in ("autodiff", "custom_vjp"):
        assert np.array_equal(np.isnan(np.asarray(jax_impl.get(name, variant)(jnp.asarray(x), jnp.asarray(y)))), nan)
    # epsilon > 0: finite; a zero vector has cosine 0 and gradient y / (sqrt(epsilon) |y|)
    e = kw["epsilon"]
    ours, ours_g = ref_grad(name, x, y, epsilon=e)
    theirs, theirs_g = jax_grad(lambda a, b: optax_fn(a, b, epsilon=e), x, y)
    assert np.isfinite(ours).all()
    close(ours, theirs)
    for g, h in zip(ours_g, theirs_g):
        close(g, h)
    assert ours[0] == (0.0 if name == "cosine_similarity" else 1.0)
    sign = 1.0 if name == "cosine_similarity" else -1.0
    close(ours_g[0][0], sign * y[0] / (math.sqrt(e) * np.linalg.norm(y[0])))


@proves("cosine_similarity", "optax", "optax.losses.cosine_similarity")
def test_optax_epsilon_floors_the_squared_norm_not_the_norm():
    (x, y), kw = draw_case("cosine_similarity", "epsilon=0.1, zero and small vectors")
    e = kw["epsilon"]
    small = 2  # |x_2|^2 = e / 4: below the floor on the square, above a floor e on the norm
    assert (x[small] @ x[small]) < e < np.linalg.norm(x[small])
    theirs = np.asarray(optax.losses.cosine_similarity(x, y, epsilon=e))
    floor_on_square = x[small] @ y[small] / (math.sqrt(e) * np.linalg.norm(y[small]))
    floor_on_norm = x[small] @ y[small] / (max(np.linalg.norm(x[small]), e) * np.linalg.norm(y[small]))
    close(theirs[small], floor_on_square)
    close(ref("cosine_similarity", x, y, epsilon=e)[small], floor_on_square)
    assert differs(theirs[small], floor_on_norm)


@proves("cosine_similarity", "torch", "torch.nn.functional.cosine_similarity")
@proves("cosine_distance", "torch", "torch.nn.functional.cosine_similarity")
@pytest.mark.parametrize("name", ["cosine_similarity", "cosine_distance"])
@pytest.mark.parametrize("case", ["default", "epsilon=0.1, zero and small vectors", "epsilon=1e-8", "axis=0",
                                  "3-D, last axis", "unbatched"])
def test_optax_cosine_is_torch_cosine_similarity_with_eps_sqrt_epsilon(name, case):
    (x, y), kw = draw_case(name, case)
    e, axis = kw.get("epsilon", 0.0), kw.get("axis", -1)

    def theirs_fn(a, b):
        cos = F.cosine_similarity(a, b, dim=axis, eps=math.sqrt(e))
        return cos if name == "cosine_similarity" else 1.0 - cos

    theirs, theirs_g = torch_grad(theirs_fn, x, y)
    ours, ours_g = ref_grad(name, x, y, epsilon=e, axis=axis)
    close(ours, theirs)
    # gradients agree except on the slices whose squared norm lies strictly inside (0, epsilon)
    inside = [np.broadcast_to(np.expand_dims(((v * v).sum(axis) > 0) & ((v * v).sum(axis) < e), axis), x.shape)
              for v in (x, y)]
    below = inside[0] | inside[1]
    for g, h, own in zip(ours_g, theirs_g, inside):
        close(g[~below], h[~below])
        assert np.all(differs(g, h)[own])  # below the floor torch differentiates the unclamped norm
    assert below.any() == (case == "epsilon=0.1, zero and small vectors")


@proves("cosine_similarity", "keras", "keras.losses.cosine_similarity")
@pytest.mark.parametrize("case", ["default", "axis=0", "3-D, last axis", "epsilon=0.1, zero and small vectors"])
def test_keras_cosine_similarity_is_the_negated_cosine_with_epsilon_1e_14(case):
    (x, y), kw = draw_case("cosine_similarity", case)
    axis = kw.get("axis", -1)
    theirs, theirs_g = jax_grad(lambda t, p: keras().losses.cosine_similarity(t, p, axis=axis), y, x)
    assert theirs.dtype == np.float64
    ours, (d_x, d_y) = ref_grad("cosine_similarity", x, y, epsilon=1e-14, axis=axis)
    close(theirs, -ours)
    zero = [np.broadcast_to(np.expand_dims((v * v).sum(axis) == 0, axis), v.shape) for v in (x, y)]
    close(theirs_g[1][~zero[0]], -d_x[~zero[0]])  # Keras's y_pred is our predictions
    close(theirs_g[0][~zero[1]], -d_y[~zero[1]])
    if case == "epsilon=0.1, zero and small vectors":
        # a zero vector: value 0 (optax's default gives NaN), but Keras's rsqrt(0) makes its gradient NaN
        assert theirs[0] == 0.0 and np.isnan(ref("cosine_similarity", x, y)[0])
        assert np.isnan(theirs_g[1][0]).all() and np.isfinite(d_x[0]).all()
    else:
        assert not (zero[0].any() or zero[1].any())


@proves("cosine_distance", "torch", "torch.nn.functional.cosine_embedding_loss")
@pytest.mark.parametrize("case", ["default", "epsilon=0.1, zero and small vectors", "unbatched"])
def test_cosine_distance_is_torch_cosine_embedding_loss_with_positive_labels(case):
    (x, y), _ = draw_case("cosine_distance", case)
    theirs = F.cosine_embedding_loss(T(x), T(y), T(np.ones(x.shape[:-1], np.int64)), reduction="none")
    ours = ref("cosine_distance", x, y, epsilon=1e-12)
    n2 = np.minimum((x * x).sum(-1), (y * y).sum(-1))
    away = n2 > 1e-3
    close(ours[away], theirs.numpy()[away], rtol=0.0, atol=4e-12 / n2[away].min() + 1e-15)
    zero = n2 == 0
    assert np.array_equal(ours[zero], theirs.numpy()[zero]) and (ours[zero] == 1.0).all()
    assert zero.any() == (case == "epsilon=0.1, zero and small vectors")


# == ntxent ============================================================================

@proves("ntxent", "optax", "optax.losses.ntxent")
@pytest.mark.parametrize("case", cases("ntxent"))
def test_ntxent_every_reduction_is_optax_scalar(case):
    (e, y), kw = draw_case("ntxent", case)
    t = kw.get("temperature", 0.07)
    value_and_grad = jax.jit(jax.value_and_grad(optax.losses.ntxent), static_argnums=2)
    theirs, theirs_g = (np.asarray(v) for v in value_and_grad(jnp.asarray(e), jnp.asarray(y), t))
    assert theirs.shape == ()
    for reduction in REDUCTIONS:
        ours = reference.loss("ntxent", e, y, temperature=t, reduction=reduction)
        assert ours.shape == ()
        close(ours, theirs)
    _, (g,) = ref_grad("ntxent", e, y, temperature=t)
    close(g, theirs_g)


@proves("ntxent", "optax", "optax.losses.ntxent")
def test_ntxent_without_a_positive_pair_is_nan_in_optax_and_rejected_here():
    (e, y), _ = draw_case("ntxent")
    distinct = np.arange(len(y))
    assert np.isnan(optax.losses.ntxent(jnp.asarray(e), jnp.asarray(distinct)))
    with pytest.raises(ValueError, match="labels"):
        reference.loss("ntxent", e, distinct)
    with pytest.raises(ValueError, match="labels"):
        torch_impl.get("ntxent", "function")(T(e), T(distinct))
    with pytest.raises(ValueError, match="labels"):
        jax_impl.get("ntxent", "autodiff")(jnp.asarray(e), jnp.asarray(distinct))


@proves("ntxent", "torch", "torch.nn.functional.cross_entropy")
@pytest.mark.parametrize("case", cases("ntxent"))
def test_ntxent_is_torch_cross_entropy_over_positive_pairs(case):
    (e, y), kw = draw_case("ntxent", case)
    t = kw.get("temperature", 0.07)

    def theirs_fn(emb):
        x = F.cosine_similarity(emb[None], emb[:, None], dim=-1, eps=math.sqrt(np.finfo(np.float64).eps)) / t
        labels = T(y)
        same = labels[:, None] == labels[None, :]
        i, j = (same & ~torch.eye(len(y), dtype=torch.bool)).nonzero(as_tuple=True)
        rows = torch.cat([x[i, j][:, None], torch.where(~same[i], x[i], -math.inf)], dim=1)
        return F.cross_entropy(rows, torch.zeros(len(i), dtype=torch.long), reduction="mean")

    theirs, (theirs_g,) = torch_grad(theirs_fn, e)
    ours, (ours_g,) = ref_grad("ntxent", e, y, temperature=t)
    close(ours, theirs)
    close(ours_g, theirs_g)


# == ranking_softmax_loss =============================================================

@proves("ranking_softmax_loss", "optax", "optax.losses.ranking_softmax_loss")
@pytest.mark.parametrize("case", cases("ranking_softmax_loss"))
def test_reduction_is_optax_reduce_fn(case):
    (s, y), kw = draw_case("ranking_softmax_loss", case)
    jkw = {k: jnp.asarray(v) for k, v in kw.items()}
    for reduction, reduce_fn in (("none", None), ("mean", jnp.mean), ("sum", jnp.sum)):
        theirs, (theirs_g,) = jax_grad(
            lambda x: optax.losses.ranking_softmax_loss(x, jnp.asarray(y), reduce_fn=reduce_fn, **jkw), s)
        ours = reference.loss("ranking_softmax_loss", s, y, reduction=reduction, **kw)
        close(ours, theirs)
        g = reference.vjp("ranking_softmax_loss", s, y, np.ones_like(ours), reduction=reduction, **kw)[0]
        close(g, theirs_g)
    # optax's default call is one number: lossparity's mean, not its default 'none'
    default = np.asarray(optax.losses.ranking_softmax_loss(jnp.asarray(s), jnp.asarray(y), **jkw))
    close(reference.loss("ranking_softmax_loss", s, y, reduction="mean", **kw), default)
    if "where" in kw:  # the masked mean divides by the lists that keep an item, not by all lists
        per_list = ref("ranking_softmax_loss", s, y, **kw)
        kept = kw["where"].any(-1)
        assert not kept.all()
        close(default, per_list.sum() / kept.sum())
        assert differs(default, per_list.mean())


@proves("ranking_softmax_loss", "optax", "optax.losses.ranking_softmax_loss")
def test_optax_masked_mean_of_no_list_is_0():
    (s, y), _ = draw_case("ranking_softmax_loss")
    nothing = np.zeros(s.shape, dtype=bool)
    assert float(optax.losses.ranking_softmax_loss(jnp.asarray(s), jnp.asarray(y), where=jnp.asarray(nothing))) == 0.0
    assert reference.loss("ranking_softmax_loss", s, y, where=nothing, reduction="mean") == 0.0


@proves("ranking_softmax_loss", "torch", "torch.nn.functional.cross_entropy")
@pytest.mark.parametrize("case", ["default", "weights", "integer labels", "one list",
                                  "3-D, lists along the last axis"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ranking_softmax_loss_is_torch_cross_entropy_with_probability_targets(case, reduction):
    (s, y), kw = draw_case("ranking_softmax_loss", case)
    target = y.astype(np.float64) * kw.get("weights", 1.0)

    def theirs_fn(x):
        if x.dim() == 1:
            return F.cross_entropy(x, T(target), reduction=reduction)
        return F.cross_entropy(x.movedim(-1, 1), T(target).movedim(-1, 1), reduction=reduction)

    theirs, (theirs_g,) = torch_grad(theirs_fn, s)
    ours = reference.loss("ranking_softmax_loss", s, y, reduction=reduction, **kw)
    close(ours, theirs)
    close(reference.vjp("ranking_softmax_loss", s, y, np.ones_like(ours), reduction=reduction, **kw)[0], theirs_g)


@proves("ranking_softmax_loss", "torch", "torch.nn.functional.cross_entropy")
def test_torch_cross_entropy_has_no_mask_for_where():
    (s, y), kw = draw_case("ranking_softmax_loss", "where, a list with no item")
    where = kw["where"]
    masked = np.where(where, s, -np.inf)
    theirs = F.cross_entropy(T(masked), T(np.where(where, y, 0.0)), reduction="none").numpy()
    ours = ref("ranking_softmax_loss", s, y, where=where)
    assert np.isnan(theirs[~where.all(-1)]).all()  # -inf logit times 0 target
    assert np.isfinite(ours).all()


# == circle (Keras) ===================================================================

def _keras_circle(y, x, **kw):
    return keras().losses.circle(jnp.asarray(y), x, **{k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v)
                                                        for k, v in kw.items()})


@proves("circle", "keras", "keras.losses.circle")
@pytest.mark.parametrize("case", ["default", "gamma=4", "ref_labels and ref_embeddings (M=5), gamma=4"])
def test_keras_circle_does_not_normalize_its_embeddings(case):
    (y, x), kw = draw_case("circle", case)
    raw = x * np.random.default_rng(seed_for("circle", "differences/raw")).uniform(0.5, 1.5, (len(x), 1))
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    for embeddings in (raw, unit):
        theirs, (theirs_g,) = jax_grad(lambda e: _keras_circle(y, e, **kw), embeddings)
        assert theirs.dtype == np.float64  # Keras's function computes in the inputs' dtype
        ours, ours_g = ref_grad("circle", y, embeddings, **kw)
        close(ours, theirs)
        close(ours_g[0], theirs_g)
    # the raw rows are not the unit rows to Keras: the loss of the directions needs x / |x|
    assert np.any(differs(np.asarray(_keras_circle(y, jnp.asarray(raw), **kw)), ref("circle", y, unit, **kw)))


@proves("circle", "keras", "keras.losses.Circle")
@pytest.mark.parametrize("case", ["default", "a class of one (no positive), gamma=4"])
def test_keras_circle_class_divides_by_the_rows_with_a_positive_loss(case):
    (y, x), kw = draw_case("circle", case)
    gamma, margin = kw.get("gamma", 80.0), kw.get("margin", 0.4)
    per_row = ref("circle", y, x, gamma=gamma, margin=margin)
    positive = (per_row > 0).sum()
    k = keras()
    old = k.config.floatx()
    k.config.set_floatx("float64")  # the class computes in floatx; float64 for a float64 comparison
    try:
        mean_like = k.losses.Circle(gamma=gamma, margin=margin)(jnp.asarray(y), jnp.asarray(x))
        summed = k.losses.Circle(gamma=gamma, margin=margin, reduction="sum")(jnp.asarray(y), jnp.asarray(x))
    finally:
        k.config.set_floatx(old)
    close(mean_like, reference.loss("circle", y, x, gamma=gamma, margin=margin, reduction="sum") / positive)
    close(summed, reference.loss("circle", y, x, gamma=gamma, margin=margin, reduction="sum"))
    if positive < len(per_row):  # a row of loss 0 leaves the class's mean: not lossparity's mean
        assert differs(mean_like, reference.loss("circle", y, x, gamma=gamma, margin=margin, reduction="mean"))
    assert case != "a class of one (no positive), gamma=4" or positive < len(per_row)


# == bookkeeping ======================================================================

def test_every_metric_difference_is_proved():
    recorded = {(name, d.library, d.builtin) for name in reference.names()
                if reference.get(name).family == "metric" for d in reference.get(name).differences}
    assert recorded == PROVED
