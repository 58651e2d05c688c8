"""Ranking/metric losses in JAX: cosine_embedding_loss, triplet_margin_loss,
triplet_margin_with_distance_loss.

Each loss reads as in ``reference/metric.py``: a jax.numpy function (the ``autodiff``
variant) and a ``jax.custom_vjp`` whose backward is the reference's VJP.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from reference.metric import EPSILON
from reference.reductions import reduce, reduce_vjp
from reference.spec import PerFramework
from .core import autodiff, builtin, custom_vjp, masked_logsumexp


# -- the cosine ----------------------------------------------------------------------------

def _cosine_parts(x1, x2):
    m1 = (x1 * x1).sum(-1) + EPSILON
    m2 = (x2 * x2).sum(-1) + EPSILON
    root = jnp.sqrt(m1 * m2)
    return (x1 * x2).sum(-1) / root, m1, m2, root


def _cosine_vjp(g, x1, x2):
    cos, m1, m2, root = (v[..., None] for v in _cosine_parts(x1, x2))
    g = g[..., None]
    return g * (x2 / root - cos * x1 / m1), g * (x1 / root - cos * x2 / m2)


def _hinge(h):
    # max(h, 0) with slope 1 at h = 0, as torch's clamp_min (jnp.maximum would give 1/2); NaN stays
    # NaN, as in clamp_min (a comparison h >= 0 would read it as 0)
    return jnp.where(h < 0, 0.0, h)


# -- cosine_embedding_loss ---------------------------------------------------------------

def cosine_embedding_loss(input1, input2, target, margin=0.0, reduction="mean"):
    cos = _cosine_parts(input1, input2)[0]
    out = jnp.where(target == 1, 1.0 - cos, 0.0) + jnp.where(target == -1, _hinge(cos - margin), 0.0)
    return reduce(out, reduction)


def _cosine_embedding_loss_fwd(input1, input2, target, margin, reduction):
    return cosine_embedding_loss(input1, input2, target, margin, reduction), (input1, input2, target)


def _cosine_embedding_loss_bwd(margin, reduction, residuals, cotangent):
    input1, input2, target = residuals
    cos = _cosine_parts(input1, input2)[0]
    slope = ((target == -1) & (cos - margin >= 0)).astype(cos.dtype) - (target == 1).astype(cos.dtype)
    g = reduce_vjp(cotangent, reduction, cos.size) * slope
    d_input1, d_input2 = _cosine_vjp(g, input1, input2)
    return d_input1, d_input2, None


cosine_embedding_loss_custom_vjp = jax.custom_vjp(cosine_embedding_loss, nondiff_argnums=(3, 4))
cosine_embedding_loss_custom_vjp.defvjp(_cosine_embedding_loss_fwd, _cosine_embedding_loss_bwd)
autodiff("cosine_embedding_loss", cosine_embedding_loss)
custom_vjp("cosine_embedding_loss", cosine_embedding_loss_custom_vjp, _cosine_embedding_loss_fwd,
           _cosine_embedding_loss_bwd)


# -- the p-norm and pairwise_distance --------------------------------------------------------

def _pnorm(v, p):
    """|v|_p along the last axis with torch's derivatives at 0: |v| is written v * sign(v)
    (slope sign(0) = 0, where jnp.abs has slope 1), and the root is taken only where the
    sum is not 0 (a zero norm has gradient 0, not 0 * inf = NaN; a NaN sum stays NaN)."""
    a = v * jnp.sign(v)
    if p == math.inf:
        return a.max(-1)
    if p == 1:
        return a.sum(-1)
    s = (v * v).sum(-1) if p == 2 else (a ** p).sum(-1)
    zero = s == 0
    return jnp.where(zero, 0.0, jnp.where(zero, 1.0, s) ** (1.0 / p))


def _pairwise_distance(x1, x2, p=2.0, eps=1e-6):
    return _pnorm(x1 - x2 + eps, p)


def _pnorm_grad(v, p, norm):
    n = norm[..., None]
    if p == math.inf:
        mask = (jnp.abs(v) == n).astype(v.dtype)
        return jnp.sign(v) * mask / mask.sum(-1, keepdims=True)
    if p == 1:
        return jnp.sign(v)
    safe = jnp.where(n > 0, n, 1.0)
    if p == 2:
        return jnp.where(n > 0, v / safe, 0.0)
    return jnp.where(n > 0, jnp.sign(v) * (jnp.abs(v) / safe) ** (p - 1), 0.0)


def _pairwise_with_vjp(x1, x2, p, eps):
    """The distance and the hand-written pullback ``g -> (d_x1, d_x2)``."""
    v = x1 - x2 + eps
    d = _pnorm(v, p)

    def pullback(g):
        u = g[..., None] * _pnorm_grad(v, p, d)
        return u, -u
    return d, pullback


# -- the triplet hinge, shared by both triplet losses -------------------------------------

def _triplet(d_pos, d_an, d_pn, margin, swap):
    d_neg = jnp.minimum(d_an, d_pn) if swap else d_an  # jnp.minimum splits a tie 1/2, 1/2 as torch
    return _hinge(margin + d_pos - d_neg)


def _triplet_bwd(cotangent, reduction, ap, an, pn, margin, swap):
    """Pull the cotangent back through the hinge and the swap; ``ap``, ``an``, ``pn`` are
    (distance, pullback) pairs, ``pn`` None without swap."""
    (d_ap, vjp_ap), (d_an, vjp_an) = ap, an
    if swap:
        d_pn, vjp_pn = pn
        w = jnp.where(d_pn < d_an, 1.0, jnp.where(d_pn == d_an, 0.5, 0.0)).astype(d_an.dtype)
        d_neg = jnp.minimum(d_an, d_pn)
    else:
        w, d_neg = jnp.zeros_like(d_an), d_an
    active = (margin + d_ap - d_neg >= 0).astype(d_ap.dtype)
    g = reduce_vjp(cotangent, reduction, d_ap.size) * active
    d_anchor, d_positive = vjp_ap(g)
    d_anchor2, d_negative = vjp_an(-g * (1.0 - w))
    d_anchor = d_anchor + d_anchor2
    if swap:
        d_positive2, d_negative2 = vjp_pn(-g * w)
        d_positive, d_negative = d_positive + d_positive2, d_negative + d_negative2
    return d_anchor, d_positive, d_negative


# -- triplet_margin_loss ---------------------------------------------------------------

def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False, reduction="mean"):
    d_ap = _pairwise_distance(anchor, positive, p, eps)
    d_an = _pairwise_distance(anchor, negative, p, eps)
    d_pn = _pairwise_distance(positive, negative, p, eps) if swap else None
    return reduce(_triplet(d_ap, d_an, d_pn, margin, swap), reduction)


def _triplet_margin_loss_fwd(anchor, positive, negative, margin, p, eps, swap, reduction):
    loss = triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap, reduction)
    return loss, (anchor, positive, negative)


def _triplet_margin_loss_bwd(margin, p, eps, swap, reduction, residuals, cotangent):
    anchor, positive, negative = residuals
    pn = _pairwise_with_vjp(positive, negative, p, eps) if swap else None
    return _triplet_bwd(cotangent, reduction, _pairwise_with_vjp(anchor, positive, p, eps),
                        _pairwise_with_vjp(anchor, negative, p, eps), pn, margin, swap)


triplet_margin_loss_custom_vjp = jax.custom_vjp(triplet_margin_loss, nondiff_argnums=(3, 4, 5, 6, 7))
triplet_margin_loss_custom_vjp.defvjp(_triplet_margin_loss_fwd, _triplet_margin_loss_bwd)
autodiff("triplet_margin_loss", triplet_margin_loss)
custom_vjp("triplet_margin_loss", triplet_margin_loss_custom_vjp, _triplet_margin_loss_fwd,
           _triplet_margin_loss_bwd)


# -- triplet_margin_with_distance_loss -----------------------------------------------------

def _jax_distance(distance_function):
    if isinstance(distance_function, PerFramework):
        return distance_function.jax
    return distance_function


def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None, margin=1.0,
                                      swap=False, reduction="mean"):
    dist = _jax_distance(distance_function)
    dist = _pairwise_distance if dist is None else dist
    d_ap, d_an = dist(anchor, positive), dist(anchor, negative)
    d_pn = dist(positive, negative) if swap else None
    return reduce(_triplet(d_ap, d_an, d_pn, margin, swap), reduction)


def _triplet_margin_with_distance_loss(anchor, positive, negative, distance_function, margin, swap, reduction):
    """The custom_vjp's positional form. Its backward covers the loss's own structure
    (the hinge, the swap selection, the reduction); a user's distance is arbitrary code,
    so its own VJP comes from JAX's autodiff of that callable (``jax.vjp``); the default
    ``pairwise_distance`` uses the hand-written norm gradient."""
    return triplet_margin_with_distance_loss(anchor, positive, negative, distance_function=distance_function,
                                             margin=margin, swap=swap, reduction=reduction)


def _triplet_margin_with_distance_loss_fwd(anchor, positive, negative, distance_function, margin, swap, reduction):
    loss = _triplet_margin_with_distance_loss(anchor, positive, negative, distance_function, margin, swap, reduction)
    return loss, (anchor, positive, negative)


def _triplet_margin_with_distance_loss_bwd(distance_function, margin, swap, reduction, residuals, cotangent):
    anchor, positive, negative = residuals
    f = _jax_distance(distance_function)

    def with_vjp(x1, x2):
        if f is None:
            return _pairwise_with_vjp(x1, x2, 2.0, 1e-6)
        return jax.vjp(f, x1, x2)

    pn = with_vjp(positive, negative) if swap else None
    return _triplet_bwd(cotangent, reduction, with_vjp(anchor, positive), with_vjp(anchor, negative), pn,
                        margin, swap)


triplet_margin_with_distance_loss_custom_vjp = jax.custom_vjp(_triplet_margin_with_distance_loss,
                                                              nondiff_argnums=(3, 4, 5, 6))
triplet_margin_with_distance_loss_custom_vjp.defvjp(_triplet_margin_with_distance_loss_fwd,
                                                    _triplet_margin_with_distance_loss_bwd)
autodiff("triplet_margin_with_distance_loss", triplet_margin_with_distance_loss)
custom_vjp("triplet_margin_with_distance_loss", triplet_margin_with_distance_loss_custom_vjp,
           _triplet_margin_with_distance_loss_fwd, _triplet_margin_with_distance_loss_bwd)


# -- the built-ins, the outside oracle ---------------------------------------------

def _optax_cosine_embedding_loss(input1, input2, target, margin=0.0, reduction="mean"):
    """optax's cosine with epsilon=1e-12 (a floor on each squared norm, where torch adds
    1e-12): equal to torch's up to a relative 1e-12 / |x|^2, and exactly at zero vectors.
    optax has no labels, hinge or reduction: those are torch's, applied here."""
    import optax
    distance = optax.losses.cosine_distance(input1, input2, epsilon=EPSILON)
    similarity = optax.losses.cosine_similarity(input1, input2, epsilon=EPSILON)
    out = jnp.where(target == 1, distance, 0.0) + jnp.where(target == -1, _hinge(similarity - margin), 0.0)
    return reduce(out, reduction)


