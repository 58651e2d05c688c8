"""Ranking/metric losses in torch: cosine_embedding_loss, triplet_margin_loss,
triplet_margin_with_distance_loss.

Each loss reads as in ``reference/metric.py``: a functional over torch ops (the
``module`` variant, autograd does the backward) and an ``autograd.Function`` whose
backward is the reference's VJP written in torch ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reference.metric import EPSILON
from reference.reductions import reduce, reduce_vjp
from reference.spec import PerFramework
from .core import (builtin, class_major, class_major_difference, cotangent, function, in_place_ok, indicator,
                   mass_minus_target, masked_logsumexp, module, row_sum_reduced, shifted_exp_rows)


# -- the cosine ----------------------------------------------------------------------------

def _cosine_parts(x1, x2):
    m1 = (x1 * x1).sum(-1) + EPSILON
    m2 = (x2 * x2).sum(-1) + EPSILON
    root = torch.sqrt(m1 * m2)
    return (x1 * x2).sum(-1) / root, m1, m2, root


def _cosine_vjp(g, x1, x2):
    cos, m1, m2, root = (v.unsqueeze(-1) for v in _cosine_parts(x1, x2))
    g = g.unsqueeze(-1)
    return g * (x2 / root - cos * x1 / m1), g * (x1 / root - cos * x2 / m2)


# -- cosine_embedding_loss ---------------------------------------------------------------

def cosine_embedding_loss(input1, input2, target, margin=0.0, reduction="mean"):
    cos = _cosine_parts(input1, input2)[0]
    zero = torch.zeros_like(cos)
    out = torch.where(target == 1, 1.0 - cos, zero) + torch.where(target == -1, (cos - margin).clamp_min(0.0), zero)
    return reduce(out, reduction)


class CosineEmbeddingLossFunction(torch.autograd.Function):
    """Works feature-major (``class_major``): the three dot products are sums over dim 0 and
    every per-sample factor broadcasts along it. Returns the two inputs so laid out and the
    cosine's parts beside the loss (``returns_residuals``)."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input1, input2, target, margin, reduction):
        x1, x2 = class_major(input1), class_major(input2)
        m1 = (x1 * x1).sum(0).add_(EPSILON)
        m2 = (x2 * x2).sum(0).add_(EPSILON)
        root = (m1 * m2).sqrt_()
        cos = (x1 * x2).sum(0).div_(root)
        t = target.reshape(-1)
        out = torch.where(t == 1, 1.0 - cos, torch.where(t == -1, (cos - margin).clamp_min_(0.0), 0.0))
        return reduce(out.reshape(target.shape), reduction), x1, x2, cos, m1, m2, root

    @staticmethod
    def setup_context(ctx, inputs, output):
        input1, input2, target, ctx.margin, ctx.reduction = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input1, input2, target, *output[1:])

    @staticmethod
    def backward(ctx, grad_output, *_):
        input1, input2, target, x1, x2, cos, m1, m2, root = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None
        if torch.is_grad_enabled():  # recorded for a double backward: from the inputs
            cos = _cosine_parts(input1, input2)[0]
            slope = ((target == -1) & (cos - ctx.margin >= 0)).to(cos.dtype) - (target == 1).to(cos.dtype)
            g = reduce_vjp(grad_output, ctx.reduction, cos.numel()) * slope
            d_input1, d_input2 = _cosine_vjp(g, input1, input2)
            return d_input1, d_input2, None, None, None
        t = target.reshape(-1)
        slope = ((t == -1) & (cos >= ctx.margin)).to(cos.dtype).sub_((t == 1).to(cos.dtype))
        g = cotangent(grad_output, ctx.reduction, cos.numel())
        g = slope.mul_(g.reshape(-1) if ctx.reduction == "none" else g)
        over_root = g / root
        g_cos = g.mul_(cos)
        # d x1 = g (x2 / root - cos x1 / m1), d x2 = g (x1 / root - cos x2 / m2), feature-major
        d_input1 = torch.addcmul(x2 * over_root, x1, g_cos / m1, value=-1.0)
        d_input2 = torch.addcmul(x1 * over_root, x2, g_cos.div_(m2), value=-1.0)
        return d_input1.t().reshape(input1.shape), d_input2.t().reshape(input2.shape), None, None, None


