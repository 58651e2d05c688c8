"""Classification losses: cross_entropy, nll_loss, binary_cross_entropy,
binary_cross_entropy_with_logits, kl_div.

Every loss follows ``torch.nn.functional`` (torch 2.13) in name, argument order,
defaults and semantics; torch's deprecated ``size_average`` and ``reduce`` are left
out. The class dimension is 0 for an unbatched input ``(C,)`` and 1 otherwise
(``(N, C)`` or ``(N, C, d1, d2, ...)``).

``cross_entropy`` gives every element ``i`` *effective targets* :math:`q_{i,c} \\ge 0`
(class weights, label smoothing and ``ignore_index`` folded in) and loses
:math:`-\\sum_c q_{i,c} \\log p_{i,c}`; the gradient with respect to the logits is
:math:`p_{i,c} \\sum_{c'} q_{i,c'} - q_{i,c}` (softmax minus target), which is how the
hand-written backwards are written. ``nll_loss`` is linear in its input: its gradient
is :math:`-m_i w_{y_i}` at the target class and 0 elsewhere.

Where every target is ignored, ``mean`` is NaN (0 / 0) and its gradient is zero, as
torch gives; the matrix runs that case with ``none`` and ``sum`` only, because finite
differences and gradcheck cannot differentiate a NaN-valued function.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import log_expit, log_softmax, softmax, xlogy, expit

from . import articles, checks
from .numerics import logaddexp, masked_logsumexp, shifted_log_softmax
from .reductions import mean_over, reduce, reduce_vjp
from .spec import (Alias, BadInput, Case, Difference, LossSpec, Sampled, alias_spec, register, replace_input,
                   set_param, XFail)


# -- shared helpers ----------------------------------------------------------------

def class_dim(input) -> int:
    """0 for an unbatched input ``(C,)``, 1 for ``(N, C)`` and ``(N, C, d1, ...)``."""
    return 0 if input.ndim == 1 else 1


def _along_class(v, input):
    """A per-class vector ``(C,)`` shaped to broadcast against ``input`` along its class dimension."""
    shape = [1] * input.ndim
    shape[class_dim(input)] = -1
    return v.reshape(shape)


def _class_index_terms(input, target, weight, ignore_index):
    """The mask of targets that count, the labels with ignored ones set to 0 (any valid
    class), and the weight of each element's target (0 where ignored)."""
    counts = target != ignore_index
    safe = np.where(counts, target, 0)
    w_target = np.ones(target.shape) if weight is None else weight[safe]
    return counts, safe, np.where(counts, w_target, 0.0)


def _weighted_mean(elementwise, reduction, denominator):
    """``reduce`` with torch's weighted ``mean``: NaN (and, in the VJP, a zero gradient)
    when nothing counts, as when every target is ignored."""
    if reduction != "mean":
        return reduce(elementwise, reduction)
    nothing = denominator == 0
    return np.where(nothing, np.nan, elementwise.sum() / np.where(nothing, 1.0, denominator))


def _safe_denominator(denominator):
    return np.where(denominator == 0, 1.0, denominator)


def _class_cotangent(cotangent, reduction, input, numel, denominator=None):
    """The cotangent of each element, broadcast along the class dimension."""
    g = reduce_vjp(cotangent, reduction, numel, denominator)
    return np.expand_dims(g, class_dim(input)) if reduction == "none" else g


def _effective_index_targets(input, target, weight, ignore_index, label_smoothing):
    r""":math:`q_{i,c} = m_i\,[(1-\varepsilon)\,w_{y_i}\,[c = y_i] + \tfrac{\varepsilon}{C} w_c]`,
    with :math:`m_i = [y_i \ne \text{ignore\_index}]`, and the weight denominator."""
    cd = class_dim(input)
    num_classes = input.shape[cd]
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    q = np.zeros(input.shape)
    np.put_along_axis(q, np.expand_dims(safe, cd), np.expand_dims((1.0 - label_smoothing) * w_target, cd), cd)
    if label_smoothing > 0:
        w = np.ones(num_classes) if weight is None else weight
        q += (label_smoothing / num_classes) * _along_class(w, input) * np.expand_dims(counts, cd)
    return q, w_target.sum()


def _effective_probability_targets(input, target, weight, label_smoothing):
    r""":math:`q_{i,c} = w_c\,((1-\varepsilon)\,t_{i,c} + \varepsilon / C)`."""
    num_classes = input.shape[class_dim(input)]
    q = target * (1.0 - label_smoothing) + label_smoothing / num_classes if label_smoothing > 0 else target
    return q if weight is None else q * _along_class(weight, input)


def _softmax_minus_target(input, q, g):
    cd = class_dim(input)
    return g * (np.exp(shifted_log_softmax(input, cd)) * q.sum(axis=cd, keepdims=True) - q)


# -- cross_entropy ---------------------------------------------------------------

def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    r"""Cross entropy of logits, as ``torch.nn.functional.cross_entropy``.

    Class indices :math:`y_i` (an integer ``target`` of the input's shape without the
    class dimension), with :math:`\log p = \operatorname{log\_softmax}(x)` over classes:

    .. math:: \ell_i = m_i \Big[(1-\varepsilon)\,(-w_{y_i} \log p_{i,y_i})
              + \frac{\varepsilon}{C} \sum_c (-w_c \log p_{i,c})\Big],
              \qquad m_i = [y_i \ne \text{ignore\_index}]

    and ``mean`` is :math:`\sum_i \ell_i / \sum_i m_i w_{y_i}` (the count of targets
    that count when there is no ``weight``): NaN when every target is ignored.

    Class probabilities :math:`t_{i,c}` (a floating ``target`` of the input's shape;
    ``ignore_index`` does not apply), with :math:`t' = (1-\varepsilon)\,t + \varepsilon/C`:

    .. math:: \ell_i = -\sum_c w_c\, t'_{i,c} \log p_{i,c}

    and ``mean`` divides by the number of elements :math:`N d_1 \cdots d_K`, not by a
    sum of weights. Both forms are :math:`-\sum_c q_{i,c} \log p_{i,c}` for effective
    targets :math:`q` (see ``cross_entropy_vjp``).
    """
    cd = class_dim(input)
    logp = shifted_log_softmax(input, cd)
    if target.dtype.kind == "f":
        q = _effective_probability_targets(input, target, weight, label_smoothing)
        return reduce(-(q * logp).sum(axis=cd), reduction)
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    picked = np.take_along_axis(logp, np.expand_dims(safe, cd), cd).squeeze(cd)
    # An ignored position is 0 even where its placeholder class has log p = -inf (0 * -inf is NaN).
    with np.errstate(invalid="ignore"):
        elementwise = np.where(counts, -w_target * picked, 0.0)
    if label_smoothing > 0:
        num_classes = input.shape[cd]
        w = np.ones(num_classes) if weight is None else weight
        smooth = np.where(counts, -(logp * _along_class(w, input)).sum(axis=cd), 0.0)
        elementwise = (1.0 - label_smoothing) * elementwise + (label_smoothing / num_classes) * smooth
    return _weighted_mean(elementwise, reduction, w_target.sum())


def cross_entropy_vjp(cotangent, input, target, weight=None, ignore_index=-100, reduction="mean",
                      label_smoothing=0.0):
    r"""Softmax minus target, scaled by each element's cotangent :math:`g_i`:

    .. math:: \frac{\partial \ell_i}{\partial x_{i,c}} = p_{i,c} \sum_{c'} q_{i,c'} - q_{i,c}

    where :math:`q` are the effective targets of the forward. With every target ignored
    ``mean`` is NaN and its gradient is zero, as torch's.
    """
    numel = input.size // input.shape[class_dim(input)]
    if target.dtype.kind == "f":
        q = _effective_probability_targets(input, target, weight, label_smoothing)
        return (_softmax_minus_target(input, q, _class_cotangent(cotangent, reduction, input, numel)),)
    q, denominator = _effective_index_targets(input, target, weight, ignore_index, label_smoothing)
    g = _class_cotangent(cotangent, reduction, input, numel, _safe_denominator(denominator))
    return (_softmax_minus_target(input, q, g),)


def _check_class_target(args: dict, probabilities: bool) -> str:
    """Input and target of cross_entropy / nll_loss; returns "indices" or "probabilities"."""
    x, t = args["input"], args["target"]
    checks.floating(x)
    checks.ndim_in(x, range(1, 64), "(C,), (N, C) or (N, C, d1, ...): at least one dimension")
    cd = 0 if x.ndim == 1 else 1
    num_classes = x.shape[cd]
    index_shape = x.shape[:cd] + x.shape[cd + 1:]
    if probabilities and t.kind == "float":
        if t.shape == x.shape:
            checks.same_dtype(x, t)
            return "probabilities"
        if t.shape == index_shape:
            raise TypeError(f"target must hold class indices as an integer array (a floating target is "
                            f"class probabilities of the input's shape {x.shape}); got dtype {t.dtype}, "
                            f"shape {t.shape}")
        raise ValueError(f"target must have shape {index_shape} (class indices) or the input's shape {x.shape} "
                         f"(class probabilities); got {t.shape}")
    checks.integer(t)
    checks.shape_is(t, index_shape, "class indices: the input's shape without its class dimension")
    checks.integer_value("ignore_index", args["ignore_index"])
    checks.class_labels(t, num_classes, args["ignore_index"])
    return "indices"


def _check_class_weight(args: dict) -> None:
    w = args.get("weight")
    if w is None:
        return
    x = args["input"]
    checks.floating(w)
    checks.shape_is(w, (x.shape[0 if x.ndim == 1 else 1],), "one weight per class")
    checks.same_dtype(x, w)
    checks.nonnegative_array(w)


def check_cross_entropy(args: dict) -> None:
    checks.reduction(args["reduction"])
    checks.integer_value("ignore_index", args["ignore_index"])
    _check_class_target(args, probabilities=True)
    _check_class_weight(args)
    checks.in_interval("label_smoothing", args["label_smoothing"], 0.0, 1.0)


# -- nll_loss --------------------------------------------------------------------

def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    r"""Negative log likelihood of log-probabilities, as ``torch.nn.functional.nll_loss``.

    .. math:: \ell_i = -m_i\, w_{y_i}\, x_{i,y_i}, \qquad m_i = [y_i \ne \text{ignore\_index}]

    ``mean`` is :math:`\sum_i \ell_i / \sum_i m_i w_{y_i}` (NaN when every target is
    ignored). ``input`` is not checked to be normalized: the loss is linear in it.
    ``cross_entropy(x, y) == nll_loss(log_softmax(x), y)``.
    """
    cd = class_dim(input)
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    picked = np.take_along_axis(input, np.expand_dims(safe, cd), cd).squeeze(cd)
    with np.errstate(invalid="ignore"):  # an ignored position is 0 even at an input of -inf
        elementwise = np.where(counts, -w_target * picked, 0.0)
    return _weighted_mean(elementwise, reduction, w_target.sum())


def nll_loss_vjp(cotangent, input, target, weight=None, ignore_index=-100, reduction="mean"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_{i,c}} = -m_i\, w_{y_i}\, [c = y_i]

    zero everywhere when every target is ignored (``mean`` is NaN there), as torch's.
    """
    cd = class_dim(input)
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    g = reduce_vjp(cotangent, reduction, target.size, _safe_denominator(w_target.sum()))
    d_input = np.zeros(input.shape)
    np.put_along_axis(d_input, np.expand_dims(safe, cd), np.expand_dims(-w_target * g, cd), cd)
    return (d_input,)


def check_nll_loss(args: dict) -> None:
    checks.reduction(args["reduction"])
    checks.integer_value("ignore_index", args["ignore_index"])
    _check_class_target(args, probabilities=False)
    _check_class_weight(args)


# -- binary_cross_entropy --------------------------------------------------------

LOG_CLAMP = -100.0  # torch clamps each log of binary_cross_entropy at -100


def _clamped_logs(input):
    """:math:`\\max(\\log x, -100)` and :math:`\\max(\\log(1-x), -100)`, as torch; 0 and 1 give -100."""
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(input), LOG_CLAMP), np.maximum(np.log1p(-input), LOG_CLAMP)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    r"""Binary cross entropy of probabilities, as ``torch.nn.functional.binary_cross_entropy``.

    .. math:: \ell_i = -w_i\,\big[y_i \max(\log x_i, -100) + (1 - y_i) \max(\log(1 - x_i), -100)\big]

    ``weight`` broadcasts to the input's shape (torch expands it); ``mean`` divides by
    the number of elements, weighted or not.
    """
    log_x, log_1mx = _clamped_logs(input)
    elementwise = -(target * log_x + (1.0 - target) * log_1mx)
    return reduce(elementwise if weight is None else elementwise * weight, reduction)


def binary_cross_entropy_vjp(cotangent, input, target, weight=None, reduction="mean"):
    r"""The true derivative of the clamped forward:

    .. math:: \frac{\partial \ell_i}{\partial x_i} = w_i\Big[\frac{1-y_i}{1-x_i}[\log(1-x_i) > -100]
              - \frac{y_i}{x_i}[\log x_i > -100]\Big], \qquad
              \frac{\partial \ell_i}{\partial y_i} = w_i\,\big[\max(\log(1-x_i), -100) - \max(\log x_i, -100)\big]

    Where neither log is clamped the first is :math:`w_i (x_i - y_i) / (x_i (1 - x_i))`,
    torch's built-in backward, which divides by :math:`\max(x_i(1-x_i), 10^{-12})` instead.
    """
    g = reduce_vjp(cotangent, reduction, input.size)
    if weight is not None:
        g = g * weight
    log_x, log_1mx = _clamped_logs(input)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (np.where(log_1mx > LOG_CLAMP, (1.0 - target) / (1.0 - input), 0.0)
                 - np.where(log_x > LOG_CLAMP, target / input, 0.0))
    return g * slope, g * (log_1mx - log_x)


def check_binary_cross_entropy(args: dict) -> None:
    checks.reduction(args["reduction"])
    x, y = args["input"], args["target"]
    checks.floating(x)
    checks.floating(y)
    checks.same_shape(x, y)
    checks.same_dtype(x, y)
    checks.within(x, 0.0, 1.0, "probabilities")
    checks.within(y, 0.0, 1.0, "probabilities")
    _check_broadcast_weight(args, "weight")


def _check_broadcast_weight(args: dict, name: str) -> None:
    w = args.get(name)
    if w is None:
        return
    x = args["input"]
    checks.floating(w)
    checks.broadcastable_to(w, x.shape, "torch expands it to the input's shape")
    checks.same_dtype(x, w)
    checks.nonnegative_array(w)


# -- binary_cross_entropy_with_logits --------------------------------------------

def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    r"""Binary cross entropy of logits, as ``torch.nn.functional.binary_cross_entropy_with_logits``.

    .. math:: \ell_i = w_i\,\big[(1 - y_i)\,x_i + (1 + (p_c - 1)\,y_i)\,\operatorname{softplus}(-x_i)\big]
              = -w_i\,\big[p_c\, y_i \log\sigma(x_i) + (1 - y_i) \log\sigma(-x_i)\big]

    with :math:`\operatorname{softplus}(-x) = -\log\sigma(x)` computed stably; ``pos_weight``
    :math:`p` broadcasts along the last (class) dimension, ``weight`` to the input's
    shape; ``mean`` divides by the number of elements. No clamping.
    """
    softplus_neg = -log_expit(input)
    coef = 1.0 if pos_weight is None else 1.0 + (pos_weight - 1.0) * target
    elementwise = (1.0 - target) * input + coef * softplus_neg
    return reduce(elementwise if weight is None else elementwise * weight, reduction)


def binary_cross_entropy_with_logits_vjp(cotangent, input, target, weight=None, reduction="mean",
                                         pos_weight=None):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = w_i\,\big[(1 + (p_c - 1) y_i)\,\sigma(x_i) - p_c\, y_i\big],
              \qquad \frac{\partial \ell_i}{\partial y_i} = w_i\,\big[-x_i + (p_c - 1)\operatorname{softplus}(-x_i)\big]
    """
    g = reduce_vjp(cotangent, reduction, input.size)
    if weight is not None:
        g = g * weight
    if pos_weight is None:
        return g * (expit(input) - target), -g * input
    coef = 1.0 + (pos_weight - 1.0) * target
    return g * (coef * expit(input) - pos_weight * target), g * ((pos_weight - 1.0) * -log_expit(input) - input)


def check_binary_cross_entropy_with_logits(args: dict) -> None:
    checks.reduction(args["reduction"])
    x, y = args["input"], args["target"]
    checks.floating(x)
    checks.floating(y)
    checks.same_shape(x, y)
    checks.same_dtype(x, y)
    _check_broadcast_weight(args, "weight")
    _check_broadcast_weight(args, "pos_weight")


# -- kl_div ----------------------------------------------------------------------

KL_REDUCTIONS = ("none", "mean", "sum", "batchmean")


def _batch_size(input) -> int:
    # torch divides batchmean by input.size(0), and leaves a 0-d input's sum undivided.
    return input.shape[0] if input.ndim else 1


def kl_div(input, target, reduction="mean", log_target=False):
    r"""Kullback-Leibler divergence, as ``torch.nn.functional.kl_div``; ``input`` is log-probabilities.

    .. math:: \ell_i = \operatorname{xlogy}(t_i, t_i) - t_i x_i \quad\text{or, with log\_target,}\quad
              \ell_i = e^{t_i}\,(t_i - x_i)

    ``xlogy`` makes a zero target contribute 0. ``mean`` averages every element (torch
    warns about it); ``batchmean`` divides the sum by ``input.shape[0]``, the KL
    divergence per sample.
    """
    if log_target:
        elementwise = np.exp(target) * (target - input)
    else:
        elementwise = xlogy(target, target) - target * input
    return reduce(elementwise, reduction, batch_size=_batch_size(input))