def _optax_triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False,
                               reduction="mean"):
    """optax computes (sum((a - p) ** k) + eps) ** (1 / k): for an even k and torch's eps = 0
    that is torch's distance; optax's eps is set to the dtype's smallest normal number,
    which changes no nonzero distance and keeps the gradient at a zero distance 0
    (optax's eps = 0 gives NaN there)."""
    import optax
    if swap:
        raise NotImplementedError("optax.losses.triplet_margin_loss has no swap")
    if eps != 0:
        raise NotImplementedError("optax adds eps to the sum of powers, torch to each difference: only eps=0 agrees")
    if not (float(p).is_integer() and p % 2 == 0):
        raise NotImplementedError("optax takes no absolute value: only an even p agrees with torch")
    tiny = jnp.finfo(anchor.dtype).tiny
    loss = optax.losses.triplet_margin_loss(anchor, positive, negative, norm_degree=p, margin=margin, eps=tiny)
    return reduce(loss, reduction)


builtin("cosine_embedding_loss", _optax_cosine_embedding_loss)
builtin("triplet_margin_loss", _optax_triplet_margin_loss)


# =========================================================================================
# Part 2: optax's and Keras's metric-learning and ranking losses, read as in reference/metric.py
# =========================================================================================

from reference.metric import _reduced_axes  # noqa: E402  (optax's axis as sorted non-negative axes)
from .core import keras  # noqa: E402


