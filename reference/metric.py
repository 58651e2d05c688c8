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
"""

from __future__ import annotations

import math

import numpy as np

from . import checks
from .reductions import reduce, reduce_vjp
from .spec import BadInput, Case, Difference, LossSpec, PerFramework, register, replace_input, set_param

EPSILON = 1e-12  # ATen's EPSILON, added to the squared norms in cosine_embedding_loss
GAP = 0.1        # samplers keep every kink argument at least this far from its kink


# -- shared checks ---------------------------------------------------------------------

def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or math.isnan(value):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    return float(value)


def _positive(name: str, value, what: str = "") -> None:
    if not _number(name, value) > 0:
        raise ValueError(f"{name} must be greater than 0{what}; got {value!r}")


def _plus_minus_one(a: checks.ArrayInfo) -> None:
    """Every element is 1 or -1: the elements other than 1 must all be -1."""
    if a.kind not in ("int", "float"):
        raise TypeError(f"{a.name} must hold the labels 1 and -1 as an integer or floating array; got dtype {a.dtype}")
    b = a.bounds(ignore=1)
    if b is not None and b != (-1, -1):
        bad = b[0] if b[0] != -1 else b[1]
        raise ValueError(f"{a.name} must hold only 1 or -1; found {bad}")


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
    if eps < 0:
        raise ValueError(f"eps must be non-negative; got {eps!r}")


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

def _cosine_case(name, **params):
    sample = {k: params.pop(k) for k in ("batched", "zero_pair") if k in params}
    return Case(name, params, sample={**sample, "margin": params.get("margin", 0.0)})


register(LossSpec(
    name="cosine_embedding_loss", family="metric", forward=cosine_embedding_loss,
    vjp_fn=cosine_embedding_loss_vjp, inputs=("input1", "input2", "target"), differentiable=("input1", "input2"),
    sampler=sample_cosine, check=check_cosine_embedding,
    cases=(_cosine_case("default"), _cosine_case("margin=0.5", margin=0.5),
           _cosine_case("margin=-0.5", margin=-0.5), _cosine_case("unbatched", batched=False),
           _cosine_case("zero vectors", zero_pair=True)),
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
                   "x2, x1) for vectors well away from 0 (Keras is not installed here: untested)"),
    ),
))


def _triplet_case(name, zero=None, batched=True, **params):
    sample = {"zero": zero, "batched": batched}
    for key in ("margin", "p", "eps", "swap"):
        if key in params:
            sample[key] = params[key]
    if "distance_function" in params:
        sample["distance"] = _numpy_distance(params["distance_function"])
    return Case(name, params, sample=sample)


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
    bad_inputs=TRIPLET_BAD_INPUTS + (
        BadInput("3-D anchor, positive, negative", lambda xs, kw: (tuple(x[None] for x in xs), kw), ValueError,
                 "anchor"),
        BadInput("zero p", set_param("p", lambda xs: 0), ValueError, "p"),
        BadInput("negative p", set_param("p", lambda xs: -1.0), ValueError, "p"),
        BadInput("negative eps", set_param("eps", lambda xs: -1e-6), ValueError, "eps"),
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
           _triplet_case("cosine distance, zero vectors", zero="all", distance_function=COSINE_DISTANCE)),
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