def kl_div_vjp(cotangent, input, target, reduction="mean", log_target=False):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = -t_i, \qquad
              \frac{\partial \ell_i}{\partial t_i} = \log t_i + 1 - x_i

    or, with ``log_target``, :math:`-e^{t_i}` and :math:`e^{t_i}(t_i - x_i + 1)`. The target
    derivative is written :math:`\log t + t/t - x` (the product rule on :math:`t \log t`),
    which is NaN at :math:`t = 0`, where :math:`t \log t` has no two-sided derivative:
    torch's and JAX's autodiff of ``xlogy`` give NaN there too.
    """
    g = reduce_vjp(cotangent, reduction, input.size, batch_size=_batch_size(input))
    if log_target:
        e = np.exp(target)
        return -e * g, e * (target - input + 1.0) * g
    with np.errstate(divide="ignore", invalid="ignore"):
        return -target * g, (np.log(target) + target / target - input) * g


def check_kl_div(args: dict) -> None:
    checks.reduction(args["reduction"], KL_REDUCTIONS)
    x, t = args["input"], args["target"]
    checks.floating(x)
    checks.floating(t)
    checks.same_shape(x, t)
    checks.same_dtype(x, t)
    checks.boolean("log_target", args["log_target"])


# -- samplers --------------------------------------------------------------------

def nonfinite_rows(x):
    """``x`` with its first four rows along the last axis made non-finite, for the cases
    "non-finite logits": every logit -inf; a NaN; a +inf beside a -inf; two tied +inf. Each such
    row's loss and gradient are NaN in the reference (``numerics.shifted_log_softmax``), in torch
    and in optax."""
    x = np.array(x, dtype=float)
    rows = x.reshape(-1, x.shape[-1])
    if rows.shape[0] < 4 or rows.shape[1] < 3:
        raise ValueError(f"nonfinite_rows needs 4 rows of 3 classes at least; got shape {x.shape}")
    rows[0] = -np.inf
    rows[1, 1] = np.nan
    rows[2, 0], rows[2, 2] = np.inf, -np.inf
    rows[3, :2] = np.inf
    return x


def sample_logits_and_labels(rng: np.random.Generator, shape=(6, 4), targets="indices",
                             ignore_index=-100, ignored=0.0, logits="logits", ignored_rows_neg_inf=False,
                             nonfinite=False):
    """Logits ``input`` ~ N(0, 1.5²) (log-probabilities with ``logits="log_probs"``) and
    ``target``: class indices (a share ``ignored`` set to ``ignore_index``; at least one
    ignored and, below 1, at least one kept) or, with ``targets="probabilities"``,
    softmax-normalized class probabilities of the input's shape. ``ignored_rows_neg_inf``:
    the ignored positions' input at class 0 is ``-inf`` (a log-probability of 0), which an
    ignored target must not turn into NaN: torch's loss skips those positions. ``nonfinite``
    (logits of shape (N, C)): ``nonfinite_rows``."""
    shape = tuple(shape)
    cd = 0 if len(shape) == 1 else 1
    num_classes = shape[cd]
    x = 1.5 * rng.standard_normal(shape)
    if nonfinite:
        x = nonfinite_rows(x)
    if logits == "log_probs":
        x = log_softmax(x, axis=cd)
    if targets == "probabilities":
        return x, softmax(rng.standard_normal(shape), axis=cd)
    index_shape = shape[:cd] + shape[cd + 1:]
    y = rng.integers(num_classes, size=index_shape)
    if ignored > 0:
        drop = rng.random(index_shape) < ignored
        flat = drop.reshape(-1)
        flat[0] = True
        if ignored < 1 and flat.size > 1:
            flat[-1] = False
        y = np.where(drop, ignore_index, y)
        if ignored_rows_neg_inf:
            first_class = (slice(None),) * cd + (0,)
            x[first_class] = np.where(drop, -np.inf, x[first_class])
    return x, y.astype(np.int64)


def sample_log_probs_and_labels(rng: np.random.Generator, **options):
    """``sample_logits_and_labels`` with log-softmax-normalized ``input``, as nll_loss expects."""
    return sample_logits_and_labels(rng, logits="log_probs", **options)


def sample_probabilities(rng: np.random.Generator, shape=(6, 4), saturated=False):
    """``input`` in (0.02, 0.98), clear of the clamped logs and of torch's 1e-12 guard,
    and soft labels ``target`` in (0.01, 0.99), clear of the [0, 1] bounds. With
    ``saturated``, every fifth input is 0, 1 or 1e-50 in turn, where the logs are clamped."""
    shape = tuple(shape)
    x, y = rng.uniform(0.02, 0.98, size=shape), rng.uniform(0.01, 0.99, size=shape)
    if saturated:
        flat = x.reshape(-1)
        flat[::5] = np.resize([0.0, 1.0, 1e-50], flat[::5].size)
    return x, y


def sample_logits_and_soft_labels(rng: np.random.Generator, shape=(6, 4), hard=False):
    """Logits ``input`` ~ N(0, 2²) and soft labels ``target`` ~ U(0, 1) (with ``hard``, labels
    in {0, 1})."""
    shape = tuple(shape)
    x, y = 2.0 * rng.standard_normal(shape), rng.uniform(0.0, 1.0, size=shape)
    return x, (np.round(y) if hard else y)


def sample_distributions(rng: np.random.Generator, shape=(6, 4), log_target=False, zeros=False):
    """``input``: log-probabilities over the last axis; ``target``: probabilities over it,
    or log-probabilities with ``log_target``. Targets stay positive: at t = 0 the target
    derivative is NaN (no two-sided derivative), which finite differences cannot check;
    ``zeros`` sets every fifth target to 0 for the matrix alone."""
    shape = tuple(shape)
    x = log_softmax(rng.standard_normal(shape), axis=-1)
    t = log_softmax(rng.standard_normal(shape), axis=-1)
    t = t if log_target else np.exp(t)
    if zeros:
        t.reshape(-1)[::5] = 0.0
    return x, t


def _class_weight(rng, inputs):
    x = inputs[0]
    return rng.uniform(0.2, 2.0, size=x.shape[0 if x.ndim == 1 else 1])


class_weight = Sampled("weight ~ U(0.2, 2), one per class", _class_weight)


def _broadcast_weight(description, shape_of):
    return Sampled(description, lambda rng, inputs: rng.uniform(0.2, 2.0, size=shape_of(inputs[0].shape)))


# -- bad inputs ------------------------------------------------------------------

def _relabel(position, value):
    def make(xs):
        y = xs[1].copy()
        y.reshape(-1)[position] = value(xs)
        return y
    return make


def _num_classes(xs):
    return xs[0].shape[0 if xs[0].ndim == 1 else 1]


CLASS_INDEX_BAD_INPUTS = (
    BadInput("target of another shape", replace_input(1, lambda xs: xs[1][:-1]), ValueError, "target"),
    BadInput("target with an extra dimension", replace_input(1, lambda xs: xs[1][:, None]), ValueError, "target"),
    BadInput("label equal to the number of classes", replace_input(1, _relabel(0, _num_classes)), IndexError,
             "target"),
    BadInput("negative label other than ignore_index", replace_input(1, _relabel(0, lambda xs: -1)), IndexError,
             "target"),
    BadInput("integer input", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "input"),
    BadInput("0-d input", replace_input(0, lambda xs: xs[0][0, 0]), ValueError, "input"),
    BadInput("boolean target", replace_input(1, lambda xs: xs[1] > 0), TypeError, "target"),
    BadInput("weight of another shape", set_param("weight", lambda xs: np.ones(_num_classes(xs) + 1)), ValueError,
             "weight"),
    BadInput("negative weight", set_param("weight", lambda xs: -np.ones(_num_classes(xs))), ValueError, "weight"),
    BadInput("integer weight", set_param("weight", lambda xs: np.ones(_num_classes(xs), dtype=np.int64)),
             TypeError, "weight"),
    BadInput("float ignore_index", set_param("ignore_index", lambda xs: -100.0), TypeError, "ignore_index"),
)

CROSS_ENTROPY_BAD_INPUTS = CLASS_INDEX_BAD_INPUTS + (
    BadInput("float target of the class-index shape", replace_input(1, lambda xs: xs[1].astype(np.float64)),
             TypeError, "target"),
    BadInput("float target fitting neither form", replace_input(1, lambda xs: np.full(xs[0].shape[:1] + (7,), 0.25)),
             ValueError, "target"),
    BadInput("probability target of another dtype",
             replace_input(1, lambda xs: softmax(xs[0], axis=1).astype(np.float32)), TypeError, "target"),
    BadInput("label_smoothing above 1", set_param("label_smoothing", lambda xs: 1.5), ValueError, "label_smoothing"),
    BadInput("negative label_smoothing", set_param("label_smoothing", lambda xs: -0.1), ValueError,
             "label_smoothing"),
)

NLL_LOSS_BAD_INPUTS = CLASS_INDEX_BAD_INPUTS + (
    BadInput("float target of the class-index shape", replace_input(1, lambda xs: xs[1].astype(np.float64)),
             TypeError, "target"),
    BadInput("float target of the input's shape (nll_loss takes no probabilities)",
             replace_input(1, lambda xs: softmax(xs[0], axis=1)), TypeError, "target"),
)

_PAIR_BAD_INPUTS = (
    BadInput("target of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "target"),
    BadInput("target that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "target"),
    BadInput("integer input", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "input"),
    BadInput("integer target", replace_input(1, lambda xs: np.round(xs[1]).astype(np.int64)), TypeError, "target"),
    BadInput("target of another dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)), TypeError, "target"),
)


def _weight_bad_inputs(name):
    return (
        BadInput(f"{name} that does not broadcast", set_param(name, lambda xs: np.ones(xs[0].shape[-1] + 1)),
                 ValueError, name),
        BadInput(f"{name} with more dimensions than the input",
                 set_param(name, lambda xs: np.ones((2,) + xs[0].shape)), ValueError, name),
        BadInput(f"negative {name}", set_param(name, lambda xs: -np.ones(xs[0].shape[-1])), ValueError, name),
    )


BCE_BAD_INPUTS = _PAIR_BAD_INPUTS + _weight_bad_inputs("weight") + (
    BadInput("input above 1", replace_input(0, lambda xs: xs[0] + 1.0), ValueError, "input"),
    BadInput("negative input", replace_input(0, lambda xs: xs[0] - 1.0), ValueError, "input"),
    BadInput("NaN input", replace_input(0, lambda xs: np.where(xs[0] > 0.5, np.nan, xs[0])), ValueError, "input"),
    BadInput("target above 1", replace_input(1, lambda xs: xs[1] + 1.0), ValueError, "target"),
    BadInput("negative target", replace_input(1, lambda xs: xs[1] - 1.0), ValueError, "target"),
)

BCE_LOGITS_BAD_INPUTS = _PAIR_BAD_INPUTS + _weight_bad_inputs("weight") + _weight_bad_inputs("pos_weight")

KL_DIV_BAD_INPUTS = _PAIR_BAD_INPUTS + (
    BadInput("log_target that is not a bool", set_param("log_target", lambda xs: "yes"), TypeError, "log_target"),
)


# -- registry --------------------------------------------------------------------

_OPTAX_INTEGER_NONFINITE_NOTE = (
    "optax.losses.softmax_cross_entropy_with_integer_labels is jax.nn.logsumexp(x) - x[y], and that logsumexp "
    "is +inf, not NaN, over a row holding a +inf: the loss is +inf beside a finite label logit, its gradient NaN "
    "at the +inf logits and finite elsewhere; torch's cross_entropy and optax's softmax_cross_entropy "
    "(log_softmax subtracts the row's maximum) give NaN over the whole row, as the reference does")
_OPTAX_INTEGER_NONFINITE = Difference(
    "optax", "optax.losses.softmax_cross_entropy_with_integer_labels (a non-finite row)", _OPTAX_INTEGER_NONFINITE_NOTE,
    "equal where every row's largest logit is finite; where it is not, the reference and torch give NaN "
    "(loss and the row's gradient)")

_IGNORE = {"ignore_index": -100, "ignored": 0.3}
# The matrix alone (finite differences and gradcheck cannot see a NaN): rows whose largest logit is
# not finite (``nonfinite_rows``) have a NaN loss and gradient, NaN in, NaN out, as in torch and optax.
NONFINITE_LOGITS = Case("non-finite logits", sample={"nonfinite": True})
_KDIM = {"shape": (3, 4, 2, 2)}
_PROBS = {"targets": "probabilities"}

# torch also differentiates a probability target (-(1 - eps) w_c log p_c); the torch Function
# and the JAX custom_vjp return that gradient, but `differentiable` is one tuple per spec and
# class-index targets are integers, so the matrix checks the input's gradient only.
register(LossSpec(
    name="cross_entropy", family="classification", forward=cross_entropy, vjp_fn=cross_entropy_vjp,
    claims=articles.claims("cross_entropy"),
    inputs=("input", "target"), differentiable=("input",), sampler=sample_logits_and_labels,
    check=check_cross_entropy, array_params=("weight",),
    cases=(
        Case("default"),
        Case("unbatched", sample={"shape": (5,)}),
        # past 16 classes torch's Function takes its softmax with torch.softmax (the other path is
        # for a short last class dim)
        Case("20 classes", sample={"shape": (6, 20)}),
        Case("K-dim", sample=_KDIM),
        Case("weighted", {"weight": class_weight}),
        Case("ignore_index", sample=_IGNORE),
        Case("ignore_index=1", {"ignore_index": 1}, sample={"ignore_index": 1, "ignored": 0.3}),
        Case("ignore_index, -inf logit where ignored", sample={**_IGNORE, "ignored_rows_neg_inf": True}),
        Case("label_smoothing=0.2", {"label_smoothing": 0.2}),
        Case("weighted+ignore_index+label_smoothing", {"weight": class_weight, "label_smoothing": 0.2},
             sample=_IGNORE),
        Case("K-dim+weighted+ignore_index+label_smoothing", {"weight": class_weight, "label_smoothing": 0.1},
             sample={**_KDIM, **_IGNORE}),
        Case("probabilities", sample=_PROBS),
        Case("probabilities+unbatched", sample={**_PROBS, "shape": (5,)}),
        Case("probabilities+K-dim", sample={**_PROBS, **_KDIM}),
        Case("probabilities+weighted+label_smoothing", {"weight": class_weight, "label_smoothing": 0.3},
             sample=_PROBS),
        # `mean` is NaN when every target is ignored: finite differences and gradcheck cannot
        # see a NaN-valued function, so only none and sum run here.
        Case("all_ignored", {"weight": class_weight, "label_smoothing": 0.2},
             sample={"ignore_index": -100, "ignored": 1.0}, reductions=("none", "sum")),
    ),
    # The matrix alone: NaN with a zero gradient, torch's definition, which finite differences
    # and gradcheck cannot see (the forward is NaN everywhere near the inputs).
    straight_through_cases=(
        Case("all_ignored_mean", {"weight": class_weight, "label_smoothing": 0.2},
             sample={"ignore_index": -100, "ignored": 1.0}, reductions=("mean",)),
        Case("all_ignored_mean_unweighted", sample={"ignore_index": -100, "ignored": 1.0}, reductions=("mean",)),
        NONFINITE_LOGITS,
    ),
    xfails=(XFail(_OPTAX_INTEGER_NONFINITE_NOTE, case=NONFINITE_LOGITS.name, check="jax.builtin"),),
    bad_inputs=CROSS_ENTROPY_BAD_INPUTS,
    builtins={"torch": "torch.nn.functional.cross_entropy",
              "optax": "optax.losses.softmax_cross_entropy_with_integer_labels, optax.losses.softmax_cross_entropy"},
    differences=(
        _OPTAX_INTEGER_NONFINITE,
        Difference("optax", "optax.losses.softmax_cross_entropy_with_integer_labels",
                   "class indices only; no weight, ignore_index or label smoothing; per element, no reduction; "
                   "the class axis is the last by default",
                   "cross_entropy(x, y, reduction='none') == softmax_cross_entropy_with_integer_labels(x, y, axis=1) "
                   "(axis=-1 for (C,) and (N, C)), when no target equals ignore_index; mean is .mean()"),
        Difference("optax", "optax.losses.softmax_cross_entropy + optax.smooth_labels",
                   "class probabilities; smooth_labels is torch's (1 - eps) t + eps / C; no weight",
                   "cross_entropy(x, t, label_smoothing=eps, reduction='none') == "
                   "softmax_cross_entropy(x, smooth_labels(t, eps, axis=1), axis=1)"),
        Difference("optax", "optax.losses.softmax_cross_entropy_with_integer_labels(where=...)",
                   "with every target ignored torch's mean is NaN (0 / 0) with a zero gradient; an optax "
                   "`where` mask gives 0 for a fully masked row",
                   "cross_entropy(..., reduction='mean') is NaN when every target equals ignore_index; "
                   "reduction='sum' is 0 there"),
        Difference("torch", "torch.nn.functional.cross_entropy",
                   "weighted mean: class indices divide by the sum of the weights of the targets that count "
                   "(pytorch#25571), class probabilities by the number of elements N*d1*...; the smoothing term is "
                   "weighted per class and divided by the same denominator (pytorch#104776)",
                   "mean == sum(l) / sum(w[y_i] for y_i != ignore_index) for indices; == sum(l) / (numel / C) "
                   "for probabilities"),
        Difference("keras", "keras.losses.categorical_crossentropy",
                   "label smoothing is (1 - eps) y + eps / C as torch's; some code smooths with eps / (C - 1) on "
                   "the wrong classes instead (pytorch#7455); keras's weighted mean divides by the number of "
                   "samples, not by the weight sum",
                   "cross_entropy(x, t, label_smoothing=eps) == categorical_crossentropy(t, x, from_logits=True, "
                   "label_smoothing=eps, axis=1).mean()"),
    ),
))

register(LossSpec(
    name="nll_loss", family="classification", forward=nll_loss, vjp_fn=nll_loss_vjp,
    claims=articles.claims("nll_loss"),
    inputs=("input", "target"), differentiable=("input",),
    sampler=sample_log_probs_and_labels,
    check=check_nll_loss, array_params=("weight",),
    cases=(
        Case("default"),
        Case("unbatched", sample={"shape": (5,)}),
        Case("K-dim", sample=_KDIM),
        Case("weighted", {"weight": class_weight}),
        Case("ignore_index", sample=_IGNORE),
        Case("ignore_index=1", {"ignore_index": 1}, sample={"ignore_index": 1, "ignored": 0.3}),
        Case("weighted+ignore_index", {"weight": class_weight}, sample=_IGNORE),
        Case("weighted+ignore_index, -inf where ignored", {"weight": class_weight},
             sample={**_IGNORE, "ignored_rows_neg_inf": True}),
        Case("K-dim+weighted+ignore_index", {"weight": class_weight}, sample={**_KDIM, **_IGNORE}),
        Case("all_ignored", {"weight": class_weight}, sample={"ignore_index": -100, "ignored": 1.0},
             reductions=("none", "sum")),
    ),
    # The matrix alone: NaN with a zero gradient, as cross_entropy's.
    straight_through_cases=(
        Case("all_ignored_mean", {"weight": class_weight}, sample={"ignore_index": -100, "ignored": 1.0},
             reductions=("mean",)),
    ),
    bad_inputs=NLL_LOSS_BAD_INPUTS,
    builtins={"torch": "torch.nn.functional.nll_loss"},
    differences=(
        Difference("optax", "optax.losses.softmax_cross_entropy_with_integer_labels",
                   "optax has no NLL of log-probabilities: its integer-label loss applies log_softmax first, so "
                   "values agree on normalized log-probabilities but gradients never do",
                   "nll_loss(log_softmax(x), y, reduction='none') == softmax_cross_entropy_with_integer_labels(x, y) "
                   "(the cross_entropy oracle)"),
        Difference("torch", "torch.nn.functional.nll_loss",
                   "weighted mean divides by the sum of the weights of the targets that count, not by N; NaN with "
                   "a zero gradient when every target is ignored (pytorch#25571, #70348)",
                   "mean == sum(l) / sum(w[y_i] for y_i != ignore_index)"),
    ),
))

register(LossSpec(
    name="binary_cross_entropy", family="classification", forward=binary_cross_entropy,
    vjp_fn=binary_cross_entropy_vjp, inputs=("input", "target"), differentiable=("input", "target"),
    sampler=sample_probabilities, check=check_binary_cross_entropy, array_params=("weight",),
    cases=(
        Case("default"),
        Case("weighted", {"weight": _broadcast_weight("weight ~ U(0.2, 2), the input's shape", lambda s: s)}),
        Case("weight_per_class", {"weight": _broadcast_weight("weight ~ U(0.2, 2), shape (C,)", lambda s: s[-1:])}),
        Case("weight_per_sample", {"weight": _broadcast_weight("weight ~ U(0.2, 2), shape (N, 1)",
                                                               lambda s: (s[0], 1))}),
        Case("3-D", sample={"shape": (2, 3, 4)}),
    ),
    # The matrix alone: inputs at 0 and 1, where the clamped logs are flat and finite
    # differences would step outside [0, 1]; the reference gives the one-sided derivative
    # of the clamped forward there (torch's built-in gives about w (x - y) 1e12).
    straight_through_cases=(
        Case("saturated", {"weight": _broadcast_weight("weight ~ U(0.2, 2), shape (C,)", lambda s: s[-1:])},
             sample={"saturated": True}),
    ),
    xfails=(XFail("torch's built-in gradient is w (x - y) / max(x (1 - x), 1e-12), not the derivative of its clamped "
                  "forward: about 1e12 times off at inputs of exactly 0 and 1 (the recorded Difference)",
                  case="saturated", check="torch.builtin"),),
    bad_inputs=BCE_BAD_INPUTS,
    builtins={"torch": "torch.nn.functional.binary_cross_entropy",
              "optax": "optax.losses.sigmoid_binary_cross_entropy of logit(input)"},
    differences=(
        Difference("torch", "torch.nn.functional.binary_cross_entropy (backward)",
                   "torch's built-in gradient is w (x - y) / max(x (1 - x), 1e-12), not the derivative of its "
                   "clamped forward: they differ where a log is clamped at -100 (x < e^-100 or 1 - x < e^-100, "
                   "where the true derivative drops that term) or x (1 - x) < 1e-12; the sampler keeps x in "
                   "(0.02, 0.98), where they agree (pytorch#103316). Its target gradient w (log(1 - x) - log x) "
                   "is unclamped too: +-inf at x = 0 or 1 where the clamped forward's derivative is +-100 "
                   "(measured with torch 2.13)",
                   "reference d/dx = w [(1 - y)/(1 - x) [log(1-x) > -100] - y/x [log x > -100]], "
                   "d/dy = w [max(log(1 - x), -100) - max(log x, -100)]; both equal torch's for x in "
                   "(e^-100, 1 - e^-100) with x (1 - x) >= 1e-12"),
        Difference("keras", "keras.losses.binary_crossentropy",
                   "clips p to [1e-7, 1 - 1e-7] instead of clamping the logs at -100, averages over the last "
                   "axis, and smooths labels with 0.5 eps",
                   "binary_cross_entropy(clip(p, 1e-7, 1 - 1e-7), y, reduction='none').mean(-1) == "
                   "binary_crossentropy(y, p)"),
        Difference("optax", "optax.losses.sigmoid_binary_cross_entropy",
                   "takes logits and uses exact log-sigmoids: no clamping; no weight, no reduction",
                   "binary_cross_entropy(p, y, reduction='none') == sigmoid_binary_cross_entropy(log(p) - log1p(-p), y) "
                   "for p in (e^-100, 1 - e^-100)"),
    ),
))

register(LossSpec(
    name="binary_cross_entropy_with_logits", family="classification", forward=binary_cross_entropy_with_logits,
    vjp_fn=binary_cross_entropy_with_logits_vjp, inputs=("input", "target"), differentiable=("input", "target"),
    sampler=sample_logits_and_soft_labels, check=check_binary_cross_entropy_with_logits,
    array_params=("weight", "pos_weight"),
    cases=(
        Case("default"),
        Case("weighted", {"weight": _broadcast_weight("weight ~ U(0.2, 2), the input's shape", lambda s: s)}),
        Case("weight_per_sample", {"weight": _broadcast_weight("weight ~ U(0.2, 2), shape (N, 1)",
                                                               lambda s: (s[0], 1))}),
        Case("pos_weight", {"pos_weight": _broadcast_weight("pos_weight ~ U(0.2, 2), shape (C,)",
                                                            lambda s: s[-1:])}),
        Case("weight+pos_weight", {
            "weight": _broadcast_weight("weight ~ U(0.2, 2), shape (C,)", lambda s: s[-1:]),
            "pos_weight": _broadcast_weight("pos_weight ~ U(0.2, 2), shape (C,)", lambda s: s[-1:])}),
        Case("3-D+pos_weight", {"pos_weight": _broadcast_weight("pos_weight ~ U(0.2, 2), shape (C,)",
                                                                lambda s: s[-1:])},
             sample={"shape": (2, 3, 4)}),
    ),
    bad_inputs=BCE_LOGITS_BAD_INPUTS,
    builtins={"torch": "torch.nn.functional.binary_cross_entropy_with_logits",
              "optax": "optax.losses.sigmoid_binary_cross_entropy"},
    differences=(
        Difference("optax", "optax.losses.sigmoid_binary_cross_entropy",
                   "per element, no weight, no pos_weight, no reduction",
                   "binary_cross_entropy_with_logits(x, y, reduction='none') == sigmoid_binary_cross_entropy(x, y)"),
        Difference("keras", "keras.losses.binary_crossentropy(from_logits=True)",
                   "averages over the last axis before reducing; no pos_weight",
                   "binary_cross_entropy_with_logits(x, y, reduction='none').mean(-1) == "
                   "binary_crossentropy(y, x, from_logits=True)"),
    ),
))

register(LossSpec(
    name="kl_div", family="classification", forward=kl_div, vjp_fn=kl_div_vjp,
    inputs=("input", "target"), differentiable=("input", "target"), sampler=sample_distributions,
    check=check_kl_div, reductions=KL_REDUCTIONS,
    cases=(
        Case("default"),
        Case("log_target", {"log_target": True}, sample={"log_target": True}),
        Case("3-D", sample={"shape": (2, 3, 4)}),
        Case("3-D+log_target", {"log_target": True}, sample={"shape": (2, 3, 4), "log_target": True}),
    ),
    # The matrix alone: zero targets contribute 0 (xlogy); their target gradient is NaN in the
    # reference and in torch's and JAX's autodiff, and finite differences would step below 0.
    straight_through_cases=(
        Case("zero_targets", sample={"zeros": True}),
    ),
    bad_inputs=KL_DIV_BAD_INPUTS,
    builtins={"torch": "torch.nn.functional.kl_div",
              "optax": "optax.losses.kl_divergence, optax.losses.kl_divergence_with_log_targets"},
    differences=(
        Difference("optax", "optax.losses.kl_divergence / kl_divergence_with_log_targets",
                   "sums over the last axis (axis=-1) and does not reduce further; `log_target` is a separate "
                   "function",
                   "reduction='none' == kl_divergence(x, t, axis=()); 'sum' == kl_divergence(x, t).sum(); "
                   "'batchmean' == kl_divergence(x, t).mean() for 2-D input only; 'mean' == kl_divergence(x, t).sum() "
                   "/ t.size"),
        Difference("keras", "keras.losses.kl_divergence",
                   "takes probabilities, not log-probabilities, as y_pred; clips both to [1e-7, 1]; sums over the "
                   "last axis",
                   "kl_div(log(clip(p, 1e-7, 1)), clip(t, 1e-7, 1), reduction='none').sum(-1) == "
                   "kl_divergence(t, p)"),
        Difference("torch", "torch.nn.functional.kl_div",
                   "reduction='mean' averages over every element (and warns); 'batchmean' divides the sum by "
                   "input.size(0), the KL divergence per sample (pytorch#2259)",
                   "batchmean == sum / input.shape[0]; mean == sum / input.size"),
    ),
))


# ==================================================================================
# Part 2: optax's and Keras's classification losses.
#
# optax's names and argument names: softmax_cross_entropy_with_integer_labels,
# softmax_cross_entropy, safe_softmax_cross_entropy, sigmoid_binary_cross_entropy (an alias
# of binary_cross_entropy_with_logits), sigmoid_focal_loss, poly_loss_cross_entropy,
# kl_divergence, kl_divergence_with_log_targets, generalized_kl_divergence and
# convex_kl_divergence (an alias of generalized_kl_divergence, as in optax). Keras's names and
# (y_true, y_pred) order: categorical_generalized_cross_entropy, binary_focal_crossentropy,
# categorical_focal_crossentropy.
#
# These losses are named after a library that has no reduction, so ``reduction`` defaults to
# "none": called with the defaults they give the library's per-example values; "mean" is the
# plain mean of those values and "sum" their sum.
#
# Why the softmax cross entropies are not aliases of cross_entropy: an alias maps argument
# names and passes the values through untouched (``reference.spec.Alias``). optax's ``axis``
# moves the class dimension (cross_entropy's is fixed: 1, or 0 unbatched), and optax's
# ``where`` is no renaming of anything cross_entropy has: an elementwise ``where`` drops
# classes from the softmax normalizer (cross_entropy keeps every class in it), a per-example
# ``where`` zeroes whole rows, which ``ignore_index`` does only after the labels are rewritten,
# and a library-named ``mean`` averages those zeros where cross_entropy's divides by the
# targets that count. The recorded Differences give the exact mappings, which
# tests/test_differences_classification.py proves against torch and optax.
# ==================================================================================

KERAS_EPSILON = 1e-7  # keras.config.epsilon(), Keras's default fuzz factor
_LOG_KERAS_EPSILON = float(np.log(KERAS_EPSILON))
_LOG_1M_KERAS_EPSILON = float(np.log1p(-KERAS_EPSILON))


def _optax_axes(axis, ndim: int) -> tuple[int, ...]:
    """optax's ``axis`` as non-negative axes: None is every axis; a tuple keeps its order
    (it fixes how integer labels index a flattened class slice)."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        return (int(axis) % ndim,)
    return tuple(int(a) % ndim for a in axis)