CosineEmbeddingLoss = module("cosine_embedding_loss", "CosineEmbeddingLoss", cosine_embedding_loss)
cosine_embedding_loss_function = function("cosine_embedding_loss", CosineEmbeddingLossFunction)


# -- the p-norm and pairwise_distance --------------------------------------------------------

def _pairwise_distance(x1, x2, p=2.0, eps=1e-6):
    # torch's own norm: its backward gives 0 where the norm is 0, as the reference
    return torch.linalg.vector_norm(x1 - x2 + eps, ord=p, dim=-1)


def _pnorm_grad(v, p, norm, dim=-1):
    """The gradient of ``norm`` = |v|_p along ``dim`` (``norm`` lacks that dimension)."""
    n = norm.unsqueeze(dim)
    if p == math.inf:
        mask = (v.abs() == n).to(v.dtype)
        return v.sign() * mask / mask.sum(dim, keepdim=True)
    if p == 1:
        return v.sign()
    safe = torch.where(n > 0, n, 1.0)
    if p == 2:
        return torch.where(n > 0, v / safe, 0.0)
    return torch.where(n > 0, v.sign() * (v.abs() / safe) ** (p - 1), 0.0)


def _pairwise_with_vjp(x1, x2, p, eps):
    """The distance and the hand-written pullback ``g -> (d_x1, d_x2)``."""
    v = x1 - x2 + eps
    d = torch.linalg.vector_norm(v, ord=p, dim=-1)

    def pullback(g):
        u = g.unsqueeze(-1) * _pnorm_grad(v, p, d)
        return u, -u
    return d, pullback


# -- the triplet hinge, shared by both triplet losses -------------------------------------

def _triplet(d_pos, d_an, d_pn, margin, swap):
    d_neg = torch.minimum(d_an, d_pn) if swap else d_an
    return (margin + d_pos - d_neg).clamp_min(0.0)


def _triplet_backward(grad_output, reduction, ap, an, pn, margin, swap):
    """Pull the cotangent back through the hinge and the swap; ``ap``, ``an``, ``pn`` are
    (distance, pullback) pairs, ``pn`` None without swap."""
    (d_ap, vjp_ap), (d_an, vjp_an) = ap, an
    if swap:
        d_pn, vjp_pn = pn
        w = torch.where(d_pn < d_an, 1.0, torch.where(d_pn == d_an, 0.5, 0.0)).to(d_an.dtype)
        d_neg = torch.minimum(d_an, d_pn)
    else:
        w, d_neg = torch.zeros_like(d_an), d_an
    active = (margin + d_ap - d_neg >= 0).to(d_ap.dtype)
    g = reduce_vjp(grad_output, reduction, d_ap.numel()) * active
    d_anchor, d_positive = vjp_ap(g)
    d_anchor2, d_negative = vjp_an(-g * (1.0 - w))
    d_anchor = d_anchor + d_anchor2
    if swap:
        d_positive2, d_negative2 = vjp_pn(-g * w)
        d_positive, d_negative = d_positive + d_positive2, d_negative + d_negative2
    return d_anchor, d_positive, d_negative


# -- the triplet losses, feature-major --------------------------------------------------------

def _norms_feature_major(v, p):
    """The p-norm of each column of v (D, B) (no autograd): sums over dim 0, which torch's CPU
    kernels run ~5x faster than ``vector_norm(dim=-1)`` over a few features, and far faster
    than ``vector_norm(dim=0)``."""
    if p == 2:
        return (v * v).sum(0).sqrt_()
    a = v.abs()
    if p == 1:
        return a.sum(0)
    if p == math.inf:
        return a.amax(0)
    return torch.linalg.vector_norm(v, ord=p, dim=0)


def _triplet_forward_feature_major(anchor, positive, negative, margin, p, eps, swap, reduction):
    """The reduced triplet loss with torch's pairwise distances, and the residuals of its
    backward: each pair's difference (feature-major) and distance."""
    pairs = [(anchor, positive), (anchor, negative)] + ([(positive, negative)] if swap else [])
    diffs = [class_major_difference(x1, x2, eps) for x1, x2 in pairs]
    dists = [_norms_feature_major(v, p) for v in diffs]
    hinge = _triplet(dists[0], dists[1], dists[2] if swap else None, margin, swap)
    loss = reduce(hinge.reshape(anchor.shape[:-1]), reduction)
    return (loss, *diffs, *dists) if swap else (loss, diffs[0], diffs[1], None, dists[0], dists[1], None)