def _slope(x):
    """The derivative of max(x, 0) as jnp.maximum's backward: 1 above 0, 1/2 at a tie, 0 below."""
    return (x > 0).astype(x.dtype) + 0.5 * (x == 0).astype(x.dtype)


# -- optax's cosine_similarity and cosine_distance ----------------------------------------

def _optax_cosine_parts(predictions, targets, epsilon, axis, where):
    axes = _reduced_axes(axis, predictions.ndim)
    w = jnp.ones(predictions.shape, dtype=bool) if where is None else where
    n2p = jnp.where(w, predictions * predictions, 0.0).sum(axes, keepdims=True)
    n2t = jnp.where(w, targets * targets, 0.0).sum(axes, keepdims=True)
    rp, rt = jnp.sqrt(jnp.maximum(n2p, epsilon)), jnp.sqrt(jnp.maximum(n2t, epsilon))
    cos = jnp.where(w, (predictions / rp) * (targets / rt), 0.0).sum(axes)
    return cos, w, n2p, n2t, rp, rt


def _optax_cosine_bwd_parts(epsilon, axis, reduction, predictions, targets, where, cotangent):
    cos, w, n2p, n2t, rp, rt = _optax_cosine_parts(predictions, targets, epsilon, axis, where)
    g = jnp.broadcast_to(reduce_vjp(cotangent, reduction, cos.size), cos.shape).reshape(n2p.shape)
    c = cos.reshape(n2p.shape)
    d_p = jnp.where(w, g * (targets / (rp * rt) - _slope(n2p - epsilon) * c * predictions / (rp * rp)), 0.0)
    d_t = jnp.where(w, g * (predictions / (rp * rt) - _slope(n2t - epsilon) * c * targets / (rt * rt)), 0.0)
    return d_p, d_t


