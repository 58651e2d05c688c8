"""Margin losses: margin_ranking_loss, hinge_embedding_loss, soft_margin_loss,
multilabel_soft_margin_loss, multilabel_margin_loss, multi_margin_loss.

The first three are elementwise over labels in {-1, 1}; the last three give one
loss per sample, averaging over the C classes of the last dimension. The hinges
are piecewise linear (or quadratic, ``multi_margin_loss`` with ``p=2``): the
samplers keep every hinge argument at least 0.1 away from its kink, so central
finite differences see smooth functions, and the VJPs take the derivative of the
flat side (0) at a kink.

Margins. torch accepts any real margin, and every one of them defines a valid
loss: a margin only shifts the argument of a hinge ``max(0, margin - s)`` of a
real-valued score ``s`` (a score gap ``y (x1 - x2)`` or ``x[y] - x[i]``, or the
input itself, which torch does not restrict to distances: its own
``HingeEmbeddingLoss`` example feeds ``randn``). A negative margin is a
tolerance (a pair may be misordered by up to ``|margin|`` at no cost), not a
contradiction, so lossparity accepts it as torch does and rejects only margins
that are not finite real numbers.

Part 2 (below the torch losses) holds optax's and Keras's hinge-type losses under
their libraries' names: hinge_loss, perceptron_loss, sparsemax_loss,
multiclass_hinge_loss, multiclass_perceptron_loss, multiclass_sparsemax_loss
(optax) and squared_hinge, categorical_hinge (Keras, arguments ``(y_true, y_pred)``),
each with ``reduction="none"`` by default so that the defaults give the library's
per-example values. ``tests/test_differences_margin.py`` proves every mapping the
family records against the real libraries.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_expit

from . import checks
from .reductions import mean_over, reduce, reduce_vjp
from .spec import BadInput, Case, Difference, LossSpec, Sampled, XFail, register, replace_input, set_param

# Every hinge argument the samplers produce stays this far from its kink.
_GAP = 0.1


def _signs(rng, shape):
    return rng.choice([-1.0, 1.0], size=shape)


def _off_kink(rng, shape, high=1.5):
    """Hinge arguments in +-[GAP, high], each side equally likely."""
    return rng.uniform(_GAP, high, size=shape) * _signs(rng, shape)


def _rows_off_kink(rng, n, num_classes, gap):
    """Scores ~ N(0, 1), redrawn row by row until no two scores of a row differ by
    ``gap`` (within _GAP): the hinges ``max(0, gap - x[a] + x[b])`` stay off their kink."""
    shape = (1 if n is None else n, num_classes)
    x = np.empty(shape)
    for r in range(shape[0]):
        while True:
            row = rng.standard_normal(num_classes)
            diff = row[:, None] - row[None, :]
            off = ~np.eye(num_classes, dtype=bool)
            if np.all(np.abs(diff[off] - gap) >= _GAP):
                x[r] = row
                break
    return x if n is not None else x[0]


def _expand_last(g):
    """The per-sample cotangent, broadcastable over the class dimension."""
    return np.expand_dims(np.asarray(g), -1)


def _check_elementwise(args: dict, inputs: tuple[str, ...]) -> None:
    checks.reduction(args["reduction"])
    first = args[inputs[0]]
    for name in inputs:
        checks.floating(args[name])
    for name in inputs[1:]:
        checks.same_shape(first, args[name])
        checks.same_dtype(first, args[name])


def _check_class_weight(args: dict, num_classes: int) -> None:
    w = args.get("weight")
    if w is not None:
        checks.floating(w)
        checks.shape_is(w, (num_classes,), "one weight per class")
        checks.nonnegative_array(w)


# -- margin_ranking_loss -----------------------------------------------------------

def margin_ranking_loss(input1, input2, target, margin=0.0, reduction="mean"):
    r"""Margin ranking loss, as ``torch.nn.functional.margin_ranking_loss``.

    .. math:: \ell_i = \max\bigl(0,\; -y_i\,(x_{1,i} - x_{2,i}) + \text{margin}\bigr),
              \qquad y_i \in \{-1, 1\}

    :math:`y_i = 1` asks for :math:`x_{1,i}` to be ranked above :math:`x_{2,i}`
    by at least ``margin``. The three inputs have one shape (torch broadcasts
    them; lossparity does not).
    """
    return reduce(np.maximum(0.0, -target * (input1 - input2) + margin), reduction)


def margin_ranking_loss_vjp(cotangent, input1, input2, target, margin=0.0, reduction="mean"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_{1,i}} = -y_i\,[\,-y_i (x_{1,i} - x_{2,i}) + \text{margin} > 0\,]
              = -\frac{\partial \ell_i}{\partial x_{2,i}}
    """
    g = reduce_vjp(cotangent, reduction, input1.size)
    active = -target * (input1 - input2) + margin > 0
    d_input1 = np.where(active, -target, 0.0) * g
    return d_input1, -d_input1


def sample_ranking(rng, shape=(6,), margin=0.0):
    """``target`` in {-1, 1}, ``input2`` ~ N(0, 1), and ``input1`` placed so that the
    hinge argument ``margin - y (x1 - x2)`` lies in +-[0.1, 1.5]."""
    shape = tuple(shape)
    target = _signs(rng, shape)
    input2 = rng.standard_normal(shape)
    z = _off_kink(rng, shape)
    input1 = input2 + target * (margin - z)  # y (x1 - x2) = margin - z since y * y = 1
    return input1, input2, target


def check_margin_ranking(args: dict) -> None:
    _check_elementwise(args, ("input1", "input2", "target"))
    checks.signs(args["target"])
    checks.finite_number("margin", args["margin"])


# -- hinge_embedding_loss ----------------------------------------------------------

def hinge_embedding_loss(input, target, margin=1.0, reduction="mean"):
    r"""Hinge embedding loss, as ``torch.nn.functional.hinge_embedding_loss``.

    .. math:: \ell_i = \begin{cases} x_i & y_i = 1 \\
              \max(0,\; \text{margin} - x_i) & y_i = -1 \end{cases}

    :math:`x` is typically a distance between two embeddings: similar pairs
    (:math:`y = 1`) pay the distance itself, dissimilar pairs pay for falling
    inside ``margin``.
    """
    return reduce(np.where(target == 1, input, np.maximum(0.0, margin - input)), reduction)


