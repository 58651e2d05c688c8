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
from .core import builtin, function, module


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
    generate_vmap_rule = True

    @staticmethod
    def forward(input1, input2, target, margin, reduction):
        return cosine_embedding_loss(input1, input2, target, margin, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input1, input2, target, ctx.margin, ctx.reduction = inputs
        ctx.save_for_backward(input1, input2, target)

    @staticmethod
    def backward(ctx, grad_output):
        input1, input2, target = ctx.saved_tensors
        cos = _cosine_parts(input1, input2)[0]
        slope = ((target == -1) & (cos - ctx.margin >= 0)).to(cos.dtype) - (target == 1).to(cos.dtype)
        g = reduce_vjp(grad_output, ctx.reduction, cos.numel()) * slope
        d_input1, d_input2 = _cosine_vjp(g, input1, input2)
        return d_input1, d_input2, None, None, None


CosineEmbeddingLoss = module("cosine_embedding_loss", "CosineEmbeddingLoss", cosine_embedding_loss)
cosine_embedding_loss_function = function("cosine_embedding_loss", CosineEmbeddingLossFunction)


# -- the p-norm and pairwise_distance --------------------------------------------------------

def _pairwise_distance(x1, x2, p=2.0, eps=1e-6):
    # torch's own norm: its backward gives 0 where the norm is 0, as the reference
    return torch.linalg.vector_norm(x1 - x2 + eps, ord=p, dim=-1)


def _pnorm_grad(v, p, norm):
    n = norm.unsqueeze(-1)
    if p == math.inf:
        mask = (v.abs() == n).to(v.dtype)
        return v.sign() * mask / mask.sum(-1, keepdim=True)
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


# -- triplet_margin_loss ---------------------------------------------------------------

def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False, reduction="mean"):
    d_ap = _pairwise_distance(anchor, positive, p, eps)
    d_an = _pairwise_distance(anchor, negative, p, eps)
    d_pn = _pairwise_distance(positive, negative, p, eps) if swap else None
    return reduce(_triplet(d_ap, d_an, d_pn, margin, swap), reduction)


class TripletMarginLossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(anchor, positive, negative, margin, p, eps, swap, reduction):
        return triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        anchor, positive, negative, ctx.margin, ctx.p, ctx.eps, ctx.swap, ctx.reduction = inputs
        ctx.save_for_backward(anchor, positive, negative)

    @staticmethod
    def backward(ctx, grad_output):
        anchor, positive, negative = ctx.saved_tensors
        p, eps = ctx.p, ctx.eps
        pn = _pairwise_with_vjp(positive, negative, p, eps) if ctx.swap else None
        grads = _triplet_backward(grad_output, ctx.reduction, _pairwise_with_vjp(anchor, positive, p, eps),
                                  _pairwise_with_vjp(anchor, negative, p, eps), pn, ctx.margin, ctx.swap)
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
    hand-written norm gradient."""

    generate_vmap_rule = True

    @staticmethod
    def forward(anchor, positive, negative, distance_function, margin, swap, reduction):
        return triplet_margin_with_distance_loss(anchor, positive, negative, distance_function=distance_function,
                                                 margin=margin, swap=swap, reduction=reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        anchor, positive, negative, distance_function, ctx.margin, ctx.swap, ctx.reduction = inputs
        ctx.distance_function = _torch_distance(distance_function)
        ctx.save_for_backward(anchor, positive, negative)

    @staticmethod
    def backward(ctx, grad_output):
        anchor, positive, negative = ctx.saved_tensors
        f = ctx.distance_function

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
