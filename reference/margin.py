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
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_expit

from . import checks
from .reductions import reduce, reduce_vjp
from .spec import BadInput, Case, Difference, LossSpec, Sampled, register, replace_input, set_param

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
    return reduce(elementwise.sum(-1) / input.shape[-1], reduction)


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
    target = np.array(rows, dtype=np.int64)
    return x, (target if n is not None else target[0])


def check_multilabel_margin(args: dict) -> None:
    checks.reduction(args["reduction"])
    x, t = args["input"], args["target"]
    checks.floating(x)
    checks.integer(t, "class indices ended by -1")
    checks.ndim_in(x, (1, 2), "(C,) or (N, C)")
    checks.same_shape(x, t)
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