def cosine_similarity(predictions, targets, epsilon=0.0, axis=-1, where=None, reduction="none"):
    return reduce(_optax_cosine_parts(predictions, targets, epsilon, axis, where)[0], reduction)


def _cosine_similarity_fwd(predictions, targets, epsilon, axis, where, reduction):
    return cosine_similarity(predictions, targets, epsilon, axis, where, reduction), (predictions, targets, where)


def _cosine_similarity_bwd(epsilon, axis, reduction, residuals, cotangent):
    predictions, targets, where = residuals
    d_p, d_t = _optax_cosine_bwd_parts(epsilon, axis, reduction, predictions, targets, where, cotangent)
    return d_p, d_t, None


cosine_similarity_custom_vjp = jax.custom_vjp(cosine_similarity, nondiff_argnums=(2, 3, 5))
cosine_similarity_custom_vjp.defvjp(_cosine_similarity_fwd, _cosine_similarity_bwd)
autodiff("cosine_similarity", cosine_similarity)
custom_vjp("cosine_similarity", cosine_similarity_custom_vjp, _cosine_similarity_fwd, _cosine_similarity_bwd)


def cosine_distance(predictions, targets, epsilon=0.0, axis=-1, where=None, reduction="none"):
    return reduce(1.0 - _optax_cosine_parts(predictions, targets, epsilon, axis, where)[0], reduction)


def _cosine_distance_fwd(predictions, targets, epsilon, axis, where, reduction):
    return cosine_distance(predictions, targets, epsilon, axis, where, reduction), (predictions, targets, where)


def _cosine_distance_bwd(epsilon, axis, reduction, residuals, cotangent):
    predictions, targets, where = residuals
    d_p, d_t = _optax_cosine_bwd_parts(epsilon, axis, reduction, predictions, targets, where, cotangent)
    return -d_p, -d_t, None


