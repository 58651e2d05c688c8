"""linear_cross_entropy in torch: a linear layer fused with cross entropy.

Reads as ``reference/linear.py``. With ``chunk_size`` both variants walk the rows in
chunks and never hold the whole ``(N, V)`` logits: the ``module`` variant
recomputes each chunk's logits in the backward (``torch.utils.checkpoint``), the
``function`` variant's hand-written backward does the same, chunk by chunk,
accumulating the gradients of ``linear_weight`` and ``linear_bias``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from reference.linear import DEFAULT_IGNORE_INDEX
from reference.reductions import reduce, reduce_vjp
from .classification import _index_rows, _log_softmax, _minus_target_rows, _softmax_and_log_softmax_at
from .core import _transforms_active, builtin, function, module


def _batched(input, target):
    """An unbatched ``input`` (H,) with a 0-d target is a batch of one."""
    return (input, target) if input.dim() == 2 else (input[None], target[None])


def _chunks(n: int, chunk_size):
    """Row slices of at most ``chunk_size`` rows (one slice for None)."""
    step = max(n, 1) if chunk_size is None else chunk_size
    return [slice(start, min(start + step, n)) for start in range(0, max(n, 1), step)]


def _class_terms(target, weight, num_classes, ignore_index, like):
    """The mask of rows that count, safe class indices, the class weights w and w_y per row."""
    ignore = DEFAULT_IGNORE_INDEX if ignore_index is None else ignore_index
    mask = target != ignore
    safe = torch.where(mask, target, 0)
    w = torch.ones(num_classes, dtype=like.dtype, device=like.device) if weight is None else weight
    return mask, safe, w, torch.where(mask, w[safe], 0.0)


def _logits(x, linear_weight, linear_bias):
    return F.linear(x, linear_weight, linear_bias)


def _rows(x, linear_weight, linear_bias, target, weight, ignore_index, label_smoothing):
    """The per-row losses of one chunk of rows."""
    num_classes = linear_weight.shape[0]
    logp = _log_softmax(_logits(x, linear_weight, linear_bias), 1)
    mask, safe, w, w_y = _class_terms(target, weight, num_classes, ignore_index, x)
    nll = -logp.gather(-1, safe[:, None])[:, 0]
    eps = label_smoothing
    rows = (1 - eps) * w_y * nll
    if eps:  # the smoothing term costs one more (rows, V) temporary: only when it counts
        rows = rows + eps / num_classes * -(logp * w).sum(-1)
    return torch.where(mask, rows, 0.0)


def _finish(rows, input, target, weight, linear_weight, reduction, ignore_index):
    _, _, _, w_y = _class_terms(_batched(input, target)[1], weight, linear_weight.shape[0], ignore_index, input)
    return reduce(rows if input.dim() == 2 else rows[0], reduction, w_y.sum())


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None, reduction="mean",
                         ignore_index=None, label_smoothing=0.0, chunk_size=None):
    x, t = _batched(input, target)
    if chunk_size is None:
        rows = _rows(x, linear_weight, linear_bias, t, weight, ignore_index, label_smoothing)
    else:  # each chunk's logits are recomputed in the backward, not kept
        rows = torch.cat([checkpoint(_rows, x[s], linear_weight, linear_bias, t[s], weight, ignore_index,
                                     label_smoothing, use_reentrant=False) for s in _chunks(len(t), chunk_size)])
    return _finish(rows, input, target, weight, linear_weight, reduction, ignore_index)


def _d_logits(x, linear_weight, linear_bias, safe, w_y, g, w, eps):
    """One chunk's ``g * delta``, built on one (rows, V) buffer (no one-hot): the softmax and
    this buffer are the only temporaries of that size. The softmax is left intact (under
    create_graph it is saved for the double backward)."""
    num_classes = linear_weight.shape[0]
    p = torch.softmax(_logits(x, linear_weight, linear_bias), dim=-1)
    d_logits = p * (g * ((1 - eps) * w_y + eps / num_classes * w.sum()))[:, None]
    del p
    rows = torch.arange(d_logits.shape[0], device=d_logits.device)
    d_logits.index_put_((rows, safe), -(1 - eps) * w_y * g, accumulate=True)
    if eps:  # out of place under vmap, which has no batching rule for addr_
        if _transforms_active():
            d_logits = torch.addr(d_logits, g, w, alpha=-eps / num_classes)
        else:
            d_logits.addr_(g, w, alpha=-eps / num_classes)
    return d_logits


class LinearCrossEntropyFunction(torch.autograd.Function):
    """Without ``chunk_size`` or smoothing (``returns_residuals``) the forward is
    ``cross_entropy``'s on the logits and keeps their softmax, the labels and each row's share
    of the cotangent, so the backward's logit gradient is one product and one scatter (the
    unchunked path holds the (N, V) logits anyway); with ``chunk_size`` each chunk's logits are
    recomputed in the backward, never all held."""

    generate_vmap_rule = True
    returns_residuals = True

    @staticmethod
    def forward(input, linear_weight, target, linear_bias, weight, reduction, ignore_index, label_smoothing,
                chunk_size):
        x, t = _batched(input, target)
        if chunk_size is None and label_smoothing == 0.0:
            logits = _logits(x, linear_weight, linear_bias)
            p, log_p_at = _softmax_and_log_softmax_at(logits, 1)
            ignore = DEFAULT_IGNORE_INDEX if ignore_index is None else ignore_index
            loss, safe, share = _index_rows(log_p_at, logits, t, weight, ignore, reduction, 1)
            return (loss if input.dim() == 2 or reduction != "none" else loss[0]), p, safe, share
        rows = torch.cat([_rows(x[s], linear_weight, linear_bias, t[s], weight, ignore_index, label_smoothing)
                          for s in _chunks(len(t), chunk_size)])
        return _finish(rows, input, target, weight, linear_weight, reduction, ignore_index), None, None, None

    @staticmethod
    def setup_context(ctx, inputs, output):
        (input, linear_weight, target, linear_bias, weight,
         ctx.reduction, ctx.ignore_index, ctx.label_smoothing, ctx.chunk_size) = inputs
        residuals = output[1:]
        if residuals[0] is not None:
            ctx.mark_non_differentiable(*residuals)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, linear_weight, target, linear_bias, weight, *residuals)

    @staticmethod
    def backward(ctx, grad_output, *_):
        input, linear_weight, target, linear_bias, weight, p, safe, share = ctx.saved_tensors
        if grad_output is None:
            return None, None, None, None, None, None, None, None, None
        x, t = _batched(input, target)
        if p is not None and not torch.is_grad_enabled():
            d_logits = _minus_target_rows(p, safe, share, grad_output.reshape(-1) if grad_output.dim() else grad_output,
                                          1)
            d_bias = d_logits.sum(0) if linear_bias is not None else None
            return ((d_logits @ linear_weight).reshape(input.shape), d_logits.T @ x, None, d_bias,
                    None, None, None, None, None)
        eps = ctx.label_smoothing
        mask, safe, w, w_y = _class_terms(t, weight, linear_weight.shape[0], ctx.ignore_index, x)
        g = reduce_vjp(grad_output, ctx.reduction, t.numel(), w_y.sum())
        g = (g.reshape(-1) if ctx.reduction == "none" else g.expand(t.shape)) * mask  # one per row
        d_input, d_weight, d_bias = [], None, None
        for s in _chunks(len(t), ctx.chunk_size):
            d_logits = _d_logits(x[s], linear_weight, linear_bias, safe[s], w_y[s], g[s], w, eps)
            d_input.append(d_logits @ linear_weight)
            # out of place (vmap batches these), but with no (V, H) temporary beside the sum
            d_weight = d_logits.T @ x[s] if d_weight is None else torch.addmm(d_weight, d_logits.T, x[s])
            if linear_bias is not None:
                d_bias = d_logits.sum(0) if d_bias is None else d_bias + d_logits.sum(0)
            del d_logits  # before the next chunk's exist
        return (torch.cat(d_input).reshape(input.shape), d_weight, None, d_bias, None, None, None, None, None)


LinearCrossEntropyLoss = module("linear_cross_entropy", "LinearCrossEntropyLoss", linear_cross_entropy)
linear_cross_entropy_function = function("linear_cross_entropy", LinearCrossEntropyFunction)


# -- the built-in, the outside oracle -----------------------------------------------

def _torch_linear_cross_entropy(input, linear_weight, target, linear_bias=None, weight=None, reduction="mean",
                                ignore_index=None, label_smoothing=0.0, chunk_size=None):
    """torch's own, with ``chunk_size`` mapped to ``options``; its chunked path takes no label
    smoothing (it would warn and fall back), so smoothing runs unchunked."""
    options = None
    if chunk_size is not None and label_smoothing == 0.0:
        options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk_size, chunking_method=None)
    return F.linear_cross_entropy(input, linear_weight, target, linear_bias=linear_bias, weight=weight,
                                  reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing,
                                  options=options)


builtin("linear_cross_entropy", _torch_linear_cross_entropy)