def hinge_embedding_loss_vjp(cotangent, input, target, margin=1.0, reduction="mean"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = \begin{cases} 1 & y_i = 1 \\
              -[\,\text{margin} - x_i > 0\,] & y_i = -1 \end{cases}
    """
    g = reduce_vjp(cotangent, reduction, input.size)
    slope = np.where(target == 1, 1.0, np.where(margin - input > 0, -1.0, 0.0))
    return (slope * g,)


def sample_hinge_embedding(rng, shape=(3, 4), margin=1.0):
    """Distances ``input`` >= 0 kept 0.1 away from ``margin`` on either side, ``target`` in {-1, 1}."""
    shape = tuple(shape)
    below = rng.uniform(0.0, max(margin - _GAP, 0.0), size=shape)
    above = margin + rng.uniform(_GAP, 1.5, size=shape)
    input = np.where(rng.random(shape) < 0.5, below, above) if margin > _GAP else above
    return input, _signs(rng, shape)


def check_hinge_embedding(args: dict) -> None:
    _check_elementwise(args, ("input", "target"))
    checks.signs(args["target"])
    checks.finite_number("margin", args["margin"])


# -- soft_margin_loss --------------------------------------------------------------

def soft_margin_loss(input, target, reduction="mean"):
    r"""Soft margin loss (logistic loss on labels in {-1, 1}), as
    ``torch.nn.functional.soft_margin_loss``.

    .. math:: \ell_i = \log\bigl(1 + e^{-y_i x_i}\bigr) = -\log\sigma(y_i x_i)

    computed as :math:`-\log\sigma(y_i x_i)` (``scipy.special.log_expit``), which
    stays finite where :math:`e^{-y_i x_i}` overflows.
    """
    return reduce(-log_expit(target * input), reduction)


def soft_margin_loss_vjp(cotangent, input, target, reduction="mean"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = -y_i\,\sigma(-y_i x_i)
    """
    g = reduce_vjp(cotangent, reduction, input.size)
    return (-target * expit(-target * input) * g,)


def sample_soft_margin(rng, shape=(3, 4), scale=2.0, low=0.0):
    """``input`` with |input| in [low, low + 2 scale] and ``target`` in {-1, 1}; a large
    ``low`` saturates the loss (|y x| up to ~100, where exp(-y x) overflows float32)."""
    shape = tuple(shape)
    input = (low + rng.uniform(0.0, 2.0 * scale, size=shape)) * _signs(rng, shape)
    return input, _signs(rng, shape)


def check_soft_margin(args: dict) -> None:
    _check_elementwise(args, ("input", "target"))
    checks.signs(args["target"])


# -- multilabel_soft_margin_loss ---------------------------------------------------

def multilabel_soft_margin_loss(input, target, weight=None, reduction="mean"):
    r"""Multi-label soft margin loss, as ``torch.nn.functional.multilabel_soft_margin_loss``:
    one binary logistic loss per class, averaged over the C classes of the last dimension.

    .. math:: \ell_n = -\frac{1}{C} \sum_c w_c \bigl[\, y_{nc} \log\sigma(x_{nc})
              + (1 - y_{nc}) \log\sigma(-x_{nc}) \,\bigr]

    with :math:`w_c = 1` when ``weight`` is None; the output has one value per
    sample (shape ``input.shape[:-1]``). Targets are labels in {0, 1} or, as in
    torch, probabilities in [0, 1]. :math:`\log\sigma` is ``log_expit`` (stable).
    """
    elementwise = -(target * log_expit(input) + (1.0 - target) * log_expit(-input))
    if weight is not None:
        elementwise = elementwise * weight
    return reduce(mean_over(elementwise), reduction)


def multilabel_soft_margin_loss_vjp(cotangent, input, target, weight=None, reduction="mean"):
    r"""
    .. math:: \frac{\partial \ell_n}{\partial x_{nc}} = \frac{w_c}{C}\,\bigl(\sigma(x_{nc}) - y_{nc}\bigr)
    """
    per_sample = int(np.prod(input.shape[:-1]))
    g = _expand_last(reduce_vjp(cotangent, reduction, per_sample))
    d_input = (expit(input) - target) / input.shape[-1]
    if weight is not None:
        d_input = d_input * weight
    return (d_input * g,)


def sample_multilabel_soft_margin(rng, n=5, num_classes=4, soft=False, scale=2.0, low=0.0):
    """Logits with |x| in [low, low + 2 scale]; multi-hot {0, 1} targets, or probabilities
    U(0, 1) when ``soft``; ``n=None`` draws one unbatched sample of shape (C,)."""
    shape = (num_classes,) if n is None else (n, num_classes)
    input = (low + rng.uniform(0.0, 2.0 * scale, size=shape)) * _signs(rng, shape)
    target = rng.uniform(0.0, 1.0, size=shape) if soft else rng.integers(0, 2, size=shape).astype(np.float64)
    return input, target


def check_multilabel_soft_margin(args: dict) -> None:
    _check_elementwise(args, ("input", "target"))
    x = args["input"]
    checks.ndim_in(x, range(1, 64), "at least one-dimensional (classes in the last dimension)")
    checks.within(args["target"], 0.0, 1.0, "labels or probabilities")
    _check_class_weight(args, x.shape[-1])


class_weight = Sampled("weight ~ U(0.1, 2), one per class",
                       lambda rng, inputs: rng.uniform(0.1, 2.0, size=inputs[0].shape[-1]))


# -- multilabel_margin_loss --------------------------------------------------------

def _multilabel_targets(target, num_classes):
    """``listed[..., k]``: entry k comes before the row's first -1; ``onehot[..., k, c]``:
    listed entry k is class c; ``is_target[..., c]``: class c is listed at all."""
    listed = np.cumprod(target >= 0, axis=-1).astype(bool)
    onehot = (target[..., :, None] == np.arange(num_classes)) & listed[..., :, None]
    return listed, onehot, onehot.any(axis=-2)


def _multilabel_hinges(input, target):
    """Hinge arguments ``1 - x[t_k] + x[i]`` (..., K, C) and which of them count."""
    listed, onehot, is_target = _multilabel_targets(target, input.shape[-1])
    x_target = np.take_along_axis(input, np.where(listed, target, 0), axis=-1)
    z = 1.0 - x_target[..., :, None] + input[..., None, :]
    counted = listed[..., :, None] & ~is_target[..., None, :]
    return z, counted, onehot


def multilabel_margin_loss(input, target, reduction="mean"):
    r"""Multi-label margin loss, as ``torch.nn.functional.multilabel_margin_loss``.

    ``target`` has the input's shape, (N, C) or (C,), and lists each sample's
    classes from the front, ended by the first -1 (later entries are ignored but,
    as in torch, must still lie in [-1, C)). With :math:`J_n` the listed classes
    and :math:`I_n` the classes not listed,

    .. math:: \ell_n = \frac{1}{C} \sum_{j \in J_n} \sum_{i \in I_n}
              \max\bigl(0,\; 1 - (x_{n,j} - x_{n,i})\bigr)

    As in torch, a class listed twice counts twice in the sum over :math:`j`.
    One value per sample: shape (N,), or () for an unbatched input.
    """
    z, counted, _ = _multilabel_hinges(input, target)
    per_sample = np.where(counted, np.maximum(z, 0.0), 0.0).sum(axis=(-2, -1)) / input.shape[-1]
    return reduce(per_sample, reduction)


def multilabel_margin_loss_vjp(cotangent, input, target, reduction="mean"):
    r"""With :math:`a_{n,ji} = [\,1 - x_{n,j} + x_{n,i} > 0\,]` over the counted pairs,

    .. math:: \frac{\partial \ell_n}{\partial x_{n,c}} = \frac{1}{C}\Bigl(\sum_{j \in J_n} a_{n,jc}
              - [c \in J_n] \sum_{i \in I_n} a_{n,ci}\Bigr)

    (the second sum once per time c is listed).
    """
    z, counted, onehot = _multilabel_hinges(input, target)
    g = _expand_last(reduce_vjp(cotangent, reduction, int(np.prod(input.shape[:-1]))))
    active = (counted & (z > 0)).astype(input.dtype)
    d_input = active.sum(-2) - (onehot * active.sum(-1, keepdims=True)).sum(-2)
    return (d_input / input.shape[-1] * g,)


def sample_multilabel_margin(rng, n=5, num_classes=4, repeat=False):
    """Scores whose pairwise differences stay 0.1 away from the margin 1, and target rows
    listing 0 to C distinct classes, then -1, then arbitrary entries in [-1, C).
    ``repeat`` lists one class twice in each row (torch counts it twice)."""
    x = _rows_off_kink(rng, n, num_classes, 1.0)
    rows = []
    for _ in range(1 if n is None else n):
        perm = rng.permutation(num_classes)
        if repeat:
            k = int(rng.integers(1, num_classes - 1))
            listed = list(perm[:k]) + [perm[0]]
        else:
            k = int(rng.integers(0, num_classes + 1))
            listed = list(perm[:k])
        if len(listed) < num_classes:
            listed.append(-1)
        listed += list(rng.integers(-1, num_classes, size=num_classes - len(listed)))
        rows.append(listed)
    target = np.array(rows, dtype=np.int64).reshape(len(rows), num_classes)  # (0, C) for an empty batch
    return x, (target if n is not None else target[0])


def check_multilabel_margin(args: dict) -> None:
    checks.reduction(args["reduction"])
    x, t = args["input"], args["target"]
    checks.floating(x)
    checks.integer(t, "class indices ended by -1")
    checks.ndim_in(x, (1, 2), "(C,) or (N, C)")
    checks.same_shape(x, t)
    if x.shape[-1] == 0:  # as torch's multilabel_margin_loss, which refuses it
        raise ValueError(f"input must have at least one class; got shape {x.shape}")
    checks.class_labels(t, x.shape[-1], ignore_index=-1)


# -- multi_margin_loss -------------------------------------------------------------

def _multi_margin_hinges(input, target, margin):
    """Hinge arguments ``margin - x[y] + x[i]`` and the mask of the wrong classes."""
    x_target = np.take_along_axis(input, target[..., None], axis=-1)
    wrong = target[..., None] != np.arange(input.shape[-1])
    return margin - x_target + input, wrong


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, reduction="mean"):
    r"""Multi-class margin loss (Weston–Watkins), as ``torch.nn.functional.multi_margin_loss``.

    .. math:: \ell_n = \frac{1}{C} \sum_{i \ne y_n} w_{y_n}
              \max\bigl(0,\; \text{margin} - x_{n,y_n} + x_{n,i}\bigr)^p,
              \qquad p \in \{1, 2\}

    with :math:`w = 1` when ``weight`` is None. ``mean`` divides by N, not by the
    weights. Input (N, C) with target (N,), or (C,) with a 0-d target.
    """
    z, wrong = _multi_margin_hinges(input, target, margin)
    h = np.where(wrong, np.maximum(z, 0.0), 0.0)
    per_sample = (h if p == 1 else h * h).sum(-1) / input.shape[-1]
    if weight is not None:
        per_sample = per_sample * weight[target]
    return reduce(per_sample, reduction)


def multi_margin_loss_vjp(cotangent, input, target, p=1, margin=1.0, weight=None, reduction="mean"):
    r"""With :math:`s_{n,i} = p \max(0, \text{margin} - x_{n,y_n} + x_{n,i})^{p-1}
    [\,\text{margin} - x_{n,y_n} + x_{n,i} > 0\,]` for :math:`i \ne y_n` (0 at :math:`i = y_n`),

    .. math:: \frac{\partial \ell_n}{\partial x_{n,i}} = \frac{w_{y_n}}{C}
              \Bigl(s_{n,i} - [i = y_n] \sum_k s_{n,k}\Bigr)
    """
    z, wrong = _multi_margin_hinges(input, target, margin)
    slope = np.where(wrong & (z > 0), 1.0 if p == 1 else 2.0 * z, 0.0)
    d_input = slope - np.where(wrong, 0.0, slope.sum(-1, keepdims=True))
    g = reduce_vjp(cotangent, reduction, int(np.prod(target.shape)))
    if weight is not None:
        g = g * weight[target]
    return (d_input / input.shape[-1] * _expand_last(g),)