cosine_distance_custom_vjp = jax.custom_vjp(cosine_distance, nondiff_argnums=(2, 3, 5))
cosine_distance_custom_vjp.defvjp(_cosine_distance_fwd, _cosine_distance_bwd)
autodiff("cosine_distance", cosine_distance)
custom_vjp("cosine_distance", cosine_distance_custom_vjp, _cosine_distance_fwd, _cosine_distance_bwd)


# -- optax's ntxent ---------------------------------------------------------------------

def _ntxent_parts(embeddings, labels, temperature):
    eps = jnp.finfo(embeddings.dtype).eps
    n2 = (embeddings * embeddings).sum(-1)
    r = jnp.sqrt(jnp.maximum(n2, eps))
    u = embeddings / r[:, None]
    x = (u @ u.T) / temperature
    same = labels[:, None] == labels[None, :]
    pos = same & ~jnp.eye(len(labels), dtype=bool)
    neg = ~same
    lse_neg, _ = masked_logsumexp(x, 1, neg, keepdims=False)
    norm = jnp.logaddexp(lse_neg[:, None], x)  # the log-normalizer of each pair (i, j)
    return x, pos, neg, lse_neg, norm, n2, r, u, eps


def ntxent(embeddings, labels, temperature=0.07, reduction="none"):
    x, pos, neg, lse_neg = _ntxent_parts(embeddings, labels, temperature)[:4]
    # norm - x as softplus(lse_neg - x): no cancellation where the loss is small (half precision)
    loss = jnp.where(pos, jax.nn.softplus(lse_neg[:, None] - x), 0.0).sum() / pos.sum().astype(x.dtype)
    return reduce(loss, reduction)


def _ntxent_fwd(embeddings, labels, temperature, reduction):
    return ntxent(embeddings, labels, temperature, reduction), (embeddings, labels)


def _ntxent_bwd(temperature, reduction, residuals, cotangent):
    embeddings, labels = residuals
    x, pos, neg, lse_neg, norm, n2, r, u, eps = _ntxent_parts(embeddings, labels, temperature)
    g = reduce_vjp(cotangent, reduction, 1)
    shift = jnp.where(jnp.isfinite(lse_neg), lse_neg, 0.0)
    rest = jnp.where(pos, jax.nn.sigmoid(lse_neg[:, None] - x), 0.0)  # 1 - pi_ij = e^{M_i - L_ij}
    pair = rest.sum(1)  # sum_j e^{M_i - L_ij}
    g_neg = jnp.where(neg, jnp.exp(x - shift[:, None]), 0.0) * pair[:, None]
    g_pos = -rest
    G = g * (g_pos + g_neg) / (pos.sum().astype(x.dtype) * temperature)
    v = (G + G.T) @ u
    d = (v - _slope(n2 - eps)[:, None] * (u * v).sum(-1, keepdims=True) * u) / r[:, None]
    return d, None


ntxent_custom_vjp = jax.custom_vjp(ntxent, nondiff_argnums=(2, 3))
ntxent_custom_vjp.defvjp(_ntxent_fwd, _ntxent_bwd)
autodiff("ntxent", ntxent)
custom_vjp("ntxent", ntxent_custom_vjp, _ntxent_fwd, _ntxent_bwd)


# -- optax's ranking_softmax_loss ------------------------------------------------------

def _ranking_parts(logits, labels, where, weights):
    valid = jnp.ones(logits.shape, dtype=bool) if where is None else where
    y = jnp.where(valid, labels.astype(logits.dtype), 0.0)
    if weights is not None:
        y = y * weights
    lse, _ = masked_logsumexp(logits, -1, where, keepdims=False, empty=0.0)
    per_list = -jnp.where(valid, y * (logits - lse[..., None]), 0.0).sum(-1)
    counted = jnp.maximum(valid.any(-1).sum(), 1).astype(logits.dtype) if where is not None else max(per_list.size, 1)
    return y, valid, lse, per_list, counted


def ranking_softmax_loss(logits, labels, *, where=None, weights=None, reduction="none"):
    _, _, _, per_list, counted = _ranking_parts(logits, labels, where, weights)
    return reduce(per_list, reduction, counted)


