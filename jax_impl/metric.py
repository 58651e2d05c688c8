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
from .core import autodiff, builtin, custom_vjp


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
    # max(h, 0) with slope 1 at h = 0, as torch's clamp_min (jnp.maximum would give 1/2)
    return jnp.where(h >= 0, h, 0.0)


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
    sum is positive (a zero norm has gradient 0, not 0 * inf = NaN)."""
    a = v * jnp.sign(v)
    if p == math.inf:
        return a.max(-1)
    if p == 1:
        return a.sum(-1)
    s = (v * v).sum(-1) if p == 2 else (a ** p).sum(-1)
    positive = s > 0
    return jnp.where(positive, jnp.where(positive, s, 1.0) ** (1.0 / p), 0.0)


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