def _triplet_backward_feature_major(grad_output, reduction, p, margin, swap, shape, diffs, dists):
    """``_triplet_backward`` on the residuals: the pullbacks are the norms' gradients,
    feature-major, transposed back at the end (views)."""
    def with_pullback(v, d):
        def pullback(g):
            u = g * _pnorm_grad(v, p, d, dim=0)
            return u, -u
        return d, pullback

    if reduction == "none":
        grad_output = grad_output.reshape(-1)
    if p == 2 and not swap:
        return tuple(g.t().reshape(shape) for g in _triplet_backward_euclidean(grad_output, reduction, margin,
                                                                                diffs[:2], dists[:2]))
    pairs = [with_pullback(v, d) for v, d in zip(diffs, dists) if v is not None]
    grads = _triplet_backward(grad_output, reduction, pairs[0], pairs[1], pairs[2] if swap else None, margin, swap)
    return tuple(g.t().reshape(shape) for g in grads)


def _triplet_backward_euclidean(grad_output, reduction, margin, diffs, dists):
    """``_triplet_backward`` for p = 2 without swap, feature-major: the hinge's and the norms'
    derivatives folded into one coefficient per sample and pair, g [hinge open] / d (0 where
    d = 0, as ``_pnorm_grad``), so each gradient is one product over the (D, B) differences."""
    (v_ap, v_an), (d_ap, d_an) = diffs, dists
    g = reduce_vjp(grad_output, reduction, d_ap.numel()) * indicator(torch.ge, margin + d_ap - d_an, 0.0)
    u_ap = v_ap * torch.where(d_ap > 0, g / d_ap, 0.0)
    u_an = v_an * torch.where(d_an > 0, g / d_an, 0.0)
    d_anchor = u_ap - u_an
    return d_anchor, (u_ap.neg_() if in_place_ok() else -u_ap), u_an


def _triplet_setup(ctx, inputs, output):
    """Save the three inputs and the residuals (None where absent)."""
    ctx.mark_non_differentiable(*(r for r in output[1:] if r is not None))
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*inputs[:3], *output[1:])
    ctx.shape = inputs[0].shape


# -- triplet_margin_loss ---------------------------------------------------------------

def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False, reduction="mean"):
    d_ap = _pairwise_distance(anchor, positive, p, eps)
    d_an = _pairwise_distance(anchor, negative, p, eps)
    d_pn = _pairwise_distance(positive, negative, p, eps) if swap else None
    return reduce(_triplet(d_ap, d_an, d_pn, margin, swap), reduction)