def _ranking_softmax_loss(logits, labels, where, weights, reduction):
    """The custom_vjp's positional form."""
    return ranking_softmax_loss(logits, labels, where=where, weights=weights, reduction=reduction)


def _ranking_softmax_loss_fwd(logits, labels, where, weights, reduction):
    """The loss, and the softmax over the kept items, the weighted labels, the mask and the
    mean's divisor: all the backward reads (it computes nothing of the forward again)."""
    y, valid, lse, per_list, counted = _ranking_parts(logits, labels, where, weights)
    p = jnp.where(valid, jnp.exp(logits - lse[..., None]), 0.0)
    return reduce(per_list, reduction, counted), (p, y, valid, counted)


def _ranking_softmax_loss_bwd(reduction, residuals, cotangent):
    p, y, valid, counted = residuals
    lists = p.shape[:-1]
    g = jnp.broadcast_to(reduce_vjp(cotangent, reduction, math.prod(lists), counted), lists)
    d = jnp.where(valid, g[..., None] * (p * y.sum(-1, keepdims=True) - y), 0.0)
    return d, None, None, None


ranking_softmax_loss_custom_vjp = jax.custom_vjp(_ranking_softmax_loss, nondiff_argnums=(4,))
ranking_softmax_loss_custom_vjp.defvjp(_ranking_softmax_loss_fwd, _ranking_softmax_loss_bwd)
autodiff("ranking_softmax_loss", ranking_softmax_loss)
custom_vjp("ranking_softmax_loss", ranking_softmax_loss_custom_vjp, _ranking_softmax_loss_fwd,
           _ranking_softmax_loss_bwd)


# -- Keras's circle ---------------------------------------------------------------------

def _circle_parts(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin):
    ref = y_pred if ref_embeddings is None else ref_embeddings
    ref_y = y_true if ref_labels is None else ref_labels
    S = y_pred @ ref.T
    D = jnp.maximum(1.0 - S, 0.0)
    pos = y_true[:, None] == ref_y[None, :]
    neg = ~pos
    if remove_diagonal:
        pos = pos & ~jnp.eye(len(y_true), len(ref_y), dtype=bool)
    posf, negf = pos.astype(S.dtype), neg.astype(S.dtype)
    wp = jnp.maximum((margin + D) * posf, 0.0)
    wn = jnp.maximum((1.0 + margin - D) * negf, 0.0)
    a = -gamma * wp * (margin - D)
    b = gamma * wn * (1.0 - margin - D)
    lse_a, has_a = masked_logsumexp(a, 1, pos, keepdims=False, empty=0.0)
    lse_b, has_b = masked_logsumexp(b, 1, neg, keepdims=False, empty=0.0)
    valid = has_a & has_b
    z = lse_a + lse_b  # finite: an empty side counts as 0 here and the row is 0 below
    return S, D, posf, negf, wp, wn, a, b, lse_a, lse_b, valid, z


def circle(y_true, y_pred, ref_labels=None, ref_embeddings=None, remove_diagonal=True, gamma=80, margin=0.4,
           reduction="none"):
    parts = _circle_parts(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin)
    valid, z = parts[-2], parts[-1]
    return reduce(jnp.where(valid, jnp.logaddexp(z, 0.0), 0.0), reduction)


def _circle_fwd(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin, reduction):
    value = circle(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin, reduction)
    return value, (y_true, y_pred, ref_labels, ref_embeddings)


def _masked_softmax(x, mask):
    """The softmax along rows of the entries ``mask`` keeps (0 elsewhere, and in a row that keeps
    none), normalised by its own sum, not as exp(x - logsumexp). Under ``jax.jit`` XLA computes
    circle's exponents (products of 1e13 to 1e17 at float32 embeddings of norm 1e4) again inside
    each fusion that reads them, and ``x - lse`` became one multiply-add: the exact product, not
    the rounded one the logsumexp saw, so the largest term was off by an ulp (4e6 to 7e10) and
    its exp 0 or inf (NaN gradients in 5 of circle's 6 float32 cases at 1e4). With a select
    between the product and the difference, as in ``masked_logsumexp``, whose values were right,
    none (``tests/test_fuzz.py::test_float32_far_out``)."""
    xm = jnp.where(mask, x, -jnp.inf)
    m = jnp.max(xm, axis=1, keepdims=True, initial=-jnp.inf)
    kept = jnp.any(mask, axis=1, keepdims=True)
    e = jnp.exp(xm - jnp.where(kept, m, 0.0))
    s = e.sum(1, keepdims=True)
    return e / jnp.where(kept, s, 1.0)