def sample_multi_margin(rng, n=5, num_classes=4, margin=1.0):
    """Scores whose pairwise differences stay 0.1 away from ``margin``, and class indices."""
    x = _rows_off_kink(rng, n, num_classes, margin)
    target = rng.integers(0, num_classes, size=() if n is None else (n,))
    return x, np.asarray(target, dtype=np.int64)


def check_multi_margin(args: dict) -> None:
    checks.reduction(args["reduction"])
    x, t = args["input"], args["target"]
    checks.floating(x)
    checks.integer(t)
    checks.ndim_in(x, (1, 2), "(C,) or (N, C)")
    checks.shape_is(t, x.shape[:-1], "one class index per sample")
    checks.class_labels(t, x.shape[-1])
    p = args["p"]
    if isinstance(p, (bool, np.bool_)) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2 (as in torch); got {p!r}")
    checks.finite_number("margin", args["margin"])
    _check_class_weight(args, x.shape[-1])


# -- registry ----------------------------------------------------------------------

def _bad(description, mutate, error, match):
    return BadInput(description, mutate, error, match)


_NAN_MARGIN = _bad("NaN margin", set_param("margin", lambda xs: float("nan")), ValueError, "margin")
_STRING_MARGIN = _bad("margin that is not a number", set_param("margin", lambda xs: "1"), TypeError, "margin")


def _sign_bad_inputs(target_position: int) -> tuple:
    t = target_position
    return (
        _bad("target of zeros", replace_input(t, lambda xs: np.zeros_like(xs[t])), ValueError, "target"),
        _bad("target in {0, 1}", replace_input(t, lambda xs: (xs[t] > 0).astype(xs[t].dtype)), ValueError, "target"),
        _bad("target of twos", replace_input(t, lambda xs: 2.0 * xs[t]), ValueError, "target"),
        _bad("target of another dtype", replace_input(t, lambda xs: xs[t].astype(np.float32)), TypeError, "target"),
        _bad("integer target", replace_input(t, lambda xs: xs[t].astype(np.int64)), TypeError, "target"),
    )