class TripletMarginLossFunction(torch.autograd.Function):
    """Feature-major (``class_major``); returns each pair's difference and distance beside the
    loss (``returns_residuals``), so the backward only applies the norms' gradients."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(anchor, positive, negative, margin, p, eps, swap, reduction):
        return _triplet_forward_feature_major(anchor, positive, negative, margin, p, eps, swap, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        anchor, positive, negative, ctx.margin, ctx.p, ctx.eps, ctx.swap, ctx.reduction = inputs
        _triplet_setup(ctx, inputs, output)

    @staticmethod
    def backward(ctx, grad_output, *_):
        if grad_output is None:
            return None, None, None, None, None, None, None, None
        anchor, positive, negative, v_ap, v_an, v_pn, d_ap, d_an, d_pn = ctx.saved_tensors
        if torch.is_grad_enabled():  # recorded for a double backward: from the inputs
            p, eps = ctx.p, ctx.eps
            pn = _pairwise_with_vjp(positive, negative, p, eps) if ctx.swap else None
            grads = _triplet_backward(grad_output, ctx.reduction, _pairwise_with_vjp(anchor, positive, p, eps),
                                      _pairwise_with_vjp(anchor, negative, p, eps), pn, ctx.margin, ctx.swap)
        else:
            grads = _triplet_backward_feature_major(grad_output, ctx.reduction, ctx.p, ctx.margin, ctx.swap,
                                                    ctx.shape, (v_ap, v_an, v_pn), (d_ap, d_an, d_pn))
        return (*grads, None, None, None, None, None)


TripletMarginLoss = module("triplet_margin_loss", "TripletMarginLoss", triplet_margin_loss)
triplet_margin_loss_function = function("triplet_margin_loss", TripletMarginLossFunction)


# -- triplet_margin_with_distance_loss -----------------------------------------------------

def _torch_distance(distance_function):
    if isinstance(distance_function, PerFramework):
        return distance_function.torch
    return distance_function


def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None, margin=1.0,
                                      swap=False, reduction="mean"):
    dist = _torch_distance(distance_function)
    dist = _pairwise_distance if dist is None else dist
    d_ap, d_an = dist(anchor, positive), dist(anchor, negative)
    d_pn = dist(positive, negative) if swap else None
    return reduce(_triplet(d_ap, d_an, d_pn, margin, swap), reduction)


class TripletMarginWithDistanceLossFunction(torch.autograd.Function):
    """The hand-written backward covers the loss's own structure (the hinge, the swap
    selection, the reduction). A user's distance is arbitrary code, so its own VJP comes
    from torch's autodiff of that callable (``torch.func.vjp``, which composes with
    vmap and with a second differentiation); the default ``pairwise_distance`` uses the
    hand-written norm gradient, feature-major as in ``TripletMarginLossFunction`` (whose
    residuals it returns, ``returns_residuals``)."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(anchor, positive, negative, distance_function, margin, swap, reduction):
        if _torch_distance(distance_function) is None:
            return _triplet_forward_feature_major(anchor, positive, negative, margin, 2.0, 1e-6, swap, reduction)
        loss = triplet_margin_with_distance_loss(anchor, positive, negative, distance_function=distance_function,
                                                 margin=margin, swap=swap, reduction=reduction)
        return loss, None, None, None, None, None, None

    @staticmethod
    def setup_context(ctx, inputs, output):
        anchor, positive, negative, distance_function, ctx.margin, ctx.swap, ctx.reduction = inputs
        ctx.distance_function = _torch_distance(distance_function)
        _triplet_setup(ctx, inputs, output)

    @staticmethod
    def backward(ctx, grad_output, *_):
        if grad_output is None:
            return None, None, None, None, None, None, None
        anchor, positive, negative, v_ap, v_an, v_pn, d_ap, d_an, d_pn = ctx.saved_tensors
        f = ctx.distance_function
        if f is None and not torch.is_grad_enabled():
            grads = _triplet_backward_feature_major(grad_output, ctx.reduction, 2.0, ctx.margin, ctx.swap,
                                                    ctx.shape, (v_ap, v_an, v_pn), (d_ap, d_an, d_pn))
            return (*grads, None, None, None, None)

        def with_vjp(x1, x2):
            if f is None:
                return _pairwise_with_vjp(x1, x2, 2.0, 1e-6)
            return torch.func.vjp(f, x1, x2)

        pn = with_vjp(positive, negative) if ctx.swap else None
        grads = _triplet_backward(grad_output, ctx.reduction, with_vjp(anchor, positive), with_vjp(anchor, negative),
                                  pn, ctx.margin, ctx.swap)
        return (*grads, None, None, None, None)


TripletMarginWithDistanceLoss = module("triplet_margin_with_distance_loss", "TripletMarginWithDistanceLoss",
                                       triplet_margin_with_distance_loss)
triplet_margin_with_distance_loss_function = function("triplet_margin_with_distance_loss",
                                                      TripletMarginWithDistanceLossFunction)


# -- the built-ins, the outside oracle ---------------------------------------------

builtin("cosine_embedding_loss", F.cosine_embedding_loss)
builtin("triplet_margin_loss", F.triplet_margin_loss)
builtin("triplet_margin_with_distance_loss", F.triplet_margin_with_distance_loss)


# =========================================================================================
# Part 2: optax's and Keras's metric-learning and ranking losses, read as in reference/metric.py
# =========================================================================================

from reference.metric import _reduced_axes  # noqa: E402  (optax's axis as sorted non-negative axes)


def _slope(x):
    """The derivative of max(x, 0) as torch.maximum's backward: 1 above 0, 1/2 at a tie, 0 below."""
    return (x > 0).to(x.dtype) + 0.5 * (x == 0).to(x.dtype)


# -- optax's cosine_similarity and cosine_distance ----------------------------------------