def _circle_bwd(remove_diagonal, gamma, margin, reduction, residuals, cotangent):
    y_true, y_pred, ref_labels, ref_embeddings = residuals
    S, D, posf, negf, wp, wn, a, b, lse_a, lse_b, valid, z = _circle_parts(
        y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin)
    g = jnp.broadcast_to(reduce_vjp(cotangent, reduction, z.size), z.shape)
    sig = jnp.where(valid, jax.nn.sigmoid(z), 0.0)
    alpha = _masked_softmax(a, posf > 0)
    beta = _masked_softmax(b, negf > 0)
    da = gamma * (wp - _slope((margin + D) * posf) * posf * (margin - D))
    db = -gamma * (wn + _slope((1.0 + margin - D) * negf) * negf * (1.0 - margin - D))
    G = -(g * sig)[:, None] * _slope(1.0 - S) * (alpha * da + beta * db)
    if ref_embeddings is None:
        return None, G @ y_pred + G.T @ y_pred, None, None
    return None, G @ ref_embeddings, None, G.T @ y_pred


circle_custom_vjp = jax.custom_vjp(circle, nondiff_argnums=(4, 5, 6, 7))
circle_custom_vjp.defvjp(_circle_fwd, _circle_bwd)
autodiff("circle", circle)
custom_vjp("circle", circle_custom_vjp, _circle_fwd, _circle_bwd)


# -- part 2's built-ins: the libraries that name these losses --------------------------

def _optax_cosine_similarity(predictions, targets, epsilon=0.0, axis=-1, where=None, reduction="none"):
    import optax
    return reduce(optax.losses.cosine_similarity(predictions, targets, epsilon=epsilon, axis=axis, where=where),
                  reduction)


def _optax_cosine_distance(predictions, targets, epsilon=0.0, axis=-1, where=None, reduction="none"):
    import optax
    return reduce(optax.losses.cosine_distance(predictions, targets, epsilon=epsilon, axis=axis, where=where),
                  reduction)


def _optax_ntxent(embeddings, labels, temperature=0.07, reduction="none"):
    """optax's one scalar per batch; every reduction of a 0-d value is that value."""
    import optax
    return reduce(optax.losses.ntxent(embeddings, labels, temperature), reduction)


def _optax_ranking_softmax_loss(logits, labels, where=None, weights=None, reduction="none"):
    """optax reduces itself: reduction is mapped to its reduce_fn (none -> None, mean -> jnp.mean,
    sum -> jnp.sum), so its own masked mean is what the reference's mean is checked against."""
    import optax
    reduce_fn = {"none": None, "mean": jnp.mean, "sum": jnp.sum}[reduction]
    return optax.losses.ranking_softmax_loss(logits, labels, where=where, weights=weights, reduce_fn=reduce_fn)


def _keras_circle(y_true, y_pred, ref_labels=None, ref_embeddings=None, remove_diagonal=True, gamma=80, margin=0.4,
                  reduction="none"):
    """Keras's function on the JAX backend; it computes in the inputs' dtype (float64 stays
    float64), so the float64 comparison is honest."""
    out = keras().losses.circle(y_true, y_pred, ref_labels=ref_labels, ref_embeddings=ref_embeddings,
                                remove_diagonal=remove_diagonal, gamma=gamma, margin=margin)
    return reduce(out, reduction)


builtin("cosine_similarity", _optax_cosine_similarity)
builtin("cosine_distance", _optax_cosine_distance)
builtin("ntxent", _optax_ntxent)
builtin("ranking_softmax_loss", _optax_ranking_softmax_loss)
builtin("circle", _keras_circle)
