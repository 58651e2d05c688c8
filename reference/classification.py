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

import numpy as np
from scipy.special import log_expit, log_softmax, softmax, xlogy, expit

from . import checks
from .reductions import reduce, reduce_vjp
from .spec import BadInput, Case, Difference, LossSpec, Sampled, register, replace_input, set_param


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
    return g * (softmax(input, axis=cd) * q.sum(axis=cd, keepdims=True) - q)


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
    logp = log_softmax(input, axis=cd)
    if target.dtype.kind == "f":
        q = _effective_probability_targets(input, target, weight, label_smoothing)
        return reduce(-(q * logp).sum(axis=cd), reduction)
    counts, safe, w_target = _class_index_terms(input, target, weight, ignore_index)
    elementwise = -w_target * np.take_along_axis(logp, np.expand_dims(safe, cd), cd).squeeze(cd)
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
    return _weighted_mean(-w_target * picked, reduction, w_target.sum())


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

def sample_logits_and_labels(rng: np.random.Generator, shape=(6, 4), targets="indices",
                             ignore_index=-100, ignored=0.0, logits="logits"):
    """Logits ``input`` ~ N(0, 1.5²) (log-probabilities with ``logits="log_probs"``) and
    ``target``: class indices (a share ``ignored`` set to ``ignore_index``; at least one
    ignored and, below 1, at least one kept) or, with ``targets="probabilities"``,
    softmax-normalized class probabilities of the input's shape."""
    shape = tuple(shape)
    cd = 0 if len(shape) == 1 else 1
    num_classes = shape[cd]
    x = 1.5 * rng.standard_normal(shape)
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


def sample_logits_and_soft_labels(rng: np.random.Generator, shape=(6, 4)):
    """Logits ``input`` ~ N(0, 2²) and soft labels ``target`` ~ U(0, 1)."""
    shape = tuple(shape)
    return 2.0 * rng.standard_normal(shape), rng.uniform(0.0, 1.0, size=shape)


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

_IGNORE = {"ignore_index": -100, "ignored": 0.3}
_KDIM = {"shape": (3, 4, 2, 2)}
_PROBS = {"targets": "probabilities"}

# torch also differentiates a probability target (-(1 - eps) w_c log p_c); the torch Function
# and the JAX custom_vjp return that gradient, but `differentiable` is one tuple per spec and
# class-index targets are integers, so the matrix checks the input's gradient only.
register(LossSpec(
    name="cross_entropy", family="classification", forward=cross_entropy, vjp_fn=cross_entropy_vjp,
    inputs=("input", "target"), differentiable=("input",), sampler=sample_logits_and_labels,
    check=check_cross_entropy, array_params=("weight",),
    cases=(
        Case("default"),
        Case("unbatched", sample={"shape": (5,)}),
        Case("K-dim", sample=_KDIM),
        Case("weighted", {"weight": class_weight}),
        Case("ignore_index", sample=_IGNORE),
        Case("ignore_index=1", {"ignore_index": 1}, sample={"ignore_index": 1, "ignored": 0.3}),
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
    ),
    bad_inputs=CROSS_ENTROPY_BAD_INPUTS,
    builtins={"torch": "torch.nn.functional.cross_entropy",
              "optax": "optax.losses.softmax_cross_entropy_with_integer_labels, optax.losses.softmax_cross_entropy"},
    differences=(
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
