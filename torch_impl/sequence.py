"""Sequence losses in torch: ctc_loss.

The loss reads as in ``reference/sequence.py``, piece by piece, vectorised over the
batch with a Python loop over time: a functional over torch ops (the ``module``
variant, autograd differentiates the alpha recursion) and an ``autograd.Function``
whose backward is the reference's VJP (the occupancy from alpha and beta) in torch ops.

Log 0 is ``-inf``; ``core.logaddexp`` keeps autograd free of NaN where both terms are
``-inf`` (an unreachable state), which ``torch.logaddexp``'s backward is not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reference.reductions import reduce, reduce_vjp
from .core import _transforms_active, builtin, function, in_place_ok, logaddexp, module, one_hot

NEG_INF = float("-inf")


# -- the pieces of the recursion -----------------------------------------------------

def batched(log_probs, targets, input_lengths, target_lengths):
    if log_probs.ndim == 3:
        return log_probs, targets, input_lengths, target_lengths
    return log_probs[:, None], targets[None], input_lengths.reshape(1), target_lengths.reshape(1)


def padded_targets(targets, target_lengths, blank):
    if targets.ndim == 2:
        positions = torch.arange(targets.shape[1], device=targets.device)
        labels = targets
    else:
        total = targets.shape[0]
        positions = torch.arange(total, device=targets.device)
        offsets = torch.cumsum(target_lengths, 0) - target_lengths
        index = (offsets[:, None] + positions[None, :]).clamp(0, max(total - 1, 0))
        labels = targets[index] if total else targets.new_zeros((target_lengths.shape[0], 0))
    return torch.where(positions[None, :] < target_lengths[:, None], labels, blank)


def extended(padded, blank):
    n, s = padded.shape
    ext = torch.stack([torch.full_like(padded, blank), padded], dim=-1).reshape(n, 2 * s)
    ext = torch.cat([ext, padded.new_full((n, 1), blank)], dim=-1)
    distinct = padded[:, 1:] != padded[:, :-1]  # skip[:, 3::2], written without in-place ops
    interleaved = torch.stack([torch.zeros_like(distinct), distinct], dim=-1).reshape(n, 2 * max(s - 1, 0))
    no = torch.zeros((n, 2), dtype=torch.bool, device=padded.device)
    skip = torch.cat([no, interleaved, no], dim=-1)[:, :2 * s + 1]
    return ext, skip


def emissions(log_probs, ext):
    return log_probs[:, torch.arange(ext.shape[0], device=ext.device)[:, None], ext]


def _shift(x, k):
    return torch.cat([x.new_full(x.shape[:-1] + (k,), NEG_INF), x], dim=-1)[..., :x.shape[-1]]


def _unshift(x, k, fill=NEG_INF):
    return torch.cat([x, x.new_full(x.shape[:-1] + (k,), fill)], dim=-1)[..., k:]


def alpha(em, skip, input_lengths):
    steps, n, states = em.shape
    s = torch.arange(states, device=em.device)
    prev = torch.where(s == 0, 0.0, NEG_INF).to(em.dtype).expand(n, states)
    alphas = []
    for t in range(steps):
        a = logaddexp(prev, _shift(prev, 1))
        a = torch.where(skip, logaddexp(a, _shift(prev, 2)), a) + em[t]
        alphas.append(a)
        prev = torch.where((t < input_lengths)[:, None], a, prev)
    return (torch.stack(alphas) if alphas else em.new_zeros((0, n, states))), prev


def log_likelihood(last_alpha, target_lengths):
    end = last_alpha.gather(1, (2 * target_lengths)[:, None])[:, 0]
    before = last_alpha.gather(1, (2 * target_lengths - 1).clamp(min=0)[:, None])[:, 0]
    return logaddexp(end, torch.where(target_lengths > 0, before, NEG_INF))


def beta(em, skip, input_lengths, target_lengths):
    steps, n, states = em.shape
    s = torch.arange(states, device=em.device)
    last = (s == 2 * target_lengths[:, None]) | (s == 2 * target_lengths[:, None] - 1)
    nothing = em.new_full((n, states), NEG_INF)
    init = torch.where(last, 0.0, nothing)
    skip_next = _unshift(skip, 2, False)
    betas = [None] * steps
    following = nothing
    for t in reversed(range(steps)):
        if t + 1 < steps:
            e = em[t + 1] + following
            b = logaddexp(e, _unshift(e, 1))
            recursed = torch.where(skip_next, logaddexp(b, _unshift(e, 2)), b)
        else:
            recursed = nothing
        here = torch.where((t == input_lengths - 1)[:, None], init,
                           torch.where((t < input_lengths - 1)[:, None], recursed, nothing))
        betas[t] = following = here
    return torch.stack(betas) if betas else em.new_zeros((0, n, states))


# -- the recursions outside autograd (the Function's forward and backward) ------------------
#
# The same recursions with each step's log-sum-exp of up to three terms taken at once over a
# stacked (3, N, S) tensor, the shifts read as views of a padded buffer and the skip as an
# additive 0 / -inf bias: ~13 operations a step where ``logaddexp`` (autograd-safe, three
# ``torch.where`` each) took ~35. The maximum is clamped to the lowest finite value, so a step
# whose terms are all -inf gives log 0 + that = -inf, and NaN propagates, as NumPy's logaddexp.

def _lowest(dtype) -> float:
    return torch.finfo(dtype).min


def _log_sum_exp_of_terms(terms, out):
    """log sum exp over dim 0 of ``terms`` (3, N, S), overwritten, into ``out`` (N, S)."""
    m = terms.amax(0).clamp_min_(_lowest(terms.dtype))
    torch.sub(terms, m, out=terms).exp_()
    return torch.sum(terms, 0, out=out).log_().add_(m)


def _skip_bias(skip, dtype):
    return torch.zeros(skip.shape, dtype=dtype, device=skip.device).masked_fill_(~skip, NEG_INF)


def alpha_no_grad(em, skip, input_lengths):
    """``alpha`` outside autograd (see above): the same (alphas, last alpha)."""
    steps, n, states = em.shape
    padded = em.new_full((n, states + 2), NEG_INF)  # prev in [:, 2:], its shifts by 1 and 2 as views
    padded[:, 2] = 0.0
    prev = padded[:, 2:]
    bias = _skip_bias(skip, em.dtype)
    active = torch.arange(steps, device=em.device)[:, None] < input_lengths[None, :]
    alphas = em.new_empty((steps, n, states))
    terms = em.new_empty((3, n, states))
    for t in range(steps):
        torch.stack([prev, padded[:, 1:-1], padded[:, :-2]], out=terms)
        terms[2].add_(bias)
        a = _log_sum_exp_of_terms(terms, alphas[t]).add_(em[t])
        prev.copy_(torch.where(active[t][:, None], a, prev))
    return alphas, prev


def beta_no_grad(em, skip, input_lengths, target_lengths):
    """``beta`` outside autograd (see above): the same betas."""
    steps, n, states = em.shape
    s = torch.arange(states, device=em.device)
    last = (s == 2 * target_lengths[:, None]) | (s == 2 * target_lengths[:, None] - 1)
    init = torch.zeros((n, states), dtype=em.dtype, device=em.device).masked_fill_(~last, NEG_INF)
    bias = _skip_bias(_unshift(skip, 2, False), em.dtype)
    padded = em.new_full((n, states + 2), NEG_INF)  # e in [:, :-2], its unshifts by 1 and 2 as views
    e = padded[:, :-2]
    betas = em.new_full((steps, n, states), NEG_INF)
    terms = em.new_empty((3, n, states))
    recursed = em.new_empty((n, states))
    for t in reversed(range(steps)):
        here = betas[t]
        if t + 1 < steps:
            torch.add(em[t + 1], betas[t + 1], out=e)
            torch.stack([e, padded[:, 1:-1], padded[:, 2:]], out=terms)
            terms[2].add_(bias)
            _log_sum_exp_of_terms(terms, recursed)
            here.copy_(torch.where((t < input_lengths - 1)[:, None], recursed, here))
        here.copy_(torch.where((t == input_lengths - 1)[:, None], init, here))
    return betas


def required_lengths(padded, target_lengths):
    """The shortest input that fits each target: its length plus its repeated neighbours."""
    positions = torch.arange(1, padded.shape[1], device=padded.device)
    repeats = (padded[:, 1:] == padded[:, :-1]) & (positions[None, :] < target_lengths[:, None])
    return target_lengths + repeats.sum(dim=1)


def sample_weights(cotangent, reduction, target_lengths):
    n = target_lengths.shape[0]
    g = reduce_vjp(cotangent, reduction, n)
    if reduction == "mean":
        g = g / target_lengths.clamp(min=1)
    return g.reshape(-1).expand(n)


# -- ctc_loss --------------------------------------------------------------------

def _negative_log_likelihood(log_probs, targets, input_lengths, target_lengths, blank, recursion=alpha):
    """``-log p(l | x)`` per sample, ``(N,)``, and the pieces the backward reuses."""
    lp, tg, il, tl = batched(log_probs, targets, input_lengths, target_lengths)
    ext, skip = extended(padded_targets(tg, tl, blank), blank)
    em = emissions(lp, ext)
    alphas, last = recursion(em, skip, il)
    return -log_likelihood(last, tl), (ext, skip, em, alphas, il, tl)


def _reduce(nll, log_probs, target_lengths, reduction, zero_infinity):
    if zero_infinity:
        nll = torch.where(torch.isinf(nll), 0.0, nll)
    if reduction == "mean":
        return reduce(nll / target_lengths.reshape(-1).clamp(min=1), "mean")
    out = reduce(nll, reduction)
    return out[0] if reduction == "none" and log_probs.ndim == 2 else out


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    nll, _ = _negative_log_likelihood(log_probs, targets, input_lengths, target_lengths, blank)
    return _reduce(nll, log_probs, target_lengths, reduction, zero_infinity)


class CTCLossFunction(torch.autograd.Function):
    """Returns the per-sample negative log-likelihoods and the alpha recursion with its pieces
    beside the loss (``returns_residuals``): the backward runs the beta recursion only, not the
    forward's alpha recursion again (recorded for a double backward, it starts from the inputs)."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity):
        nll, (ext, skip, em, alphas, _, _) = _negative_log_likelihood(
            log_probs, targets, input_lengths, target_lengths, blank,
            recursion=alpha if _transforms_active() else alpha_no_grad)
        loss = _reduce(nll, log_probs, target_lengths, reduction, zero_infinity)
        # reduction="none" returns nll itself: the residual must be another tensor
        return loss, (nll.clone() if reduction == "none" else nll), ext, skip, em, alphas

    @staticmethod
    def setup_context(ctx, inputs, output):
        log_probs, targets, input_lengths, target_lengths, ctx.blank, ctx.reduction, _ = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(log_probs, targets, input_lengths, target_lengths, *output[1:])

    @staticmethod
    def backward(ctx, grad_output, *_):
        log_probs, targets, input_lengths, target_lengths, nll, ext, skip, em, alphas = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None, None, None
        if torch.is_grad_enabled():  # recorded for a double backward: the recursion as a function of log_probs
            nll, (ext, skip, em, alphas, il, tl) = _negative_log_likelihood(
                log_probs, targets, input_lengths, target_lengths, ctx.blank)
        else:
            _, _, il, tl = batched(log_probs, targets, input_lengths, target_lengths)
        feasible = torch.isfinite(nll)
        betas = beta_no_grad(em, skip, il, tl) if in_place_ok() else beta(em, skip, il, tl)
        log_occupancy = alphas + betas + torch.where(feasible, nll, 0.0)[:, None]
        occupancy = torch.exp(log_occupancy)  # 0 where t >= T_n or no alignment exists
        one_hot_ext = one_hot(ext, log_probs.shape[-1], occupancy.dtype)
        per_class = torch.einsum("tns,nsc->tnc", occupancy, one_hot_ext)
        grad = -per_class * sample_weights(grad_output, ctx.reduction, tl)[None, :, None]
        return (grad[:, 0] if log_probs.ndim == 2 else grad), None, None, None, None, None, None