def _full_where(where, shape, axes):
    """``where`` broadcast to the logits' shape: one of the logits' shape as it is, one of the
    per-example shape expanded along the class axes first (optax's ``expand_dims(where, axis)``)."""
    if where is None:
        return None
    w = np.asarray(where, dtype=bool)
    if w.ndim != len(shape):
        w = np.expand_dims(w, tuple(sorted(axes)))
    return np.broadcast_to(w, shape)


def _keeps_any(w, axes):
    """Whether each slice along ``axes`` keeps a class (all do without a mask)."""
    return True if w is None else w.any(axis=axes, keepdims=True)


def _per_example_cotangent(cotangent, reduction, shape, axes):
    """The cotangent of each per-example value, broadcast back along the reduced ``axes``."""
    numel = int(np.prod(shape, dtype=np.int64))
    g = np.broadcast_to(reduce_vjp(cotangent, reduction, numel), shape)
    return np.expand_dims(g, tuple(sorted(axes)))


# -- softmax_cross_entropy_with_integer_labels (optax) --------------------------------

def _label_layout(logits, axis, where):
    """optax's layout for integer labels: the class axes moved last, in the order given, and
    flattened to one axis of K classes; ``where`` alike. Returns the flat logits, the flat mask
    (or None) and the permutation."""
    nd = logits.ndim
    axes = _optax_axes(axis, nd)
    batch = tuple(i for i in range(nd) if i not in axes)
    perm = batch + axes
    batch_shape = tuple(logits.shape[i] for i in batch)
    classes = (math.prod([logits.shape[i] for i in axes]),)  # not -1: an empty batch leaves it open
    x = logits.transpose(perm).reshape(batch_shape + classes)
    w = None
    if where is not None:
        w = _full_where(where, logits.shape, axes).transpose(perm).reshape(batch_shape + classes)
    return x, w, perm


def _label_layout_back(flat, logits, perm):
    return flat.reshape(tuple(logits.shape[i] for i in perm)).transpose(np.argsort(perm))


def softmax_cross_entropy_with_integer_labels(logits, labels, axis=-1, where=None, reduction="none"):
    r"""Softmax cross entropy with integer labels, as
    ``optax.losses.softmax_cross_entropy_with_integer_labels``.

    .. math:: \ell_i = \log \sum_{k \in W_i} e^{x_{i,k}} - x_{i, y_i}
              \quad\text{if } W_i \ne \emptyset, \qquad \ell_i = 0 \text{ otherwise}

    over the classes along ``axis`` (an int, default the last, or a tuple of ints: the class
    slice is flattened in the tuple's order and a label is a flat index into it). ``where``
    (bool, optional) has the logits' shape, and then :math:`W_i` are the classes it keeps (the
    others leave the normalizer, though the label's logit is taken whether kept or not), or the
    per-example shape (the labels' shape), and then a False row is 0. Without ``where`` it is
    torch's ``cross_entropy(x, y, reduction='none')`` with the class axis moved to 1 (the
    recorded Difference); not an alias, because ``axis`` and ``where`` are no renaming of
    cross_entropy's arguments (see the note above).
    """
    x, w, _ = _label_layout(logits, axis, where)
    lse, _ = masked_logsumexp(x, -1, w, keepdims=False)
    out = lse - np.take_along_axis(x, labels[..., None], -1)[..., 0]
    if w is not None:
        out = np.where(w.any(-1), out, 0.0)
    return reduce(out, reduction)


def softmax_cross_entropy_with_integer_labels_vjp(cotangent, logits, labels, axis=-1, where=None,
                                                  reduction="none"):
    r"""Softmax over the kept classes minus the one-hot label, zero for a row with nothing kept:

    .. math:: \frac{\partial \ell_i}{\partial x_{i,k}} = [W_i \ne \emptyset]
              \Big([k \in W_i]\, \frac{e^{x_{i,k}}}{\sum_{k' \in W_i} e^{x_{i,k'}}} - [k = y_i]\Big)
    """
    x, w, perm = _label_layout(logits, axis, where)
    lse, _ = masked_logsumexp(x, -1, w)
    kept = _keeps_any(w, -1)
    # A dropped logit is exp(-inf) = 0, not its own exp, which may overflow (a padding's).
    p = np.exp(x - lse if w is None else np.where(w, x - lse, -np.inf))
    d = p - np.eye(x.shape[-1])[labels]
    g = np.broadcast_to(reduce_vjp(cotangent, reduction, labels.size), labels.shape)[..., None]
    d = np.where(kept, d * g, 0.0)
    return (_label_layout_back(d, logits, perm),)


def _check_optax_axis(value, ndim: int, allow_none: bool) -> None:
    if value is None and not allow_none:
        raise TypeError("axis must be an int or a tuple of ints for integer labels (optax takes no None here)")
    if isinstance(value, tuple) and not value:
        raise ValueError("axis must name at least one axis; got ()")
    checks.axes("axis", value, ndim)