def _kept(where, x):
    """``x`` where ``where`` keeps it, 0 elsewhere; ``x`` itself without a ``where`` (no bool
    tensor of ones: a ``torch.where`` over one costs as much as the rest of the loss)."""
    return x if where is None else torch.where(where, x, 0.0)


def _optax_cosine_parts(predictions, targets, epsilon, axis, where):
    axes = _reduced_axes(axis, predictions.dim())
    n2p = _kept(where, predictions * predictions).sum(axes, keepdim=True)
    n2t = _kept(where, targets * targets).sum(axes, keepdim=True)
    floor = torch.full((), epsilon, dtype=predictions.dtype, device=predictions.device)
    rp, rt = torch.sqrt(torch.maximum(n2p, floor)), torch.sqrt(torch.maximum(n2t, floor))
    cos = _kept(where, (predictions / rp) * (targets / rt)).sum(axes)
    return cos, n2p, n2t, rp, rt


def _optax_cosine_vjp(grad_output, predictions, targets, epsilon, where, reduction, parts):
    cos, n2p, n2t, rp, rt = parts
    keep = n2p.shape
    g = torch.broadcast_to(reduce_vjp(grad_output, reduction, cos.numel()), cos.shape).reshape(keep)
    c = g * cos.reshape(keep)
    d_p = _kept(where, g * targets / (rp * rt) - (_slope(n2p - epsilon) * c / (rp * rp)) * predictions)
    d_t = _kept(where, g * predictions / (rp * rt) - (_slope(n2t - epsilon) * c / (rt * rt)) * targets)
    return d_p, d_t


def cosine_similarity(predictions, targets, epsilon=0.0, axis=-1, where=None, reduction="none"):
    return reduce(_optax_cosine_parts(predictions, targets, epsilon, axis, where)[0], reduction)


