"""Ranking/metric losses: cosine_embedding_loss, triplet_margin_loss,
triplet_margin_with_distance_loss.

Each compares embeddings through a similarity or a distance along the last axis:

* ``cosine_embedding_loss``: torch's cosine, with ATen's ``EPSILON = 1e-12`` added to
  both squared norms (``aten/src/ATen/native/Loss.cpp``; matched to the last bit by
  experiment with torch 2.13), so a zero vector has cosine 0 and a finite gradient.
* ``triplet_margin_loss``: torch's ``pairwise_distance``, :math:`\\lVert x_1 - x_2 +
  \\varepsilon\\rVert_p`, with ``eps`` added to every component of the difference.
* ``triplet_margin_with_distance_loss``: the same hinge over any distance; the
  reference takes a :class:`Distance` (value and analytic VJP).

The norm's derivative where the norm is 0 (possible only with ``eps = 0``) is taken as
0, the minimum-norm subgradient, which is what torch's ``norm`` backward returns.

Part 2 adds the metric-learning and ranking losses that only optax or Keras ship, under
their names and argument names, with ``reduction="none"`` by default (the library's
per-example values): optax's ``cosine_similarity``, ``cosine_distance``, ``ntxent`` and
``ranking_softmax_loss`` (optax 0.2.8, ``optax/losses/_regression.py``,
``_self_supervised.py``, ``_ranking.py``) and Keras's ``circle`` (Keras 3.15,
``keras/src/losses/losses.py``).
"""

from __future__ import annotations

import math

import numpy as np

from . import checks, classification
from .numerics import logaddexp, masked_logsumexp
from .reductions import reduce, reduce_vjp
from .spec import BadInput, Case, Difference, LossSpec, PerFramework, XFail, register, replace_input, set_param

EPSILON = 1e-12  # ATen's EPSILON, added to the squared norms in cosine_embedding_loss
GAP = 0.1        # samplers keep every kink argument at least this far from its kink


# -- shared checks ---------------------------------------------------------------------

def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or checks.is_nan(value):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    return float(value)


def _positive(name: str, value, what: str = "") -> None:
    if not _number(name, value) > 0:
        raise ValueError(f"{name} must be greater than 0{what}; got {value!r}")


def _plus_minus_one(a: checks.ArrayInfo) -> None:
    """Every element is 1 or -1, in an integer or floating array."""
    if a.kind not in ("int", "float"):
        raise TypeError(f"{a.name} must hold the labels 1 and -1 as an integer or floating array; got dtype {a.dtype}")
    checks.signs(a)


def _same_floats(first: checks.ArrayInfo, *others: checks.ArrayInfo) -> None:
    checks.floating(first)
    for o in others:
        checks.floating(o)
        checks.same_dtype(first, o)
        checks.same_shape(first, o)


# -- the cosine, written once for its three users ----------------------------------------

def _cosine_parts(x1, x2):
    """cos along the last axis with ATen's eps, and the pieces its VJP reuses."""
    m1 = (x1 * x1).sum(-1) + EPSILON
    m2 = (x2 * x2).sum(-1) + EPSILON
    root = np.sqrt(m1 * m2)
    return (x1 * x2).sum(-1) / root, m1, m2, root


def cosine(x1, x2):
    r""":math:`\cos(x_1, x_2) = \dfrac{x_1\cdot x_2}{\sqrt{(\lVert x_1\rVert^2 + 10^{-12})(\lVert x_2\rVert^2 + 10^{-12})}}`
    along the last axis."""
    return _cosine_parts(x1, x2)[0]


def cosine_vjp(g, x1, x2):
    r"""
    .. math:: \frac{\partial\cos}{\partial x_1} = \frac{x_2}{\sqrt{m_1 m_2}} - \cos\,\frac{x_1}{m_1},\qquad
              \frac{\partial\cos}{\partial x_2} = \frac{x_1}{\sqrt{m_1 m_2}} - \cos\,\frac{x_2}{m_2},
              \qquad m_k = \lVert x_k\rVert^2 + 10^{-12}

    Finite at zero vectors: both terms vanish when both vectors are 0.
    """
    cos, m1, m2, root = _cosine_parts(x1, x2)
    g, cos, m1, m2, root = (np.expand_dims(v, -1) for v in (g, cos, m1, m2, root))
    return g * (x2 / root - cos * x1 / m1), g * (x1 / root - cos * x2 / m2)


# -- cosine_embedding_loss ---------------------------------------------------------------

def cosine_embedding_loss(input1, input2, target, margin=0.0, reduction="mean"):
    r"""Cosine embedding loss, as ``torch.nn.functional.cosine_embedding_loss``.

    .. math:: \ell_i = \begin{cases} 1 - \cos(x_{1i}, x_{2i}) & y_i = 1 \\
              \max(0,\ \cos(x_{1i}, x_{2i}) - \text{margin}) & y_i = -1 \end{cases}

    with :math:`\cos` as in :func:`cosine` (ATen adds :math:`10^{-12}` to each squared
    norm: a zero vector gives :math:`\cos = 0`, not NaN). Inputs are :math:`(N, D)` with
    target :math:`(N)`, or unbatched :math:`(D)` with target :math:`()`; the target holds
    1 or -1 (any other value is rejected: torch would silently give it loss 0).
    ``margin`` must lie in :math:`[-1, 1]`, the range torch's documentation prescribes.
    """
    cos = cosine(input1, input2)
    zero = np.zeros_like(cos)
    out = np.where(target == 1, 1.0 - cos, zero) + np.where(target == -1, np.maximum(cos - margin, 0.0), zero)
    return reduce(out, reduction)


