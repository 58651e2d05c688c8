"""linear_cross_entropy: a linear layer fused with cross entropy over class indices.

torch 2.13's ``F.linear_cross_entropy(input, linear_weight, target, *, linear_bias=None,
weight=None, reduction="mean", ignore_index=None, label_smoothing=0.0, options=None)``
is ``cross_entropy(linear(input, linear_weight, linear_bias), target, ...)``; its point
is that a chunked implementation never holds the whole ``(N, V)`` logits. Here
``chunk_size`` (rows per chunk, default None = one chunk) replaces torch's ``options``;
it changes memory, never values, so the reference computes every row at once.

``linear_bias`` is optional and keyword-only, as in torch: it is an array
hyperparameter that gets a gradient whenever it is given (``differentiable_params``).
"""

from __future__ import annotations

import numpy as np

from . import checks
from .numerics import shifted_log_softmax
from .reductions import reduce, reduce_vjp
from .spec import BadInput, Case, Difference, LossSpec, Sampled, register, replace_input, set_param

# torch maps ignore_index=None to cross_entropy's -100 for class-index targets.
DEFAULT_IGNORE_INDEX = -100


def _batched(input, target):
    """An unbatched ``input`` (H,) with a 0-d target is a batch of one."""
    return (input, target) if input.ndim == 2 else (input[None], target[None])


def _terms(target, weight, num_classes, ignore_index):
    """Per row: the mask of rows that count, the weight of the target class w_y (0 where
    ignored), and the class weights w (ones when ``weight`` is None)."""
    ignore = DEFAULT_IGNORE_INDEX if ignore_index is None else ignore_index
    mask = target != ignore
    safe = np.where(mask, target, 0)
    w = np.ones(num_classes) if weight is None else weight
    return mask, safe, w, np.where(mask, w[safe], 0.0)


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None, reduction="mean",
                         ignore_index=None, label_smoothing=0.0, chunk_size=None):
    r"""Cross entropy of the logits :math:`z = x W^\top + b`, as ``torch.nn.functional.linear_cross_entropy``.

    .. math:: \ell_i = m_i\Bigl[(1-\varepsilon)\, w_{y_i}\bigl(-\log p_{i y_i}\bigr)
              + \frac{\varepsilon}{V}\sum_{c} w_c\bigl(-\log p_{ic}\bigr)\Bigr],
              \qquad p_i = \operatorname{softmax}(z_i),\; m_i = [y_i \ne \text{ignore\_index}]

    with :math:`w = 1` without ``weight``. ``mean`` divides by :math:`\sum_i m_i w_{y_i}`
    (the number of rows that count without ``weight``; NaN when none does).
    ``ignore_index=None`` means -100. ``input`` is ``(N, H)`` (or ``(H,)`` with a 0-d
    target), ``linear_weight`` ``(V, H)``, ``linear_bias`` and ``weight`` ``(V,)``.
    ``chunk_size`` only changes how the implementations walk the rows.
    """
    x, t = _batched(input, target)
    logits = x @ linear_weight.T
    if linear_bias is not None:
        logits = logits + linear_bias
    logp = shifted_log_softmax(logits, -1)
    mask, safe, w, w_y = _terms(t, weight, linear_weight.shape[0], ignore_index)
    nll = -np.take_along_axis(logp, safe[:, None], axis=-1)[:, 0]
    eps = label_smoothing
    elementwise = (1 - eps) * w_y * nll
    if eps > 0:  # not 0 times the smoothing term, which a -inf logit makes +inf (and the row NaN)
        elementwise = elementwise - eps / linear_weight.shape[0] * (logp * w).sum(-1)
    elementwise = np.where(mask, elementwise, 0.0)
    if input.ndim == 1:
        elementwise = elementwise[0]
    return reduce(elementwise, reduction, w_y.sum())


def linear_cross_entropy_vjp(cotangent, input, linear_weight, target, *, linear_bias=None, weight=None,
                             reduction="mean", ignore_index=None, label_smoothing=0.0, chunk_size=None):
    r"""With :math:`S = \sum_c w_c` and :math:`g_i` the cotangent of row i,

    .. math:: \frac{\partial \ell_i}{\partial z_{ik}} = m_i\Bigl[p_{ik}\bigl((1-\varepsilon) w_{y_i}
              + \tfrac{\varepsilon}{V} S\bigr) - (1-\varepsilon) w_{y_i} [k = y_i]
              - \tfrac{\varepsilon}{V} w_k\Bigr] =: \delta_{ik}

    .. math:: \bar x = (g \odot \delta) W, \qquad \bar W = (g \odot \delta)^\top x, \qquad
              \bar b = \textstyle\sum_i g_i \delta_i

    The gradients of ``input`` and ``linear_weight``, then of ``linear_bias`` when it is given.
    """
    x, t = _batched(input, target)
    num_classes = linear_weight.shape[0]
    logits = x @ linear_weight.T
    if linear_bias is not None:
        logits = logits + linear_bias
    p = np.exp(shifted_log_softmax(logits, -1))
    mask, safe, w, w_y = _terms(t, weight, num_classes, ignore_index)
    g = reduce_vjp(cotangent, reduction, t.size, w_y.sum())
    g = np.broadcast_to(np.reshape(g, (-1,)) if reduction == "none" else g, t.shape)  # one per row
    eps = label_smoothing
    onehot = np.arange(num_classes) == safe[:, None]
    delta = (p * ((1 - eps) * w_y + eps / num_classes * w.sum())[:, None]
             - (1 - eps) * w_y[:, None] * onehot - eps / num_classes * w)
    d_logits = (g * mask)[:, None] * delta
    d_input = (d_logits @ linear_weight).reshape(input.shape)
    grads = (d_input, d_logits.T @ x)
    return grads + ((d_logits.sum(0),) if linear_bias is not None else ())