class _OptaxCosineFunction(torch.autograd.Function):
    """Returns the cosines and the squared and clamped norms beside the loss
    (``returns_residuals``), so the backward only combines them with the inputs; ``sign`` is 1
    for the similarity, -1 for the distance, 1 - cos."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward_signed(predictions, targets, epsilon, axis, where, reduction, sign):
        parts = _optax_cosine_parts(predictions, targets, epsilon, axis, where)
        # (the loss must not be the residual itself: that would mark it non-differentiable)
        value = (parts[0].clone() if reduction == "none" else parts[0]) if sign > 0 else 1.0 - parts[0]
        return (reduce(value, reduction), *parts)

    @staticmethod
    def setup_context(ctx, inputs, output):
        predictions, targets, ctx.epsilon, ctx.axis, where, ctx.reduction = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(predictions, targets, where, *output[1:])

    @staticmethod
    def backward_signed(ctx, grad_output, sign):
        if grad_output is None:
            return None, None, None, None, None, None
        predictions, targets, where, *parts = ctx.saved_tensors
        if torch.is_grad_enabled():  # recorded for a double backward: the parts as functions of the inputs
            parts = _optax_cosine_parts(predictions, targets, ctx.epsilon, ctx.axis, where)
        d_p, d_t = _optax_cosine_vjp(grad_output if sign > 0 else -grad_output, predictions, targets,
                                     ctx.epsilon, where, ctx.reduction, parts)
        return d_p, d_t, None, None, None, None


# The forward and backward are staticmethods of each: torch.compile (dynamo in torch 2.13)
# traces a classmethod backward with the class where the context should be, and guards on the
# identity of a classmethod forward, a new bound method at each access.
class CosineSimilarityFunction(_OptaxCosineFunction):
    @staticmethod
    def forward(predictions, targets, epsilon, axis, where, reduction):
        return _OptaxCosineFunction.forward_signed(predictions, targets, epsilon, axis, where, reduction, 1.0)

    @staticmethod
    def backward(ctx, grad_output, *_):
        return _OptaxCosineFunction.backward_signed(ctx, grad_output, 1.0)


CosineSimilarity = module("cosine_similarity", "CosineSimilarity", cosine_similarity)
cosine_similarity_function = function("cosine_similarity", CosineSimilarityFunction)


def cosine_distance(predictions, targets, epsilon=0.0, axis=-1, where=None, reduction="none"):
    return reduce(1.0 - _optax_cosine_parts(predictions, targets, epsilon, axis, where)[0], reduction)


class CosineDistanceFunction(_OptaxCosineFunction):
    @staticmethod
    def forward(predictions, targets, epsilon, axis, where, reduction):
        return _OptaxCosineFunction.forward_signed(predictions, targets, epsilon, axis, where, reduction, -1.0)

    @staticmethod
    def backward(ctx, grad_output, *_):
        return _OptaxCosineFunction.backward_signed(ctx, grad_output, -1.0)


CosineDistance = module("cosine_distance", "CosineDistance", cosine_distance)
cosine_distance_function = function("cosine_distance", CosineDistanceFunction)


# -- optax's ntxent ---------------------------------------------------------------------

def _ntxent_parts(embeddings, labels, temperature):
    eps = torch.finfo(embeddings.dtype).eps
    n2 = (embeddings * embeddings).sum(-1)
    r = torch.sqrt(torch.maximum(n2, torch.full((), eps, dtype=n2.dtype, device=n2.device)))
    u = embeddings / r[:, None]
    x = (u @ u.T) / temperature
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    neg = ~same
    lse_neg, _ = masked_logsumexp(x, 1, neg, keepdim=False)
    norm = torch.logaddexp(lse_neg[:, None], x)  # the log-normalizer of each pair (i, j)
    return x, pos, neg, lse_neg, norm, n2, r, u, eps


def ntxent(embeddings, labels, temperature=0.07, reduction="none"):
    x, pos, neg, lse_neg = _ntxent_parts(embeddings, labels, temperature)[:4]
    # norm - x as softplus(lse_neg - x): no cancellation where the loss is small (half precision)
    loss = torch.where(pos, F.softplus(lse_neg[:, None] - x), 0.0).sum() / pos.sum()
    return reduce(loss, reduction)


class NtxentFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(embeddings, labels, temperature, reduction):
        return ntxent(embeddings, labels, temperature, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        embeddings, labels, ctx.temperature, ctx.reduction = inputs
        ctx.save_for_backward(embeddings, labels)

    @staticmethod
    def backward(ctx, grad_output):
        embeddings, labels = ctx.saved_tensors
        tau = ctx.temperature
        x, pos, neg, lse_neg, norm, n2, r, u, eps = _ntxent_parts(embeddings, labels, tau)
        g = reduce_vjp(grad_output, ctx.reduction, 1)
        shift = torch.where(torch.isfinite(lse_neg), lse_neg, 0.0)
        rest = torch.where(pos, torch.sigmoid(lse_neg[:, None] - x), 0.0)  # 1 - pi_ij = e^{M_i - L_ij}
        pair = rest.sum(1)  # sum_j e^{M_i - L_ij}
        g_neg = torch.where(neg, torch.exp(x - shift[:, None]), 0.0) * pair[:, None]
        g_pos = -rest
        G = g * (g_pos + g_neg) / (pos.sum().to(x.dtype) * tau)  # an int64 count times tau: the default dtype
        v = (G + G.T) @ u
        d = (v - _slope(n2 - eps)[:, None] * (u * v).sum(-1, keepdim=True) * u) / r[:, None]
        return d, None, None, None


NTXent = module("ntxent", "NTXent", ntxent)
ntxent_function = function("ntxent", NtxentFunction)


# -- optax's ranking_softmax_loss ------------------------------------------------------

def _ranking_parts(logits, labels, where, weights):
    y = _kept(where, labels.to(logits.dtype))
    if weights is not None:
        y = y * weights
    lse, _ = masked_logsumexp(logits, -1, where, keepdim=False, empty=0.0)
    per_list = -_kept(where, y * (logits - lse.unsqueeze(-1))).sum(-1)
    counted = where.any(-1).sum().clamp_min(1) if where is not None else max(per_list.numel(), 1)
    return y, lse, per_list, counted


def ranking_softmax_loss(logits, labels, *, where=None, weights=None, reduction="none"):
    _, _, per_list, counted = _ranking_parts(logits, labels, where, weights)
    return reduce(per_list, reduction, counted)


def _ranking_softmax_rows(logits, y, reduction):
    """Without ``where`` (no autograd): the reduced loss of ``_ranking_parts`` and the softmax
    exp(x - lse), from one exponential (both NaN in a list without a finite maximum, as
    ``core.masked_logsumexp``)."""
    z, e, total = shifted_exp_rows(logits)
    products = (z - total.log()).mul_(y)
    lists = products.numel() // max(products.shape[-1], 1)
    return row_sum_reduced(products, reduction, max(lists, 1)).neg_(), e.div_(total)


class RankingSoftmaxLossFunction(torch.autograd.Function):
    """Without ``where`` (``returns_residuals``) the forward keeps the softmax, and the
    backward is g (p sum y - y); with ``where`` it starts again from the logits."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(logits, labels, where, weights, reduction):
        if where is not None:
            return ranking_softmax_loss(logits, labels, where=where, weights=weights, reduction=reduction), None
        y = labels.to(logits.dtype)
        return _ranking_softmax_rows(logits, y if weights is None else y * weights, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, labels, where, weights, ctx.reduction = inputs
        if output[1] is not None:
            ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(logits, labels, where, weights, output[1])

    @staticmethod
    def backward(ctx, grad_output, _):
        logits, labels, where, weights, p = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None
        if p is not None and not torch.is_grad_enabled():
            y = labels.to(logits.dtype)
            y = y if weights is None else y * weights
            lists = p.numel() // max(p.shape[-1], 1)
            g = reduce_vjp(grad_output, ctx.reduction, lists, max(lists, 1) if ctx.reduction == "mean" else None)
            return mass_minus_target(p, y, g.unsqueeze(-1) if ctx.reduction == "none" else g), None, None, None, None
        y, lse, per_list, counted = _ranking_parts(logits, labels, where, weights)
        p = _kept(where, torch.exp(logits - lse.unsqueeze(-1)))
        g = torch.broadcast_to(reduce_vjp(grad_output, ctx.reduction, per_list.numel(), counted), per_list.shape)
        d = _kept(where, g.unsqueeze(-1) * (p * y.sum(-1, keepdim=True) - y))
        return d, None, None, None, None


RankingSoftmaxLoss = module("ranking_softmax_loss", "RankingSoftmaxLoss", ranking_softmax_loss)
ranking_softmax_loss_function = function("ranking_softmax_loss", RankingSoftmaxLossFunction)


# -- Keras's circle ---------------------------------------------------------------------

def _circle_parts(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin):
    ref = y_pred if ref_embeddings is None else ref_embeddings
    ref_y = y_true if ref_labels is None else ref_labels
    zero = torch.zeros((), dtype=y_pred.dtype, device=y_pred.device)
    S = y_pred @ ref.T
    D = torch.maximum(1.0 - S, zero)
    pos = y_true[:, None] == ref_y[None, :]
    neg = ~pos
    if remove_diagonal:
        pos = pos & ~torch.eye(len(y_true), len(ref_y), dtype=torch.bool, device=pos.device)
    posf, negf = pos.to(S.dtype), neg.to(S.dtype)
    wp = torch.maximum((margin + D) * posf, zero)
    wn = torch.maximum((1.0 + margin - D) * negf, zero)
    a = -gamma * wp * (margin - D)
    b = gamma * wn * (1.0 - margin - D)
    lse_a, has_a = masked_logsumexp(a, 1, pos, keepdim=False, empty=0.0)
    lse_b, has_b = masked_logsumexp(b, 1, neg, keepdim=False, empty=0.0)
    valid = has_a & has_b
    z = lse_a + lse_b  # finite: an empty side counts as 0 here and the row is 0 below
    return S, D, posf, negf, wp, wn, a, b, lse_a, lse_b, valid, z


def circle(y_true, y_pred, ref_labels=None, ref_embeddings=None, remove_diagonal=True, gamma=80, margin=0.4,
           reduction="none"):
    parts = _circle_parts(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin)
    valid, z = parts[-2], parts[-1]
    return reduce(torch.where(valid, torch.logaddexp(z, torch.zeros_like(z)), 0.0), reduction)


class CircleFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin, reduction):
        return circle(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (y_true, y_pred, ref_labels, ref_embeddings, ctx.remove_diagonal, ctx.gamma, ctx.margin,
         ctx.reduction) = inputs
        ctx.save_for_backward(y_true, y_pred, ref_labels, ref_embeddings)

    @staticmethod
    def backward(ctx, grad_output):
        y_true, y_pred, ref_labels, ref_embeddings = ctx.saved_tensors
        gamma, margin = ctx.gamma, ctx.margin
        S, D, posf, negf, wp, wn, a, b, lse_a, lse_b, valid, z = _circle_parts(
            y_true, y_pred, ref_labels, ref_embeddings, ctx.remove_diagonal, gamma, margin)
        g = torch.broadcast_to(reduce_vjp(grad_output, ctx.reduction, z.numel()), z.shape)
        sig = torch.where(valid, torch.sigmoid(z), 0.0)
        alpha = torch.where(posf > 0, torch.exp(a - lse_a[:, None]), 0.0)
        beta = torch.where(negf > 0, torch.exp(b - lse_b[:, None]), 0.0)
        da = gamma * (wp - _slope((margin + D) * posf) * posf * (margin - D))
        db = -gamma * (wn + _slope((1.0 + margin - D) * negf) * negf * (1.0 - margin - D))
        G = -(g * sig)[:, None] * _slope(1.0 - S) * (alpha * da + beta * db)
        if ref_embeddings is None:
            return None, G @ y_pred + G.T @ y_pred, None, None, None, None, None, None
        return None, G @ ref_embeddings, None, G.T @ y_pred, None, None, None, None


Circle = module("circle", "Circle", circle)
circle_function = function("circle", CircleFunction)


# -- part 2's built-ins: torch where it has the same mathematics -------------------------

def _torch_cosine(predictions, targets, epsilon, axis, where):
    """``F.cosine_similarity`` with ``eps = sqrt(epsilon)``: the same values everywhere; its
    norm is clamped under no_grad, so its gradient is optax's except where a squared norm
    lies strictly between 0 and epsilon."""
    if where is not None:
        raise NotImplementedError("torch.nn.functional.cosine_similarity has no where")
    if not isinstance(axis, int):
        raise NotImplementedError("torch.nn.functional.cosine_similarity reduces one int dim")
    for x in (predictions, targets):
        n2 = (x * x).sum(axis)
        if bool(((n2 > 0) & (n2 < epsilon)).any()):
            raise NotImplementedError("below the epsilon floor torch's gradient treats the norm as unclamped")
    return F.cosine_similarity(predictions, targets, dim=axis, eps=math.sqrt(epsilon))


def _torch_cosine_similarity(predictions, targets, epsilon=0.0, axis=-1, where=None, reduction="none"):
    return reduce(_torch_cosine(predictions, targets, epsilon, axis, where), reduction)


def _torch_cosine_distance(predictions, targets, epsilon=0.0, axis=-1, where=None, reduction="none"):
    return reduce(1.0 - _torch_cosine(predictions, targets, epsilon, axis, where), reduction)


def _torch_ntxent(embeddings, labels, temperature=0.07, reduction="none"):
    """Each positive pair (i, j) is a cross entropy over [x_ij, x_ik for the negatives k of i]
    with target class 0; the non-negatives are -inf logits. ``x`` is torch's cosine matrix
    with ``eps = sqrt(finfo.eps)`` (optax floors the squared norm at finfo.eps)."""
    eps = math.sqrt(torch.finfo(embeddings.dtype).eps)
    x = F.cosine_similarity(embeddings[None, :, :], embeddings[:, None, :], dim=-1, eps=eps) / temperature
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    i, j = pos.nonzero(as_tuple=True)
    rows = torch.cat([x[i, j][:, None], torch.where(~same[i], x[i], -math.inf)], dim=1)
    target = torch.zeros(len(i), dtype=torch.long, device=x.device)
    return reduce(F.cross_entropy(rows, target, reduction="mean"), reduction)


def _torch_ranking_softmax_loss(logits, labels, where=None, weights=None, reduction="none"):
    """Cross entropy with class-probability targets along the last axis (torch's class axis is
    1, or 0 for one list); the labels times the weights are the targets."""
    if where is not None:
        raise NotImplementedError("torch's cross_entropy has no mask (a -inf logit times a 0 target is NaN)")
    y = labels.to(logits.dtype)
    if weights is not None:
        y = y * weights
    if logits.dim() == 1:
        return F.cross_entropy(logits, y, reduction=reduction)
    return F.cross_entropy(logits.movedim(-1, 1), y.movedim(-1, 1), reduction=reduction)


builtin("cosine_similarity", _torch_cosine_similarity)
builtin("cosine_distance", _torch_cosine_distance)
builtin("ntxent", _torch_ntxent)
builtin("ranking_softmax_loss", _torch_ranking_softmax_loss)