_ELEMENTWISE_BAD_INPUTS = (
    _bad("target of another shape", replace_input(1, lambda xs: xs[1][..., :-1]), ValueError, "target"),
    _bad("target that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "target"),
    _bad("integer input", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "input"),
)

_WEIGHT_BAD_INPUTS = (
    _bad("weight of the wrong length", set_param("weight", lambda xs: np.ones(xs[0].shape[-1] + 1)),
         ValueError, "weight"),
    _bad("weight of the input's shape", set_param("weight", lambda xs: np.ones(xs[0].shape)), ValueError, "weight"),
    _bad("negative weight", set_param("weight", lambda xs: -np.ones(xs[0].shape[-1])), ValueError, "weight"),
    _bad("integer weight", set_param("weight", lambda xs: np.ones(xs[0].shape[-1], dtype=np.int64)),
         TypeError, "weight"),
)

register(LossSpec(
    name="margin_ranking_loss", family="margin", forward=margin_ranking_loss, vjp_fn=margin_ranking_loss_vjp,
    inputs=("input1", "input2", "target"), differentiable=("input1", "input2"),
    sampler=sample_ranking, check=check_margin_ranking,
    cases=(Case("default"),
           Case("margin=0.5", {"margin": 0.5}, sample={"margin": 0.5}),
           Case("margin=-0.5", {"margin": -0.5}, sample={"margin": -0.5}),
           Case("matrix", sample={"shape": (2, 3)})),
    bad_inputs=_sign_bad_inputs(2) + (
        _bad("input2 of another shape", replace_input(1, lambda xs: xs[1][:-1]), ValueError, "input2"),
        _bad("target of another shape", replace_input(2, lambda xs: xs[2][:-1]), ValueError, "target"),
        _bad("input2 that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "input2"),
        _bad("integer input1", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "input1"),
        _bad("integer input2", replace_input(1, lambda xs: xs[1].astype(np.int64)), TypeError, "input2"),
        _NAN_MARGIN, _STRING_MARGIN,
    ),
    builtins={"torch": "torch.nn.functional.margin_ranking_loss", "optax": "optax.losses.perceptron_loss"},
    differences=(
        Difference("optax", "optax.losses.perceptron_loss",
                   "max(0, -s * t) on one score s per example: the binary perceptron loss, i.e. margin 0; "
                   "no margin argument (it becomes a shift of the score along the label), no reduction",
                   "margin_ranking_loss(x1, x2, y, margin=m, reduction='none') == "
                   "optax.losses.perceptron_loss(x1 - x2 - m * y, y) for y in {-1, 1} (y * y = 1); "
                   "at m = 0 simply perceptron_loss(x1 - x2, y)"),
        Difference("optax", "optax.losses.hinge_loss",
                   "max(0, 1 - s * t): the binary hinge with its margin fixed at 1; no reduction",
                   "margin_ranking_loss(x1, x2, y, margin=m, reduction='none') == "
                   "optax.losses.hinge_loss(x1 - x2 + (1 - m) * y, y) for y in {-1, 1}; "
                   "at m = 1 simply hinge_loss(x1 - x2, y)"),
    ),
))

register(LossSpec(
    name="hinge_embedding_loss", family="margin", forward=hinge_embedding_loss, vjp_fn=hinge_embedding_loss_vjp,
    inputs=("input", "target"), differentiable=("input",),
    sampler=sample_hinge_embedding, check=check_hinge_embedding,
    cases=(Case("default"),
           Case("margin=2", {"margin": 2.0}, sample={"margin": 2.0}),
           Case("vector", sample={"shape": (6,)})),
    bad_inputs=_ELEMENTWISE_BAD_INPUTS + _sign_bad_inputs(1) + (_NAN_MARGIN, _STRING_MARGIN),
    builtins={"torch": "torch.nn.functional.hinge_embedding_loss"},
    differences=(
        Difference("optax", "optax.losses.hinge_loss",
                   "not the same loss despite the name: hinge_embedding_loss charges similar pairs (y = 1) "
                   "the input itself, linear and unclipped, and hinges only the dissimilar pairs (y = -1), "
                   "at margin - x rather than 1 - y * x",
                   "hinge_embedding_loss(x, y, margin=m, reduction='none') == "
                   "where(y == 1, x, optax.losses.hinge_loss(x + 1 - m, ones_like(x))) for y in {-1, 1}"),
    ),
))

register(LossSpec(
    name="soft_margin_loss", family="margin", forward=soft_margin_loss, vjp_fn=soft_margin_loss_vjp,
    inputs=("input", "target"), differentiable=("input",),
    sampler=sample_soft_margin, check=check_soft_margin,
    cases=(Case("default"),
           Case("saturated", sample={"low": 20.0, "scale": 40.0}),
           Case("vector", sample={"shape": (6,)})),
    bad_inputs=_ELEMENTWISE_BAD_INPUTS + _sign_bad_inputs(1),
    builtins={"torch": "torch.nn.functional.soft_margin_loss",
              "optax": "optax.losses.sigmoid_binary_cross_entropy"},
    differences=(
        Difference("optax", "optax.losses.sigmoid_binary_cross_entropy",
                   "the same logistic loss on labels in {0, 1} instead of {-1, 1}; no reduction",
                   "soft_margin_loss(x, y, reduction='none') == "
                   "optax.losses.sigmoid_binary_cross_entropy(x, (1 + y) / 2)"),
        Difference("torch", "torch.nn.functional.soft_margin_loss",
                   "torch computes log1p(exp(-y * x)) directly, so for -y * x above log(finfo.max) "
                   "(about 88.7 in float32, 709.8 in float64) its value overflows to inf and its gradient "
                   "-y * exp(-y * x) / (1 + exp(-y * x)) is inf / inf = NaN (measured, torch 2.13 CPU); "
                   "the reference computes -log_sigmoid(y * x), finite everywhere",
                   "equal wherever -y * x < log(finfo(dtype).max); beyond it torch gives value inf and "
                   "gradient NaN where the reference gives about -y * x and -y"),
    ),
))

register(LossSpec(
    name="multilabel_soft_margin_loss", family="margin", forward=multilabel_soft_margin_loss,
    vjp_fn=multilabel_soft_margin_loss_vjp, inputs=("input", "target"), differentiable=("input",),
    sampler=sample_multilabel_soft_margin, check=check_multilabel_soft_margin,
    cases=(Case("default"),
           Case("weighted", {"weight": class_weight}),
           Case("soft targets", sample={"soft": True}),
           Case("saturated", {"weight": class_weight}, sample={"low": 20.0, "scale": 40.0}),
           Case("unbatched", sample={"n": None}),
           Case("unbatched weighted", {"weight": class_weight}, sample={"n": None})),
    array_params=("weight",),
    bad_inputs=_ELEMENTWISE_BAD_INPUTS + _WEIGHT_BAD_INPUTS + (
        _bad("target above 1", replace_input(1, lambda xs: xs[1] + 1.5), ValueError, "target"),
        _bad("target in {-1, 1}", replace_input(1, lambda xs: 2.0 * xs[1] - 1.0), ValueError, "target"),
        _bad("integer target", replace_input(1, lambda xs: xs[1].astype(np.int64)), TypeError, "target"),
        _bad("0-d input and target", lambda xs, kw: ((xs[0][0, 0], xs[1][0, 0]), kw), ValueError, "input"),
    ),
    builtins={"torch": "torch.nn.functional.multilabel_soft_margin_loss",
              "optax": "optax.losses.sigmoid_binary_cross_entropy"},
    differences=(
        Difference("optax", "optax.losses.sigmoid_binary_cross_entropy",
                   "per element, no class weight, no average over the classes, no reduction",
                   "multilabel_soft_margin_loss(x, y, weight=w, reduction='none') == "
                   "(w * optax.losses.sigmoid_binary_cross_entropy(x, y)).mean(axis=-1), w = 1 when None"),
    ),
))

register(LossSpec(
    name="multilabel_margin_loss", family="margin", forward=multilabel_margin_loss,
    vjp_fn=multilabel_margin_loss_vjp, inputs=("input", "target"), differentiable=("input",),
    sampler=sample_multilabel_margin, check=check_multilabel_margin,
    cases=(Case("default"),
           Case("unbatched", sample={"n": None, "num_classes": 5}),
           Case("repeated label", sample={"repeat": True, "num_classes": 5})),
    bad_inputs=(
        _bad("class index C", replace_input(1, lambda xs: np.full_like(xs[1], xs[0].shape[-1])), IndexError, "target"),
        _bad("class index -2", replace_input(1, lambda xs: np.full_like(xs[1], -2)), IndexError, "target"),
        _bad("out-of-range index after the -1", replace_input(
            1, lambda xs: np.tile(np.array([0, -1] + [xs[0].shape[-1]] * (xs[0].shape[-1] - 2)), (xs[1].shape[0], 1))),
            IndexError, "target"),
        _bad("float target", replace_input(1, lambda xs: xs[1].astype(np.float64)), TypeError, "target"),
        _bad("integer input", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "input"),
        _bad("target of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "target"),
        _bad("target that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "target"),
        _bad("3-d input", replace_input(0, lambda xs: xs[0][None]), ValueError, "input"),
        _bad("no classes", lambda xs, kw: ((xs[0][..., :0], xs[1][..., :0]), kw), ValueError, "input"),
    ),
    builtins={"torch": "torch.nn.functional.multilabel_margin_loss"},
))

register(LossSpec(
    name="multi_margin_loss", family="margin", forward=multi_margin_loss, vjp_fn=multi_margin_loss_vjp,
    inputs=("input", "target"), differentiable=("input",),
    sampler=sample_multi_margin, check=check_multi_margin,
    cases=(Case("default"),
           Case("p=2", {"p": 2}),
           Case("margin=0.5", {"margin": 0.5}, sample={"margin": 0.5}),
           Case("margin=0", {"margin": 0.0}, sample={"margin": 0.0}),
           Case("weighted", {"weight": class_weight}, sample={"num_classes": 5}),
           Case("p=2 margin=0.5 weighted", {"p": 2, "margin": 0.5, "weight": class_weight},
                sample={"margin": 0.5}),
           Case("unbatched", sample={"n": None}),
           Case("unbatched p=2 weighted", {"p": 2, "weight": class_weight}, sample={"n": None})),
    array_params=("weight",),
    bad_inputs=_WEIGHT_BAD_INPUTS + (
        _bad("class index C", replace_input(1, lambda xs: np.full_like(xs[1], xs[0].shape[-1])), IndexError, "target"),
        _bad("class index -1", replace_input(1, lambda xs: np.full_like(xs[1], -1)), IndexError, "target"),
        _bad("float target", replace_input(1, lambda xs: xs[1].astype(np.float64)), TypeError, "target"),
        _bad("integer input", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "input"),
        _bad("target of another length", replace_input(1, lambda xs: xs[1][:-1]), ValueError, "target"),
        _bad("target of the input's shape", replace_input(1, lambda xs: np.zeros(xs[0].shape, np.int64)),
             ValueError, "target"),
        _bad("3-d input", replace_input(0, lambda xs: xs[0][None]), ValueError, "input"),
        _bad("p=3", set_param("p", lambda xs: 3), ValueError, "p must"),
        _bad("p=0", set_param("p", lambda xs: 0), ValueError, "p must"),
        _bad("p=True", set_param("p", lambda xs: True), ValueError, "p must"),
        _NAN_MARGIN, _STRING_MARGIN,
    ),
    builtins={"torch": "torch.nn.functional.multi_margin_loss"},
    differences=(
        Difference("optax", "optax.losses.multiclass_hinge_loss",
                   "Crammer-Singer, not Weston-Watkins: the largest wrong-class hinge instead of the sum of "
                   "them divided by C; margin fixed at 1; no p, no class weight, no reduction",
                   "with h_i = max(0, 1 - x[y] + x[i]): multiclass_hinge_loss(x, y) == max_{i != y} h_i and "
                   "multi_margin_loss(x, y, reduction='none') == sum_{i != y} h_i / C, so "
                   "C * multi_margin_loss(x, y, reduction='none') == multiclass_hinge_loss(x, y) exactly where "
                   "at most one wrong class has h_i > 0 (always for C = 2), and otherwise "
                   "multiclass_hinge_loss <= C * multi_margin_loss <= (C - 1) * multiclass_hinge_loss; "
                   "margin m > 0: m * multiclass_hinge_loss(x / m, y) == max_{i != y} max(0, m - x[y] + x[i])"),
        Difference("optax", "optax.losses.multiclass_perceptron_loss",
                   "Crammer-Singer at margin 0: max_j x[j] - x[y]",
                   "multiclass_perceptron_loss(x, y) == max_{i != y} max(0, x[i] - x[y]); for C = 2 "
                   "2 * multi_margin_loss(x, y, margin=0, reduction='none') == multiclass_perceptron_loss(x, y)"),
        Difference("keras", "keras.losses.categorical_hinge",
                   "one-hot targets; Crammer-Singer whose max runs over (1 - onehot) * x, so the true class "
                   "enters the max as a score of 0 instead of being excluded: when every wrong score is "
                   "negative the loss is max(0, 1 - x[y]), not max_{i != y} h_i",
                   "categorical_hinge(onehot(y, C), x) == max(0, 1 - x[y] + max(0, max_{i != y} x[i])) == "
                   "optax.losses.multiclass_hinge_loss(concatenate([x, zeros(x.shape[:-1] + (1,))], -1), y) "
                   "(a zero score appended as one more wrong class); where max_{i != y} x[i] >= 0 it equals "
                   "multiclass_hinge_loss(x, y), and for C = 2 also 2 * multi_margin_loss(x, y, reduction='none')"),
    ),
))


# ==================================================================================
# Part 2: optax's and Keras's hinge-type losses: hinge_loss, perceptron_loss,
# sparsemax_loss, multiclass_hinge_loss, multiclass_perceptron_loss,
# multiclass_sparsemax_loss (optax's names and argument names), squared_hinge and
# categorical_hinge (Keras's names and (y_true, y_pred) order).
#
# These losses are named after a library that has no reduction, so ``reduction``
# defaults to "none": called with the defaults they give the library's per-example
# values; "mean" is the plain mean of those values and "sum" their sum.
# ==================================================================================

def _redraw_rows(rng, batch: tuple, num_classes: int, draw_row, ok):
    """Rows of ``num_classes`` drawn by ``draw_row(rng) -> tuple of rows`` one at a time,
    each redrawn until ``ok(*rows)``; returns the stacked arrays, shaped ``batch + (C,)``."""
    count = int(np.prod(batch))
    rows = []
    for _ in range(count):
        while True:
            row = draw_row(rng)
            if ok(*row):
                rows.append(row)
                break
    if not rows:  # an empty batch: one row drawn for its shapes and dtypes alone
        return tuple(np.empty(tuple(batch) + np.shape(r), np.asarray(r).dtype) for r in draw_row(rng))
    return tuple(np.stack([r[k] for r in rows]).reshape(tuple(batch) + np.shape(rows[0][k]))
                 for k in range(len(rows[0])))


def _top_two_apart(z) -> bool:
    """The largest entry of ``z`` exceeds every other by at least _GAP (no tie at the max)."""
    top = np.sort(z)[::-1]
    return len(top) < 2 or top[0] - top[1] >= _GAP


def _onehot(labels, num_classes):
    return (np.asarray(labels)[..., None] == np.arange(num_classes)).astype(np.float64)


def _take_label(scores, labels):
    return np.take_along_axis(scores, np.asarray(labels)[..., None], axis=-1)[..., 0]


def _check_binary_pair(args: dict, x: str, y: str) -> None:
    checks.reduction(args["reduction"])
    checks.floating(args[x])
    checks.floating(args[y])
    checks.same_shape(args[x], args[y])
    checks.same_dtype(args[x], args[y])
    checks.signs(args[y])


def _check_scores_labels(args: dict, scores: str, labels: str, ndims=range(1, 64),
                         what="(..., C) with the classes in the last dimension") -> None:
    checks.reduction(args["reduction"])
    s, t = args[scores], args[labels]
    checks.floating(s)
    checks.integer(t)
    checks.ndim_in(s, ndims, what)
    checks.shape_is(t, s.shape[:-1], "one class index per example")
    checks.class_labels(t, s.shape[-1])


# -- hinge_loss --------------------------------------------------------------------

def hinge_loss(predictor_outputs, targets, reduction="none"):
    r"""Binary hinge loss, as ``optax.losses.hinge_loss``.

    .. math:: \ell_i = \max\bigl(0,\; 1 - y_i\,x_i\bigr), \qquad y_i \in \{-1, 1\}

    One value per element. optax broadcasts the two arrays without checking their
    shapes; lossparity requires one shape (see the spec's differences).
    """
    return reduce(np.maximum(0.0, 1.0 - predictor_outputs * targets), reduction)


def hinge_loss_vjp(cotangent, predictor_outputs, targets, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = -y_i\,[\,1 - y_i x_i > 0\,]
    """
    g = reduce_vjp(cotangent, reduction, predictor_outputs.size)
    active = 1.0 - predictor_outputs * targets > 0
    return (np.where(active, -targets, 0.0) * g,)


def sample_hinge(rng, shape=(3, 4)):
    """``targets`` in {-1, 1} and ``predictor_outputs`` placed so that the hinge argument
    ``1 - y x`` lies in +-[0.1, 1.5]."""
    shape = tuple(shape)
    targets = _signs(rng, shape)
    return targets * (1.0 - _off_kink(rng, shape)), targets  # y x = 1 - z since y * y = 1


def check_hinge(args: dict) -> None:
    _check_binary_pair(args, "predictor_outputs", "targets")


# -- perceptron_loss ---------------------------------------------------------------

def perceptron_loss(predictor_outputs, targets, reduction="none"):
    r"""Binary perceptron loss, as ``optax.losses.perceptron_loss``: the hinge at margin 0.

    .. math:: \ell_i = \max\bigl(0,\; -y_i\,x_i\bigr), \qquad y_i \in \{-1, 1\}
    """
    return reduce(np.maximum(0.0, -predictor_outputs * targets), reduction)


def perceptron_loss_vjp(cotangent, predictor_outputs, targets, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_i} = -y_i\,[\,-y_i x_i > 0\,]
    """
    g = reduce_vjp(cotangent, reduction, predictor_outputs.size)
    active = -predictor_outputs * targets > 0
    return (np.where(active, -targets, 0.0) * g,)


def sample_perceptron(rng, shape=(3, 4)):
    """``targets`` in {-1, 1} and ``predictor_outputs`` with ``-y x`` in +-[0.1, 1.5]."""
    shape = tuple(shape)
    targets = _signs(rng, shape)
    return -targets * _off_kink(rng, shape), targets


def check_perceptron(args: dict) -> None:
    _check_binary_pair(args, "predictor_outputs", "targets")


# -- sparsemax_loss ----------------------------------------------------------------

def _sparse_plus(u):
    return np.where(u <= -1.0, 0.0, np.where(u >= 1.0, u, (u + 1.0) ** 2 / 4.0))


def _sparse_sigmoid(x):
    return np.clip((x + 1.0) / 2.0, 0.0, 1.0)


def sparsemax_loss(logits, labels, reduction="none"):
    r"""Binary sparsemax loss, as ``optax.losses.sparsemax_loss``: the Fenchel–Young loss
    of the Gini negentropy, zero exactly where ``sparse_sigmoid(x) == y``.

    .. math:: \ell_i = \operatorname{sparse\_plus}\bigl((1 - 2 y_i)\,x_i\bigr),\qquad
              \operatorname{sparse\_plus}(u) = \begin{cases} 0 & u \le -1 \\
              \tfrac14 (u + 1)^2 & -1 < u < 1 \\ u & u \ge 1 \end{cases}

    with labels :math:`y_i \in \{0, 1\}` (an integer or bool array). It is the
    multiclass sparsemax loss of the two scores :math:`(0, x_i)`. optax reads the labels
    with ``where(labels, -x, x)``, so any nonzero label counts as 1 there; lossparity
    rejects labels outside {0, 1}.
    """
    return reduce(_sparse_plus(np.where(labels, -logits, logits)), reduction)


def sparsemax_loss_vjp(cotangent, logits, labels, reduction="none"):
    r"""With :math:`\operatorname{sparse\_sigmoid}(x) = \min(1, \max(0, (x + 1)/2))`
    (the derivative of sparse_plus),

    .. math:: \frac{\partial \ell_i}{\partial x_i} = \operatorname{sparse\_sigmoid}(x_i) - y_i

    (for :math:`y_i = 1`: :math:`-\operatorname{sparse\_sigmoid}(-x_i) =
    \operatorname{sparse\_sigmoid}(x_i) - 1`): the sparse sigmoid minus the label, as
    for every Fenchel–Young loss.
    """
    g = reduce_vjp(cotangent, reduction, logits.size)
    return ((_sparse_sigmoid(logits) - labels) * g,)


def sample_sparsemax(rng, shape=(3, 4), bool_labels=False):
    """Labels in {0, 1} and logits whose signed argument ``u = (1 - 2y) x`` lies in one of
    [-2.5, -1.1] (loss 0), [-0.9, 0.9] (quadratic) or [1.1, 2.5] (linear): 0.1 away from
    the kinks of sparse_plus's second derivative at +-1."""
    shape = tuple(shape)
    labels = rng.integers(0, 2, size=shape)
    piece = rng.integers(0, 3, size=shape)
    u = np.choose(piece, [rng.uniform(-2.5, -1.1, size=shape), rng.uniform(-0.9, 0.9, size=shape),
                          rng.uniform(1.1, 2.5, size=shape)])
    logits = np.where(labels == 1, -u, u)
    return logits, (labels.astype(bool) if bool_labels else labels.astype(np.int64))


def check_sparsemax(args: dict) -> None:
    checks.reduction(args["reduction"])
    x, t = args["logits"], args["labels"]
    checks.floating(x)
    checks.kind_in(t, ("int", "bool"), "labels in {0, 1}")
    checks.same_shape(x, t)
    if t.kind == "int":
        checks.values_in(t, (0, 1), "labels")


# -- multiclass_hinge_loss ---------------------------------------------------------

def multiclass_hinge_loss(scores, labels, reduction="none"):
    r"""Multiclass hinge loss (Crammer–Singer), as ``optax.losses.multiclass_hinge_loss``.

    .. math:: \ell_n = \max_j \bigl(s_{n,j} + 1 - [\,j = y_n\,]\bigr) - s_{n,y_n}
              = \max\Bigl(0,\; \max_{j \ne y_n} \bigl(1 + s_{n,j} - s_{n,y_n}\bigr)\Bigr)

    the largest wrong-class hinge, at margin 1. Scores (..., C) with integer labels of
    shape (...): one value per example. torch's ``multi_margin_loss`` is the other
    multiclass hinge (Weston–Watkins: the sum of the wrong-class hinges over C); see its
    differences.
    """
    z = scores + 1.0 - _onehot(labels, scores.shape[-1])
    return reduce(z.max(-1) - _take_label(scores, labels), reduction)


def multiclass_hinge_loss_vjp(cotangent, scores, labels, reduction="none"):
    r"""With :math:`j^*_n = \arg\max_j (s_{n,j} + 1 - [j = y_n])`,

    .. math:: \frac{\partial \ell_n}{\partial s_{n,c}} = [\,c = j^*_n\,] - [\,c = y_n\,]

    (zero when the true class wins the max, that is when every hinge is inactive).
    """
    num_classes = scores.shape[-1]
    onehot = _onehot(labels, num_classes)
    winner = _onehot(np.argmax(scores + 1.0 - onehot, axis=-1), num_classes)
    g = reduce_vjp(cotangent, reduction, int(np.prod(scores.shape[:-1])))
    return ((winner - onehot) * _expand_last(g),)


def sample_multiclass_hinge(rng, batch=(5,), num_classes=4, scale=1.0):
    """Scores ~ N(0, scale^2) and labels, redrawn row by row until the largest entry of
    ``s + 1 - onehot(y)`` leads the next by 0.1: no two hinges tie at the max, and the
    winning hinge is not at its kink."""
    def row(rng):
        y = rng.integers(0, num_classes)
        return scale * rng.standard_normal(num_classes), np.int64(y)
    scores, labels = _redraw_rows(rng, batch, num_classes, row,
                                  lambda s, y: _top_two_apart(s + 1.0 - _onehot(y, num_classes)))
    return scores, labels.astype(np.int64)


def check_multiclass_hinge(args: dict) -> None:
    _check_scores_labels(args, "scores", "labels")


# -- multiclass_perceptron_loss ----------------------------------------------------

def multiclass_perceptron_loss(scores, labels, reduction="none"):
    r"""Multiclass perceptron loss, as ``optax.losses.multiclass_perceptron_loss``: the
    Crammer–Singer hinge at margin 0.

    .. math:: \ell_n = \max_j s_{n,j} - s_{n,y_n}
              = \max\Bigl(0,\; \max_{j \ne y_n} \bigl(s_{n,j} - s_{n,y_n}\bigr)\Bigr)
    """
    return reduce(scores.max(-1) - _take_label(scores, labels), reduction)


def multiclass_perceptron_loss_vjp(cotangent, scores, labels, reduction="none"):
    r"""With :math:`j^*_n = \arg\max_j s_{n,j}`,

    .. math:: \frac{\partial \ell_n}{\partial s_{n,c}} = [\,c = j^*_n\,] - [\,c = y_n\,]
    """
    num_classes = scores.shape[-1]
    winner = _onehot(np.argmax(scores, axis=-1), num_classes)
    g = reduce_vjp(cotangent, reduction, int(np.prod(scores.shape[:-1])))
    return ((winner - _onehot(labels, num_classes)) * _expand_last(g),)


def sample_multiclass_perceptron(rng, batch=(5,), num_classes=4):
    """Scores ~ N(0, 1) whose largest entry leads the next by 0.1, and labels."""
    def row(rng):
        return rng.standard_normal(num_classes), np.int64(rng.integers(0, num_classes))
    scores, labels = _redraw_rows(rng, batch, num_classes, row, lambda s, y: _top_two_apart(s))
    return scores, labels.astype(np.int64)


def check_multiclass_perceptron(args: dict) -> None:
    _check_scores_labels(args, "scores", "labels")


# -- multiclass_sparsemax_loss -----------------------------------------------------

def sparsemax(z):
    r"""The Euclidean projection of each row of ``z`` onto the probability simplex,
    :math:`\arg\min_{p \in \Delta} \|p - z\|^2 = \max(z - \tau, 0)` with the threshold
    :math:`\tau` of Held et al.: sort :math:`z` decreasingly, take the support size
    :math:`k = \max\{k : 1 + k z_{(k)} > \sum_{j \le k} z_{(j)}\}` and
    :math:`\tau = (\sum_{j \le k} z_{(j)} - 1) / k`."""
    z_sorted = -np.sort(-z, axis=-1)
    cssv = np.cumsum(z_sorted, axis=-1) - 1.0
    # at least 1: a row holding a NaN fails every comparison; its tau, and its row, are NaN
    k = np.maximum((z_sorted - cssv / np.arange(1, z.shape[-1] + 1) > 0).sum(-1, keepdims=True), 1)
    tau = np.take_along_axis(cssv, k - 1, axis=-1) / k
    return np.maximum(z - tau, 0.0)


def multiclass_sparsemax_loss(scores, labels, reduction="none"):
    r"""Multiclass sparsemax loss, as ``optax.losses.multiclass_sparsemax_loss``: the
    Fenchel–Young loss of the Gini negentropy (Martins & Astudillo 2016).

    .. math:: \ell_n = \langle p_n,\, s_n - s_{n,y_n} \rangle + \tfrac12\bigl(1 - \|p_n\|^2\bigr)
              = \tfrac12 \|s_n - e_{y_n}\|^2 - \tfrac12 \|p_n - s_n\|^2,
              \qquad p_n = \operatorname{sparsemax}(s_n)

    computed in the first form (as optax does), which has no cancellation. Zero exactly
    where :math:`p_n = e_{y_n}`. Scores (N, C) with integer labels (N,): optax maps over
    the first axis, so other ranks are rejected.
    """
    p = sparsemax(scores)
    shifted = np.where(p > 0, scores - _take_label(scores, labels)[..., None], 0.0)
    return reduce((p * shifted).sum(-1) + 0.5 * (1.0 - (p * p).sum(-1)), reduction)


def multiclass_sparsemax_loss_vjp(cotangent, scores, labels, reduction="none"):
    r"""The loss is :math:`\Omega^*(s_n) + \tfrac12 - s_{n,y_n}` with
    :math:`\Omega^*(s) = \max_{p \in \Delta} \langle p, s \rangle - \tfrac12 \|p\|^2`, whose
    gradient is its maximiser (Danskin): :math:`\nabla \Omega^*(s) = \operatorname{sparsemax}(s)`. So

    .. math:: \frac{\partial \ell_n}{\partial s_n} = \operatorname{sparsemax}(s_n) - e_{y_n}

    (continuous in :math:`s`; its Jacobian jumps where the support changes, which the
    sampler keeps clear of).
    """
    g = reduce_vjp(cotangent, reduction, int(np.prod(scores.shape[:-1])))
    return ((sparsemax(scores) - _onehot(labels, scores.shape[-1])) * _expand_last(g),)


def sample_multiclass_sparsemax(rng, n=5, num_classes=4, scale=1.0):
    """Scores ~ N(0, scale^2) and labels, redrawn row by row until every ``s_j - tau`` is
    0.1 away from 0: no class is at the edge of the support, where the gradient's
    derivative jumps. A small scale keeps every class in the support, a large one leaves
    a single class."""
    def row(rng):
        return scale * rng.standard_normal(num_classes), np.int64(rng.integers(0, num_classes))

    def ok(s, y):
        p = sparsemax(s)
        tau = s[np.argmax(p)] - p.max()
        return bool(np.all(np.abs(s - tau) >= _GAP))
    scores, labels = _redraw_rows(rng, (n,), num_classes, row, ok)
    return scores, labels.astype(np.int64)


def check_multiclass_sparsemax(args: dict) -> None:
    _check_scores_labels(args, "scores", "labels", (2,), "(N, C): optax maps over the first axis")


# -- squared_hinge (Keras) ---------------------------------------------------------

def keras_hinge_labels(y_true):
    """Keras's ``convert_binary_labels_to_hinge``: when every element of ``y_true`` is 0
    or 1 (the whole array, not row by row), ``2 y - 1``; otherwise ``y_true`` unchanged."""
    is_binary = np.all((y_true == 0) | (y_true == 1))
    return np.where(is_binary, 2.0 * y_true - 1.0, y_true)


def squared_hinge(y_true, y_pred, reduction="none"):
    r"""Squared hinge loss, as ``keras.losses.squared_hinge`` (argument order
    ``(y_true, y_pred)``).

    .. math:: \ell_n = \frac{1}{C} \sum_c \max\bigl(0,\; 1 - y'_{n,c}\, x_{n,c}\bigr)^2,
              \qquad y' = \begin{cases} 2y - 1 & \text{every element of } y \text{ is 0 or 1} \\
              y & \text{otherwise} \end{cases}

    the mean over the last axis, so one value per row (shape ``y_pred.shape[:-1]``).
    Labels are all in {-1, 1} or all in {0, 1} (converted as Keras does, over the whole
    array); a float, integer or bool ``y_true`` is cast to ``y_pred``'s dtype, as Keras casts it.
    """
    y = keras_hinge_labels(y_true.astype(y_pred.dtype))
    h = np.maximum(0.0, 1.0 - y * y_pred)
    return reduce(mean_over(h * h), reduction)


def squared_hinge_vjp(cotangent, y_true, y_pred, reduction="none"):
    r"""
    .. math:: \frac{\partial \ell_n}{\partial x_{n,c}} = -\frac{2}{C}\, y'_{n,c}
              \max\bigl(0,\; 1 - y'_{n,c} x_{n,c}\bigr)
    """
    y = keras_hinge_labels(y_true.astype(y_pred.dtype))
    h = np.maximum(0.0, 1.0 - y * y_pred)
    g = reduce_vjp(cotangent, reduction, int(np.prod(y_pred.shape[:-1])))
    return (-2.0 * y * h / y_pred.shape[-1] * _expand_last(g),)


def sample_squared_hinge(rng, shape=(3, 4), binary=False, label_dtype="float"):
    """Labels in {-1, 1} (or {0, 1} when ``binary``; as float, int64 or bool) and
    ``y_pred`` placed so that ``1 - y' x`` lies in +-[0.1, 1.5]."""
    shape = tuple(shape)
    signs = _signs(rng, shape)
    y_pred = signs * (1.0 - _off_kink(rng, shape))
    y_true = (signs + 1.0) / 2.0 if binary else signs
    y_true = {"float": y_true, "int": y_true.astype(np.int64), "bool": y_true.astype(bool)}[label_dtype]
    return y_true, y_pred


def _check_keras_pair(args: dict) -> None:
    checks.reduction(args["reduction"])
    y_true, y_pred = args["y_true"], args["y_pred"]
    checks.floating(y_pred)
    checks.kind_in(y_true, ("float", "int", "bool"), "labels")
    checks.same_shape(y_pred, y_true)
    if y_true.kind == "float":
        checks.same_dtype(y_pred, y_true)
    checks.ndim_in(y_pred, range(1, 64), "at least one-dimensional (Keras averages over the last axis)")


def check_squared_hinge(args: dict) -> None:
    _check_keras_pair(args)
    if args["y_true"].kind != "bool":
        checks.signs_or_binary(args["y_true"])


# -- categorical_hinge (Keras) -----------------------------------------------------

def categorical_hinge(y_true, y_pred, reduction="none"):
    r"""Categorical hinge loss, as ``keras.losses.categorical_hinge`` (argument order
    ``(y_true, y_pred)``).

    .. math:: \ell_n = \max\bigl(0,\; \text{neg}_n - \text{pos}_n + 1\bigr),\qquad
              \text{pos}_n = \sum_c y_{n,c}\, x_{n,c},\qquad
              \text{neg}_n = \max_c\, (1 - y_{n,c})\, x_{n,c}

    For a one-hot :math:`y` this is Crammer–Singer except that the true class is not
    excluded from the max: it enters it as the score 0, so when every wrong score is
    negative the loss is :math:`\max(0, 1 - x_{n,y})`. ``y_true`` is one-hot or
    multi-hot in {0, 1}, or signed in {-1, +1} (Keras documents both and, unlike
    ``squared_hinge``, converts neither: a -1 doubles the wrong score in ``neg`` and
    subtracts it in ``pos``). A float, integer or bool ``y_true`` is cast to ``y_pred``'s dtype.
    """
    y = y_true.astype(y_pred.dtype)
    pos = (y * y_pred).sum(-1)
    neg = ((1.0 - y) * y_pred).max(-1)
    return reduce(np.maximum(neg - pos + 1.0, 0.0), reduction)


def categorical_hinge_vjp(cotangent, y_true, y_pred, reduction="none"):
    r"""With :math:`j^*_n = \arg\max_c (1 - y_{n,c}) x_{n,c}` and
    :math:`a_n = [\,\text{neg}_n - \text{pos}_n + 1 > 0\,]`,

    .. math:: \frac{\partial \ell_n}{\partial x_{n,c}} = a_n \bigl((1 - y_{n,c})\,[\,c = j^*_n\,] - y_{n,c}\bigr)
    """
    y = y_true.astype(y_pred.dtype)
    candidates = (1.0 - y) * y_pred
    active = (candidates.max(-1) - (y * y_pred).sum(-1) + 1.0 > 0)[..., None]
    winner = _onehot(np.argmax(candidates, axis=-1), y_pred.shape[-1])
    g = reduce_vjp(cotangent, reduction, int(np.prod(y_pred.shape[:-1])))
    return (np.where(active, (1.0 - y) * winner - y, 0.0) * _expand_last(g),)


def _categorical_hinge_off_kink(y, x) -> bool:
    """No tie at the max of ``(1 - y) x`` that moves with ``x`` (classes with y = 1 all give
    the constant 0 and may tie among themselves), and the hinge 0.1 from its kink."""
    candidates = (1.0 - y) * x
    top = candidates.max()
    near = candidates > top - _GAP
    moving = y != 1
    no_tie = near.sum() == 1 or not np.any(near & moving)
    return bool(no_tie and abs(top - (y * x).sum() + 1.0) >= _GAP)


def sample_categorical_hinge(rng, n=5, num_classes=4, form="onehot", negative=False, label_dtype="float"):
    """Scores ~ N(0, 1) and labels of one ``form``: "onehot", "multihot" (each class 1
    with probability 1/2) or "signed" (+1 for the true class, -1 elsewhere); ``negative``
    makes every wrong-class score at most -0.1, so the true class's 0 wins ``neg``.
    Rows are redrawn until they are off the kinks; ``n=None`` draws one row (C,)."""
    def row(rng):
        if form == "multihot":
            y = rng.integers(0, 2, size=num_classes).astype(np.float64)
        else:
            y = _onehot(rng.integers(0, num_classes), num_classes)
            if form == "signed":
                y = 2.0 * y - 1.0
        x = rng.standard_normal(num_classes)
        if negative:
            x = np.where(y == 1, x, -_GAP - np.abs(x))
        return y, x
    y_true, y_pred = _redraw_rows(rng, (1,) if n is None else (n,), num_classes, row, _categorical_hinge_off_kink)
    if n is None:
        y_true, y_pred = y_true[0], y_pred[0]
    y_true = {"float": y_true, "int": y_true.astype(np.int64), "bool": y_true.astype(bool)}[label_dtype]
    return y_true, y_pred


def check_categorical_hinge(args: dict) -> None:
    _check_keras_pair(args)
    if args["y_true"].kind != "bool":
        checks.values_in(args["y_true"], (-1, 0, 1), "labels (one-hot or multi-hot in {0, 1}, or signed)")


# -- registry (part 2) -------------------------------------------------------------

def _bad_binary_pair(x: str, y: str) -> tuple:
    return _sign_bad_inputs(1) + (
        _bad(f"{y} of another shape", replace_input(1, lambda xs: xs[1][..., :-1]), ValueError, y),
        _bad(f"{y} that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, y),
        _bad(f"integer {x}", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, x),
    )


def _bad_scores_labels(ranks_ok_3d: bool = True) -> tuple:
    bad = (
        _bad("class index C", replace_input(1, lambda xs: np.full_like(xs[1], xs[0].shape[-1])), IndexError, "labels"),
        _bad("class index -1", replace_input(1, lambda xs: np.full_like(xs[1], -1)), IndexError, "labels"),
        _bad("float labels", replace_input(1, lambda xs: xs[1].astype(np.float64)), TypeError, "labels"),
        _bad("integer scores", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "scores"),
        _bad("labels of another length", replace_input(1, lambda xs: xs[1][:-1]), ValueError, "labels"),
        _bad("labels of the scores' shape", replace_input(1, lambda xs: np.zeros(xs[0].shape, np.int64)),
             ValueError, "labels"),
    )
    if not ranks_ok_3d:
        bad += (_bad("3-d scores", lambda xs, kw: ((xs[0][None], xs[1][None]), kw), ValueError, "scores"),
                _bad("1-d scores", lambda xs, kw: ((xs[0][0], xs[1][0]), kw), ValueError, "scores"))
    return bad


def _bad_keras_pair(label_values: tuple) -> tuple:
    return label_values + (
        _bad("y_true of another shape", replace_input(0, lambda xs: xs[0][..., :-1]), ValueError, "y_true"),
        _bad("y_true that would broadcast", replace_input(0, lambda xs: xs[0][:1]), ValueError, "y_true"),
        _bad("integer y_pred", replace_input(1, lambda xs: xs[1].astype(np.int64)), TypeError, "y_pred"),
        _bad("y_true of another float dtype", replace_input(0, lambda xs: xs[0].astype(np.float32)),
             TypeError, "y_true"),
        _bad("complex y_true", replace_input(0, lambda xs: xs[0].astype(np.complex128)), TypeError, "y_true"),
        _bad("0-d y_true and y_pred", lambda xs, kw: ((xs[0][0, 0], xs[1][0, 0]), kw), ValueError, "y_pred"),
    )


register(LossSpec(
    name="hinge_loss", family="margin", forward=hinge_loss, vjp_fn=hinge_loss_vjp,
    inputs=("predictor_outputs", "targets"), differentiable=("predictor_outputs",),
    sampler=sample_hinge, check=check_hinge,
    cases=(Case("default"),
           Case("vector", sample={"shape": (6,)}),
           Case("3-d", sample={"shape": (2, 3, 2)})),
    bad_inputs=_bad_binary_pair("predictor_outputs", "targets"),
    builtins={"optax": "optax.losses.hinge_loss", "torch": "torch.nn.functional.margin_ranking_loss"},
    differences=(
        Difference("torch", "torch.nn.functional.margin_ranking_loss",
                   "torch has no binary hinge of one score: it is the ranking hinge of the score against 0 "
                   "at margin 1 (torch's hinge_embedding_loss is another loss, see there)",
                   "hinge_loss(x, y, reduction=r) == "
                   "torch.nn.functional.margin_ranking_loss(x, zeros_like(x), y, margin=1.0, reduction=r)"),
        Difference("keras", "keras.losses.hinge",
                   "Keras's hinge averages over the last axis and takes (y_true, y_pred); labels all in {0, 1} "
                   "are converted to 2 y - 1 (decided over the whole array)",
                   "keras.losses.hinge(y, x) == hinge_loss(x, y2, reduction='none').mean(axis=-1), "
                   "y2 = 2 y - 1 where every element of y is 0 or 1, else y2 = y"),
        Difference("optax", "optax.losses.hinge_loss",
                   "optax broadcasts predictor_outputs against targets without checking their shapes "
                   "(its perceptron_loss checks them); lossparity requires one shape and raises ValueError",
                   "optax.losses.hinge_loss(x, y) == hinge_loss(*numpy.broadcast_arrays(x, y), reduction='none')"),
    ),
))

register(LossSpec(
    name="perceptron_loss", family="margin", forward=perceptron_loss, vjp_fn=perceptron_loss_vjp,
    inputs=("predictor_outputs", "targets"), differentiable=("predictor_outputs",),
    sampler=sample_perceptron, check=check_perceptron,
    cases=(Case("default"),
           Case("vector", sample={"shape": (6,)}),
           Case("3-d", sample={"shape": (2, 3, 2)})),
    bad_inputs=_bad_binary_pair("predictor_outputs", "targets"),
    builtins={"optax": "optax.losses.perceptron_loss", "torch": "torch.nn.functional.margin_ranking_loss"},
    differences=(
        Difference("torch", "torch.nn.functional.margin_ranking_loss",
                   "the ranking hinge of the score against 0 at margin 0",
                   "perceptron_loss(x, y, reduction=r) == "
                   "torch.nn.functional.margin_ranking_loss(x, zeros_like(x), y, margin=0.0, reduction=r)"),
    ),
))

register(LossSpec(
    name="sparsemax_loss", family="margin", forward=sparsemax_loss, vjp_fn=sparsemax_loss_vjp,
    inputs=("logits", "labels"), differentiable=("logits",),
    sampler=sample_sparsemax, check=check_sparsemax,
    cases=(Case("default"),
           Case("bool labels", sample={"bool_labels": True}),
           Case("vector", sample={"shape": (8,)})),
    bad_inputs=(
        _bad("labels of twos", replace_input(1, lambda xs: np.full_like(xs[1], 2)), ValueError, "labels"),
        _bad("labels in {-1, 1}", replace_input(1, lambda xs: 2 * xs[1] - 1), ValueError, "labels"),
        _bad("float labels", replace_input(1, lambda xs: xs[1].astype(np.float64)), TypeError, "labels"),
        _bad("integer logits", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "logits"),
        _bad("labels of another shape", replace_input(1, lambda xs: xs[1][..., :-1]), ValueError, "labels"),
        _bad("labels that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "labels"),
    ),
    builtins={"optax": "optax.losses.sparsemax_loss"},
    differences=(
        Difference("optax", "optax.losses.multiclass_sparsemax_loss",
                   "the binary loss is the multiclass sparsemax loss of the two scores (0, x)",
                   "sparsemax_loss(x, y) == optax.losses.multiclass_sparsemax_loss("
                   "stack([zeros_like(x), x], -1).reshape(-1, 2), y.reshape(-1)).reshape(x.shape)"),
        Difference("optax", "optax.losses.sparsemax_loss",
                   "optax reads the labels with where(labels, -x, x): any nonzero label (2, -1, 0.5) counts as 1 "
                   "and float labels pass; lossparity takes integer or bool labels in {0, 1} and rejects others",
                   "optax.losses.sparsemax_loss(x, t) == sparsemax_loss(x, t != 0) for any t"),
    ),
))

register(LossSpec(
    name="multiclass_hinge_loss", family="margin", forward=multiclass_hinge_loss, vjp_fn=multiclass_hinge_loss_vjp,
    inputs=("scores", "labels"), differentiable=("scores",),
    sampler=sample_multiclass_hinge, check=check_multiclass_hinge,
    cases=(Case("default"),
           Case("two classes", sample={"num_classes": 2}),
           Case("spread scores", sample={"scale": 3.0, "num_classes": 6}),
           Case("unbatched", sample={"batch": ()}),
           Case("3-d", sample={"batch": (2, 3)})),
    bad_inputs=_bad_scores_labels(),
    builtins={"optax": "optax.losses.multiclass_hinge_loss"},
    differences=(
        Difference("torch", "torch.nn.functional.margin_ranking_loss",
                   "torch has no Crammer-Singer loss (multi_margin_loss is Weston-Watkins, see its differences); "
                   "each wrong-class hinge is a ranking hinge of the true score over that class at margin 1",
                   "multiclass_hinge_loss(x, y) == max over i != y of torch.nn.functional.margin_ranking_loss("
                   "x[..., y], x[..., i], ones, margin=1.0, reduction='none'), for C >= 2"),
    ),
))

register(LossSpec(
    name="multiclass_perceptron_loss", family="margin", forward=multiclass_perceptron_loss,
    vjp_fn=multiclass_perceptron_loss_vjp, inputs=("scores", "labels"), differentiable=("scores",),
    sampler=sample_multiclass_perceptron, check=check_multiclass_perceptron,
    cases=(Case("default"),
           Case("two classes", sample={"num_classes": 2}),
           Case("unbatched", sample={"batch": ()}),
           Case("3-d", sample={"batch": (2, 3)})),
    bad_inputs=_bad_scores_labels(),
    builtins={"optax": "optax.losses.multiclass_perceptron_loss"},
    differences=(
        Difference("torch", "torch.nn.functional.margin_ranking_loss",
                   "each wrong-class term is a ranking hinge of the true score over that class at margin 0",
                   "multiclass_perceptron_loss(x, y) == max over i != y of torch.nn.functional.margin_ranking_loss("
                   "x[..., y], x[..., i], ones, margin=0.0, reduction='none'), for C >= 2"),
    ),
))

register(LossSpec(
    name="multiclass_sparsemax_loss", family="margin", forward=multiclass_sparsemax_loss,
    vjp_fn=multiclass_sparsemax_loss_vjp, inputs=("scores", "labels"), differentiable=("scores",),
    sampler=sample_multiclass_sparsemax, check=check_multiclass_sparsemax,
    cases=(Case("default"),
           Case("close scores", sample={"scale": 0.2}),
           Case("spread scores", sample={"scale": 3.0}),
           Case("many classes", sample={"num_classes": 9}),
           Case("two classes", sample={"num_classes": 2})),
    bad_inputs=_bad_scores_labels(ranks_ok_3d=False),
    builtins={"optax": "optax.losses.multiclass_sparsemax_loss"},
    differences=(
        Difference("optax", "optax.losses.sparsemax_loss",
                   "for two classes the multiclass loss is optax's binary sparsemax loss of the score difference "
                   "(sparsemax is invariant to adding a constant to all scores)",
                   "for C = 2: multiclass_sparsemax_loss(s, y) == optax.losses.sparsemax_loss(s[:, 1] - s[:, 0], y)"),
    ),
))

def _mixed_labels(y):
    """``y`` with its first element set to -1 and its second to 0: neither all signs nor all binary."""
    flat = y.copy().reshape(-1)
    flat[0], flat[1] = -1.0, 0.0
    return flat.reshape(y.shape)


_KERAS_SIGN_BAD = (
    _bad("y_true mixing -1, 0 and 1", replace_input(0, lambda xs: _mixed_labels(xs[0])), ValueError, "y_true"),
    _bad("y_true of twos", replace_input(0, lambda xs: 2.0 * xs[0]), ValueError, "y_true"),
    _bad("y_true of halves", replace_input(0, lambda xs: np.full_like(xs[0], 0.5)), ValueError, "y_true"),
    _bad("NaN in y_true", replace_input(0, lambda xs: np.where(np.arange(xs[0].size).reshape(xs[0].shape) == 0,
                                                                np.nan, xs[0])), ValueError, "y_true"),
)

register(LossSpec(
    name="squared_hinge", family="margin", forward=squared_hinge, vjp_fn=squared_hinge_vjp,
    inputs=("y_true", "y_pred"), differentiable=("y_pred",),
    sampler=sample_squared_hinge, check=check_squared_hinge,
    cases=(Case("default"),
           Case("binary labels", sample={"binary": True}),
           Case("integer labels", sample={"label_dtype": "int"}),
           Case("integer binary labels", sample={"binary": True, "label_dtype": "int"}),
           Case("bool labels", sample={"binary": True, "label_dtype": "bool"}),
           Case("vector", sample={"shape": (6,)}),
           Case("3-d", sample={"shape": (2, 3, 4)})),
    bad_inputs=_bad_keras_pair(_KERAS_SIGN_BAD),
    builtins={"keras": "keras.losses.squared_hinge"},
    differences=(
        Difference("optax", "optax.losses.hinge_loss",
                   "Keras squares optax's binary hinge, averages it over the last axis, takes (y_true, y_pred) "
                   "and converts labels all in {0, 1} to 2 y - 1",
                   "squared_hinge(y, x) == mean(optax.losses.hinge_loss(x, y2) ** 2, axis=-1), "
                   "y2 = 2 y - 1 where every element of y is 0 or 1, else y2 = y"),
        Difference("keras", "keras.losses.squared_hinge",
                   "Keras accepts any y_true and converts it only when every element is 0 or 1, so a y_true mixing "
                   "-1, 0 and 1 stays unconverted and each 0 label costs 1 whatever the score; lossparity rejects "
                   "such labels (ValueError)",
                   "equal wherever lossparity accepts the labels; for y mixing -1, 0, 1: "
                   "keras.losses.squared_hinge(y, x) == mean(where(y == 0, 1, max(0, 1 - y x) ** 2), axis=-1)"),
    ),
))

register(LossSpec(
    name="categorical_hinge", family="margin", forward=categorical_hinge, vjp_fn=categorical_hinge_vjp,
    inputs=("y_true", "y_pred"), differentiable=("y_pred",),
    sampler=sample_categorical_hinge, check=check_categorical_hinge,
    cases=(Case("default"),
           Case("negative wrong scores", sample={"negative": True}),
           Case("signed labels", sample={"form": "signed"}),
           Case("multi-hot", sample={"form": "multihot"}),
           Case("integer labels", sample={"label_dtype": "int"}),
           Case("bool labels", sample={"label_dtype": "bool"}),
           Case("unbatched", sample={"n": None})),
    xfails=(XFail("with bool labels XLA's algebraic simplifier turns the product of a converted bool and a score "
                  "into a select under jit: a label of 0 times an infinite score is 0 there, not NaN, so a row "
                  "with an infinite wrong-class score is +inf under jit where NumPy, torch and eager JAX give "
                  "NaN (0 * inf)", case="bool labels", check="jax.infinite input"),),
    bad_inputs=_bad_keras_pair((
        _bad("y_true of twos", replace_input(0, lambda xs: 2.0 * xs[0]), ValueError, "y_true"),
        _bad("y_true of halves", replace_input(0, lambda xs: np.full_like(xs[0], 0.5)), ValueError, "y_true"),
    )),
    builtins={"keras": "keras.losses.categorical_hinge"},
    differences=(
        Difference("optax", "optax.losses.multiclass_hinge_loss",
                   "one-hot targets and (y_true, y_pred) order; Keras's neg = max((1 - y) x) lets the true class "
                   "enter the max as a score of 0 instead of excluding it, so where every wrong score is negative "
                   "the loss is max(0, 1 - x[y]), more than Crammer-Singer's",
                   "categorical_hinge(onehot(y, C), x) == optax.losses.multiclass_hinge_loss("
                   "concatenate([x, zeros(x.shape[:-1] + (1,))], -1), y) always; == "
                   "optax.losses.multiclass_hinge_loss(x, y) exactly where max_{i != y} x[i] >= 0"),
    ),
))