# -- checks ------------------------------------------------------------------------

def check_linear_cross_entropy(args: dict) -> None:
    checks.reduction(args["reduction"])
    x, lw, t = args["input"], args["linear_weight"], args["target"]
    checks.floating(x)
    checks.floating(lw)
    checks.same_dtype(x, lw)
    checks.ndim_in(x, (1, 2), "(N, H) or unbatched (H,)")
    checks.ndim_in(lw, (2,), "(V, H); K-dimensional losses are not covered")
    if lw.shape[1] != x.shape[-1]:
        raise ValueError(f"linear_weight must have the input's last dimension H={x.shape[-1]}: shape (V, "
                         f"{x.shape[-1]}); got {lw.shape}")
    checks.integer(t, "class indices (probability targets are not covered)")
    checks.shape_is(t, x.shape[:-1], "one class index per row of input")
    num_classes = lw.shape[0]
    for name in ("linear_bias", "weight"):
        a = args[name]
        if a is not None:
            checks.floating(a)
            checks.same_dtype(x, a)
            checks.shape_is(a, (num_classes,), "one entry per class")
    if args["weight"] is not None:
        checks.nonnegative_array(args["weight"])
    ignore_index = args["ignore_index"]
    if ignore_index is not None:
        checks.integer_value("ignore_index", ignore_index)
    checks.in_interval("label_smoothing", args["label_smoothing"], 0.0, 1.0)
    chunk_size = args["chunk_size"]
    if chunk_size is not None:
        checks.integer_value("chunk_size", chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of rows or None; got {chunk_size}")
    checks.class_labels(t, num_classes, DEFAULT_IGNORE_INDEX if ignore_index is None else ignore_index)


# -- sampling ----------------------------------------------------------------------

def sample_linear(rng: np.random.Generator, n=7, hidden=5, classes=6, ignored=None, unbatched=False):
    """``input`` ~ N(0, 1) (n, hidden), ``linear_weight`` ~ N(0, 0.6) (classes, hidden), class
    indices as targets; ``ignored=k`` sets two targets (not all) to k, so that they are ignored
    when k is ``ignore_index`` (or -100 with ``ignore_index=None``)."""
    x = rng.standard_normal((n, hidden))
    lw = 0.6 * rng.standard_normal((classes, hidden))
    t = rng.integers(0, classes, size=n)
    if ignored is not None:
        t[rng.choice(n, size=2, replace=False)] = ignored
        if np.all(t == ignored):
            t[0] = (ignored + 1) % classes
    if unbatched:
        return x[0], lw, np.asarray(t[0])
    return x, lw, t


bias = Sampled("linear_bias ~ N(0, 1), shape (V,)", lambda rng, inputs: rng.standard_normal(inputs[1].shape[0]))
class_weight = Sampled("weight ~ U(0.2, 2), shape (V,)", lambda rng, inputs: rng.uniform(0.2, 2.0, inputs[1].shape[0]))

_ALL = {"linear_bias": bias, "weight": class_weight, "ignore_index": 2, "label_smoothing": 0.15}

register(LossSpec(
    name="linear_cross_entropy", family="classification",
    forward=linear_cross_entropy, vjp_fn=linear_cross_entropy_vjp,
    inputs=("input", "linear_weight", "target"), differentiable=("input", "linear_weight"),
    array_params=("linear_bias", "weight"), differentiable_params=("linear_bias",),
    sampler=sample_linear, check=check_linear_cross_entropy,
    cases=(
        Case("default"),
        Case("linear_bias", {"linear_bias": bias}),
        Case("weight", {"weight": class_weight}),
        Case("ignore_index=None ignores -100", sample={"ignored": -100}),
        Case("ignore_index=2", {"ignore_index": 2}, sample={"ignored": 2}),
        Case("label_smoothing=0.15", {"label_smoothing": 0.15}),
        Case("weight, label_smoothing", {"weight": class_weight, "label_smoothing": 0.15}),
        Case("all options", _ALL, sample={"ignored": 2}),
        Case("chunk_size=3 of 7 rows", {"chunk_size": 3, "linear_bias": bias}),
        Case("chunk_size=3 of 7 rows, all options", {**_ALL, "chunk_size": 3}, sample={"ignored": 2}),
        Case("chunk_size=4 of 8 rows, ignored -100", {"chunk_size": 4, "weight": class_weight},
             sample={"n": 8, "ignored": -100}),
        Case("chunk_size=16 > 7 rows", {"chunk_size": 16, "linear_bias": bias}),
        Case("unbatched", {"linear_bias": bias, "weight": class_weight}, sample={"unbatched": True}),
    ),
    bad_inputs=(
        BadInput("linear_weight of another H", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError,
                 "linear_weight"),
        BadInput("3-D linear_weight (K-dimensional)", replace_input(1, lambda xs: xs[1][:, None]), ValueError,
                 "linear_weight"),
        BadInput("3-D input", replace_input(0, lambda xs: xs[0][None]), ValueError, "input"),
        BadInput("integer input", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "input"),
        BadInput("linear_weight of another dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)),
                 TypeError, "linear_weight"),
        BadInput("probability targets", replace_input(2, lambda xs: np.full((len(xs[2]), len(xs[1])), 0.1)),
                 TypeError, "target"),
        BadInput("target of another length", replace_input(2, lambda xs: xs[2][:-1]), ValueError, "target"),
        BadInput("class index = V", replace_input(2, lambda xs: np.full_like(xs[2], len(xs[1]))), IndexError,
                 "target"),
        BadInput("class index -1", replace_input(2, lambda xs: np.full_like(xs[2], -1)), IndexError, "target"),
        BadInput("linear_bias of another shape", set_param("linear_bias", lambda xs: np.zeros(len(xs[1]) + 1)),
                 ValueError, "linear_bias"),
        BadInput("weight of another shape", set_param("weight", lambda xs: np.ones(len(xs[1]) - 1)), ValueError,
                 "weight"),
        BadInput("negative weight", set_param("weight", lambda xs: -np.ones(len(xs[1]))), ValueError, "weight"),
        BadInput("label_smoothing > 1", set_param("label_smoothing", lambda xs: 1.5), ValueError,
                 "label_smoothing"),
        BadInput("chunk_size 0", set_param("chunk_size", lambda xs: 0), ValueError, "chunk_size"),
        BadInput("chunk_size 2.5", set_param("chunk_size", lambda xs: 2.5), TypeError, "chunk_size"),
        BadInput("ignore_index 1.5", set_param("ignore_index", lambda xs: 1.5), TypeError, "ignore_index"),
    ),
    builtins={"torch": "torch.nn.functional.linear_cross_entropy",
              "optax": "optax.losses.softmax_cross_entropy_with_integer_labels"},
    differences=(
        Difference("torch", "torch.nn.functional.linear_cross_entropy",
                   "torch's options=LinearCrossEntropyOptions(...) chooses the chunking, and its chunked path "
                   "only takes label_smoothing == 0 (otherwise it warns and runs unchunked); lossparity's "
                   "chunk_size chunks with every option. torch also takes probability targets and "
                   "K-dimensional linear_weight (V, d1.., H), which lossparity does not cover. Under "
                   "torch.autocast torch's projection runs in the autocast dtype (it is linear, then "
                   "cross_entropy); lossparity's torch variants run the whole loss in float32 there, as "
                   "autocast runs torch's other losses",
                   "chunk_size=k == options=LinearCrossEntropyOptions(batch_chunk_size=k, "
                   "chunking_method=None) (values and gradients equal; chunk_size=None == options=None); "
                   "under autocast to dtype d, torch's == cross_entropy(linear(x.to(d), W.to(d)).float(), y)"),
        Difference("torch", "torch.nn.functional.cross_entropy",
                   "ignore_index defaults to None, which means -100 for class indices (cross_entropy's "
                   "default), so a -100 target is ignored by default",
                   "linear_cross_entropy(x, W, y, linear_bias=b, **kw) == cross_entropy(x @ W.T + b, y, "
                   "**kw) with ignore_index=None replaced by -100"),
        Difference("optax", "optax.losses.softmax_cross_entropy_with_integer_labels",
                   "optax takes logits and has no class weight, no ignore_index, no smoothing and no "
                   "reduction",
                   "logits = x @ W.T + b; ignore_index -> where=(y != ignore_index) with ignored labels "
                   "replaced by 0; label_smoothing=e -> softmax_cross_entropy(logits, smooth_labels("
                   "one_hot(y, V), e)); mean -> sum / number of rows that count; no weight mapping"),
    ),
))