def _check_where_mask(where, logits: checks.ArrayInfo, per_example_shape) -> None:
    """``where``: bool, of the logits' shape or (``per_example_shape`` not None) of that shape."""
    if where is None:
        return
    checks.kind_in(where, ("bool",), "the elements to include")
    allowed = [logits.shape] + ([tuple(per_example_shape)] if per_example_shape is not None else [])
    if not any(where.shape == s for s in allowed):  # (not ``in``: see checks.broadcastable_to)
        what = " or ".join(str(s) for s in allowed)
        raise ValueError(f"where must have shape {what} (the logits' shape"
                         f"{' or one flag per example' if per_example_shape is not None else ''}); "
                         f"got {where.shape}")


def _class_shape(shape, axis):
    """The per-example shape: the logits' shape without the class axes (None: every axis)."""
    axes = _optax_axes(axis, len(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def check_softmax_cross_entropy_with_integer_labels(args: dict) -> None:
    checks.reduction(args["reduction"])
    x, y = args["logits"], args["labels"]
    checks.floating(x)
    checks.ndim_in(x, range(1, 64), "an array of at least one dimension (the classes)")
    _check_optax_axis(args["axis"], x.ndim, allow_none=False)
    axes = _optax_axes(args["axis"], x.ndim)
    per_example = tuple(x.shape[i] for i in range(x.ndim) if i not in axes)
    num_classes = math.prod([x.shape[a] for a in axes])
    checks.integer(y)
    checks.shape_is(y, per_example, "class indices: the logits' shape without the class axes")
    checks.class_labels(y, num_classes)
    _check_where_mask(args["where"], x, per_example)


def sample_integer_labels(rng: np.random.Generator, shape=(6, 4), axis=-1, nonfinite=False):
    """Logits ~ N(0, 1.5²) of ``shape`` and labels uniform over the classes along ``axis``
    (their flat index for a tuple of axes). ``nonfinite`` (classes last): ``nonfinite_rows``."""
    shape = tuple(shape)
    axes = _optax_axes(axis, len(shape))
    num_classes = int(np.prod([shape[a] for a in axes]))
    per_example = tuple(s for i, s in enumerate(shape) if i not in axes)
    x = 1.5 * rng.standard_normal(shape)
    return (nonfinite_rows(x) if nonfinite else x), rng.integers(num_classes, size=per_example).astype(np.int64)


def _where_per_example(rng, inputs):
    """One flag per example along the last (class) axis, about 3/4 True, the first False, the
    last True."""
    shape = inputs[0].shape[:-1]
    keep = rng.random(shape) < 0.75
    flat = keep.reshape(-1)
    flat[0], flat[-1] = False, True
    return keep


def _where_elementwise(rng, inputs):
    """One flag per logit, about 3/4 True, at least two kept per row along the last axis, except
    row 0, which keeps nothing (optax gives it 0)."""
    shape = inputs[0].shape
    keep = rng.random(shape) < 0.75
    first = rng.permuted(np.tile(np.arange(shape[-1]), shape[:-1] + (1,)), axis=-1)[..., :2]
    np.put_along_axis(keep, first, True, axis=-1)
    keep.reshape(-1, shape[-1])[0] = False
    return keep


where_per_example = Sampled("where: one flag per example, the first False", _where_per_example)
where_elementwise = Sampled("where: one flag per logit, ~3/4 True, row 0 all False", _where_elementwise)


def _where_bad_inputs(per_example: bool):
    bad = (
        BadInput("float where", set_param("where", lambda xs: np.ones(xs[0].shape)), TypeError, "where"),
        BadInput("where of another shape", set_param("where", lambda xs: np.ones(xs[0].shape[:-1] + (1,), bool)),
                 ValueError, "where"),
    )
    if not per_example:
        bad += (BadInput("where of the per-example shape (this loss takes one of the logits' shape)",
                         set_param("where", lambda xs: np.ones(xs[0].shape[:-1], bool)), ValueError, "where"),)
    return bad


_AXIS_BAD_INPUTS = (
    BadInput("axis out of range", set_param("axis", lambda xs: 2), ValueError, "axis"),
    BadInput("repeated axis", set_param("axis", lambda xs: (1, -1)), ValueError, "axis"),
    BadInput("empty axis tuple", set_param("axis", lambda xs: ()), ValueError, "axis"),
    BadInput("axis as a list", set_param("axis", lambda xs: [1]), TypeError, "axis"),
)

_OPTAX_REDUCTION = Difference(
    "optax", "optax.losses (no reduction)",
    "optax's losses return per-example values and never reduce; lossparity's optax-named losses default to "
    "reduction='none', and 'mean' / 'sum' are the plain mean / sum of those values (masked examples, 0, "
    "included)",
    "<loss>(..., reduction='none') == optax.losses.<loss>(...); 'mean' == .mean(); 'sum' == .sum()")

register(LossSpec(
    name="softmax_cross_entropy_with_integer_labels", family="classification",
    forward=softmax_cross_entropy_with_integer_labels, vjp_fn=softmax_cross_entropy_with_integer_labels_vjp,
    inputs=("logits", "labels"), differentiable=("logits",), array_params=("where",),
    sampler=sample_integer_labels, check=check_softmax_cross_entropy_with_integer_labels,
    cases=(
        Case("default"),
        Case("unbatched", sample={"shape": (5,)}),
        Case("3-D, last axis", sample={"shape": (2, 3, 4)}),
        Case("axis=1 of 3-D (torch's class axis)", {"axis": 1}, sample={"shape": (3, 4, 2), "axis": 1}),
        Case("axis=0", {"axis": 0}, sample={"shape": (4, 3), "axis": 0}),
        Case("axis=(1, 2)", {"axis": (1, 2)}, sample={"shape": (3, 2, 3), "axis": (1, 2)}),
        Case("axis=(2, 1), flat index in that order", {"axis": (2, 1)}, sample={"shape": (3, 2, 3), "axis": (2, 1)}),
        Case("where per example", {"where": where_per_example}),
        Case("where per logit, a row with nothing kept", {"where": where_elementwise}),
    ),
    straight_through_cases=(NONFINITE_LOGITS,),
    xfails=(XFail(_OPTAX_INTEGER_NONFINITE_NOTE, case=NONFINITE_LOGITS.name, check="jax.builtin"),),
    bad_inputs=(
        BadInput("labels of another shape", replace_input(1, lambda xs: xs[1][:-1]), ValueError, "labels"),
        BadInput("labels of the logits' shape", replace_input(1, lambda xs: np.zeros(xs[0].shape, np.int64)),
                 ValueError, "labels"),
        BadInput("float labels", replace_input(1, lambda xs: xs[1].astype(np.float64)), TypeError, "labels"),
        BadInput("label equal to the number of classes", replace_input(1, _relabel(0, _num_classes)), IndexError,
                 "labels"),
        BadInput("negative label", replace_input(1, _relabel(0, lambda xs: -1)), IndexError, "labels"),
        BadInput("integer logits", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "logits"),
        BadInput("0-d logits", lambda xs, kw: ((xs[0][0, 0], xs[1][0]), kw), ValueError, "logits"),
        BadInput("axis None (optax takes an int or a tuple for integer labels)", set_param("axis", lambda xs: None),
                 TypeError, "axis"),
    ) + _AXIS_BAD_INPUTS + _where_bad_inputs(per_example=True),
    builtins={"optax": "optax.losses.softmax_cross_entropy_with_integer_labels",
              "torch": "torch.nn.functional.cross_entropy (class axis moved to 1; per-example where as ignore_index)"},
    differences=(
        _OPTAX_INTEGER_NONFINITE,
        Difference("torch", "torch.nn.functional.cross_entropy",
                   "the same mathematics as cross_entropy's class-index form without weight, ignore_index or "
                   "label smoothing, but optax's class axis is `axis` (default the last) where torch's is 1 "
                   "(0 unbatched); a tuple of axes is one flattened class axis",
                   "softmax_cross_entropy_with_integer_labels(x, y, axis=a) == F.cross_entropy(movedim(x, a, 1), y, "
                   "reduction='none') for an int a and x of 2 or more dimensions (for (C,) or (N, C) and a = -1 "
                   "no move is needed); == cross_entropy(x, y, reduction='none') when a is the class axis"),
        Difference("torch", "torch.nn.functional.cross_entropy(ignore_index=...)",
                   "a per-example where=False gives 0, as ignore_index does with reduction='none'; but optax-named "
                   "'mean' averages every example, masked ones included, while torch's mean divides by the count "
                   "of targets that count (NaN when none does)",
                   "softmax_cross_entropy_with_integer_labels(x, y, where=m) == F.cross_entropy(x, where(m, y, -100), "
                   "reduction='none'); reduction='mean' == F.cross_entropy(x, where(m, y, -100), reduction='sum') "
                   "/ m.size"),
        Difference("optax", "optax.losses.softmax_cross_entropy_with_integer_labels(where=<logits' shape>)",
                   "a masked class leaves the normalizer but the label's logit is taken whether masked or not, so "
                   "a label on a masked class can give a negative loss; torch has no per-class mask (an ignored "
                   "class stays in the softmax denominator)",
                   "softmax_cross_entropy_with_integer_labels(x, y, where=m) == logsumexp(x, where=m, axis=-1) - "
                   "x[y] for rows with any m, 0 for the others"),
        _OPTAX_REDUCTION,
    ),
))


# -- softmax_cross_entropy (optax) ------------------------------------------------------

def _softmax_parts(logits, labels, axis, where):
    """The class axes, the full mask (or None), log-softmax over the kept classes (0 where
    masked) and the mask of slices that keep anything."""
    axes = _optax_axes(axis, logits.ndim)
    w = _full_where(where, logits.shape, axes)
    lse, _ = masked_logsumexp(logits, axes, w)
    kept = _keeps_any(w, axes)
    logp = logits - np.where(kept, lse, 0.0)
    if w is not None:
        logp = np.where(w, logp, 0.0)
    return axes, w, logp, kept


def _masked(x, w):
    return x if w is None else np.where(w, x, 0.0)


def softmax_cross_entropy(logits, labels, axis=-1, where=None, reduction="none"):
    r"""Softmax cross entropy with probability labels, as ``optax.losses.softmax_cross_entropy``.

    .. math:: \ell_i = -\sum_{k \in W_i} t_{i,k} \Big(x_{i,k} - \log \sum_{k' \in W_i} e^{x_{i,k'}}\Big)

    over the classes along ``axis`` (an int, a tuple of ints, or None for every axis), with
    :math:`W_i` the classes ``where`` keeps (bool, of the logits' shape, or of the per-example
    shape, then expanded along the class axes, as optax does; all without it): a slice with
    nothing kept is 0. ``labels`` have the logits' shape (optax would broadcast them) and are
    not checked to be distributions. As in optax, a -inf logit with a zero label gives
    :math:`0 \cdot (-\infty) =` NaN: ``safe_softmax_cross_entropy`` is the loss that gives 0.
    Without ``where`` it is torch's ``cross_entropy`` with probability targets and the class
    axis moved to 1 (the recorded Difference).
    """
    axes, w, logp, _ = _softmax_parts(logits, labels, axis, where)
    return reduce(-_masked(labels * logp, w).sum(axes), reduction)


def softmax_cross_entropy_vjp(cotangent, logits, labels, axis=-1, where=None, reduction="none"):
    r"""Softmax over the kept classes times the kept label mass, minus the kept labels:

    .. math:: \frac{\partial \ell_i}{\partial x_{i,k}} = [k \in W_i]\Big(p_{i,k} \sum_{k' \in W_i} t_{i,k'}
              - t_{i,k}\Big)

    ``labels`` get no gradient: they are data here, as cross_entropy's targets are in this
    suite (optax's autodiff would give NaN at masked entries, 0 times -inf).
    """
    axes, w, logp, kept = _softmax_parts(logits, labels, axis, where)
    t = _masked(labels, w)
    p = _masked(np.where(kept, np.exp(logp), 0.0), w)
    g = _per_example_cotangent(cotangent, reduction, _class_shape(logits.shape, axis), axes)
    return (g * (p * t.sum(axes, keepdims=True) - t),)


def _check_probability_pair(x: checks.ArrayInfo, t: checks.ArrayInfo) -> None:
    checks.floating(x)
    checks.floating(t)
    checks.ndim_in(x, range(1, 64), "an array of at least one dimension (the classes)")
    checks.same_shape(x, t)
    checks.same_dtype(x, t)


def check_softmax_cross_entropy(args: dict) -> None:
    checks.reduction(args["reduction"])
    x = args["logits"]
    _check_probability_pair(x, args["labels"])
    _check_optax_axis(args["axis"], x.ndim, allow_none=True)
    per_example = None if args["axis"] is None else _class_shape(x.shape, args["axis"])
    _check_where_mask(args["where"], x, per_example)


def sample_logits_and_distributions(rng: np.random.Generator, shape=(6, 4), axis=-1, zeros=False,
                                    neg_inf=False, nonfinite=False):
    """Logits ~ N(0, 1.5²) and labels: a softmax of N(0, 1) over the class axes. With ``zeros``
    about a third of the labels are 0 (at least one per slice kept, renormalized); ``neg_inf``
    (with ``zeros``) puts a -inf logit at every zero label. ``nonfinite`` (classes last):
    ``nonfinite_rows``."""
    shape = tuple(shape)
    axes = _optax_axes(axis, len(shape))
    x = 1.5 * rng.standard_normal(shape)
    t = np.exp(log_softmax(rng.standard_normal(shape), axis=axes))
    if zeros:
        keep = rng.random(shape) > 0.35
        moved = np.moveaxis(keep, axes, tuple(range(-len(axes), 0)))
        moved.reshape(moved.shape[:moved.ndim - len(axes)] + (-1,))[..., 0] = True
        keep = np.moveaxis(moved, tuple(range(-len(axes), 0)), axes)
        t = np.where(keep, t, 0.0)
        t = t / t.sum(axes, keepdims=True)
        if neg_inf:
            x = np.where(keep, x, -np.inf)
    return (nonfinite_rows(x) if nonfinite else x), t


_PROBABILITY_PAIR_BAD_INPUTS = (
    BadInput("labels of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "labels"),
    BadInput("labels that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "labels"),
    BadInput("integer logits", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "logits"),
    BadInput("integer labels", replace_input(1, lambda xs: np.round(xs[1]).astype(np.int64)), TypeError, "labels"),
    BadInput("labels of another dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)), TypeError, "labels"),
    BadInput("0-d logits and labels", lambda xs, kw: ((xs[0][0, 0], xs[1][0, 0]), kw), ValueError, "logits"),
)

_OPTAX_BROADCAST = Difference(
    "optax", "optax.losses (broadcasting)",
    "optax broadcasts labels against logits and casts them to the logits' dtype; lossparity requires one shape "
    "and dtype (ValueError, TypeError: no silent broadcast)",
    "optax.losses.<loss>(x, t) == <loss>(x, broadcast_to(t, x.shape).astype(x.dtype))")


def _softmax_cases(per_example_where: bool = True):
    cases = (
        Case("default"),
        Case("unbatched", sample={"shape": (5,)}),
        Case("3-D, last axis", sample={"shape": (2, 3, 4)}),
        Case("axis=1 of 3-D (torch's class axis)", {"axis": 1}, sample={"shape": (3, 4, 2), "axis": 1}),
        Case("axis=0", {"axis": 0}, sample={"shape": (4, 3), "axis": 0}),
        Case("axis=(1, 2)", {"axis": (1, 2)}, sample={"shape": (3, 2, 3), "axis": (1, 2)}),
        Case("axis=None", {"axis": None}, sample={"shape": (3, 4), "axis": None}),
        Case("zero labels", sample={"zeros": True}),
    )
    if per_example_where:
        cases += (Case("where per example", {"where": where_per_example}),)
    return cases + (Case("where per logit, a row with nothing kept", {"where": where_elementwise}),)


register(LossSpec(
    name="softmax_cross_entropy", family="classification", forward=softmax_cross_entropy,
    vjp_fn=softmax_cross_entropy_vjp, inputs=("logits", "labels"), differentiable=("logits",),
    array_params=("where",), sampler=sample_logits_and_distributions, check=check_softmax_cross_entropy,
    cases=_softmax_cases(),
    straight_through_cases=(NONFINITE_LOGITS,),
    bad_inputs=_PROBABILITY_PAIR_BAD_INPUTS + _AXIS_BAD_INPUTS + _where_bad_inputs(per_example=True) + (
        BadInput("where of the per-example shape with axis=None", lambda xs, kw: (
            xs, {**kw, "axis": None, "where": np.ones(xs[0].shape[:-1], bool)}), ValueError, "where"),
    ),
    builtins={"optax": "optax.losses.softmax_cross_entropy",
              "torch": "torch.nn.functional.cross_entropy with probability targets (class axis moved to 1)"},
    differences=(
        Difference("torch", "torch.nn.functional.cross_entropy",
                   "the same mathematics as cross_entropy's probability form without weight or label smoothing, "
                   "but the class axis is optax's `axis` (default the last) where torch's is 1 (0 unbatched)",
                   "softmax_cross_entropy(x, t, axis=a) == F.cross_entropy(movedim(x, a, 1), movedim(t, a, 1), "
                   "reduction='none') for an int a and x of 2 or more dimensions"),
        Difference("optax", "optax.losses.softmax_cross_entropy(where=...)",
                   "a masked logit leaves the normalizer and its label the sum; a slice with nothing kept gives 0 "
                   "(torch's cross_entropy has no mask: its every-target-ignored mean is NaN)",
                   "softmax_cross_entropy(x, t, where=m) == -sum(t * log_softmax(x, where=m), where=m)"),
        Difference("optax", "optax.losses.safe_softmax_cross_entropy",
                   "a -inf logit with a zero label gives 0 * -inf = NaN here, as in optax; "
                   "safe_softmax_cross_entropy gives 0 (0 log 0 = 0)",
                   "softmax_cross_entropy(x, t) == safe_softmax_cross_entropy(x, t) for finite x (last axis); "
                   "NaN where some x is -inf with t = 0"),
        _OPTAX_BROADCAST,
        _OPTAX_REDUCTION,
    ),
))


# -- safe_softmax_cross_entropy (optax) -------------------------------------------------

def safe_softmax_cross_entropy(logits, labels, reduction="none"):
    r"""Softmax cross entropy that takes :math:`0 \log 0 = 0`, as
    ``optax.losses.safe_softmax_cross_entropy`` (the last axis holds the classes):

    .. math:: \ell_i = -\sum_{k:\ t_{i,k} \ne 0} t_{i,k} \log p_{i,k},
              \qquad \log p = \operatorname{log\_softmax}(x)

    so a -inf logit whose label is 0 contributes 0 (``softmax_cross_entropy`` gives NaN
    there) and its gradient is finite (0). A -inf logit with a non-zero label costs +inf.
    """
    logp = shifted_log_softmax(logits, -1)
    nonzero = labels != 0
    return reduce(-(labels * np.where(nonzero, logp, 0.0)).sum(-1), reduction)


def safe_softmax_cross_entropy_vjp(cotangent, logits, labels, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_{i,k}} = p_{i,k} \sum_{k'} t_{i,k'} - t_{i,k}

    (0 at a -inf logit with a zero label, where :math:`p = 0`). ``labels`` get no gradient.
    """
    p = np.exp(shifted_log_softmax(logits, -1))
    g = _per_example_cotangent(cotangent, reduction, logits.shape[:-1], (logits.ndim - 1,))
    return (g * (p * labels.sum(-1, keepdims=True) - labels),)


def check_safe_softmax_cross_entropy(args: dict) -> None:
    checks.reduction(args["reduction"])
    _check_probability_pair(args["logits"], args["labels"])


register(LossSpec(
    name="safe_softmax_cross_entropy", family="classification", forward=safe_softmax_cross_entropy,
    vjp_fn=safe_softmax_cross_entropy_vjp, inputs=("logits", "labels"), differentiable=("logits",),
    sampler=sample_logits_and_distributions, check=check_safe_softmax_cross_entropy,
    cases=(
        Case("default"),
        Case("unbatched", sample={"shape": (5,)}),
        Case("3-D, last axis", sample={"shape": (2, 3, 4)}),
        Case("zero labels", sample={"zeros": True}),
        Case("-inf logits where the labels are 0", sample={"zeros": True, "neg_inf": True}),
        Case("-inf logits, one-hot labels", sample={"shape": (5, 6), "zeros": True, "neg_inf": True}),
    ),
    straight_through_cases=(NONFINITE_LOGITS,),
    bad_inputs=_PROBABILITY_PAIR_BAD_INPUTS,
    builtins={"optax": "optax.losses.safe_softmax_cross_entropy",
              "torch": "torch.nn.functional.cross_entropy with probability targets (finite logits only)"},
    differences=(
        Difference("optax", "optax.losses.softmax_cross_entropy",
                   "softmax_cross_entropy gives NaN for a -inf logit with a zero label (0 * -inf; optax#896); "
                   "safe_softmax_cross_entropy gives 0 with a finite gradient (optax PR #898)",
                   "safe_softmax_cross_entropy(x, t) == softmax_cross_entropy(x, t) for finite x; where x is -inf "
                   "only at t = 0: safe_softmax_cross_entropy(x, t) == softmax_cross_entropy(x, t, "
                   "where=isfinite(x)), value and gradient, while softmax_cross_entropy(x, t) is NaN"),
        Difference("torch", "torch.nn.functional.cross_entropy",
                   "torch's probability-target cross entropy is this loss for finite logits (class axis 1, last for "
                   "2-D); with a -inf logit and a zero label torch gives NaN, as optax's softmax_cross_entropy",
                   "safe_softmax_cross_entropy(x, t) == F.cross_entropy(x, t, reduction='none') for finite 2-D x"),
        _OPTAX_BROADCAST,
    ),
))


# -- sigmoid_binary_cross_entropy (optax): an alias of binary_cross_entropy_with_logits ---

SIGMOID_BINARY_CROSS_ENTROPY = Alias(
    "binary_cross_entropy_with_logits", inputs={"logits": "input", "labels": "target"},
    hyperparameters={"reduction": "none"}, fixed={"weight": None, "pos_weight": None})

register(alias_spec(
    "sigmoid_binary_cross_entropy", "classification", SIGMOID_BINARY_CROSS_ENTROPY,
    doc=r"""Sigmoid binary cross entropy, as ``optax.losses.sigmoid_binary_cross_entropy``: an
    alias of ``binary_cross_entropy_with_logits``.

    .. math:: \ell_i = -y_i \log\sigma(x_i) - (1 - y_i) \log\sigma(-x_i)
              = (1 - y_i)\,x_i + \operatorname{softplus}(-x_i)

    ``sigmoid_binary_cross_entropy(logits, labels, reduction=r) ==
    binary_cross_entropy_with_logits(logits, labels, reduction=r)`` (no ``weight``, no
    ``pos_weight``); the default reduction is ``"none"``, optax's per-element values. Both inputs
    get gradients (the labels' is :math:`-x_i`). Implemented once, by
    ``binary_cross_entropy_with_logits``: the reference, torch and JAX variants map the arguments
    and call its implementations.""",
    cases=(Case("default"), Case("vector", sample={"shape": (6,)}), Case("3-D", sample={"shape": (2, 3, 4)}),
           Case("hard labels", sample={"hard": True})),
    bad_inputs=(
        BadInput("labels of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "labels"),
        BadInput("labels that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "labels"),
        BadInput("integer logits", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "logits"),
        BadInput("integer labels", replace_input(1, lambda xs: np.round(xs[1]).astype(np.int64)), TypeError,
                 "labels"),
        BadInput("labels of another dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)), TypeError,
                 "labels"),
    ),
    builtins={"optax": "optax.losses.sigmoid_binary_cross_entropy",
              "torch": "torch.nn.functional.binary_cross_entropy_with_logits"},
    differences=(
        Difference("torch", "torch.nn.functional.binary_cross_entropy_with_logits",
                   "the same mathematics under optax's name and argument names, with no weight or pos_weight and "
                   "reduction='none' by default",
                   "sigmoid_binary_cross_entropy(x, y, reduction=r) == F.binary_cross_entropy_with_logits(x, y, "
                   "reduction=r) == binary_cross_entropy_with_logits(x, y, reduction=r)"),
        _OPTAX_BROADCAST,
    ),
))


# -- sigmoid_focal_loss (optax) ---------------------------------------------------------

def _focal_parts(logits, labels):
    """log σ(x), log σ(-x), the cross entropy and log(1 - p_t), all in log space."""
    log_p, log_q = log_expit(logits), log_expit(-logits)
    ce = -(labels * log_p + (1.0 - labels) * log_q)
    return log_p, log_q, ce, _log_one_minus_pt(labels, log_p, log_q)


def _log_one_minus_pt(labels, log_p, log_q):
    """log(1 - p_t) = log(y sigma(-x) + (1 - y) sigma(x)) from the log-sigmoids log sigma(x) and
    log sigma(-x). Where a logit lies on its hard label's side far enough for the other sigmoid to
    underflow (from |x| near 710 in float64, 88 to 104 in float32), 1 - p_t is 0, and
    (1 - p_t)^gamma's derivative gamma (1 - p_t)^(gamma - 1) p q is inf times 0 for gamma < 1; in
    logs it is finite (and 0 in the limit)."""
    with np.errstate(divide="ignore"):  # log(0) of a hard label: that term drops out
        return logaddexp(log_p + np.log1p(-labels), log_q + np.log(labels))


def _alpha_t(labels, alpha):
    return 1.0 if alpha is None else alpha * labels + (1.0 - alpha) * (1.0 - labels)


def sigmoid_focal_loss(logits, labels, *, alpha=None, gamma=2.0, reduction="none"):
    r"""Sigmoid focal loss, as ``optax.losses.sigmoid_focal_loss`` (Lin et al., 2017), in optax's
    log-space form (optax PR #1346):

    .. math:: \ell_i = \alpha_{t,i}\, \mathrm{CE}_i\, e^{\gamma \log(1 - p_{t,i})},\qquad
              \log(1 - p_t) = \operatorname{logaddexp}\big(\log\sigma(x) + \log(1-y),\
              \log\sigma(-x) + \log y\big)

    with :math:`\mathrm{CE} = -y \log\sigma(x) - (1-y)\log\sigma(-x)`,
    :math:`1 - p_t = (1-y)\,\sigma(x) + y\,\sigma(-x)` and
    :math:`\alpha_t = \alpha y + (1-\alpha)(1-y)` (1 when ``alpha`` is None). The log-sigmoids
    never underflow, so value and gradient stay finite at logits of :math:`\pm 10^4` in float32,
    also for :math:`\gamma < 1`, where :math:`(1-p_t)^\gamma` computed directly has an infinite
    slope at the 0 that an easy saturated example rounds to. ``labels`` are in [0, 1] (soft labels
    allowed) and get no gradient.
    """
    _, _, ce, log_1m_pt = _focal_parts(logits, labels)
    return reduce(_alpha_t(labels, alpha) * ce * np.exp(gamma * log_1m_pt), reduction)


def sigmoid_focal_loss_vjp(cotangent, logits, labels, *, alpha=None, gamma=2.0, reduction="none"):
    r"""With :math:`w = (1-p_t)^\gamma`:

    .. math:: \frac{\partial \ell_i}{\partial x_i} = \alpha_t\, w \Big(\sigma(x) - y
              + \gamma\, \mathrm{CE}\, (1 - 2y)\, e^{\log\sigma(x) + \log\sigma(-x) - \log(1 - p_t)}\Big)

    where the exponential is at most 1 (:math:`\sigma(x)\sigma(-x) \le 1 - p_t`), so no
    intermediate overflows.
    """
    log_p, log_q, ce, log_1m_pt = _focal_parts(logits, labels)
    w = np.exp(gamma * log_1m_pt)
    slope = (1.0 - 2.0 * labels) * np.exp(log_p + log_q - log_1m_pt)
    g = reduce_vjp(cotangent, reduction, logits.size)
    return (g * _alpha_t(labels, alpha) * w * (expit(logits) - labels + gamma * ce * slope),)


def _optional_unit(name, value):
    if value is not None:
        checks.in_interval(name, value, 0.0, 1.0)


def check_sigmoid_focal_loss(args: dict) -> None:
    checks.reduction(args["reduction"])
    x, y = args["logits"], args["labels"]
    checks.floating(x)
    checks.floating(y)
    checks.same_shape(x, y)
    checks.same_dtype(x, y)
    checks.within(y, 0.0, 1.0, "labels")
    _optional_unit("alpha", args["alpha"])
    checks.nonnegative("gamma", args["gamma"])


def sample_focal(rng: np.random.Generator, shape=(6, 4), hard=False, saturated=False):
    """Logits ~ N(0, 2²), labels ~ U(0, 1) (in {0, 1} with ``hard``). With ``saturated`` the labels
    are hard and every other logit is 1e4 on its label's side (an easy example: loss and gradient
    underflow to 0 through the log-space form, where the direct form's (1 - p_t)^gamma has an
    infinite slope for gamma < 1), every fifth 30 on the wrong side (a hard one)."""
    shape = tuple(shape)
    x, y = 2.0 * rng.standard_normal(shape), rng.uniform(0.0, 1.0, size=shape)
    if hard or saturated:
        y = np.round(y)
    if saturated:
        sign = 2.0 * y - 1.0
        flat_x, flat_s = x.reshape(-1), sign.reshape(-1)
        flat_x[::2] = 1e4 * flat_s[::2]
        flat_x[1::5] = -30.0 * flat_s[1::5]
    return x, y


register(LossSpec(
    name="sigmoid_focal_loss", family="classification", forward=sigmoid_focal_loss, vjp_fn=sigmoid_focal_loss_vjp,
    inputs=("logits", "labels"), differentiable=("logits",), sampler=sample_focal, check=check_sigmoid_focal_loss,
    cases=(
        Case("default"),
        Case("gamma=0", {"gamma": 0.0}),
        Case("gamma=0.5", {"gamma": 0.5}),
        Case("alpha=0.25", {"alpha": 0.25}),
        Case("alpha=0.25, gamma=0.5", {"alpha": 0.25, "gamma": 0.5}),
        Case("hard labels", sample={"hard": True}),
        Case("3-D", sample={"shape": (2, 3, 4)}),
        Case("saturated: logits of 1e4", sample={"saturated": True}),
        Case("saturated: logits of 1e4, gamma=0.5", {"gamma": 0.5}, sample={"saturated": True}),
        Case("saturated: logits of 1e4, gamma=0, alpha=0.25", {"gamma": 0.0, "alpha": 0.25},
             sample={"saturated": True}),
    ),
    bad_inputs=(
        BadInput("labels of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "labels"),
        BadInput("labels that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "labels"),
        BadInput("integer logits", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "logits"),
        BadInput("integer labels", replace_input(1, lambda xs: np.round(xs[1]).astype(np.int64)), TypeError,
                 "labels"),
        BadInput("labels of another dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)), TypeError,
                 "labels"),
        BadInput("labels above 1", replace_input(1, lambda xs: xs[1] + 1.0), ValueError, "labels"),
        BadInput("negative labels", replace_input(1, lambda xs: xs[1] - 1.0), ValueError, "labels"),
        BadInput("negative gamma", set_param("gamma", lambda xs: -1.0), ValueError, "gamma"),
        BadInput("alpha above 1", set_param("alpha", lambda xs: 1.5), ValueError, "alpha"),
        BadInput("negative alpha", set_param("alpha", lambda xs: -0.25), ValueError, "alpha"),
    ),
    builtins={"optax": "optax.losses.sigmoid_focal_loss"},
    differences=(
        Difference("optax", "optax.losses.sigmoid_focal_loss (before 0.2.5)",
                   "optax computed (1 - p_t)^gamma from p = sigmoid(x) directly (optax#1267): where an easy example "
                   "saturates (1 - p_t rounds to 0), the gradient gamma (1 - p_t)^(gamma - 1) times a zero slope is "
                   "NaN for gamma < 1; since PR #1346 it works in log space, as this loss does",
                   "sigmoid_focal_loss(x, y, alpha=a, gamma=g) == optax.losses.sigmoid_focal_loss(x, y, alpha=a, "
                   "gamma=g), values and gradients finite at |x| = 1e4 in float32"),
        Difference("torch", "torch.nn.functional.binary_cross_entropy_with_logits",
                   "torch.nn.functional has no focal loss (torchvision.ops.sigmoid_focal_loss computes "
                   "(1 - p_t)^gamma directly and defaults to alpha=0.25); at gamma=0 the focal loss is the "
                   "alpha-weighted binary cross entropy of logits",
                   "sigmoid_focal_loss(x, y, gamma=0, alpha=a) == (a y + (1 - a)(1 - y)) * "
                   "F.binary_cross_entropy_with_logits(x, y, reduction='none')"),
        _OPTAX_BROADCAST,
    ),
))


# -- poly_loss_cross_entropy (optax) -----------------------------------------------------

def poly_loss_cross_entropy(logits, labels, *, epsilon=2.0, axis=-1, where=None, reduction="none"):
    r"""Poly-1 loss, as ``optax.losses.poly_loss_cross_entropy`` (Leng et al., 2022):

    .. math:: \ell_i = \mathrm{CE}_i + \varepsilon \sum_{k \in W_i} t_{i,k}\,(1 - p_{i,k})

    with :math:`\mathrm{CE}` this module's ``softmax_cross_entropy`` (same ``axis`` and
    ``where``) and :math:`p` the softmax over the kept classes :math:`W_i`. ``where`` has the
    logits' shape (optax's softmax here does not expand a per-example mask); a slice with
    nothing kept is 0. ``epsilon`` is any real (the paper suggests 2 for classification, -1
    for detection); 0 gives the cross entropy. ``labels`` get no gradient.
    """
    axes, w, logp, kept = _softmax_parts(logits, labels, axis, where)
    p = _masked(np.where(kept, np.exp(logp), 0.0), w)
    ce = -_masked(labels * logp, w).sum(axes)
    return reduce(ce + epsilon * _masked(labels * (1.0 - p), w).sum(axes), reduction)


def poly_loss_cross_entropy_vjp(cotangent, logits, labels, *, epsilon=2.0, axis=-1, where=None,
                                reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_{i,k}} = [k \in W_i]\Big(p_{i,k} T_i - t_{i,k}
              - \varepsilon\, p_{i,k}\,\big(t_{i,k} - \textstyle\sum_{k' \in W_i} t_{i,k'} p_{i,k'}\big)\Big),
              \qquad T_i = \sum_{k \in W_i} t_{i,k}
    """
    axes, w, logp, kept = _softmax_parts(logits, labels, axis, where)
    t = _masked(labels, w)
    p = _masked(np.where(kept, np.exp(logp), 0.0), w)
    g = _per_example_cotangent(cotangent, reduction, _class_shape(logits.shape, axis), axes)
    tp = (t * p).sum(axes, keepdims=True)
    return (g * (p * t.sum(axes, keepdims=True) - t - epsilon * p * (t - tp)),)


def check_poly_loss_cross_entropy(args: dict) -> None:
    checks.reduction(args["reduction"])
    x = args["logits"]
    _check_probability_pair(x, args["labels"])
    checks.finite_number("epsilon", args["epsilon"])
    _check_optax_axis(args["axis"], x.ndim, allow_none=True)
    _check_where_mask(args["where"], x, None)


register(LossSpec(
    name="poly_loss_cross_entropy", family="classification", forward=poly_loss_cross_entropy,
    vjp_fn=poly_loss_cross_entropy_vjp, inputs=("logits", "labels"), differentiable=("logits",),
    array_params=("where",), sampler=sample_logits_and_distributions, check=check_poly_loss_cross_entropy,
    cases=_softmax_cases(per_example_where=False) + (
        Case("epsilon=-1", {"epsilon": -1.0}),
        Case("epsilon=0 (the cross entropy)", {"epsilon": 0.0}),
        Case("epsilon=-1, axis=0, where", {"epsilon": -1.0, "axis": 0, "where": where_elementwise},
             sample={"shape": (4, 3), "axis": 0}),
    ),
    straight_through_cases=(NONFINITE_LOGITS,),
    bad_inputs=_PROBABILITY_PAIR_BAD_INPUTS + _AXIS_BAD_INPUTS + _where_bad_inputs(per_example=False) + (
        BadInput("NaN epsilon", set_param("epsilon", lambda xs: float("nan")), ValueError, "epsilon"),
        BadInput("epsilon as a string", set_param("epsilon", lambda xs: "2"), TypeError, "epsilon"),
    ),
    builtins={"optax": "optax.losses.poly_loss_cross_entropy"},
    differences=(
        Difference("optax", "optax.losses.softmax_cross_entropy",
                   "poly-1 adds epsilon times the label mass on the wrong side of the softmax; epsilon=0 is "
                   "optax's softmax cross entropy (torch's cross_entropy with probability targets)",
                   "poly_loss_cross_entropy(x, t, epsilon=e) == softmax_cross_entropy(x, t) + e * sum(t * (1 - "
                   "softmax(x)), -1); == F.cross_entropy(x, t, reduction='none') + e * (t * (1 - softmax(x))).sum(1) "
                   "for 2-D x"),
        _OPTAX_BROADCAST,
    ),
))


# -- kl_divergence, kl_divergence_with_log_targets, generalized_kl_divergence (optax) -----

def _kl_sum(elementwise, axis, where):
    axes = _optax_axes(axis, elementwise.ndim)
    return _masked(elementwise, where).sum(axes)


def _kl_cotangent(cotangent, reduction, x, axis, where):
    axes = _optax_axes(axis, x.ndim)
    g = _per_example_cotangent(cotangent, reduction, _class_shape(x.shape, axis), axes)
    g = np.broadcast_to(g, x.shape)
    return g if where is None else np.where(where, g, 0.0)


def kl_divergence(log_predictions, targets, axis=-1, where=None, reduction="none"):
    r"""Kullback-Leibler divergence, as ``optax.losses.kl_divergence``:

    .. math:: \ell_i = \sum_{k \in W} t_{i,k}\,\big(\log t_{i,k} - x_{i,k}\big)
              = \sum_{k \in W} \operatorname{xlogy}(t_{i,k}, t_{i,k}) - t_{i,k} x_{i,k}

    summed along ``axis`` (an int, a tuple, or None for every axis) over the elements ``where``
    keeps (bool, the inputs' shape; all without it); a zero target contributes 0. It is torch's
    ``kl_div(reduction='none')`` summed along ``axis`` (the recorded Difference): not an alias,
    because summing is no renaming of kl_div's arguments. Targets are non-negative. Both inputs
    get gradients; the target's is NaN at a zero target, as torch's and JAX's autodiff of
    ``xlogy`` give (see ``kl_div_vjp``).
    """
    return reduce(_kl_sum(xlogy(targets, targets) - targets * log_predictions, axis, where), reduction)


def kl_divergence_vjp(cotangent, log_predictions, targets, axis=-1, where=None, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_{i,k}} = -[k \in W]\, t_{i,k}, \qquad
              \frac{\partial \ell_i}{\partial t_{i,k}} = [k \in W]\,(\log t_{i,k} + 1 - x_{i,k})
    """
    g = _kl_cotangent(cotangent, reduction, log_predictions, axis, where)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -targets * g, (np.log(targets) + targets / targets - log_predictions) * g


def kl_divergence_with_log_targets(log_predictions, log_targets, axis=-1, where=None, reduction="none"):
    r"""Kullback-Leibler divergence of log-probabilities from log-probabilities, as
    ``optax.losses.kl_divergence_with_log_targets``:

    .. math:: \ell_i = \sum_{k \in W} e^{u_{i,k}}\,(u_{i,k} - x_{i,k})

    summed along ``axis`` over the elements ``where`` keeps. It is torch's ``kl_div(...,
    log_target=True, reduction='none')`` summed along ``axis``.
    """
    return reduce(_kl_sum(np.exp(log_targets) * (log_targets - log_predictions), axis, where), reduction)


def kl_divergence_with_log_targets_vjp(cotangent, log_predictions, log_targets, axis=-1, where=None,
                                       reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_{i,k}} = -[k \in W]\, e^{u_{i,k}}, \qquad
              \frac{\partial \ell_i}{\partial u_{i,k}} = [k \in W]\, e^{u_{i,k}}(u_{i,k} - x_{i,k} + 1)
    """
    g = _kl_cotangent(cotangent, reduction, log_predictions, axis, where)
    e = np.exp(log_targets)
    return -e * g, e * (log_targets - log_predictions + 1.0) * g


def _exp_kept(x, where):
    """exp(x), and 1 where ``where`` drops x: a dropped entry (a padding's) may be large enough
    for exp to overflow, and its gradient is 0, not inf times 0."""
    return np.exp(x if where is None else np.where(where, x, 0.0))


def generalized_kl_divergence(log_predictions, targets, axis=-1, where=None, reduction="none"):
    r"""Generalized Kullback-Leibler divergence of unnormalized measures, as
    ``optax.losses.generalized_kl_divergence`` (the Bregman divergence of :math:`t \log t - t`):

    .. math:: \ell_i = \sum_{k \in W} t_{i,k}\,(\log t_{i,k} - x_{i,k}) + e^{x_{i,k}} - t_{i,k}

    summed along ``axis`` over the elements ``where`` keeps; ``kl_divergence`` plus
    :math:`\sum (e^x - t)`, which vanishes when both are normalized. Targets are non-negative;
    the target gradient is NaN at a zero target, as in ``kl_divergence``.
    """
    elementwise = xlogy(targets, targets) - targets * log_predictions + _exp_kept(log_predictions, where) - targets
    return reduce(_kl_sum(elementwise, axis, where), reduction)


def generalized_kl_divergence_vjp(cotangent, log_predictions, targets, axis=-1, where=None, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_{i,k}} = [k \in W]\,(e^{x_{i,k}} - t_{i,k}), \qquad
              \frac{\partial \ell_i}{\partial t_{i,k}} = [k \in W]\,(\log t_{i,k} - x_{i,k})
    """
    g = _kl_cotangent(cotangent, reduction, log_predictions, axis, where)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_t = (np.log(targets) + targets / targets - 1.0 - log_predictions) * g
    return (_exp_kept(log_predictions, where) - targets) * g, d_t


def _check_kl(args: dict, second: str, nonnegative: bool) -> None:
    checks.reduction(args["reduction"])
    x, t = args["log_predictions"], args[second]
    checks.floating(x)
    checks.floating(t)
    checks.ndim_in(x, range(1, 64), "an array of at least one dimension")
    checks.same_shape(x, t)
    checks.same_dtype(x, t)
    if nonnegative:
        checks.nonnegative_array(t)
    _check_optax_axis(args["axis"], x.ndim, allow_none=True)
    _check_where_mask(args["where"], x, None)


def check_kl_divergence(args: dict) -> None:
    _check_kl(args, "targets", nonnegative=True)


def check_kl_divergence_with_log_targets(args: dict) -> None:
    _check_kl(args, "log_targets", nonnegative=False)


def sample_log_predictions_and_targets(rng: np.random.Generator, shape=(6, 4), log_targets=False,
                                       unnormalized=False, zeros=False, first_row=None):
    """``log_predictions``: log-softmax over the last axis (N(0, 1) with ``unnormalized``);
    targets: probabilities over the last axis (their logs with ``log_targets``; exp(N(0, 1)),
    unnormalized, with ``unnormalized``). Targets stay positive (the target gradient is NaN at
    0); ``zeros`` sets every fifth to 0 for the matrix alone. ``first_row``: the value of every
    log-prediction in row 0 (along the last axis), which ``where_same_shape`` drops (a padding
    holding a value whose exp overflows)."""
    shape = tuple(shape)
    if unnormalized:
        x, t = rng.standard_normal(shape), np.exp(rng.standard_normal(shape))
    else:
        x = log_softmax(rng.standard_normal(shape), axis=-1)
        t = np.exp(log_softmax(rng.standard_normal(shape), axis=-1))
    if zeros:
        t.reshape(-1)[::5] = 0.0
    if first_row is not None:
        x.reshape(-1, shape[-1])[0] = first_row
    return x, (np.log(t) if log_targets else t)


def _where_same_shape(rng, inputs):
    """One flag per element, about 3/4 True; row 0 (along the last axis) all False."""
    keep = rng.random(inputs[0].shape) < 0.75
    keep.reshape(-1, inputs[0].shape[-1])[0] = False
    return keep


where_same_shape = Sampled("where: one flag per element, ~3/4 True, row 0 all False", _where_same_shape)


DROPPED_OVERFLOW = "where, the dropped row at 1e4"
_OPTAX_DROPPED_EXP = Difference(
    "optax", "optax.losses.generalized_kl_divergence (where)",
    "optax computes exp(x) at the entries `where` drops as well: where one overflows (a padding's log-prediction "
    "of 1e4) its inf times the mask's 0 makes that entry's gradient NaN (optax 0.2.8); the reference's is 0, "
    "and lossparity takes exp of the kept entries alone",
    "the values agree; the gradients agree with optax.losses.generalized_kl_divergence(jnp.where(m, x, 0), t, "
    "where=m)")
_OPTAX_DROPPED_EXP_XFAIL = XFail("optax's gradient is NaN at a dropped entry whose exp overflows (recorded as a "
                                 "Difference)", case=DROPPED_OVERFLOW, check="jax.builtin")


def _kl_cases(**sample):
    return (
        Case("default", sample=sample),
        Case("unbatched", sample={**sample, "shape": (5,)}),
        Case("3-D, last axis", sample={**sample, "shape": (2, 3, 4)}),
        Case("axis=0", {"axis": 0}, sample={**sample, "shape": (4, 3)}),
        Case("axis=(1, 2)", {"axis": (1, 2)}, sample={**sample, "shape": (3, 2, 3)}),
        Case("axis=None", {"axis": None}, sample={**sample, "shape": (3, 4)}),
        Case("where", {"where": where_same_shape}, sample=sample),
        Case("where, axis=0", {"axis": 0, "where": where_same_shape}, sample={**sample, "shape": (4, 3)}),
        Case(DROPPED_OVERFLOW, {"where": where_same_shape}, sample={**sample, "first_row": 1e4}),
    )


def _kl_bad_inputs(second: str, nonnegative: bool):
    bad = (
        BadInput(f"{second} of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, second),
        BadInput(f"{second} that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, second),
        BadInput("integer log_predictions", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError,
                 "log_predictions"),
        BadInput(f"integer {second}", replace_input(1, lambda xs: np.round(xs[1]).astype(np.int64)), TypeError,
                 second),
        BadInput(f"{second} of another dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)), TypeError,
                 second),
        BadInput("0-d inputs", lambda xs, kw: ((xs[0][0, 0], xs[1][0, 0]), kw), ValueError, "log_predictions"),
    ) + _AXIS_BAD_INPUTS + _where_bad_inputs(per_example=False)
    if nonnegative:
        bad += (BadInput("negative targets", replace_input(1, lambda xs: xs[1] - 1.0), ValueError, "targets"),)
    return bad


_KL_ZERO_TARGETS = (Case("zero targets", sample={"zeros": True}),)

register(LossSpec(
    name="kl_divergence", family="classification", forward=kl_divergence, vjp_fn=kl_divergence_vjp,
    inputs=("log_predictions", "targets"), differentiable=("log_predictions", "targets"), array_params=("where",),
    sampler=sample_log_predictions_and_targets, check=check_kl_divergence, cases=_kl_cases(),
    # The matrix alone: a zero target contributes 0 and its gradient is NaN (finite differences
    # would step below 0), as kl_div's "zero_targets".
    straight_through_cases=_KL_ZERO_TARGETS,
    bad_inputs=_kl_bad_inputs("targets", nonnegative=True),
    builtins={"optax": "optax.losses.kl_divergence",
              "torch": "torch.nn.functional.kl_div(reduction='none') summed along axis"},
    differences=(
        Difference("torch", "torch.nn.functional.kl_div",
                   "kl_div keeps every element (reduction='none') or reduces them all; optax sums along axis "
                   "(default the last) and stops; kl_div's 'batchmean' is the mean of these sums for 2-D input",
                   "kl_divergence(x, t, axis=a) == F.kl_div(x, t, reduction='none').sum(a) == kl_div(x, t, "
                   "reduction='none').sum(a); kl_divergence(x, t).mean() == F.kl_div(x, t, reduction='batchmean') "
                   "for 2-D x"),
        Difference("optax", "optax.losses.kl_divergence (target gradient)",
                   "optax writes where(t == 0, 0, log t): its autodiff target gradient at t = 0 is NaN (0 / 0 in "
                   "log's backward), as here; for t > 0 both are log t + 1 - x",
                   "values agree everywhere (0 at t = 0); target gradients agree for t > 0"),
        _OPTAX_BROADCAST,
    ),
))

register(LossSpec(
    name="kl_divergence_with_log_targets", family="classification", forward=kl_divergence_with_log_targets,
    vjp_fn=kl_divergence_with_log_targets_vjp, inputs=("log_predictions", "log_targets"),
    differentiable=("log_predictions", "log_targets"), array_params=("where",),
    sampler=lambda rng, **o: sample_log_predictions_and_targets(rng, log_targets=True, **o),
    check=check_kl_divergence_with_log_targets, cases=_kl_cases(),
    bad_inputs=_kl_bad_inputs("log_targets", nonnegative=False),
    builtins={"optax": "optax.losses.kl_divergence_with_log_targets",
              "torch": "torch.nn.functional.kl_div(log_target=True, reduction='none') summed along axis"},
    differences=(
        Difference("torch", "torch.nn.functional.kl_div(log_target=True)",
                   "torch takes log targets through a flag of kl_div, optax through a separate function; optax "
                   "sums along axis",
                   "kl_divergence_with_log_targets(x, u, axis=a) == F.kl_div(x, u, log_target=True, "
                   "reduction='none').sum(a)"),
        _OPTAX_BROADCAST,
    ),
))


def check_generalized_kl_divergence(args: dict) -> None:
    _check_kl(args, "targets", nonnegative=True)


register(LossSpec(
    name="generalized_kl_divergence", family="classification", forward=generalized_kl_divergence,
    vjp_fn=generalized_kl_divergence_vjp, inputs=("log_predictions", "targets"),
    differentiable=("log_predictions", "targets"), array_params=("where",),
    sampler=sample_log_predictions_and_targets, check=check_generalized_kl_divergence,
    cases=_kl_cases(unnormalized=True) + (Case("normalized (= kl_divergence)"),),
    straight_through_cases=(Case("zero targets", sample={"unnormalized": True, "zeros": True}),),
    bad_inputs=_kl_bad_inputs("targets", nonnegative=True),
    builtins={"optax": "optax.losses.generalized_kl_divergence"},
    xfails=(_OPTAX_DROPPED_EXP_XFAIL,),
    differences=(
        _OPTAX_DROPPED_EXP,
        Difference("torch", "torch.nn.functional.kl_div",
                   "torch has no generalized KL; it is kl_div plus exp(x) - t per element, summed along axis",
                   "generalized_kl_divergence(x, t, axis=a) == (F.kl_div(x, t, reduction='none') + exp(x) - t).sum(a)"),
        Difference("optax", "optax.losses.kl_divergence",
                   "for distributions normalized along axis the extra sum(exp(x) - t) is 0",
                   "generalized_kl_divergence(x, t) == kl_divergence(x, t) + sum(exp(x) - t, -1); equal when "
                   "exp(x) and t both sum to 1 along axis"),
        _OPTAX_BROADCAST,
    ),
))


# -- convex_kl_divergence (optax): an alias of generalized_kl_divergence -----------------

CONVEX_KL_DIVERGENCE = Alias(
    "generalized_kl_divergence", inputs={"log_predictions": "log_predictions", "targets": "targets"},
    hyperparameters={"axis": -1, "where": None, "reduction": "none"})

register(alias_spec(
    "convex_kl_divergence", "classification", CONVEX_KL_DIVERGENCE,
    doc=r"""Convex KL divergence, as ``optax.losses.convex_kl_divergence``: an alias of
    ``generalized_kl_divergence``, as optax itself defines it (deprecated there in its favour).

    .. math:: \ell_i = \sum_{k \in W} t_{i,k}\,(\log t_{i,k} - x_{i,k}) + e^{x_{i,k}} - t_{i,k}

    ``convex_kl_divergence(x, t, axis=a, where=m, reduction=r) == generalized_kl_divergence(x, t,
    axis=a, where=m, reduction=r)``: the same arguments, implemented once, by
    ``generalized_kl_divergence``.""",
    cases=_kl_cases(unnormalized=True),
    bad_inputs=_kl_bad_inputs("targets", nonnegative=True),
    builtins={"optax": "optax.losses.convex_kl_divergence"},
    xfails=(_OPTAX_DROPPED_EXP_XFAIL,),
    differences=(
        _OPTAX_DROPPED_EXP,
        Difference("optax", "optax.losses.generalized_kl_divergence",
                   "optax deprecates convex_kl_divergence (it warns) and defines it as generalized_kl_divergence",
                   "convex_kl_divergence(x, t, axis=a, where=m) == generalized_kl_divergence(x, t, axis=a, where=m) "
                   "== optax.losses.generalized_kl_divergence(x, t, axis=a, where=m)"),
    ),
))


# -- Keras's classification losses -------------------------------------------------------
#
# Keras's clipping is part of their semantics: probabilities are clipped to [1e-7, 1 - 1e-7]
# (Keras's ``epsilon()``, default 1e-7) before their logs. The implementations take the logs of
# the clipped values in forms that are exact in float32 too: log(clip(1 - p)) where Keras writes
# log(1 - clip(p)) (the same number; Keras's loses its low digits to 1 - p in float32).

def _clipped_log(p):
    """:math:`\\log(\\operatorname{clip}(p, \\epsilon, 1-\\epsilon))` and whether ``p`` is inside
    the clip (where the log has slope 1/p)."""
    inside = (p > KERAS_EPSILON) & (p < 1.0 - KERAS_EPSILON)
    return np.log(np.clip(p, KERAS_EPSILON, 1.0 - KERAS_EPSILON)), inside


def _keras_cotangent(cotangent, reduction, shape, axis):
    """The per-example cotangent broadcast back along the averaged ``axis``, divided by its size
    (an empty axis has no element to receive it: any finite divisor does)."""
    axes = _optax_axes(axis, len(shape))
    n = int(np.prod([shape[a] for a in axes], dtype=np.int64))
    return _per_example_cotangent(cotangent, reduction, _class_shape(shape, axis), axes) / max(n, 1)


# -- categorical_generalized_cross_entropy (Keras) -----------------------------------

def categorical_generalized_cross_entropy(y_true, y_pred, q=0.5, reduction="none"):
    r"""Generalized cross entropy (Zhang and Sabuncu, 2018), as
    ``keras.losses.categorical_generalized_cross_entropy`` (argument order ``(y_true, y_pred)``):

    .. math:: \ell_i = \frac{1 - p_{i, y_i}^{\,q}}{q}

    with ``y_true`` integer class indices (the shape of ``y_pred`` without its last axis) and
    ``y_pred`` class probabilities along the last axis (not renormalized; Keras neither). ``q``
    in (0, 1), Keras's ``CategoricalGeneralizedCrossEntropy`` default 0.5 (the function itself has
    no default); :math:`q \to 0` gives the cross entropy :math:`-\log p`, :math:`q = 1` the MAE
    :math:`1 - p`.
    """
    p = np.take_along_axis(y_pred, y_true[..., None], -1)[..., 0]
    return reduce((1.0 - p ** q) / q, reduction)


def categorical_generalized_cross_entropy_vjp(cotangent, y_true, y_pred, q=0.5, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial p_{i,k}} = -[k = y_i]\, p_{i,y_i}^{\,q-1}

    ``y_true`` gets no gradient (integers).
    """
    p = np.take_along_axis(y_pred, y_true[..., None], -1)
    g = np.broadcast_to(reduce_vjp(cotangent, reduction, y_true.size), y_true.shape)[..., None]
    d = np.zeros(y_pred.shape)
    with np.errstate(divide="ignore"):  # p^(q-1) is +inf at p = 0
        np.put_along_axis(d, y_true[..., None], -g * p ** (q - 1.0), -1)
    return (d,)


def check_categorical_generalized_cross_entropy(args: dict) -> None:
    checks.reduction(args["reduction"])
    y, p = args["y_true"], args["y_pred"]
    checks.floating(p)
    checks.ndim_in(p, range(1, 64), "class probabilities along the last axis: at least one dimension")
    checks.integer(y)
    checks.shape_is(y, p.shape[:-1], "class indices: y_pred's shape without its last axis")
    checks.class_labels(y, p.shape[-1])
    checks.within(p, 0.0, 1.0, "probabilities")
    q = args["q"]
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q < 1.0:
        raise ValueError(f"q must be a number in the open interval (0, 1), as Keras requires; got {q!r}")


def _probabilities(rng, shape, axis=-1):
    """U(0.2, 1) normalized along ``axis``: every probability at least 0.2 / (0.2 + C - 1), clear
    of 0, where p^(q - 1) and 1/p are steep (jax.test_util.check_grads steps by 1e-4)."""
    x = rng.uniform(0.2, 1.0, size=shape)
    return x / x.sum(axis, keepdims=True)


def sample_class_probabilities(rng: np.random.Generator, shape=(6, 4), edges=False):
    """``y_true``: class indices along the last axis; ``y_pred``: probabilities along it, U(0.2, 1)
    normalized. With ``edges``, the first row's true class has probability exactly 0 (its
    loss 1/q, its gradient -inf) and the second row's exactly 1 (the row one-hot)."""
    shape = tuple(shape)
    y_true, y_pred = rng.integers(shape[-1], size=shape[:-1]).astype(np.int64), _probabilities(rng, shape)
    if edges:
        rows_true, rows_pred = y_true.reshape(-1), y_pred.reshape(-1, shape[-1])
        for row, p_true in list(enumerate((0.0, 1.0)))[:len(rows_true)]:
            rows_pred[row] = (1.0 - p_true) / max(shape[-1] - 1, 1)
            rows_pred[row, rows_true[row]] = p_true
    return y_true, y_pred


_GCE_EDGES = "true-class probabilities of exactly 0 and 1"
_GCE_KERAS_EDGE = ("where the true class's probability is 0 Keras's autodiff gradient is NaN at the row's other "
                   "classes (its one-hot product: 0 times the infinite slope), where the partial derivative, the "
                   "reference's, is 0; elsewhere they agree")


def _num_classes_last(xs):
    return xs[1].shape[-1]


register(LossSpec(
    name="categorical_generalized_cross_entropy", family="classification",
    forward=categorical_generalized_cross_entropy, vjp_fn=categorical_generalized_cross_entropy_vjp,
    inputs=("y_true", "y_pred"), differentiable=("y_pred",), sampler=sample_class_probabilities,
    check=check_categorical_generalized_cross_entropy,
    cases=(
        Case("default"),
        Case("q=0.1", {"q": 0.1}),
        Case("q=0.9", {"q": 0.9}),
        Case("unbatched", sample={"shape": (5,)}),
        Case("3-D", sample={"shape": (2, 3, 4)}),
    ),
    # The matrix alone: at a true-class probability of 0 the gradient is -inf (finite
    # differences would step below 0), and only that class gets it.
    straight_through_cases=(Case(_GCE_EDGES, sample={"edges": True}),),
    xfails=(XFail(_GCE_KERAS_EDGE, case=_GCE_EDGES, check="jax.builtin"),),
    bad_inputs=(
        BadInput("y_true of y_pred's shape (one-hot)", replace_input(0, lambda xs: np.zeros(xs[1].shape, np.int64)),
                 ValueError, "y_true"),
        BadInput("y_true of another shape", replace_input(0, lambda xs: xs[0][:-1]), ValueError, "y_true"),
        BadInput("float y_true", replace_input(0, lambda xs: xs[0].astype(np.float64)), TypeError, "y_true"),
        BadInput("label equal to the number of classes",
                 replace_input(0, lambda xs: np.full_like(xs[0], _num_classes_last(xs))), IndexError, "y_true"),
        BadInput("negative label", replace_input(0, lambda xs: -np.ones_like(xs[0])), IndexError, "y_true"),
        BadInput("integer y_pred", replace_input(1, lambda xs: np.ones(xs[1].shape, np.int64)), TypeError, "y_pred"),
        BadInput("negative y_pred", replace_input(1, lambda xs: xs[1] - 1.0), ValueError, "y_pred"),
        BadInput("y_pred above 1", replace_input(1, lambda xs: xs[1] + 1.0), ValueError, "y_pred"),
        BadInput("q = 0", set_param("q", lambda xs: 0.0), ValueError, "q"),
        BadInput("q = 1", set_param("q", lambda xs: 1.0), ValueError, "q"),
    ),
    builtins={"keras": "keras.losses.categorical_generalized_cross_entropy"},
    differences=(
        Difference("keras", "keras.losses.categorical_generalized_cross_entropy (a true-class probability of 0)",
                   _GCE_KERAS_EDGE, "equal values; gradients equal where every true-class probability is positive"),
        Difference("keras", "keras.losses.categorical_generalized_cross_entropy",
                   "Keras casts y_true to int (a float label is truncated; an out-of-range label one-hot encodes "
                   "to zeros and costs 1/q) and checks q in (0, 1) only in its Loss class; lossparity requires "
                   "integer labels in range (TypeError, IndexError) and q in (0, 1) always",
                   "categorical_generalized_cross_entropy(y, p, q=q) == keras.losses."
                   "categorical_generalized_cross_entropy(y, p, q=q) for integer y in [0, C) (float64 too); "
                   "keras.losses.CategoricalGeneralizedCrossEntropy(q=q, reduction=None)(y, p) is the same in "
                   "float32 (a Loss object casts its inputs to its dtype, keras.config.floatx())"),
        Difference("torch", "torch.nn.functional.nll_loss",
                   "torch has no generalized cross entropy; its q -> 0 limit is the cross entropy of "
                   "probabilities, nll_loss of their logs, and q = 1 is nll_loss of the probabilities plus 1",
                   "categorical_generalized_cross_entropy(y, p, q=1 - 1e-12) ~ 1 + F.nll_loss(p, y, "
                   "reduction='none'); (1 - p^q) / q -> F.nll_loss(log(p), y, reduction='none') as q -> 0"),
    ),
))


# -- binary_focal_crossentropy (Keras) ------------------------------------------------

def _binary_focal_parts(y_true, y_pred, apply_class_balancing, alpha, gamma, from_logits, label_smoothing):
    """Keras's elementwise focal binary cross entropy and the pieces of its derivative in p."""
    y = y_true.astype(y_pred.dtype)
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        p, q = expit(y_pred), expit(-y_pred)
    else:
        p, q = y_pred, 1.0 - y_pred
    log_p, inside = _clipped_log(p)
    log_q, _ = _clipped_log(q)
    bce = -(y * log_p + (1.0 - y) * log_q)
    one_minus_pt = y * q + (1.0 - y) * p      # 1 - p_t, with Keras's unclipped p
    log_sigmoids = (log_expit(y_pred), log_expit(-y_pred)) if from_logits and gamma != 0 else None
    log_one_minus_pt = _log_one_minus_pt(y, *log_sigmoids) if log_sigmoids else None
    if gamma == 0:
        focal = np.ones_like(one_minus_pt)
    elif from_logits:  # the same number, with a derivative that stays finite where the sigmoid saturates
        focal = np.exp(gamma * log_one_minus_pt)
    else:
        focal = one_minus_pt ** gamma
    weight = y * alpha + (1.0 - y) * (1.0 - alpha) if apply_class_balancing else 1.0
    return y, p, q, inside, bce, one_minus_pt, log_sigmoids, log_one_minus_pt, focal, weight


def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25, gamma=2.0,
                              from_logits=False, label_smoothing=0.0, axis=-1, reduction="none"):
    r"""Binary focal cross entropy, as ``keras.losses.binary_focal_crossentropy`` (argument order
    ``(y_true, y_pred)``), with Keras's clipping and label smoothing:

    .. math:: \ell = \operatorname{mean}_{\text{axis}}\Big[\, w\,(1 - p_t)^\gamma\,
              \big(-y \log \bar p - (1-y) \log(1 - \bar p)\big)\Big]

    with :math:`y` smoothed towards 1/2 as Keras does, :math:`y (1-\varepsilon) + 0.5\,\varepsilon`
    (``label_smoothing``; torch's cross_entropy uses :math:`\varepsilon / C`), :math:`p` = ``y_pred``
    or :math:`\sigma(` ``y_pred`` :math:`)` with ``from_logits``, :math:`\bar p = \operatorname{clip}(p,
    10^{-7}, 1 - 10^{-7})` (Keras's ``epsilon()``; also after the sigmoid), :math:`1 - p_t =
    y (1 - p) + (1 - y) p` with the *unclipped* :math:`p` (as Keras), and :math:`w = \alpha y +
    (1-\alpha)(1-y)` with ``apply_class_balancing`` (else 1). The mean is over ``axis`` (default
    the last; an int, a tuple or None), as Keras's ``ops.mean``. ``y_true`` (float, integer or
    bool, cast to ``y_pred``'s dtype) is data: no gradient.
    """
    _, _, _, _, bce, _, _, _, focal, weight = _binary_focal_parts(y_true, y_pred, apply_class_balancing, alpha,
                                                                   gamma, from_logits, label_smoothing)
    return reduce(mean_over(weight * focal * bce, _optax_axes(axis, y_pred.ndim)), reduction)


def binary_focal_crossentropy_vjp(cotangent, y_true, y_pred, apply_class_balancing=False, alpha=0.25, gamma=2.0,
                                  from_logits=False, label_smoothing=0.0, axis=-1, reduction="none"):
    r"""In :math:`p`, with :math:`m = 1 - p_t` and :math:`n` the number of averaged elements:

    .. math:: \frac{\partial \ell}{\partial p} = \frac{w}{n}\Big(\gamma\, m^{\gamma-1} (1 - 2y)\,
              \mathrm{BCE} + m^\gamma \big[\tfrac{1-y}{1-p} - \tfrac{y}{p}\big]\,[\epsilon < p < 1-\epsilon]\Big)

    (the clipped logs are flat outside the clip), times :math:`p(1-p)` with ``from_logits``, where
    :math:`m^{\gamma-1} p (1-p) = \exp((\gamma - 1) \log m + \log p + \log(1-p))` from the
    log-sigmoids (``_log_one_minus_pt``).
    """
    y, p, q, inside, bce, m, log_sigmoids, log_m, focal, weight = _binary_focal_parts(
        y_true, y_pred, apply_class_balancing, alpha, gamma, from_logits, label_smoothing)
    if from_logits:  # in x: dp/dx = p q folded in
        d_bce = np.where(inside, (1.0 - y) * p - y * q, 0.0)
        if gamma != 0:
            m_power = (gamma - 1.0) * log_m if gamma != 1 else 0.0  # m^0 = 1 where log m is -inf (an infinite logit)
            d_focal = gamma * (1.0 - 2.0 * y) * np.exp(m_power + log_sigmoids[0] + log_sigmoids[1])
        else:
            d_focal = 0.0
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            d_bce = np.where(inside, (1.0 - y) / q - y / p, 0.0)
        d_focal = gamma * m ** (gamma - 1.0) * (1.0 - 2.0 * y) if gamma != 0 else 0.0
    d = weight * (d_focal * bce + focal * d_bce)
    return (d * _keras_cotangent(cotangent, reduction, y_pred.shape, axis),)


def _check_keras_pair(args: dict) -> None:
    y, p = args["y_true"], args["y_pred"]
    checks.floating(p)
    checks.kind_in(y, ("float", "int", "bool"), "labels")
    checks.same_shape(p, y)
    if y.kind == "float":
        checks.same_dtype(p, y)
    checks.ndim_in(p, range(1, 64), "at least one-dimensional (Keras reduces along axis)")
    checks.within(y, 0.0, 1.0, "labels")


def check_binary_focal_crossentropy(args: dict) -> None:
    checks.reduction(args["reduction"])
    _check_keras_pair(args)
    checks.boolean("apply_class_balancing", args["apply_class_balancing"])
    checks.boolean("from_logits", args["from_logits"])
    if not args["from_logits"]:
        checks.within(args["y_pred"], 0.0, 1.0, "probabilities (from_logits=False)")
    checks.in_interval("alpha", args["alpha"], 0.0, 1.0)
    checks.nonnegative("gamma", args["gamma"])
    checks.in_interval("label_smoothing", args["label_smoothing"], 0.0, 1.0)
    _check_optax_axis(args["axis"], args["y_pred"].ndim, allow_none=True)


def sample_binary_focal(rng: np.random.Generator, shape=(4, 5), logits=False, hard=False, integer=False,
                        clipped_logits=False, saturated_logits=False, clipped=False):
    """``y_true`` ~ U(0, 1) (in {0, 1} with ``hard``; int64 with ``integer``) and ``y_pred``:
    probabilities in (0.02, 0.98), or logits ~ N(0, 2²) with ``logits``. ``clipped_logits``: hard
    labels, every other logit of magnitude in [20, 30] (sigmoid within 2e-9 of 0 or 1, inside
    Keras's clip, on either side of its label). ``saturated_logits``: the same in [800, 1000],
    where the sigmoid is exactly 0 or 1 in float64 too (1 - p_t = 0 on the label's side).
    ``clipped`` (the matrix alone): every fifth probability is 0, 1 or 1e-9, clipped at 1e-7
    (finite differences would leave [0, 1])."""
    shape = tuple(shape)
    y = rng.uniform(0.0, 1.0, size=shape)
    if hard or integer or clipped_logits or saturated_logits:
        y = np.round(y)
    if logits or clipped_logits or saturated_logits:
        x = 2.0 * rng.standard_normal(shape)
        if clipped_logits or saturated_logits:
            low, high = (800.0, 1000.0) if saturated_logits else (20.0, 30.0)
            flat = x.reshape(-1)
            flat[::2] = rng.uniform(low, high, size=flat[::2].size) * rng.choice([-1.0, 1.0], size=flat[::2].size)
    else:
        x = rng.uniform(0.02, 0.98, size=shape)
        if clipped:
            flat = x.reshape(-1)
            flat[::5] = np.resize([0.0, 1.0, 1e-9], flat[::5].size)
    return (y.astype(np.int64) if integer else y), x


_LOGITS = {"logits": True}


def _keras_pair_bad_inputs():
    return (
        BadInput("y_true of another shape", replace_input(0, lambda xs: xs[0][..., :-1]), ValueError, "y_true"),
        BadInput("y_true that would broadcast", replace_input(0, lambda xs: xs[0][:1]), ValueError, "y_true"),
        BadInput("integer y_pred", replace_input(1, lambda xs: np.round(xs[1]).astype(np.int64)), TypeError,
                 "y_pred"),
        BadInput("y_true of another float dtype", replace_input(0, lambda xs: xs[0].astype(np.float32)), TypeError,
                 "y_true"),
        BadInput("y_true above 1", replace_input(0, lambda xs: xs[0] + 1.5), ValueError, "y_true"),
        BadInput("negative y_true", replace_input(0, lambda xs: xs[0] - 1.5), ValueError, "y_true"),
        BadInput("0-d y_true and y_pred", lambda xs, kw: ((xs[0][0, 0], xs[1][0, 0]), kw), ValueError, "y_pred"),
        BadInput("negative gamma", set_param("gamma", lambda xs: -2.0), ValueError, "gamma"),
        BadInput("label_smoothing above 1", set_param("label_smoothing", lambda xs: 1.5), ValueError,
                 "label_smoothing"),
        BadInput("from_logits not a bool", set_param("from_logits", lambda xs: "no"), TypeError, "from_logits"),
    )


_KERAS_CLASS_REDUCTION = Difference(
    "keras", "keras.losses.Loss(reduction=...)",
    "Keras's Loss objects reduce the per-example values with 'sum_over_batch_size' by default (their mean); "
    "lossparity's Keras-named losses default to reduction='none', Keras's functions",
    "keras.losses.<Class>(reduction='sum_over_batch_size')(y, p) == <loss>(y, p, reduction='mean'); "
    "reduction='sum' == <loss>(y, p, reduction='sum')")

_KERAS_EPSILON_DIFFERENCE = Difference(
    "keras", "keras.config.epsilon()",
    "Keras reads its clip from the global keras.config.epsilon() (default 1e-7); lossparity fixes 1e-7",
    "equal while keras.config.epsilon() == 1e-7")

register(LossSpec(
    name="binary_focal_crossentropy", family="classification", forward=binary_focal_crossentropy,
    vjp_fn=binary_focal_crossentropy_vjp, inputs=("y_true", "y_pred"), differentiable=("y_pred",),
    sampler=sample_binary_focal, check=check_binary_focal_crossentropy,
    cases=(
        Case("default"),
        Case("gamma=0 (Keras's binary cross entropy)", {"gamma": 0.0}),
        Case("gamma=0.5", {"gamma": 0.5}),
        Case("apply_class_balancing", {"apply_class_balancing": True}),
        Case("apply_class_balancing, alpha=0.75, gamma=3", {"apply_class_balancing": True, "alpha": 0.75,
                                                            "gamma": 3.0}),
        Case("label_smoothing=0.2 (towards 1/2)", {"label_smoothing": 0.2}),
        Case("from_logits", {"from_logits": True}, sample=_LOGITS),
        Case("from_logits, label_smoothing=0.1, apply_class_balancing",
             {"from_logits": True, "label_smoothing": 0.1, "apply_class_balancing": True}, sample=_LOGITS),
        Case("from_logits, clipped sigmoids (|logits| in [20, 30])", {"from_logits": True},
             sample={"clipped_logits": True}),
        Case("from_logits, clipped sigmoids, gamma=0.5", {"from_logits": True, "gamma": 0.5},
             sample={"clipped_logits": True}),
        # 1 - p_t = 0, where (1 - p_t)^gamma's derivative gamma (1 - p_t)^(gamma - 1) p q was inf times 0
        Case("from_logits, saturated sigmoids (|logits| in [800, 1000]), gamma=0.5",
             {"from_logits": True, "gamma": 0.5}, sample={"saturated_logits": True}),
        Case("hard labels", sample={"hard": True}),
        Case("integer y_true", sample={"integer": True}),
        Case("axis=0", {"axis": 0}),
        Case("3-D, axis=1", {"axis": 1}, sample={"shape": (2, 3, 4)}),
        Case("vector", sample={"shape": (6,)}),
    ),
    # The matrix alone: probabilities at 0, 1 and 1e-9, held at 1e-7 by Keras's clip; finite
    # differences would step outside [0, 1] (as binary_cross_entropy's "saturated").
    straight_through_cases=(Case("clipped probabilities (0, 1, 1e-9)", sample={"clipped": True}),),
    bad_inputs=_keras_pair_bad_inputs() + (
        BadInput("y_pred above 1 without from_logits", replace_input(1, lambda xs: xs[1] + 1.0), ValueError,
                 "y_pred"),
        BadInput("alpha above 1", set_param("alpha", lambda xs: 1.5), ValueError, "alpha"),
        BadInput("apply_class_balancing not a bool", set_param("apply_class_balancing", lambda xs: 1), TypeError,
                 "apply_class_balancing"),
        BadInput("axis out of range", set_param("axis", lambda xs: 2), ValueError, "axis"),
    ),
    builtins={"keras": "keras.losses.binary_focal_crossentropy (float32: Keras's mean computes in float32)"},
    differences=(
        Difference("keras", "keras.losses.binary_focal_crossentropy",
                   "Keras's ops.mean computes in float32 whatever the input's dtype (keras.backend.result_type "
                   "maps float64 with float32 to float32), so its float64 values carry float32 rounding; the "
                   "values agree within float32's tolerance",
                   "binary_focal_crossentropy(y, p, ...) == keras.losses.binary_focal_crossentropy(y, p, ...) "
                   "within rtol 1.3e-6, atol 1e-5 (float32)"),
        Difference("keras", "keras.losses.binary_focal_crossentropy (float32 clip)",
                   "in float32 Keras's upper clip 1 - 1e-7 rounds to float32(1 - 1e-7) = 1 - 2^-23, so at a p "
                   "clipped there log(1 - clip(p)) is log(1.19e-7) = -15.94, not log(1e-7) = -16.12 (a change of "
                   "0.18 (1 - y) per clipped element); lossparity computes log(clip(1 - p)), log(1e-7) in every "
                   "dtype, as Keras does in float64",
                   "keras.losses.binary_focal_crossentropy(y, p) in float32 == binary_focal_crossentropy with the "
                   "upper clip 1 - 2^-23 (float32 tolerance); in float64 == binary_focal_crossentropy(y, p)"),
        Difference("keras", "keras.losses.binary_crossentropy",
                   "at gamma=0 without class balancing the focal loss is Keras's binary cross entropy, with its "
                   "clip and its label smoothing towards 1/2 (0.5 eps, where torch's cross_entropy smooths with "
                   "eps / C)",
                   "binary_focal_crossentropy(y, p, gamma=0, label_smoothing=e) == keras.losses."
                   "binary_crossentropy(y, p, label_smoothing=e) == binary_cross_entropy(clip(p, 1e-7, 1 - 1e-7), "
                   "y (1 - e) + e / 2, reduction='none').mean(-1)"),
        Difference("optax", "optax.losses.sigmoid_focal_loss",
                   "optax's focal loss takes logits, smooths nothing, clips nothing and does not average; its "
                   "alpha weighting is apply_class_balancing",
                   "binary_focal_crossentropy(y, x, from_logits=True, apply_class_balancing=b, alpha=a, gamma=g) "
                   "== sigmoid_focal_loss(x, y, alpha=a if b else None, gamma=g).mean(-1) wherever sigmoid(x) is "
                   "inside [1e-7, 1 - 1e-7]"),
        _KERAS_EPSILON_DIFFERENCE,
        _KERAS_CLASS_REDUCTION,
    ),
))


# -- categorical_focal_crossentropy (Keras) ------------------------------------------

def _categorical_focal_parts(y_true, y_pred, alpha, gamma, from_logits, label_smoothing, axis):
    y = y_true.astype(y_pred.dtype)
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + label_smoothing / y_true.shape[-1]  # Keras: the last axis, always
    if from_logits:
        out = softmax(y_pred, axis=axis)
    else:
        out = y_pred / y_pred.sum(axis, keepdims=True)
    log_out, inside = _clipped_log(out)
    one_minus = 1.0 - np.clip(out, KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    return y, out, log_out, inside, one_minus


def categorical_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                                   axis=-1, reduction="none"):
    r"""Categorical focal cross entropy, as ``keras.losses.categorical_focal_crossentropy``
    (argument order ``(y_true, y_pred)``), with Keras's normalization, clipping and label smoothing:

    .. math:: \ell = \sum_{k\,\in\,\text{axis}} \alpha\,(1 - \bar o_k)^\gamma\,\big(-y_k \log \bar o_k\big),
              \qquad \bar o = \operatorname{clip}\Big(\frac{p}{\sum_{\text{axis}} p},\ 10^{-7},\ 1 - 10^{-7}\Big)

    with :math:`p` = ``y_pred`` (non-negative, renormalized along ``axis``, as Keras) or its softmax
    along ``axis`` with ``from_logits``. Label smoothing is torch's :math:`y(1-\varepsilon) +
    \varepsilon / C`, but Keras takes :math:`C` from the **last** axis of ``y_true`` whatever
    ``axis`` is. Unlike the binary focal loss the modulating factor uses the clipped
    :math:`\bar o`. ``alpha`` is a non-negative number (Keras also takes a per-class list: see the
    recorded Difference). ``y_true`` (float, integer or bool, cast) is data: no gradient.
    """
    y, _, log_out, _, one_minus = _categorical_focal_parts(y_true, y_pred, alpha, gamma, from_logits,
                                                           label_smoothing, axis)
    return reduce((alpha * one_minus ** gamma * (-y * log_out)).sum(axis), reduction)


def categorical_focal_crossentropy_vjp(cotangent, y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False,
                                       label_smoothing=0.0, axis=-1, reduction="none"):
    r"""With :math:`D_k = \partial \ell / \partial o_k = \alpha\,[\epsilon < o_k < 1-\epsilon]\,
    \big(\gamma (1-o_k)^{\gamma-1} y_k \log o_k - (1-o_k)^\gamma\, y_k / o_k\big)`:

    .. math:: \frac{\partial \ell}{\partial x_j} = o_j \Big(D_j - \sum_k D_k o_k\Big) \text{ (from\_logits)},
              \qquad \frac{\partial \ell}{\partial p_j} = \frac{1}{\sum_k p_k}\Big(D_j - \sum_k D_k o_k\Big)
    """
    y, out, log_out, inside, m = _categorical_focal_parts(y_true, y_pred, alpha, gamma, from_logits,
                                                          label_smoothing, axis)
    d_focal = gamma * m ** (gamma - 1.0) * y * log_out if gamma != 0 else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        d_out = alpha * np.where(inside, d_focal - m ** gamma * y / out, 0.0)
    centered = d_out - (d_out * out).sum(axis, keepdims=True)
    d = out * centered if from_logits else centered / y_pred.sum(axis, keepdims=True)
    g = _per_example_cotangent(cotangent, reduction, _class_shape(y_pred.shape, axis), _optax_axes(axis, y_pred.ndim))
    return (d * g,)


def check_categorical_focal_crossentropy(args: dict) -> None:
    checks.reduction(args["reduction"])
    _check_keras_pair(args)
    checks.boolean("from_logits", args["from_logits"])
    if not args["from_logits"]:
        checks.nonnegative_array(args["y_pred"])
    alpha = args["alpha"]
    if isinstance(alpha, (list, tuple, np.ndarray)):
        raise TypeError(f"alpha must be a number (a per-class list is not taken: see the recorded difference); "
                        f"got {alpha!r}")
    checks.finite_nonnegative("alpha", alpha)  # inf: inf times a 0 focal factor
    checks.nonnegative("gamma", args["gamma"])
    checks.in_interval("label_smoothing", args["label_smoothing"], 0.0, 1.0)
    axis = args["axis"]
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int (the class axis), as Keras requires; got {axis!r}")
    checks.axes("axis", axis, args["y_pred"].ndim)


def sample_categorical_focal(rng: np.random.Generator, shape=(4, 5), labels="one-hot", predictions="probabilities",
                             axis=-1, zeros=False):
    """``y_true`` along ``axis``: one-hot (``"integer"``: one-hot as int64), or ``"soft"``
    probabilities; ``y_pred``: probabilities, U(0.2, 1) normalized (``"probabilities"``), positive
    values U(0.1, 1) that Keras renormalizes (``"unnormalized"``), logits ~ N(0, 1.5²)
    (``"logits"``), or logits with two of about 30 per slice (``"saturated"``: the other softmax outputs, about 1e-13, are held
    at 1e-7 by Keras's clip; the two large ones stay inside it). ``zeros`` (the matrix alone) puts a
    0 probability in every slice."""
    shape = tuple(shape)
    a = axis % len(shape)
    num_classes = shape[a]
    if labels == "soft":
        y = softmax(rng.standard_normal(shape), axis=a)
    else:
        idx = rng.integers(num_classes, size=shape[:a] + shape[a + 1:])
        y = np.moveaxis(np.eye(num_classes)[idx], -1, a)
        if labels == "integer":
            y = y.astype(np.int64)
    z = 1.5 * rng.standard_normal(shape)
    if predictions == "probabilities":
        x = _probabilities(rng, shape, a)
    elif predictions == "unnormalized":
        x = rng.uniform(0.1, 1.0, size=shape)
    else:
        x = z
        if predictions == "saturated":  # two classes share the mass, the others fall below the clip
            top = np.argsort(rng.random(shape), axis=a).take([0, 1], axis=a)
            np.put_along_axis(x, top, 30.0 + rng.standard_normal(top.shape), a)
    if zeros:
        np.put_along_axis(x, np.expand_dims(rng.integers(num_classes, size=shape[:a] + shape[a + 1:]), a), 0.0, a)
    return y, x


register(LossSpec(
    name="categorical_focal_crossentropy", family="classification", forward=categorical_focal_crossentropy,
    vjp_fn=categorical_focal_crossentropy_vjp, inputs=("y_true", "y_pred"), differentiable=("y_pred",),
    sampler=sample_categorical_focal, check=check_categorical_focal_crossentropy,
    cases=(
        Case("default"),
        Case("soft labels", sample={"labels": "soft"}),
        Case("unnormalized y_pred (Keras renormalizes)", sample={"predictions": "unnormalized", "labels": "soft"}),
        Case("gamma=0", {"gamma": 0.0}, sample={"labels": "soft"}),
        Case("gamma=0.5, alpha=1", {"gamma": 0.5, "alpha": 1.0}, sample={"labels": "soft"}),
        Case("label_smoothing=0.1", {"label_smoothing": 0.1}),
        Case("from_logits", {"from_logits": True}, sample={"predictions": "logits", "labels": "soft"}),
        Case("from_logits, label_smoothing=0.2", {"from_logits": True, "label_smoothing": 0.2},
             sample={"predictions": "logits"}),
        Case("from_logits, clipped softmax (two logits of 30)", {"from_logits": True, "label_smoothing": 0.1},
             sample={"predictions": "saturated"}),
        Case("integer y_true", sample={"labels": "integer"}),
        Case("axis=0, label_smoothing=0.1 (C from the last axis)", {"axis": 0, "label_smoothing": 0.1},
             sample={"axis": 0, "shape": (4, 3)}),
        Case("3-D, axis=1, from_logits", {"axis": 1, "from_logits": True},
             sample={"axis": 1, "shape": (2, 4, 3), "predictions": "logits", "labels": "soft"}),
        Case("vector", sample={"shape": (5,)}),
    ),
    # The matrix alone: a zero probability in every slice, held at 1e-7 by Keras's clip; finite
    # differences would step below 0.
    straight_through_cases=(Case("zero probabilities (clipped)", sample={"zeros": True, "labels": "soft"}),),
    bad_inputs=_keras_pair_bad_inputs() + (
        BadInput("negative y_pred without from_logits", replace_input(1, lambda xs: xs[1] - 1.0), ValueError,
                 "y_pred"),
        BadInput("negative alpha", set_param("alpha", lambda xs: -0.25), ValueError, "alpha"),
        BadInput("infinite alpha", set_param("alpha", lambda xs: float("inf")), ValueError, "alpha"),
        BadInput("per-class alpha list", set_param("alpha", lambda xs: [0.25] * xs[1].shape[-1]), TypeError,
                 "alpha"),
        BadInput("axis out of range", set_param("axis", lambda xs: 2), ValueError, "axis"),
        BadInput("axis as a tuple", set_param("axis", lambda xs: (0, 1)), TypeError, "axis"),
    ),
    builtins={"keras": "keras.losses.categorical_focal_crossentropy"},
    differences=(
        Difference("keras", "keras.losses.categorical_focal_crossentropy(alpha=[...])",
                   "Keras also takes alpha as a per-class list, broadcast along the last axis; lossparity takes a "
                   "number",
                   "for one-hot y without label smoothing, keras.losses.categorical_focal_crossentropy(y, p, "
                   "alpha=a) == a[argmax(y, -1)] * categorical_focal_crossentropy(y, p, alpha=1)"),
        Difference("keras", "keras.losses.categorical_focal_crossentropy(label_smoothing=...)",
                   "Keras smooths with eps / C taking C from the last axis of y_true even when axis names another",
                   "categorical_focal_crossentropy(y, p, label_smoothing=e, axis=a) == categorical_focal_"
                   "crossentropy(y (1 - e) + e / y.shape[-1], p, axis=a)"),
        Difference("torch", "torch.nn.functional.cross_entropy",
                   "at gamma=0 the categorical focal loss is alpha times the cross entropy of the clipped, "
                   "renormalized probabilities; with from_logits and no clipping active it is alpha times torch's "
                   "cross_entropy with probability targets and the same label smoothing (for 2-D input)",
                   "categorical_focal_crossentropy(t, x, gamma=0, alpha=a, from_logits=True, label_smoothing=e) "
                   "== a * F.cross_entropy(x, t, label_smoothing=e, reduction='none') wherever softmax(x) is "
                   "inside [1e-7, 1 - 1e-7]"),
        _KERAS_EPSILON_DIFFERENCE,
        _KERAS_CLASS_REDUCTION,
    ),
))