def cosine_embedding_loss_vjp(cotangent, input1, input2, target, margin=0.0, reduction="mean"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_{ki}} = s_i\,\frac{\partial\cos}{\partial x_{ki}},\qquad
              s_i = \begin{cases} -1 & y_i = 1 \\ [\cos - \text{margin} \ge 0] & y_i = -1 \end{cases}

    (at the hinge's kink the slope is 1, as torch's ``clamp_min`` backward).
    """
    cos = cosine(input1, input2)
    slope = ((target == -1) & (cos - margin >= 0)).astype(cos.dtype) - (target == 1).astype(cos.dtype)
    return cosine_vjp(reduce_vjp(cotangent, reduction, cos.size) * slope, input1, input2)


def check_cosine_embedding(args: dict) -> None:
    checks.reduction(args["reduction"])
    x1, x2, t = args["input1"], args["input2"], args["target"]
    _same_floats(x1, x2)
    checks.ndim_in(x1, (1, 2), "(N, D) or unbatched (D,)")
    checks.shape_is(t, x1.shape[:-1], "one label per pair of rows of input1 and input2")
    _plus_minus_one(t)
    margin = _number("margin", args["margin"])
    if not -1 <= margin <= 1:
        raise ValueError(f"margin must lie in [-1, 1] (torch's documentation: 'Should be a number from -1 to 1'); "
                         f"got {margin!r}")


def sample_cosine(rng: np.random.Generator, n=5, d=4, batched=True, margin=0.0, zero_pair=False):
    """Pairs of N(0, 1) rows with labels cycling through y = 1, y = -1 above the margin
    (hinge active) and y = -1 below it (inactive), each cosine at least ``GAP`` from
    ``margin``. ``zero_pair`` zeroes both vectors of rows 0 (y = 1) and 1 (y = -1): the
    loss is finite there (cos = 0) and so is the gradient (0)."""
    rows = n if batched else 1
    kinds = ["pos", "active", "inactive"]
    if margin + GAP >= 1:
        kinds[1] = "inactive"
    if margin - GAP <= -1:
        kinds[2] = "active"
    x1, x2 = np.zeros((rows, d)), np.zeros((rows, d))
    target = np.empty(rows, dtype=np.int64)
    for i in range(rows):
        kind = kinds[(i if batched else 1) % 3]
        for _ in range(10_000):
            a, b = rng.standard_normal(d), rng.standard_normal(d)
            c = cosine(a, b)
            if kind == "pos" or (kind == "active") == (c > margin) and abs(c - margin) > GAP:
                break
        else:
            raise RuntimeError("sample_cosine found no pair clear of the hinge")
        x1[i], x2[i], target[i] = a, b, 1 if kind == "pos" else -1
    if zero_pair:
        for i, y in enumerate((1, -1)[:rows]):
            x1[i], x2[i], target[i] = 0.0, 0.0, y
    if not batched:
        return x1[0], x2[0], target[0]
    return x1, x2, target


# -- the p-norm and torch's pairwise_distance ------------------------------------------

def pnorm(v, p):
    r""":math:`\lVert v\rVert_p` along the last axis, :math:`p \in (0, \infty]`."""
    a = np.abs(v)
    if p == math.inf:
        return a.max(-1)
    if p == 1:
        return a.sum(-1)
    if p == 2:
        return np.sqrt((v * v).sum(-1))
    return (a ** p).sum(-1) ** (1.0 / p)


def pnorm_grad(v, p, norm=None):
    r"""The gradient of :math:`\lVert v\rVert_p` with respect to ``v``:

    .. math:: \frac{\partial\lVert v\rVert_p}{\partial v_j} =
              \operatorname{sign}(v_j)\,\frac{|v_j|^{p-1}}{\lVert v\rVert_p^{p-1}},\qquad
              p = \infty:\ \frac{\operatorname{sign}(v_j)\,[|v_j| = \max_k |v_k|]}{\#\{k : |v_k| = \max\}}

    and 0 where :math:`\lVert v\rVert_p = 0`, as torch's ``norm`` backward (ties of the
    maximum share the gradient equally, as torch's ``amax`` backward).
    """
    norm = pnorm(v, p) if norm is None else norm
    n = np.expand_dims(norm, -1)
    if p == math.inf:
        mask = (np.abs(v) == n).astype(v.dtype)
        with np.errstate(invalid="ignore"):  # a NaN row has no maximum to share: 0 / 0, NaN
            return np.sign(v) * mask / mask.sum(-1, keepdims=True)
    if p == 1:
        return np.sign(v)
    safe = np.where(n > 0, n, 1.0)
    if p == 2:
        return np.where(n > 0, v / safe, 0.0)
    return np.where(n > 0, np.sign(v) * (np.abs(v) / safe) ** (p - 1), 0.0)


def pairwise_distance(x1, x2, p=2.0, eps=1e-6):
    r"""torch's ``pairwise_distance``: :math:`d(x_1, x_2) = \lVert x_1 - x_2 + \varepsilon\rVert_p`
    along the last axis (``eps`` is added to every component of the difference, so
    :math:`d(x, x) = \varepsilon D^{1/p}` and :math:`d` is not symmetric)."""
    return pnorm(x1 - x2 + eps, p)


def pairwise_distance_vjp(g, x1, x2, p=2.0, eps=1e-6):
    u = np.expand_dims(g, -1) * pnorm_grad(x1 - x2 + eps, p)
    return u, -u


class Distance:
    """A distance for the NumPy reference: its value and its analytic VJP.

    ``fn(x1, x2)`` returns one distance per leading index (shape ``x1.shape[:-1]`` for
    row vectors); ``vjp(cotangent, x1, x2)`` returns ``(d_x1, d_x2)``, the cotangent
    (the shape of ``fn``'s value) pulled back to both arguments. The reference of
    ``triplet_margin_with_distance_loss`` needs both, because it differentiates
    analytically; torch_impl and jax_impl take plain callables and obtain the VJP from
    their framework's autodiff.
    """

    def __init__(self, fn, vjp, description: str):
        self.fn, self.vjp, self.description = fn, vjp, description

    def __call__(self, x1, x2):
        return self.fn(x1, x2)

    def __repr__(self) -> str:
        return f"Distance({self.description})"


PAIRWISE_DISTANCE = Distance(pairwise_distance, pairwise_distance_vjp, "pairwise_distance(p=2, eps=1e-6)")


# -- the triplet hinge, shared by both triplet losses -------------------------------------

def _triplet(d_pos, d_an, d_pn, margin, swap):
    """The per-triplet loss and the weight of d(p, n) in the negative distance.

    With ``swap`` the negative distance is min(d(a, n), d(p, n)); ``w`` is 1 where d(p, n)
    is chosen, 0 where d(a, n) is, 1/2 at a tie (torch's ``minimum`` backward)."""
    if swap:
        d_neg = np.minimum(d_an, d_pn)
        w = np.where(d_pn < d_an, 1.0, np.where(d_pn == d_an, 0.5, 0.0))
    else:
        d_neg, w = d_an, np.zeros_like(d_an)
    h = margin + d_pos - d_neg
    return np.maximum(h, 0.0), (h >= 0).astype(h.dtype), w


def _triplet_vjp(g, active, w, vjp_ap, vjp_an, vjp_pn, swap):
    """Pull the cotangent of the losses back through the hinge and the swap to the inputs."""
    g = g * active
    ga, gp = vjp_ap(g)
    ga2, gn = vjp_an(-g * (1.0 - w))
    ga = ga + ga2
    if swap:
        gp2, gn2 = vjp_pn(-g * w)
        gp, gn = gp + gp2, gn + gn2
    return ga, gp, gn


# -- triplet_margin_loss ---------------------------------------------------------------

def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False, reduction="mean"):
    r"""Triplet margin loss, as ``torch.nn.functional.triplet_margin_loss``.

    .. math:: \ell_i = \max\{d(a_i, p_i) - \tilde d_i + \text{margin},\ 0\},\qquad
              d(x, y) = \lVert x - y + \varepsilon\rVert_p,

    :math:`\tilde d_i = d(a_i, n_i)`, or with ``swap`` (Balntas et al., 2016)
    :math:`\tilde d_i = \min(d(a_i, n_i), d(p_i, n_i))`. ``eps`` is added to every
    component of the difference (torch's ``pairwise_distance``), not to the norm.
    Inputs are :math:`(N, D)` or unbatched :math:`(D)`. torch requires ``margin > 0``;
    ``p`` lies in :math:`(0, \infty]` and ``eps \ge 0``.
    """
    d_ap = pairwise_distance(anchor, positive, p, eps)
    d_an = pairwise_distance(anchor, negative, p, eps)
    d_pn = pairwise_distance(positive, negative, p, eps) if swap else None
    return reduce(_triplet(d_ap, d_an, d_pn, margin, swap)[0], reduction)


def triplet_margin_loss_vjp(cotangent, anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False,
                            reduction="mean"):
    r"""
    .. math:: \frac{\partial\ell_i}{\partial a_i} = [h_i \ge 0]\,\big(u(a_i - p_i) - (1 - w_i)\,u(a_i - n_i)\big),\quad
              \frac{\partial\ell_i}{\partial p_i} = -[h_i \ge 0]\,\big(u(a_i - p_i) + w_i\,u(p_i - n_i)\big),

    .. math:: \frac{\partial\ell_i}{\partial n_i} = [h_i \ge 0]\,\big((1 - w_i)\,u(a_i - n_i) + w_i\,u(p_i - n_i)\big),

    with :math:`u(x - y) = \nabla\lVert\cdot\rVert_p` at :math:`x - y + \varepsilon` (see
    :func:`pnorm_grad`), :math:`h_i` the hinge's argument and :math:`w_i` the weight of
    :math:`d(p_i, n_i)` in the swap (1 where it is the smaller, 0 otherwise).
    """
    d_ap = pairwise_distance(anchor, positive, p, eps)
    d_an = pairwise_distance(anchor, negative, p, eps)
    d_pn = pairwise_distance(positive, negative, p, eps) if swap else None
    _, active, w = _triplet(d_ap, d_an, d_pn, margin, swap)

    def vjp(x, y):
        return lambda g: pairwise_distance_vjp(g, x, y, p, eps)

    g = reduce_vjp(cotangent, reduction, d_ap.size)
    return _triplet_vjp(g, active, w, vjp(anchor, positive), vjp(anchor, negative), vjp(positive, negative), swap)


def _check_triplet_common(args: dict) -> None:
    checks.reduction(args["reduction"])
    _same_floats(args["anchor"], args["positive"], args["negative"])
    _positive("margin", args["margin"], " (torch rejects margin <= 0)")
    checks.boolean("swap", args["swap"])


def check_triplet(args: dict) -> None:
    _check_triplet_common(args)
    checks.ndim_in(args["anchor"], (1, 2), "(N, D) or unbatched (D,)")
    _positive("p", args["p"], " (the norm degree lies in (0, inf])")
    eps = _number("eps", args["eps"])
    if not 0 <= eps < math.inf:
        raise ValueError(f"eps must be a finite non-negative number; got {eps!r}")


def _norm_clear(v, p) -> bool:
    """Whether ``v`` (rows of differences, eps included) is clear of the p-norm's kinks."""
    if p == 1:
        return bool(np.all(np.abs(v) > GAP))
    if p == math.inf:
        top = np.sort(np.abs(v), axis=-1)
        return bool(np.all(top[..., -1] - top[..., -2] > GAP))
    return True


def sample_triplet(rng: np.random.Generator, n=5, d=4, batched=True, margin=1.0, p=2, eps=1e-6, swap=False,
                   distance=None, zero=None):
    """Triplets with the hinge alternately active and inactive (its argument at least
    ``GAP`` from 0), under ``swap`` d(p, n) alternately above and below d(a, n) by
    ``GAP``; for p = 1 every component of the differences, for p = inf the largest
    two, at least ``GAP`` apart. ``distance`` is the NumPy distance (torch's
    ``pairwise_distance(p, eps)`` when None).

    ``zero`` puts a zero distance (with ``eps = 0``) or zero vectors in row 0, where
    the mathematics stays finite and smooth enough for finite differences:
    ``"positive"``: positive = anchor, negative close by, hinge active;
    ``"swap"``: negative = positive, so the swap picks d(p, n) = 0;
    ``"all"``: anchor = positive = negative = 0 (for the cosine distance: each
    cosine is 0 with a zero gradient, and stays 0 under any one-sided move).
    """
    dist = distance if distance is not None else (lambda x, y: pairwise_distance(x, y, p, eps))
    check_norm = distance is None
    rows = n if batched else 1
    a, pos, neg = (np.zeros((rows, d)) for _ in range(3))
    for i in range(rows):
        want_active = i % 2 == 0
        want_swap = (i // 2) % 2 == 1
        for _ in range(10_000):
            x = rng.standard_normal(d)
            y = x + rng.uniform(0.2, 1.5) * rng.standard_normal(d)
            z = rng.uniform(-1.0, 1.0) * x + rng.uniform(0.2, 1.5) * rng.standard_normal(d)
            d_ap, d_an, d_pn = dist(x, y), dist(x, z), dist(y, z)
            if swap and not (abs(d_an - d_pn) > GAP and (d_pn < d_an) == want_swap):
                continue
            h = margin + d_ap - (min(d_an, d_pn) if swap else d_an)
            if abs(h) <= GAP or (h > 0) != want_active:
                continue
            if check_norm and not all(_norm_clear(u - v + eps, p) for u, v in ((x, y), (x, z), (y, z))):
                continue
            break
        else:
            raise RuntimeError("sample_triplet found no triplet clear of the kinks")
        a[i], pos[i], neg[i] = x, y, z
    if zero == "positive":
        pos[0] = a[0]
        neg[0] = a[0] + 0.3 * margin / np.sqrt(d) * rng.choice([-1.0, 1.0], size=d)
    elif zero == "swap":
        neg[0] = pos[0]
    elif zero == "all":
        a[0] = pos[0] = neg[0] = 0.0
    if not batched:
        return a[0], pos[0], neg[0]
    return a, pos, neg


# -- triplet_margin_with_distance_loss -----------------------------------------------------

def _numpy_distance(distance_function):
    if isinstance(distance_function, PerFramework):
        distance_function = distance_function.numpy
    return PAIRWISE_DISTANCE if distance_function is None else distance_function


def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None, margin=1.0,
                                      swap=False, reduction="mean"):
    r"""Triplet margin loss over any distance, as
    ``torch.nn.functional.triplet_margin_with_distance_loss``.

    .. math:: \ell_i = \max\{d(a_i, p_i) - \tilde d_i + \text{margin},\ 0\},\qquad
              \tilde d_i = d(a_i, n_i)\ \text{or, with swap,}\ \min(d(a_i, n_i), d(p_i, n_i))

    ``distance_function=None`` is torch's ``pairwise_distance`` (p = 2, eps = 1e-6).
    Here, in the NumPy reference, a custom distance is a :class:`Distance` (value and
    analytic VJP; a plain callable serves the forward only), or a
    :class:`~reference.spec.PerFramework` whose ``numpy`` is one. Inputs are
    :math:`(N, *)` (one distance per leading index) or whatever the distance takes;
    torch requires ``margin > 0``.
    """
    dist = _numpy_distance(distance_function)
    d_ap, d_an = np.asarray(dist(anchor, positive)), np.asarray(dist(anchor, negative))
    d_pn = np.asarray(dist(positive, negative)) if swap else None
    return reduce(_triplet(d_ap, d_an, d_pn, margin, swap)[0], reduction)


def triplet_margin_with_distance_loss_vjp(cotangent, anchor, positive, negative, *, distance_function=None,
                                          margin=1.0, swap=False, reduction="mean"):
    r"""The VJP of :func:`triplet_margin_loss` with :math:`u` replaced by the distance's
    own VJP (``Distance.vjp``): the hinge and the swap weights pull the cotangent back to
    each distance, and each distance pulls it back to its two arguments."""
    dist = _numpy_distance(distance_function)
    if not hasattr(dist, "vjp"):
        raise TypeError("the reference differentiates analytically: distance_function must be a "
                        "reference.metric.Distance(fn, vjp, description), not a plain callable")
    d_ap, d_an = np.asarray(dist(anchor, positive)), np.asarray(dist(anchor, negative))
    d_pn = np.asarray(dist(positive, negative)) if swap else None
    _, active, w = _triplet(d_ap, d_an, d_pn, margin, swap)

    def vjp(x, y):
        return lambda g: dist.vjp(g, x, y)

    g = reduce_vjp(cotangent, reduction, d_ap.size)
    return _triplet_vjp(g, active, w, vjp(anchor, positive), vjp(anchor, negative), vjp(positive, negative), swap)


def check_triplet_with_distance(args: dict) -> None:
    _check_triplet_common(args)
    checks.ndim_in(args["anchor"], range(1, 33), "an array of at least one dimension, (N, *) or unbatched")
    f = args["distance_function"]
    if not (f is None or callable(f) or isinstance(f, PerFramework)):
        raise TypeError(f"distance_function must be a callable (x1, x2) -> distances, or None; got {f!r}")


# The custom distance of the matrix: 1 - cos with cosine_embedding_loss's eps. The torch
# and JAX callables are this one function, written like reductions.py with only what the
# three array types share (arithmetic, .sum, ** 0.5), so each runs in its own framework's ops.

def cosine_distance(x1, x2):
    r""":math:`1 - \cos(x_1, x_2)`, :math:`\cos` with :math:`10^{-12}` added to each squared norm."""
    m1 = (x1 * x1).sum(-1) + EPSILON
    m2 = (x2 * x2).sum(-1) + EPSILON
    return 1.0 - (x1 * x2).sum(-1) / (m1 * m2) ** 0.5


COSINE_DISTANCE = PerFramework(
    "1 - cos (eps 1e-12 on the squared norms)",
    numpy=Distance(cosine_distance, lambda g, x1, x2: tuple(-v for v in cosine_vjp(g, x1, x2)),
                   "1 - cos (eps 1e-12 on the squared norms)"),
    torch=cosine_distance, jax=cosine_distance)


# -- registry ----------------------------------------------------------------------------

# At zero vectors the cosine is 0 / sqrt(1e-12 * 1e-12): float16 rounds the 1e-12 to 0 (0 / 0).
FLOAT16_UNDERFLOWS_EPSILON = ("float64", "float32", "bfloat16")


def _cosine_case(name, dtypes=None, **params):
    sample = {k: params.pop(k) for k in ("batched", "zero_pair") if k in params}
    return Case(name, params, sample={**sample, "margin": params.get("margin", 0.0)}, dtypes=dtypes)


register(LossSpec(
    name="cosine_embedding_loss", family="metric", forward=cosine_embedding_loss,
    vjp_fn=cosine_embedding_loss_vjp, inputs=("input1", "input2", "target"), differentiable=("input1", "input2"),
    sampler=sample_cosine, check=check_cosine_embedding,
    cases=(_cosine_case("default"), _cosine_case("margin=0.5", margin=0.5),
           _cosine_case("margin=-0.5", margin=-0.5), _cosine_case("unbatched", batched=False),
           _cosine_case("zero vectors", zero_pair=True, dtypes=FLOAT16_UNDERFLOWS_EPSILON)),
    xfails=(XFail("at a zero vector the cosine has no second derivative (torch's 1e-12 on the squared norms "
                  "bends it on a scale of 1e-6, the finite differences' own step): gradgradcheck's and jax.hvp's "
                  "finite differences cannot resolve it",
                  case="zero vectors", check=("gradgradcheck", "jax.hvp")),),
    bad_inputs=(
        BadInput("input2 of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "input2"),
        BadInput("input2 that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "input2"),
        BadInput("target of another length", replace_input(2, lambda xs: xs[2][:-1]), ValueError, "target"),
        BadInput("target holding 0", replace_input(2, lambda xs: np.where(np.arange(len(xs[2])) == 0, 0, xs[2])),
                 ValueError, "target"),
        BadInput("boolean target", replace_input(2, lambda xs: xs[2] > 0), TypeError, "target"),
        BadInput("3-D input1", replace_input(0, lambda xs: xs[0][None]), ValueError, "input1"),
        BadInput("integer input1", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "input1"),
        BadInput("input2 of another dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)), TypeError,
                 "input2"),
        BadInput("margin above 1", set_param("margin", lambda xs: 1.5), ValueError, "margin"),
        BadInput("margin below -1", set_param("margin", lambda xs: -1.5), ValueError, "margin"),
    ),
    builtins={"torch": "torch.nn.functional.cosine_embedding_loss",
              "optax": "optax.losses.cosine_similarity / cosine_distance (epsilon=1e-12)"},
    differences=(
        Difference("torch", "torch.nn.functional.cosine_similarity",
                   "cosine_similarity(x1, x2, eps=e) divides by sqrt(max(|x1|^2, e^2) * max(|x2|^2, e^2)) with the "
                   "clamp applied under no_grad (its gradient below e is not the formula's); "
                   "cosine_embedding_loss adds 1e-12 to each squared norm instead",
                   "for |x1|, |x2| >> 1e-6: cosine_embedding_loss(x1, x2, 1, reduction='none') == "
                   "1 - cosine_similarity(x1, x2, dim=-1) up to a relative 1e-12 / |x|^2; at a zero vector both give "
                   "cos = 0 but the gradients differ (x2 / (e |x2|) against x2 / (1e-6 |x2|))"),
        Difference("optax", "optax.losses.cosine_similarity, optax.losses.cosine_distance",
                   "epsilon defaults to 0 (NaN for a zero vector) and clamps each squared norm from below "
                   "(a_norm2.clip(epsilon)), where torch adds 1e-12 to it; no hinge, no labels, no reduction",
                   "y = 1: 1 - cos == optax.losses.cosine_distance(x1, x2, epsilon=1e-12); "
                   "y = -1: max(0, optax.losses.cosine_similarity(x1, x2, epsilon=1e-12) - margin); equal up to a "
                   "relative 1e-12 / |x|^2 and exactly at zero vectors (tested: the optax built-in adapter)"),
        Difference("keras", "keras.losses.cosine_similarity",
                   "returns -cos of the l2-normalized vectors (a loss to minimize), per row, no labels or margin",
                   "y = 1: cosine_embedding_loss(x1, x2, 1, reduction='none') == 1 + keras.losses.cosine_similarity("
                   "x2, x1) for vectors well away from 0 (tested: tests/test_differences_metric.py)"),
    ),
))


def _triplet_case(name, zero=None, batched=True, dtypes=None, **params):
    sample = {"zero": zero, "batched": batched}
    for key in ("margin", "p", "eps", "swap"):
        if key in params:
            sample[key] = params[key]
    if "distance_function" in params:
        sample["distance"] = _numpy_distance(params["distance_function"])
    return Case(name, params, sample=sample, dtypes=dtypes)


TRIPLET_BAD_INPUTS = (
    BadInput("positive of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "positive"),
    BadInput("negative that would broadcast", replace_input(2, lambda xs: xs[2][:1]), ValueError, "negative"),
    BadInput("integer anchor", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "anchor"),
    BadInput("negative of another dtype", replace_input(2, lambda xs: xs[2].astype(np.float32)), TypeError,
             "negative"),
    BadInput("zero margin", set_param("margin", lambda xs: 0.0), ValueError, "margin"),
    BadInput("negative margin", set_param("margin", lambda xs: -1.0), ValueError, "margin"),
    BadInput("non-boolean swap", set_param("swap", lambda xs: "yes"), TypeError, "swap"),
)

register(LossSpec(
    name="triplet_margin_loss", family="metric", forward=triplet_margin_loss, vjp_fn=triplet_margin_loss_vjp,
    inputs=("anchor", "positive", "negative"), differentiable=("anchor", "positive", "negative"),
    sampler=sample_triplet, check=check_triplet,
    cases=(_triplet_case("default"), _triplet_case("margin=0.5", margin=0.5), _triplet_case("p=1", p=1),
           _triplet_case("p=3", p=3), _triplet_case("p=inf", p=math.inf), _triplet_case("eps=0.1", eps=0.1),
           _triplet_case("swap", swap=True), _triplet_case("swap, p=1", swap=True, p=1),
           _triplet_case("unbatched", batched=False),
           _triplet_case("zero distance", zero="positive", eps=0.0),
           _triplet_case("zero distance, swap", zero="swap", eps=0.0, swap=True)),
    xfails=tuple(XFail("with eps = 0 the distance ||a - p|| has no second derivative at a = p (its gradient is 0 "
                       "there by convention): gradgradcheck's and jax.hvp's finite differences straddle the kink",
                       case=case, check=("gradgradcheck", "jax.hvp"))
                 for case in ("zero distance", "zero distance, swap")),
    bad_inputs=TRIPLET_BAD_INPUTS + (
        BadInput("3-D anchor, positive, negative", lambda xs, kw: (tuple(x[None] for x in xs), kw), ValueError,
                 "anchor"),
        BadInput("zero p", set_param("p", lambda xs: 0), ValueError, "p"),
        BadInput("negative p", set_param("p", lambda xs: -1.0), ValueError, "p"),
        BadInput("negative eps", set_param("eps", lambda xs: -1e-6), ValueError, "eps"),
        BadInput("infinite eps", set_param("eps", lambda xs: float("inf")), ValueError, "eps"),
    ),
    builtins={"torch": "torch.nn.functional.triplet_margin_loss",
              "optax": "optax.losses.triplet_margin_loss (even p, eps=0, no swap)"},
    differences=(
        Difference("optax", "optax.losses.triplet_margin_loss",
                   "d = (sum((a - p) ** norm_degree) + eps) ** (1 / norm_degree): eps (default 1e-6) inside the sum "
                   "instead of added to each component, no abs (an odd norm_degree gives wrong values or NaN), "
                   "no swap, no reduction; with eps = 0 its gradient at a zero distance is NaN (torch's is 0)",
                   "for an even p, eps=0, swap=False: triplet_margin_loss(a, p, n, margin=m, p=k, eps=0, "
                   "reduction='none') == optax.losses.triplet_margin_loss(a, p, n, norm_degree=k, margin=m, "
                   "eps=jnp.finfo(dtype).tiny); the tiny eps only keeps the gradient at a zero distance finite (0) "
                   "(tested: the optax built-in adapter)"),
        Difference("torch", "torch.nn.functional.pairwise_distance",
                   "eps is added to every component of the difference: d(x, x) = eps * D ** (1/p), "
                   "d(x, y) != d(y, x); textbook triplet losses use |a - p|_p",
                   "|a - p|_p == pairwise_distance(a, p, p=q, eps=0) == triplet distances with eps=0"),
    ),
))

register(LossSpec(
    name="triplet_margin_with_distance_loss", family="metric", forward=triplet_margin_with_distance_loss,
    vjp_fn=triplet_margin_with_distance_loss_vjp, inputs=("anchor", "positive", "negative"),
    differentiable=("anchor", "positive", "negative"), sampler=sample_triplet, check=check_triplet_with_distance,
    cases=(_triplet_case("default"), _triplet_case("margin=2", margin=2.0), _triplet_case("swap", swap=True),
           _triplet_case("unbatched", batched=False),
           _triplet_case("cosine distance", distance_function=COSINE_DISTANCE),
           _triplet_case("cosine distance, swap", distance_function=COSINE_DISTANCE, swap=True),
           _triplet_case("cosine distance, zero vectors", zero="all", distance_function=COSINE_DISTANCE,
                         dtypes=FLOAT16_UNDERFLOWS_EPSILON)),
    xfails=(XFail("at zero vectors the cosine distance has no second derivative (its 1e-12 on the squared norms "
                  "bends it on a scale of 1e-6, the finite differences' own step): gradgradcheck's and jax.hvp's "
                  "finite differences cannot resolve it",
                  case="cosine distance, zero vectors", check=("gradgradcheck", "jax.hvp")),),
    bad_inputs=TRIPLET_BAD_INPUTS + (
        BadInput("distance_function that is not callable", set_param("distance_function", lambda xs: 2.0),
                 TypeError, "distance_function"),
        BadInput("0-D inputs", lambda xs, kw: (tuple(x[0, 0] for x in xs), kw), ValueError, "anchor"),
    ),
    builtins={"torch": "torch.nn.functional.triplet_margin_with_distance_loss"},
    differences=(
        Difference("torch", "torch.nn.functional.triplet_margin_with_distance_loss",
                   "torch checks only that the inputs have the same number of dimensions and lets the distance "
                   "broadcast; lossparity requires identical shapes and dtypes",
                   "broadcast the inputs explicitly (torch.broadcast_tensors) before the call"),
        Difference("torch", "torch.nn.functional.cosine_similarity",
                   "torch's documented custom distance 1 - F.cosine_similarity(x, y) clamps the norms at eps = 1e-8 "
                   "under no_grad; the matrix's cosine distance adds 1e-12 to the squared norms",
                   "the two agree up to a relative 1e-12 / |x|^2 for vectors well away from 0"),
    ),
))


# =========================================================================================
# Part 2: optax's and Keras's metric-learning and ranking losses
# =========================================================================================

from .spec import Sampled  # noqa: E402  (part 2's array hyperparameters)


def _slope(x):
    r"""The derivative of :math:`\max(x, 0)` as ``jnp.maximum``'s and ``torch.maximum``'s
    backward give it: 1 above 0, 1/2 at a tie, 0 below (optax's ``clip`` and Keras's
    ``ops.maximum`` are ``jnp.maximum``)."""
    return np.where(x > 0, 1.0, np.where(x == 0, 0.5, 0.0))


# -- optax's cosine_similarity and cosine_distance ----------------------------------------

def _reduced_axes(axis, ndim: int) -> tuple[int, ...]:
    """optax's ``axis`` (an int, a tuple of ints, or None for every axis) as sorted
    non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    return tuple(sorted(int(a) % ndim for a in axis))


def _optax_cosine_parts(predictions, targets, epsilon, axis, where):
    """optax's cosine and the pieces its VJP reuses (squared norms keep the reduced axes)."""
    axes = _reduced_axes(axis, predictions.ndim)
    w = np.ones(predictions.shape, dtype=bool) if where is None else np.asarray(where, dtype=bool)
    n2p = np.where(w, predictions * predictions, 0.0).sum(axes, keepdims=True)
    n2t = np.where(w, targets * targets, 0.0).sum(axes, keepdims=True)
    rp, rt = np.sqrt(np.maximum(n2p, epsilon)), np.sqrt(np.maximum(n2t, epsilon))
    with np.errstate(divide="ignore", invalid="ignore"):  # epsilon = 0 and a zero vector: NaN, as optax
        cos = np.where(w, (predictions / rp) * (targets / rt), 0.0).sum(axes)
    return cos, axes, w, n2p, n2t, rp, rt


def cosine_similarity(predictions, targets, epsilon=0.0, axis=-1, where=None, reduction="none"):
    r"""optax's ``cosine_similarity``: the cosine of the angle between ``predictions`` and
    ``targets`` along ``axis``.

    .. math:: c = \sum_{k \in W} \frac{p_k}{r_p}\,\frac{t_k}{r_t},\qquad
              r_x = \sqrt{\max\Bigl(\textstyle\sum_{k \in W} x_k^2,\ \epsilon\Bigr)}

    where :math:`W` holds the elements of the reduced axes (``axis``: an int, a tuple of
    ints, or None for every axis) that ``where`` keeps (all without ``where``). As in
    optax (``a_norm2.clip(epsilon)``), ``epsilon`` is a floor on each **squared** norm,
    not on the norm its documentation names: below it the vector is divided by
    :math:`\sqrt\epsilon`. optax's default ``epsilon=0`` is kept, so a zero vector gives
    :math:`0/0 =` NaN, as in optax; any ``epsilon > 0`` gives it cosine 0 and a finite
    gradient. The per-example values (``reduction="none"``) have the shape of the inputs
    without the reduced axes; ``mean`` and ``sum`` reduce them. ``predictions`` and
    ``targets`` have the same shape (optax would broadcast them), ``where`` too.
    """
    return reduce(_optax_cosine_parts(predictions, targets, epsilon, axis, where)[0], reduction)


def cosine_similarity_vjp(cotangent, predictions, targets, epsilon=0.0, axis=-1, where=None, reduction="none"):
    r"""
    .. math:: \frac{\partial c}{\partial p_k} = [k \in W]\Bigl(\frac{t_k}{r_p r_t}
              - s_p\,c\,\frac{p_k}{r_p^2}\Bigr),\qquad
              \frac{\partial c}{\partial t_k} = [k \in W]\Bigl(\frac{p_k}{r_p r_t}
              - s_t\,c\,\frac{t_k}{r_t^2}\Bigr)

    with :math:`s_x = 1` where the squared norm is above ``epsilon``, 0 below (the floor
    is a constant), 1/2 at a tie (``jnp.clip``'s backward).
    """
    cos, axes, w, n2p, n2t, rp, rt = _optax_cosine_parts(predictions, targets, epsilon, axis, where)
    g = np.expand_dims(np.broadcast_to(reduce_vjp(cotangent, reduction, cos.size), cos.shape), axes)
    c = np.expand_dims(cos, axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_p = np.where(w, g * (targets / (rp * rt) - _slope(n2p - epsilon) * c * predictions / (rp * rp)), 0.0)
        d_t = np.where(w, g * (predictions / (rp * rt) - _slope(n2t - epsilon) * c * targets / (rt * rt)), 0.0)
    return d_p, d_t


# Named optax_cosine_distance (registered as "cosine_distance"): this module's cosine_distance(x1, x2)
# is part 1's custom distance for triplet_margin_with_distance_loss, kept as it was.

def optax_cosine_distance(predictions, targets, epsilon=0.0, axis=-1, where=None, reduction="none"):
    r"""optax's ``cosine_distance``: :math:`1 - c`, with :math:`c` optax's
    :func:`cosine_similarity` (the same ``epsilon`` floor on each squared norm, default 0:
    NaN for a zero vector, as in optax; ``axis``, ``where`` and ``reduction`` as there).

    .. math:: d = 1 - \sum_{k \in W} \frac{p_k}{r_p}\,\frac{t_k}{r_t},\qquad
              r_x = \sqrt{\max\Bigl(\textstyle\sum_{k \in W} x_k^2,\ \epsilon\Bigr)}
    """
    return reduce(1.0 - _optax_cosine_parts(predictions, targets, epsilon, axis, where)[0], reduction)


def optax_cosine_distance_vjp(cotangent, predictions, targets, epsilon=0.0, axis=-1, where=None,
                              reduction="none"):
    r""":math:`\partial d = -\partial c`, with :math:`\partial c` as in :func:`cosine_similarity_vjp`."""
    d_p, d_t = cosine_similarity_vjp(cotangent, predictions, targets, epsilon, axis, where, reduction)
    return -d_p, -d_t


def _check_axis(axis, ndim: int) -> None:
    if axis is None:
        return
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
        items = (axis,)
    elif isinstance(axis, tuple) and axis and all(isinstance(a, (int, np.integer)) and not isinstance(a, bool)
                                                  for a in axis):
        items = axis
    elif isinstance(axis, tuple) and not axis:
        raise ValueError("axis must name at least one axis; got () (None reduces every axis)")
    else:
        raise TypeError(f"axis must be an int, a tuple of ints or None; got {axis!r}")
    for a in items:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for predictions of {ndim} dimensions")
    if len({int(a) % ndim for a in items}) != len(items):
        raise ValueError(f"axis must not repeat an axis; got {axis!r}")


def _check_where(where, like: checks.ArrayInfo) -> None:
    if where is not None:
        checks.kind_in(where, ("bool",), "the elements to include")
        checks.shape_is(where, like.shape, f"one flag per element of {like.name}")


def check_optax_cosine(args: dict) -> None:
    checks.reduction(args["reduction"])
    p, t = args["predictions"], args["targets"]
    _same_floats(p, t)
    checks.ndim_in(p, range(1, 33), "an array of at least one dimension")
    epsilon = _number("epsilon", args["epsilon"])
    if not (0 <= epsilon < math.inf):
        raise ValueError(f"epsilon must be a finite non-negative floor on the squared norms; got {epsilon!r}")
    _check_axis(args["axis"], p.ndim)
    _check_where(args["where"], p)


def sample_cosine_pairs(rng: np.random.Generator, shape=(5, 4), epsilon=0.0, small=False):
    """``predictions`` and ``targets`` ~ N(0, 1) of ``shape``. With ``epsilon > 0`` every
    squared norm along the last axis stays at least a factor 2 away from ``epsilon`` (the
    floor's kink), and ``small`` (2-D, at least 5 rows) puts row 0 of ``predictions`` and
    row 1 of ``targets`` at 0 (cosine 0, a finite gradient) and rows 2 and 3 of them below
    the floor (squared norm ``epsilon / 4``): there the floor, not the norm, divides."""
    p, t = rng.standard_normal(shape), rng.standard_normal(shape)
    if epsilon > 0:
        for x in (p, t):
            for _ in range(1000):
                n2 = (x * x).sum(-1)
                bad = (n2 > epsilon / 2) & (n2 < 2 * epsilon)
                if not bad.any():
                    break
                x[bad] = rng.standard_normal(x[bad].shape)
            else:
                raise RuntimeError("sample_cosine_pairs found no rows clear of the epsilon floor")
    if small:
        p[0], t[1] = 0.0, 0.0
        for x, row in ((p, 2), (t, 3)):
            x[row] *= math.sqrt(epsilon / 4) / np.linalg.norm(x[row])
    return p, t


def _where_draw(rng, inputs):
    """About 3/4 of the elements, and at least two per slice along the last axis."""
    shape = inputs[0].shape
    keep = rng.random(shape) < 0.75
    first = rng.permuted(np.tile(np.arange(shape[-1]), shape[:-1] + (1,)), axis=-1)[..., :2]
    np.put_along_axis(keep, first, True, axis=-1)
    return keep


cosine_where = Sampled("where: ~3/4 True, at least 2 per slice along the last axis", _where_draw)


def _optax_cosine_cases():
    return (
        Case("default"),
        Case("epsilon=0.1, zero and small vectors", {"epsilon": 0.1}, sample={"epsilon": 0.1, "small": True}),
        Case("epsilon=1e-8", {"epsilon": 1e-8}, sample={"epsilon": 1e-8}),
        Case("axis=0", {"axis": 0}, sample={"shape": (4, 3)}),
        Case("axis=(1, 2) of 3-D", {"axis": (1, 2)}, sample={"shape": (3, 2, 4)}),
        Case("axis=None", {"axis": None}, sample={"shape": (3, 4)}),
        Case("where", {"where": cosine_where}),
        Case("3-D, last axis", sample={"shape": (2, 3, 4)}),
        Case("unbatched", sample={"shape": (4,)}),
    )


def _optax_cosine_bad_inputs():
    return (
        BadInput("targets of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "targets"),
        BadInput("targets that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "targets"),
        BadInput("integer predictions", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError,
                 "predictions"),
        BadInput("targets of another dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)), TypeError,
                 "targets"),
        BadInput("0-D predictions and targets", lambda xs, kw: ((xs[0][0, 0], xs[1][0, 0]), kw), ValueError,
                 "predictions"),
        BadInput("negative epsilon", set_param("epsilon", lambda xs: -1e-3), ValueError, "epsilon"),
        BadInput("NaN epsilon", set_param("epsilon", lambda xs: float("nan")), ValueError, "epsilon"),
        BadInput("axis out of range", set_param("axis", lambda xs: 2), ValueError, "axis"),
        BadInput("repeated axis", set_param("axis", lambda xs: (1, -1)), ValueError, "axis"),
        BadInput("empty axis tuple", set_param("axis", lambda xs: ()), ValueError, "axis"),
        BadInput("axis as a list", set_param("axis", lambda xs: [0, 1]), TypeError, "axis"),
        BadInput("float where", set_param("where", lambda xs: np.ones(xs[0].shape)), TypeError, "where"),
        BadInput("where of another shape", set_param("where", lambda xs: np.ones(xs[0].shape[1:], dtype=bool)),
                 ValueError, "where"),
    )


_ZERO_VECTOR_DIFFERENCE = (
    "epsilon defaults to 0, so a zero vector (or a slice that where empties) gives 0/0 = NaN in the value and "
    "the gradient; lossparity keeps that default and that NaN rather than a silent fix")

register(LossSpec(
    name="cosine_similarity", family="metric", forward=cosine_similarity, vjp_fn=cosine_similarity_vjp,
    inputs=("predictions", "targets"), differentiable=("predictions", "targets"), array_params=("where",),
    sampler=sample_cosine_pairs, check=check_optax_cosine, cases=_optax_cosine_cases(),
    bad_inputs=_optax_cosine_bad_inputs(),
    builtins={"optax": "optax.losses.cosine_similarity",
              "torch": "torch.nn.functional.cosine_similarity (eps=sqrt(epsilon); an int axis, no where)"},
    differences=(
        Difference("optax", "optax.losses.cosine_similarity", _ZERO_VECTOR_DIFFERENCE,
                   "cosine_similarity(x, y) is NaN exactly where optax.losses.cosine_similarity(x, y) is (a zero "
                   "slice); any epsilon > 0 makes it finite: cosine 0 with gradient y / (sqrt(epsilon) |y|) "
                   "(the case 'epsilon=0.1, zero and small vectors')"),
        Difference("optax", "optax.losses.cosine_similarity",
                   "optax documents epsilon as the 'minimum norm', but its code floors the squared norm "
                   "(a_norm2.clip(epsilon))",
                   "a vector with |x|^2 < epsilon is divided by sqrt(epsilon): cosine_similarity(x, y, epsilon=e) "
                   "== x . y / (sqrt(e) |y|); a minimum norm of e would divide by max(|x|, e) instead"),
        Difference("torch", "torch.nn.functional.cosine_similarity",
                   "torch divides by max(|x|, eps) with the clamp under no_grad (its gradient below eps treats "
                   "the norm as unclamped); optax floors |x|^2 at epsilon with a constant below the floor; "
                   "torch's dim is one int and it has no where; torch's default eps is 1e-8, optax's 0",
                   "values: cosine_similarity(x, y, epsilon=e, axis=k) == F.cosine_similarity(x, y, dim=k, "
                   "eps=sqrt(e)); gradients too wherever no squared norm lies in (0, e) (at a zero vector both "
                   "give y / (sqrt(e) |y|))"),
        Difference("keras", "keras.losses.cosine_similarity",
                   "Keras returns the negated cosine (a loss to minimize) of l2-normalized inputs, "
                   "x * min(rsqrt(|x|^2), 1 / 1e-7), in the order (y_true, y_pred)",
                   "keras.losses.cosine_similarity(y_true, y_pred, axis=k) == -cosine_similarity(y_pred, y_true, "
                   "epsilon=1e-14, axis=k) (the Keras floor 1e-7 on the norm is 1e-14 on its square), values and "
                   "gradients, except the gradient at a zero vector: NaN in Keras (rsqrt(0) = inf), finite here"),
    ),
))

register(LossSpec(
    name="cosine_distance", family="metric", forward=optax_cosine_distance, vjp_fn=optax_cosine_distance_vjp,
    inputs=("predictions", "targets"), differentiable=("predictions", "targets"), array_params=("where",),
    sampler=sample_cosine_pairs, check=check_optax_cosine, cases=_optax_cosine_cases(),
    bad_inputs=_optax_cosine_bad_inputs(),
    builtins={"optax": "optax.losses.cosine_distance",
              "torch": "1 - torch.nn.functional.cosine_similarity (eps=sqrt(epsilon); an int axis, no where)"},
    differences=(
        Difference("optax", "optax.losses.cosine_distance", _ZERO_VECTOR_DIFFERENCE,
                   "cosine_distance(x, y) is NaN exactly where optax.losses.cosine_distance(x, y) is; with "
                   "epsilon > 0 a zero vector has distance 1"),
        Difference("torch", "torch.nn.functional.cosine_embedding_loss",
                   "cosine_embedding_loss with y = 1 is a cosine distance with ATen's 1e-12 added to each squared "
                   "norm (not a floor), over rows only, and reduced by mean by default",
                   "cosine_distance(x, y, epsilon=1e-12) == F.cosine_embedding_loss(x, y, ones(N), "
                   "reduction='none') up to a relative 1e-12 / |x|^2, and exactly at zero vectors"),
        Difference("torch", "torch.nn.functional.cosine_similarity",
                   "as for cosine_similarity: torch clamps |x| at eps under no_grad; optax floors |x|^2",
                   "cosine_distance(x, y, epsilon=e, axis=k) == 1 - F.cosine_similarity(x, y, dim=k, "
                   "eps=sqrt(e)) (gradients too wherever no squared norm lies in (0, e))"),
    ),
))


# -- optax's ntxent ---------------------------------------------------------------------

def _ntxent_parts(embeddings, labels, temperature):
    """optax's scaled cosine matrix, its masks and the per-pair log-normalizers."""
    eps = np.finfo(embeddings.dtype).eps
    n2 = (embeddings * embeddings).sum(-1)
    r = np.sqrt(np.maximum(n2, eps))
    u = embeddings / r[:, None]
    x = (u @ u.T) / temperature
    same = labels[:, None] == labels[None, :]
    pos = same & ~np.eye(len(labels), dtype=bool)
    neg = ~same
    lse_neg, _ = masked_logsumexp(x, 1, neg, keepdims=False)
    norm = logaddexp(lse_neg[:, None], x)  # log(sum over negatives of i + e^{x_ij}), per pair (i, j)
    return x, pos, neg, lse_neg, norm, n2, r, u


def ntxent(embeddings, labels, temperature=0.07, reduction="none"):
    r"""optax's ``ntxent``: the normalized temperature-scaled cross entropy (NT-Xent, Chen
    et al., 2020) of a batch of embeddings, one scalar per call.

    With :math:`x_{ij} = \cos(e_i, e_j)/\tau` (optax's cosine with ``epsilon`` =
    ``finfo(dtype).eps`` flooring each squared norm), the positive pairs
    :math:`P = \{(i, j): i \ne j,\ y_i = y_j\}` and the negatives of row i
    :math:`N_i = \{k: y_k \ne y_i\}`,

    .. math:: \ell = -\frac{1}{|P|}\sum_{(i,j)\in P}\Bigl(x_{ij} -
              \log\Bigl(e^{x_{ij}} + \sum_{k\in N_i} e^{x_{ik}}\Bigr)\Bigr)

    computed with log-sum-exp (the other positives of row i are not in its denominator).
    optax returns this one number for the whole batch; it is the per-call value here, so
    ``reduction`` (default ``"none"``) acts on a 0-d array: ``none``, ``mean`` and ``sum``
    all return :math:`\ell`. ``embeddings`` is :math:`(B, F)`, ``labels`` :math:`(B)`
    integers naming the groups; a batch without a positive pair is rejected (optax gives
    :math:`0/0` = NaN; under ``jax.jit``, where labels are not known, NaN as optax).
    """
    x, pos, neg, lse_neg, norm = _ntxent_parts(embeddings, labels, temperature)[:5]
    loss = -np.where(pos, x - norm, 0.0).sum() / pos.sum()
    return reduce(np.asarray(loss), reduction)


def ntxent_vjp(cotangent, embeddings, labels, temperature=0.07, reduction="none"):
    r"""With :math:`\pi_{ij} = e^{x_{ij} - L_{ij}}` (:math:`L_{ij}` the log-normalizer of
    pair (i, j)) and :math:`G = \partial\ell/\partial x`:

    .. math:: G_{ij} = -\frac{1 - \pi_{ij}}{|P|}\ \ ((i,j)\in P),\qquad
              G_{ik} = \frac{1}{|P|}\sum_{j:(i,j)\in P} e^{x_{ik} - L_{ij}}\ \ (k\in N_i),

    the last written :math:`e^{x_{ik} - M_i}\sum_j e^{M_i - L_{ij}}` with :math:`M_i` the
    log-sum-exp over :math:`N_i` (both factors at most 1). Then with :math:`u_i = e_i/r_i`,
    :math:`r_i = \sqrt{\max(|e_i|^2, \epsilon)}` and :math:`v_i = \sum_j (G_{ij} +
    G_{ji})\,u_j / \tau`,

    .. math:: \frac{\partial\ell}{\partial e_i} = \frac{v_i - s_i\,(u_i\cdot v_i)\,u_i}{r_i}

    (:math:`s_i` 1 above the floor, 0 below it).
    """
    x, pos, neg, lse_neg, norm, n2, r, u = _ntxent_parts(embeddings, labels, temperature)
    n_pos = pos.sum()
    g = reduce_vjp(cotangent, reduction, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        shift = np.where(np.isfinite(lse_neg), lse_neg, 0.0)
        pair = np.where(pos, np.exp(shift[:, None] - norm), 0.0).sum(1)           # sum_j e^{M_i - L_ij}
        g_neg = np.where(neg, np.exp(x - shift[:, None]), 0.0) * pair[:, None]
        g_pos = np.where(pos, -(1.0 - np.exp(x - norm)), 0.0)
    G = g * (g_pos + g_neg) / (n_pos * temperature)
    v = (G + G.T) @ u
    d = (v - _slope(n2 - np.finfo(embeddings.dtype).eps)[:, None] * (u * v).sum(-1, keepdims=True) * u) / r[:, None]
    return (d,)


def check_ntxent(args: dict) -> None:
    checks.reduction(args["reduction"])
    e, labels = args["embeddings"], args["labels"]
    checks.floating(e)
    checks.ndim_in(e, (2,), "(batch, features)")
    checks.integer(labels, "group labels")
    checks.shape_is(labels, e.shape[:1], "one group label per row of embeddings")
    _positive("temperature", args["temperature"])
    if not checks.is_finite(args["temperature"]):
        raise ValueError(f"temperature must be finite; got {args['temperature']!r}")
    values = labels.values()
    if values is not None:
        _, counts = np.unique(values, return_counts=True)
        if not (counts >= 2).any():
            raise ValueError("labels must give at least one positive pair (two rows with the same label); "
                             "optax's ntxent divides by the number of positive pairs and returns 0/0 = NaN")


def sample_ntxent(rng: np.random.Generator, n=6, d=4, group=2, singleton=False, one_group=False):
    """``embeddings`` ~ N(0, 1) around a random centre per group (spread 1, so cosines
    range widely), ``labels`` in groups of ``group`` rows, shuffled; ``singleton`` gives
    the last row a label of its own (it is only ever a negative), ``one_group`` puts every
    row in one group (no negatives: every pair's softmax has one term, the loss is 0)."""
    labels = np.arange(n) // group
    if singleton:
        labels[-1] = labels.max() + 1
    if one_group:
        labels[:] = 0
    labels = rng.permutation(labels)
    centres = rng.standard_normal((labels.max(initial=-1) + 1, d))  # none for an empty batch
    return centres[labels] + rng.standard_normal((n, d)), labels.astype(np.int64)


register(LossSpec(
    name="ntxent", family="metric", forward=ntxent, vjp_fn=ntxent_vjp, inputs=("embeddings", "labels"),
    differentiable=("embeddings",), sampler=sample_ntxent, check=check_ntxent,
    cases=(Case("default"), Case("temperature=1", {"temperature": 1.0}),
           Case("groups of three", sample={"n": 7, "group": 3}),
           Case("a row without a partner", sample={"singleton": True, "n": 7}),
           Case("one group, no negatives", sample={"one_group": True, "n": 4})),
    bad_inputs=(
        BadInput("labels of another length", replace_input(1, lambda xs: xs[1][:-1]), ValueError, "labels"),
        BadInput("float labels", replace_input(1, lambda xs: xs[1].astype(np.float64)), TypeError, "labels"),
        BadInput("integer embeddings", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError,
                 "embeddings"),
        BadInput("3-D embeddings", replace_input(0, lambda xs: xs[0][:, None]), ValueError, "embeddings"),
        BadInput("no positive pair", replace_input(1, lambda xs: np.arange(len(xs[1]))), ValueError, "labels"),
        BadInput("zero temperature", set_param("temperature", lambda xs: 0.0), ValueError, "temperature"),
        BadInput("negative temperature", set_param("temperature", lambda xs: -0.07), ValueError, "temperature"),
    ),
    builtins={"optax": "optax.losses.ntxent",
              "torch": "torch.nn.functional.cross_entropy over (positive, negatives) rows of the "
                       "torch.nn.functional.cosine_similarity matrix"},
    differences=(
        Difference("optax", "optax.losses.ntxent",
                   "optax returns one scalar per batch and has no reduction; a batch without a positive pair "
                   "gives 0/0 = NaN",
                   "ntxent(e, y, t, reduction=r) == optax.losses.ntxent(e, y, t) for r in none, mean, sum (a 0-d "
                   "value; the three reductions agree); lossparity rejects a batch without a positive pair with "
                   "a ValueError naming labels where optax returns NaN"),
        Difference("torch", "torch.nn.functional.cross_entropy",
                   "torch has no NT-Xent; each positive pair (i, j) is a cross entropy over the logits "
                   "[x_ij, x_ik for the negatives k of i] with class 0 as the target",
                   "ntxent(e, y, t) == F.cross_entropy(rows, zeros(|P|), reduction='mean') with x = "
                   "F.cosine_similarity(e[None], e[:, None], dim=-1, eps=sqrt(finfo.eps)) / t and one row per "
                   "positive pair, the non-negatives masked with -inf"),
    ),
))


# -- optax's ranking_softmax_loss ------------------------------------------------------

def _ranking_parts(logits, labels, where, weights):
    """The masked relevance y, the mask, the per-list losses, the softmax and the number
    of lists that count in optax's mean."""
    valid = np.ones(logits.shape, dtype=bool) if where is None else np.asarray(where, dtype=bool)
    y = np.where(valid, labels.astype(logits.dtype), 0.0)
    if weights is not None:
        y = y * weights
    lse, shift = masked_logsumexp(logits, -1, valid, keepdims=False)
    p = np.where(valid, np.exp(np.where(valid, logits, -np.inf) - shift), 0.0)
    total = p.sum(-1, keepdims=True)
    p = p / np.where(total > 0, total, 1.0)
    with np.errstate(invalid="ignore"):
        per_list = -np.where(valid, y * (logits - np.expand_dims(lse, -1)), 0.0).sum(-1)
    counted = valid.any(-1).sum() if where is not None else per_list.size
    return y, valid, per_list, p, max(int(counted), 1)


def ranking_softmax_loss(logits, labels, *, where=None, weights=None, reduction="none"):
    r"""optax's ``ranking_softmax_loss``: the softmax cross entropy of each list of scores
    against its relevance labels, along the last axis.

    .. math:: \ell = -\sum_{i \in W} w_i y_i \log\frac{e^{s_i}}{\sum_{j\in W} e^{s_j}}

    over the items :math:`W` that ``where`` keeps (all without it); ``weights`` multiply
    the labels. One value per list: the shape of ``logits`` without its last axis; a list
    that ``where`` empties has loss 0. optax's ``reduce_fn`` is ``reduction``:
    ``reduce_fn=None`` is ``"none"`` (the default here, where optax's default is
    ``jnp.mean``), ``jnp.sum`` is ``"sum"``, ``jnp.mean`` is ``"mean"``, which as in optax
    divides the sum by the number of lists that keep at least one item (all lists without
    ``where``), and is 0, not NaN, when none does. ``labels`` are non-negative relevance
    grades, floating or integer (optax casts them to the logits' dtype; lossparity rejects
    negative labels and weights, which optax would take).
    """
    _, _, per_list, _, counted = _ranking_parts(logits, labels, where, weights)
    return reduce(per_list, reduction, counted)


def ranking_softmax_loss_vjp(cotangent, logits, labels, *, where=None, weights=None, reduction="none"):
    r"""
    .. math:: \frac{\partial\ell}{\partial s_k} = [k\in W]\Bigl(p_k \sum_{i\in W} w_i y_i - w_k y_k\Bigr),
              \qquad p = \operatorname{softmax}_W(s)

    (0 for the items ``where`` drops; labels, ``where`` and ``weights`` get no gradient).
    """
    y, valid, per_list, p, counted = _ranking_parts(logits, labels, where, weights)
    g = np.broadcast_to(reduce_vjp(cotangent, reduction, per_list.size, counted), per_list.shape)
    d = np.expand_dims(g, -1) * (p * y.sum(-1, keepdims=True) - y)
    return (np.where(valid, d, 0.0),)


def check_ranking_softmax(args: dict) -> None:
    checks.reduction(args["reduction"])
    s, y = args["logits"], args["labels"]
    checks.floating(s)
    checks.ndim_in(s, range(1, 33), "[..., list_size], at least one dimension")
    checks.kind_in(y, ("float", "int"), "relevance labels")
    if y.kind == "float":
        checks.same_dtype(s, y)
    checks.same_shape(s, y)
    checks.nonnegative_array(y)
    _check_where(args["where"], s)
    w = args["weights"]
    if w is not None:
        checks.floating(w)
        checks.same_dtype(s, w)
        checks.shape_is(w, s.shape, "one weight per item of logits")
        checks.nonnegative_array(w)


def sample_ranking(rng: np.random.Generator, shape=(4, 5), integer_labels=False, nonfinite=False):
    """``logits`` ~ N(0, 1.5^2); ``labels`` graded relevance in {0, 1, 2, 3} (floating, or
    integer with ``integer_labels``). ``nonfinite``: ``classification.nonfinite_rows``."""
    labels = rng.integers(0, 4, size=shape)
    logits = 1.5 * rng.standard_normal(shape)
    if nonfinite:
        logits = classification.nonfinite_rows(logits)
    return logits, labels if integer_labels else labels.astype(np.float64)


def _ranking_where(rng, inputs):
    """About 3/4 of the items; list 1 (of a 2-D batch) keeps none (its loss is 0 and it
    leaves optax's mean), every other list at least one."""
    shape = inputs[0].shape
    keep = rng.random(shape) < 0.75
    keep[..., 0] |= ~keep.any(-1)
    if len(shape) >= 2 and shape[0] > 1:
        keep[1] = False
    return keep


ranking_where = Sampled("where: ~3/4 True; list 1 all False, the others at least one True", _ranking_where)
ranking_weights = Sampled("weights ~ U(0.2, 2), one per item", lambda rng, inputs: rng.uniform(0.2, 2.0,
                                                                                              inputs[0].shape))

register(LossSpec(
    name="ranking_softmax_loss", family="metric", forward=ranking_softmax_loss, vjp_fn=ranking_softmax_loss_vjp,
    inputs=("logits", "labels"), differentiable=("logits",), array_params=("where", "weights"),
    sampler=sample_ranking, check=check_ranking_softmax,
    cases=(Case("default"), Case("where, a list with no item", {"where": ranking_where}),
           Case("weights", {"weights": ranking_weights}),
           Case("where and weights", {"where": ranking_where, "weights": ranking_weights}),
           Case("integer labels", sample={"integer_labels": True}),
           Case("one list", sample={"shape": (6,)}),
           Case("3-D, lists along the last axis", sample={"shape": (2, 3, 4)})),
    straight_through_cases=(Case(classification.NONFINITE_LOGITS.name, sample={"shape": (6, 5), "nonfinite": True}),),
    bad_inputs=(
        BadInput("labels of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "labels"),
        BadInput("labels that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "labels"),
        BadInput("integer logits", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "logits"),
        BadInput("boolean labels", replace_input(1, lambda xs: xs[1] > 0), TypeError, "labels"),
        BadInput("labels of another float dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)),
                 TypeError, "labels"),
        BadInput("negative labels", replace_input(1, lambda xs: xs[1] - 1.0), ValueError, "labels"),
        BadInput("0-D logits", lambda xs, kw: ((xs[0][0, 0], xs[1][0, 0]), kw), ValueError, "logits"),
        BadInput("integer where", set_param("where", lambda xs: np.ones(xs[0].shape, dtype=np.int64)),
                 TypeError, "where"),
        BadInput("where of another shape", set_param("where", lambda xs: np.ones(xs[0].shape[-1:], dtype=bool)),
                 ValueError, "where"),
        BadInput("weights of another shape", set_param("weights", lambda xs: np.ones(xs[0].shape[-1:])),
                 ValueError, "weights"),
        BadInput("negative weights", set_param("weights", lambda xs: -np.ones(xs[0].shape)), ValueError,
                 "weights"),
    ),
    builtins={"optax": "optax.losses.ranking_softmax_loss",
              "torch": "torch.nn.functional.cross_entropy with probability targets (no where)"},
    differences=(
        Difference("optax", "optax.losses.ranking_softmax_loss",
                   "optax reduces with a callable reduce_fn (default jnp.mean, so the default call returns one "
                   "number); its masked mean divides by the lists that keep an item and returns 0 when none does",
                   "reduction='none' == reduce_fn=None (lossparity's default), 'mean' == reduce_fn=jnp.mean, "
                   "'sum' == reduce_fn=jnp.sum; optax's default call == ranking_softmax_loss(s, y, "
                   "reduction='mean')"),
        Difference("torch", "torch.nn.functional.cross_entropy",
                   "the same mathematics as cross entropy with class-probability targets, but over the last axis "
                   "(torch's classes are axis 1), labels that need not sum to 1 multiplied by weights, and a "
                   "where mask torch lacks (a -inf logit times a 0 target is NaN in torch)",
                   "ranking_softmax_loss(s, y, weights=w, reduction=r) == F.cross_entropy(s.movedim(-1, 1), "
                   "(y * w).movedim(-1, 1), reduction=r) for 2-D or more (s[None], (y * w)[None] and [0] for one "
                   "list); no mapping for where"),
    ),
))


# -- Keras's circle ---------------------------------------------------------------------

def _circle_parts(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin):
    """Keras's pairwise terms: the similarity S, the distance D = max(1 - S, 0), the masks,
    the logits a (positives) and b (negatives), the two log-sum-exps and their validity."""
    ref = y_pred if ref_embeddings is None else ref_embeddings
    ref_y = y_true if ref_labels is None else ref_labels
    S = y_pred @ ref.T
    D = np.maximum(1.0 - S, 0.0)
    pos = y_true[:, None] == ref_y[None, :]
    neg = ~pos
    if remove_diagonal:
        pos = pos & ~np.eye(len(y_true), len(ref_y), dtype=bool)
    wp = np.maximum((margin + D) * pos, 0.0)
    wn = np.maximum((1.0 + margin - D) * neg, 0.0)
    a = -gamma * wp * (margin - D)
    b = gamma * wn * (1.0 - margin - D)
    lse_a, shift_a = masked_logsumexp(a, 1, pos, keepdims=False)
    lse_b, shift_b = masked_logsumexp(b, 1, neg, keepdims=False)
    valid = pos.any(1) & neg.any(1)
    z = np.where(valid, lse_a + lse_b, -np.inf)
    return S, D, pos, neg, wp, wn, a, b, lse_a, lse_b, valid, z


def circle(y_true, y_pred, ref_labels=None, ref_embeddings=None, remove_diagonal=True, gamma=80, margin=0.4,
           reduction="none"):
    r"""Keras's ``circle``: the Circle loss (Sun et al., 2020) over pairwise cosine distances,
    one value per row of ``y_pred``, in Keras's argument order.

    With reference embeddings :math:`R` (``ref_embeddings``, default ``y_pred``) and labels
    (``ref_labels``, default ``y_true``), :math:`D_{ij} = \max(1 - y_i\cdot R_j, 0)`, the
    positives :math:`P_i = \{j: \text{label}_j = y_i\}` (without :math:`j = i` when
    ``remove_diagonal``; the index, even with other references) and negatives
    :math:`N_i = \{j: \text{label}_j \ne y_i\}`:

    .. math:: a_{ij} = -\gamma\max(m + D_{ij}, 0)\,(m - D_{ij}),\qquad
              b_{ij} = \gamma\max(1 + m - D_{ij}, 0)\,(1 - m - D_{ij})

    .. math:: \ell_i = \operatorname{softplus}\Bigl(\log\sum_{j\in P_i} e^{a_{ij}} +
              \log\sum_{j\in N_i} e^{b_{ij}}\Bigr)

    which is 0 for a row without positives or without negatives. Keras documents
    L2-normalized embeddings but does **not** normalize them: :math:`y_i\cdot R_j` is the
    plain dot product, as here; the clip :math:`\max(1 - S, 0)` is Keras's. ``y_true`` and
    ``ref_labels`` are integer labels :math:`(N)`, :math:`(M)`; ``y_pred`` is :math:`(N, D)`,
    ``ref_embeddings`` :math:`(M, D)` and gets a gradient when given. ``reduction``
    (default ``"none"``): ``mean`` is the plain mean over rows (Keras's ``Circle`` class
    divides by the rows with a positive loss instead).

    Precision: :math:`\gamma` multiplies the rounding of the similarities into the
    softmax weights, so at Keras's :math:`\gamma = 80` a float32 gradient is good to
    about :math:`5\cdot 10^{-6}` relative, in any implementation (``CIRCLE_FLOAT32``).
    """
    z = _circle_parts(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin)[-1]
    return reduce(logaddexp(0.0, z), reduction)


def circle_vjp(cotangent, y_true, y_pred, ref_labels=None, ref_embeddings=None, remove_diagonal=True, gamma=80,
               margin=0.4, reduction="none"):
    r"""With :math:`\sigma_i = \operatorname{sigmoid}(z_i)` (0 for a row without positives or
    negatives), the softmaxes :math:`\alpha_{ij} = e^{a_{ij} - A_i}` over :math:`P_i` and
    :math:`\beta_{ij} = e^{b_{ij} - B_i}` over :math:`N_i`, and :math:`h(x)` the slope of
    :math:`\max(x, 0)` (1, 0, and 1/2 at a tie, as Keras's ``ops.maximum``):

    .. math:: \frac{\partial a}{\partial D} = \gamma\bigl(\max(m + D, 0) - h(m + D)(m - D)\bigr),\qquad
              \frac{\partial b}{\partial D} = -\gamma\bigl(\max(1 + m - D, 0) + h(1 + m - D)(1 - m - D)\bigr)

    .. math:: G_{ij} = \frac{\partial\ell_i}{\partial S_{ij}} = -g_i\,\sigma_i\,h(1 - S_{ij})
              \Bigl(\alpha_{ij}\frac{\partial a_{ij}}{\partial D} + \beta_{ij}\frac{\partial b_{ij}}{\partial D}\Bigr)

    so :math:`\bar y = G R` and :math:`\bar R = G^\top y` (both added to :math:`\bar y` when
    :math:`R` is ``y_pred``). Returns the gradient of ``y_pred``, then of ``ref_embeddings``
    when it is given.
    """
    S, D, pos, neg, wp, wn, a, b, lse_a, lse_b, valid, z = _circle_parts(
        y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin)
    g = np.broadcast_to(reduce_vjp(cotangent, reduction, z.size), z.shape)
    sig = np.where(valid, 1.0 / (1.0 + np.exp(-np.where(valid, z, 0.0))), 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        alpha = np.where(pos, np.exp(a - np.where(np.isfinite(lse_a), lse_a, 0.0)[:, None]), 0.0)
        beta = np.where(neg, np.exp(b - np.where(np.isfinite(lse_b), lse_b, 0.0)[:, None]), 0.0)
    da = gamma * (wp - _slope((margin + D) * pos) * pos * (margin - D))
    db = -gamma * (wn + _slope((1.0 + margin - D) * neg) * neg * (1.0 - margin - D))
    G = -(g * sig)[:, None] * _slope(1.0 - S) * (alpha * da + beta * db)
    if ref_embeddings is None:
        return (G @ y_pred + G.T @ y_pred,)
    return G @ ref_embeddings, G.T @ y_pred


CIRCLE_FLOAT32 = (
    "float32 cannot resolve gamma = 80: the logits gamma (D^2 - m^2) carry an absolute rounding error of about "
    "2 gamma |D| times float32's unit roundoff from the similarities alone, and that is the relative error of the "
    "softmax weights and so of the gradient: ~5e-6 at gamma = 80, beyond torch.testing's float32 rtol of 1.3e-6 "
    "for any float32 implementation (Keras's own float32 circle misses the float64 gradient by up to 2.4 times "
    "the tolerance on the default case). The gamma = 80 and 32 cases run in float64; gamma = 4 runs in both "
    "(worst measured on these draws: 0.29 of the float32 tolerance at gamma = 4; 0.88 at gamma = 8 and 1.27 at "
    "gamma = 16 on the same cases)")


def check_circle(args: dict) -> None:
    checks.reduction(args["reduction"])
    y, e = args["y_true"], args["y_pred"]
    checks.floating(e)
    checks.ndim_in(e, (2,), "(batch, embedding dimension)")
    checks.integer(y, "integer class labels")
    checks.shape_is(y, e.shape[:1], "one label per row of y_pred")
    ref_labels, ref = args["ref_labels"], args["ref_embeddings"]
    rows = e.shape[0]
    if ref is not None:
        checks.floating(ref)
        checks.same_dtype(e, ref)
        checks.ndim_in(ref, (2,), "(M, embedding dimension)")
        if ref.shape[1] != e.shape[1]:
            raise ValueError(f"ref_embeddings must have y_pred's embedding dimension {e.shape[1]}; got shape "
                             f"{ref.shape}")
        rows = ref.shape[0]
    if ref_labels is not None:
        checks.integer(ref_labels, "integer class labels")
        checks.shape_is(ref_labels, (rows,), "one label per reference embedding (ref_embeddings, or y_pred "
                                             "when it is None)")
    elif ref is not None and rows != e.shape[0]:
        raise ValueError(f"ref_embeddings has {rows} rows but ref_labels is None, so y_true ({e.shape[0]} labels) "
                         "labels them: give ref_labels")
    checks.boolean("remove_diagonal", args["remove_diagonal"])
    _positive("gamma", args["gamma"], " (the scale of the similarities)")
    if args["gamma"] in (math.inf, -math.inf):  # the logsumexps would be inf - inf
        raise ValueError(f"gamma must be finite; got {args['gamma']!r}")
    checks.finite_number("margin", args["margin"])


def _clear_rows(rng, count, d, others, margin, norm):
    """``count`` rows of norm ``norm`` (a number or a (low, high) range) whose dot product
    with every row of ``others`` and every earlier new row stays ``GAP`` below 1 and
    ``GAP`` away from -margin (the kinks of max(1 - S, 0) and max(1 + m - D, 0))."""
    rows = []
    for _ in range(count):
        for _ in range(10_000):
            v = rng.standard_normal(d)
            v *= (rng.uniform(*norm) if isinstance(norm, tuple) else norm) / np.linalg.norm(v)
            s = np.array([v @ o for o in list(others) + rows])
            if np.all(s < 1 - GAP) and np.all(np.abs(s + margin) > GAP):
                rows.append(v)
                break
        else:
            raise RuntimeError("sample_circle found no embedding clear of the kinks")
    return np.array(rows).reshape(count, d)  # (0, d) for an empty batch


def sample_circle(rng: np.random.Generator, n=6, d=5, classes=3, margin=0.4, norm=1.0, singleton=False):
    """Labels cycling through ``classes`` classes (every class twice or more), shuffled;
    ``singleton`` gives the last row a class of its own (no positive: loss 0). ``y_pred``
    rows of norm ``norm`` (Keras expects 1), every pairwise dot product clear of the kinks
    (see :func:`_clear_rows`); a case whose self-pairs count (``remove_diagonal=False``,
    or ``ref_labels`` that can differ on the diagonal) draws norms in (0.85, 0.95), where
    the self-distance :math:`1 - |y_i|^2` is clear of the kink at 0 that unit rows sit on."""
    labels = np.arange(n) % classes
    if singleton:
        labels[-1] = classes
    labels = rng.permutation(labels).astype(np.int64)
    return labels, _clear_rows(rng, n, d, [], margin, norm)


def _circle_ref_embeddings(rows, margin):
    def draw(rng, inputs):
        return _clear_rows(rng, rows or len(inputs[0]), inputs[1].shape[1], inputs[1], margin, 1.0)
    return Sampled(f"ref_embeddings: {rows or 'N'} unit rows clear of the kinks against y_pred", draw)


def _circle_ref_labels(rows, classes=3):
    def draw(rng, inputs):
        return rng.permutation(np.arange(rows or len(inputs[0])) % classes).astype(np.int64)
    return Sampled(f"ref_labels: {rows or 'N'} labels cycling through {classes} classes", draw)


register(LossSpec(
    name="circle", family="metric", forward=circle, vjp_fn=circle_vjp, inputs=("y_true", "y_pred"),
    differentiable=("y_pred",), array_params=("ref_labels", "ref_embeddings"),
    differentiable_params=("ref_embeddings",), sampler=sample_circle, check=check_circle,
    # Keras's gamma = 80 (and 32) are float64 cases: see CIRCLE_FLOAT32. The options' cases take
    # gamma = 4 so that they run in float32 too.
    cases=(Case("default", dtypes=("float64",)),
           Case("gamma=32, margin=0.25", {"gamma": 32.0, "margin": 0.25}, sample={"margin": 0.25},
                dtypes=("float64",)),
           Case("gamma=4", {"gamma": 4.0}),
           Case("remove_diagonal=False, gamma=4", {"remove_diagonal": False, "gamma": 4.0},
                sample={"norm": (0.85, 0.95)}),
           Case("ref_labels and ref_embeddings (M=5), gamma=4",
                {"ref_labels": _circle_ref_labels(5), "ref_embeddings": _circle_ref_embeddings(5, 0.4),
                 "gamma": 4.0}),
           Case("ref_embeddings labelled by y_true, gamma=4",
                {"ref_embeddings": _circle_ref_embeddings(None, 0.4), "gamma": 4.0}),
           Case("ref_labels for y_pred, gamma=4", {"ref_labels": _circle_ref_labels(None), "gamma": 4.0},
                sample={"norm": (0.85, 0.95)}),
           Case("a class of one (no positive), gamma=4", {"gamma": 4.0}, sample={"singleton": True, "n": 7})),
    bad_inputs=(
        BadInput("y_true of another length", replace_input(0, lambda xs: xs[0][:-1]), ValueError, "y_true"),
        BadInput("float y_true", replace_input(0, lambda xs: xs[0].astype(np.float64)), TypeError, "y_true"),
        BadInput("integer y_pred", replace_input(1, lambda xs: xs[1].astype(np.int64)), TypeError, "y_pred"),
        BadInput("3-D y_pred", replace_input(1, lambda xs: xs[1][:, None]), ValueError, "y_pred"),
        BadInput("ref_embeddings of another dimension", set_param("ref_embeddings", lambda xs: xs[1][:, :-1]),
                 ValueError, "ref_embeddings"),
        BadInput("ref_embeddings of another dtype",
                 set_param("ref_embeddings", lambda xs: xs[1].astype(np.float32)), TypeError, "ref_embeddings"),
        BadInput("ref_embeddings of other rows without ref_labels", set_param("ref_embeddings", lambda xs: xs[1][:3]),
                 ValueError, "ref_labels"),
        BadInput("ref_labels of another length", set_param("ref_labels", lambda xs: xs[0][:-1]), ValueError,
                 "ref_labels"),
        BadInput("float ref_labels", set_param("ref_labels", lambda xs: xs[0].astype(np.float64)), TypeError,
                 "ref_labels"),
        BadInput("zero gamma", set_param("gamma", lambda xs: 0.0), ValueError, "gamma"),
        BadInput("infinite gamma", set_param("gamma", lambda xs: float("inf")), ValueError, "gamma"),
        BadInput("infinite margin", set_param("margin", lambda xs: float("inf")), ValueError, "margin"),
        BadInput("non-boolean remove_diagonal", set_param("remove_diagonal", lambda xs: 1), TypeError,
                 "remove_diagonal"),
    ),
    builtins={"keras": "keras.losses.circle (JAX backend)"},
    differences=(
        Difference("keras", "keras.losses.circle",
                   "Keras documents y_pred and ref_embeddings as L2-normalized but does not normalize them: "
                   "the similarity is the plain dot product, clipped by max(1 - S, 0)",
                   "for raw embeddings x, the Circle loss of the directions is circle(y, x / |x|) (== "
                   "keras.losses.circle(y, x / |x|)); circle(y, x) == keras.losses.circle(y, x) for any x"),
        Difference("keras", "keras.losses.Circle",
                   "the Circle class marks the rows with loss > 0 as its mask, so its default reduction "
                   "'sum_over_batch_size' divides the sum by the number of rows with a positive loss (0 when "
                   "none), not by N; its computations run in floatx (float32 by default)",
                   "keras.losses.Circle(gamma=g, margin=m)(y, x) == circle(y, x, gamma=g, margin=m, "
                   "reduction='sum') / count(circle(y, x, gamma=g, margin=m) > 0); reduction='sum' agrees with "
                   "Circle(reduction='sum'); lossparity's 'mean' divides by N"),
    ),
))