CTCLoss = module("ctc_loss", "CTCLoss", ctc_loss)
ctc_loss_function = function("ctc_loss", CTCLossFunction)


# -- the built-in, the outside oracle ------------------------------------------------

def _torch_ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
                    zero_infinity=False):
    """``F.ctc_loss``'s value, and its gradient less the term its backward adds.

    torch's backward returns ``w_n (exp(x[t, n, k]) - gamma)`` for ``t < T_n`` (0 for an
    infinite loss that ``zero_infinity`` zeroes), where the partial derivative is
    ``-w_n gamma``. ``extra - extra.detach()`` is exactly 0 in value and has gradient
    ``w_n exp(x)`` on those entries, so subtracting it leaves torch's value untouched
    and turns torch's gradient into the partial derivative exactly when that mapping
    (the recorded Difference) holds: the builtin test proves it.
    """
    value = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity)
    lp, tg, il, tl = batched(log_probs, targets, input_lengths, target_lengths)
    steps = torch.arange(lp.shape[0], device=lp.device)
    mask = steps[:, None] < il[None, :]
    if zero_infinity:  # a zeroed infinite loss gets no gradient from torch either
        mask = mask & (il >= required_lengths(padded_targets(tg, tl, blank), tl))[None, :]
    mass = (torch.exp(lp) * mask[..., None]).sum(dim=(0, 2))  # (N,)
    extra = mass - mass.detach()
    if reduction == "mean":
        extra = reduce(extra / tl.clamp(min=1), "mean")
    else:
        extra = reduce(extra, reduction)
        extra = extra[0] if reduction == "none" and log_probs.ndim == 2 else extra
    return value - extra


builtin("ctc_loss", _torch_ctc_loss)
