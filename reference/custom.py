"""Losses from the seed articles that no library ships: q_error, binomial_deviance,
contrastive_loss, gaussian_kernel_loss, batch_sum_squared_error.

Each docstring gives the formula, the source, and where the article's code departs
from it. None of these is a torch.nn.functional or optax loss, so the matrix has no
outside oracle for them, with one exception: ``batch_sum_squared_error`` is
``mse_loss(reduction="sum") / N``, and that mapping is registered as its built-in.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

from . import articles, checks
from .numerics import logaddexp
from .reductions import reduce, reduce_vjp
from .spec import BadInput, Case, Difference, LossSpec, XFail, register, replace_input, set_param


def _as_int(x):
    return x.astype(np.int64)


# == q_error =========================================================================

def q_error(input, target, log_space=True, reduction="mean"):
    r"""The q-error of cardinality estimation, minus one.

    .. math:: \ell_i = \max\!\left(\frac{p_i}{t_i}, \frac{t_i}{p_i}\right) - 1

    the factor by which the estimate ``p`` misses the true cardinality ``t`` (Moerkotte,
    Neumann, Steidl, "Preventing Bad Plans by Bounding the Impact of Cardinality
    Estimation Errors", VLDB 2009; the seed article trains a cardinality estimator on it).
    Source of the training code: MSCN's ``qerror_loss`` (Kipf et al., "Learned Cardinalities",
    CIDR 2019; github.com/andreaskipf/learnedcardinalities, ``train.py``), which maps normalized
    log-cardinalities back, exponentiates them and takes :math:`\max(p/t, t/p)` row by row;
    its value is ``q_error + 1`` (claims in ``reference/articles.py``).

    ``log_space=True`` (the default): ``input`` and ``target`` are log-cardinalities,
    :math:`p = e^{x}`, :math:`t = e^{y}`, and the loss is computed without ever forming
    the exponentials:

    .. math:: \ell_i = e^{|x_i - y_i|} - 1 = \operatorname{expm1}(|x_i - y_i|)

    The article's form, ``max(exp(x) / exp(y), exp(y) / exp(x)) - 1``, overflows as soon
    as :math:`x > 709.78` in float64 (88.7 in float32) and gives ``inf / inf = nan`` even
    when the two estimates agree to a factor of two; this one only overflows when the
    q-error itself does.

    ``log_space=False``: ``input`` and ``target`` are positive cardinalities, and
    :math:`\ell_i = |p_i - t_i| / \min(p_i, t_i)` (the same number, without the
    cancellation of ``ratio - 1``).

    Not differentiable where ``input == target`` (a kink, as ``|d|``); the gradient there
    is taken as 0, as the frameworks' ``abs`` does.
    """
    if log_space:
        elementwise = np.expm1(np.abs(input - target))
    else:
        elementwise = np.abs(input - target) / np.minimum(input, target)
    return reduce(elementwise, reduction)


def q_error_vjp(cotangent, input, target, log_space=True, reduction="mean"):
    r"""
    ``log_space=True``, :math:`d = x - y`:

    .. math:: \frac{\partial \ell}{\partial x} = \operatorname{sign}(d)\, e^{|d|}
              = -\frac{\partial \ell}{\partial y}

    ``log_space=False``: where :math:`p > t`, :math:`\ell = p/t - 1`,
    :math:`\partial_p \ell = 1/t`, :math:`\partial_t \ell = -p/t^2`; where :math:`p < t`,
    :math:`\ell = t/p - 1`, :math:`\partial_p \ell = -t/p^2`, :math:`\partial_t \ell = 1/p`.
    """
    g = reduce_vjp(cotangent, reduction, input.size)
    if log_space:
        d = input - target
        d_input = np.sign(d) * np.exp(np.abs(d)) * g
        return d_input, -d_input
    over = input > target
    under = input < target
    d_input = np.where(over, 1.0 / target, np.where(under, -target / input ** 2, 0.0)) * g
    d_target = np.where(over, -input / target ** 2, np.where(under, 1.0 / input, 0.0)) * g
    return d_input, d_target


def article_q_error(input, target):
    """The seed article's form in log space, ``max(exp(x)/exp(y), exp(y)/exp(x)) - 1``:
    kept only to show where it breaks (the ``overflow`` case's sampler asserts that it
    is not finite there while ``q_error`` is)."""
    with np.errstate(over="ignore", invalid="ignore"):
        p, t = np.exp(input), np.exp(target)
        return np.maximum(p / t, t / p) - 1.0


def sample_q_error(rng, shape=(5, 3), log_space=True, overflow=False):
    """|log p - log t| in [0.1, 2] (clear of the kink at 0). Log-cardinalities in [0, 8];
    with ``overflow``, in [712, 730], so that exp overflows float64 (and float32) for
    both;
    positive cardinalities (``log_space=False``) are their exponentials."""
    shape = tuple(shape)
    d = rng.uniform(0.1, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    x = rng.uniform(712.0, 730.0, size=shape) if overflow else rng.uniform(0.0, 8.0, size=shape)
    y = x - d
    if overflow:
        # The case exists to show the naive form failing where q_error does not.
        assert not np.isfinite(article_q_error(x, y)).any(), "the overflow case must overflow the naive form"
        assert np.isfinite(q_error(x, y, reduction="none")).all()
    if not log_space:
        return np.exp(x), np.exp(y)
    return x, y


def check_q_error(args):
    checks.reduction(args["reduction"])
    checks.boolean("log_space", args["log_space"])
    x, y = args["input"], args["target"]
    checks.floating(x)
    checks.floating(y)
    checks.same_shape(x, y)
    checks.same_dtype(x, y)
    if not args["log_space"]:
        checks.positive_array(x, "positive cardinalities (log_space=False)")
        checks.positive_array(y, "positive cardinalities (log_space=False)")


register(LossSpec(
    name="q_error", family="custom", forward=q_error, vjp_fn=q_error_vjp,
    claims=articles.claims("q_error"),
    inputs=("input", "target"), differentiable=("input", "target"),
    sampler=sample_q_error, check=check_q_error,
    cases=(
        Case("default"),
        Case("log_space=False", {"log_space": False}, sample={"log_space": False}),
        Case("overflow", sample={"overflow": True}),
    ),
    bad_inputs=(
        BadInput("target of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "target"),
        BadInput("target that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "target"),
        BadInput("integer input", replace_input(0, lambda xs: _as_int(xs[0])), TypeError, "input"),
        BadInput("integer target", replace_input(1, lambda xs: _as_int(xs[1])), TypeError, "target"),
        BadInput("zero cardinality with log_space=False",
                 lambda xs, kw: ((np.zeros_like(xs[0]), np.exp(xs[1])), {**kw, "log_space": False}),
                 ValueError, "input"),
        BadInput("negative cardinality with log_space=False",
                 lambda xs, kw: ((np.exp(xs[0]), -np.exp(xs[1])), {**kw, "log_space": False}),
                 ValueError, "target"),
        BadInput("log_space that is not a bool", set_param("log_space", lambda xs: "yes"), TypeError, "log_space"),
    ),
    differences=(
        Difference("article", "the seed article's q-error (log-cardinality inputs)",
                   "divides exponentials, max(exp(x) / exp(y), exp(y) / exp(x)) - 1, which is inf/inf = nan "
                   "once x or y exceeds log(float max) (709.78 in float64) even when x - y is small",
                   "equal to q_error(x, y, log_space=True, reduction='none') wherever exp(x) and exp(y) are "
                   "finite; the overflow case shows the article's form failing where q_error stays finite"),
    ),
))


# == binomial_deviance ===============================================================

def _cosine_matrix(x):
    r = np.sqrt((x * x).sum(axis=1))
    xn = x / r[:, None]
    return xn @ xn.T, xn, r


def binomial_deviance(x, m, w, alpha=2.0, beta=0.5, reduction="sum"):
    r"""Binomial deviance loss of deep metric learning (Yi, Lei, Liao, Li, "Deep Metric
    Learning for Practical Person Re-Identification", ICPR 2014).

    ``x`` holds N embeddings as rows (N, D); :math:`S_{ij} = \cos(x_i, x_j)` is their
    cosine-similarity matrix, ``m`` the pair labels (:math:`+1` same identity, :math:`-1`
    different identities, :math:`0` ignored) and ``w`` the pair weights, both (N, N):

    .. math:: \ell_{ij} = W_{ij}\,\log\!\left(1 + e^{-\alpha (S_{ij} - \beta) M_{ij}}\right)
              = W_{ij}\,\operatorname{softplus}\!\big(-\alpha (S_{ij} - \beta) M_{ij}\big)

    computed as a stable softplus. Reductions: ``none`` gives the (N, N) matrix
    :math:`\ell`; ``sum`` (the default) sums over every pair, as the paper does;
    ``mean`` is that sum divided by :math:`N^2`, the mean of the ``none`` matrix (every
    entry counts, as ``mean`` does for every loss here).

    A pair with :math:`M_{ij} = 0` gets no gradient; its value is the constant
    :math:`W_{ij} \log 2` of the formula, so give it :math:`W_{ij} = 0` as well to drop it
    from the value too (the paper balances positive and negative pairs through ``W``).

    The gradient flows to ``x`` through the cosine similarity (``m`` and ``w`` are
    labels and weights, not differentiated). The seed article's code wraps the
    similarity matrix again, ``Variable(s, requires_grad=True)``, which makes it a new
    leaf: ``loss.backward()`` then stops at ``S`` and never reaches ``x`` (nor the network
    that produced it). A zero row of ``x`` has no direction; its similarities are NaN.

    Source: https://pdf.co/blog/deep-learning-pytorch-custom-loss-function ("Implementing
    Binomial Deviance Loss"); its claims are proven in ``reference/articles.py``.
    """
    s, _, _ = _cosine_matrix(x)
    z = -alpha * (s - beta) * m
    return reduce(w * logaddexp(0.0, z), reduction)


def binomial_deviance_vjp(cotangent, x, m, w, alpha=2.0, beta=0.5, reduction="sum"):
    r"""
    With :math:`z = -\alpha (S - \beta) \circ M` and :math:`\hat x_i = x_i / \|x_i\|`:

    .. math:: G = \frac{\partial L}{\partial S} = \bar\ell \circ W \circ \sigma(z) \circ (-\alpha M),
              \qquad \frac{\partial L}{\partial \hat X} = (G + G^\top)\,\hat X,

    .. math:: \frac{\partial L}{\partial x_i} = \frac{1}{\|x_i\|}\left(I - \hat x_i \hat x_i^\top\right)
              \frac{\partial L}{\partial \hat x_i}

    (:math:`\bar\ell` is the cotangent of the per-pair losses; the projection removes the
    radial part, so the constant diagonal :math:`S_{ii} = 1` gets no gradient).
    """
    s, xn, r = _cosine_matrix(x)
    z = -alpha * (s - beta) * m
    g = reduce_vjp(cotangent, reduction, s.size)
    grad_s = g * w * expit(z) * (-alpha * m)
    grad_xn = (grad_s + grad_s.T) @ xn
    d_x = (grad_xn - xn * (xn * grad_xn).sum(axis=1, keepdims=True)) / r[:, None]
    return (d_x,)


def sample_binomial_deviance(rng, n=5, d=3, ignore=False, paper_weights=False):
    """Rows ~ N(0, 1) (never zero in practice); identities in {0, 1, 2}; M = +1 for the
    same identity, -1 otherwise. ``ignore`` sets M = 0 on the diagonal and on a few
    random symmetric pairs (half of them with W = 0). W ~ U(0.2, 2) or, with
    ``paper_weights``, 1/n+ on positive and 1/n- on negative pairs."""
    x = rng.standard_normal((n, d))
    ids = rng.integers(0, 3, size=n)
    m = np.where(ids[:, None] == ids[None, :], 1.0, -1.0)
    w = rng.uniform(0.2, 2.0, size=(n, n))
    if ignore:
        off = np.triu(rng.random((n, n)) < 0.3, 1)
        off = off | off.T
        np.fill_diagonal(off, True)
        m = np.where(off, 0.0, m)
        w = np.where(off & (rng.random((n, n)) < 0.5), 0.0, w)
    if paper_weights:
        w = np.where(m > 0, 1.0 / max((m > 0).sum(), 1), np.where(m < 0, 1.0 / max((m < 0).sum(), 1), 0.0))
    return x, m, w


def check_binomial_deviance(args):
    checks.reduction(args["reduction"])
    x, m, w = args["x"], args["m"], args["w"]
    for a in (x, m, w):
        checks.floating(a)
    checks.ndim_in(x, (2,), "a 2-D array of N embeddings as rows (N, D)")
    n = x.shape[0]
    checks.shape_is(m, (n, n), "one label per pair of rows of x")
    checks.shape_is(w, (n, n), "one weight per pair of rows of x")
    checks.same_dtype(x, m)
    checks.same_dtype(x, w)
    checks.values_in(m, (-1.0, 0.0, 1.0), "pair labels (+1 same identity, -1 different, 0 ignored)")
    checks.nonnegative_array(w)
    checks.nonnegative("alpha", args["alpha"])
    checks.finite_number("beta", args["beta"])


def _replace_m(value):
    def make(xs):
        m = xs[1].copy()
        m[0, 1] = value
        return m
    return replace_input(1, make)


register(LossSpec(
    name="binomial_deviance", family="custom", forward=binomial_deviance, vjp_fn=binomial_deviance_vjp,
    claims=articles.claims("binomial_deviance"),
    inputs=("x", "m", "w"), differentiable=("x",),
    sampler=sample_binomial_deviance, check=check_binomial_deviance,
    cases=(
        Case("default"),
        Case("alpha=1, beta=0", {"alpha": 1.0, "beta": 0.0}),
        Case("alpha=10, beta=0.8", {"alpha": 10.0, "beta": 0.8}),
        Case("ignored pairs", sample={"ignore": True}),
        Case("paper weights", sample={"paper_weights": True}),
    ),
    bad_inputs=(
        BadInput("x that is 1-D", replace_input(0, lambda xs: xs[0][0]), ValueError, "x"),
        BadInput("m of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "m"),
        BadInput("w of another shape", replace_input(2, lambda xs: xs[2][:-1]), ValueError, "w"),
        BadInput("w that would broadcast", replace_input(2, lambda xs: xs[2][:1]), ValueError, "w"),
        BadInput("integer x", replace_input(0, lambda xs: _as_int(xs[0] * 10)), TypeError, "x"),
        BadInput("integer m", replace_input(1, lambda xs: _as_int(xs[1])), TypeError, "m"),
        BadInput("m of another dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)), TypeError, "m"),
        BadInput("label 2 in m", _replace_m(2.0), ValueError, "m"),
        BadInput("label 0.5 in m", _replace_m(0.5), ValueError, "m"),
        BadInput("label -0.5 in m", _replace_m(-0.5), ValueError, "m"),
        BadInput("NaN label in m", _replace_m(np.nan), ValueError, "m"),
        BadInput("negative weight", replace_input(2, lambda xs: -xs[2]), ValueError, "w"),
        BadInput("negative alpha", set_param("alpha", lambda xs: -2.0), ValueError, "alpha"),
        BadInput("NaN beta", set_param("beta", lambda xs: float("nan")), ValueError, "beta"),
        BadInput("beta that is not a number", set_param("beta", lambda xs: "0.5"), TypeError, "beta"),
    ),
))


# == contrastive_loss ================================================================

def _safe_distance(d2, xp=np):
    """sqrt(d2) with the derivative taken as 0 where d2 == 0 (the double-where trick)."""
    positive = d2 > 0
    return xp.where(positive, xp.sqrt(xp.where(positive, d2, 1.0)), 0.0)


def contrastive_loss(x1, x2, y, margin=1.0, reduction="mean"):
    r"""Contrastive loss (Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an
    Invariant Mapping", CVPR 2006, eq. 4), with the paper's label convention:
    **y = 0 for a similar pair, y = 1 for a dissimilar pair**.

    .. math:: \ell_i = (1 - y_i)\,\tfrac12 D_i^2 + y_i\,\tfrac12 \max(0, m - D_i)^2,
              \qquad D_i = \|x_{1,i} - x_{2,i}\|_2

    ``x1``, ``x2`` are (N, D), ``y`` is (N,) and floating with values in {0, 1}. (Many
    codebases use the opposite convention, 1 for similar; flip ``y`` to ``1 - y``.)
    ``mean`` averages over the N pairs.

    The seed code (the ``ContrastiveLoss`` of the notebook of "One Shot Learning with Siamese
    Networks in PyTorch", github.com/harveyslash/Facial-Similarity-with-Siamese-Networks-in-Pytorch)
    keeps this label convention but drops the paper's 1/2 (it is twice this loss, margin 2) and
    measures ``F.pairwise_distance``, which adds 1e-6 to the difference; its dataset yields
    (N, 1) labels against (N,) distances, which broadcast to an (N, N) mean (``reference/articles.py``).

    At zero distance (``x1 == x2``) the similar term is :math:`\tfrac12 D^2`, computed as
    the sum of squares, whose gradient is 0. The dissimilar term
    :math:`\tfrac12 (m - D)^2` has no gradient at :math:`D = 0`: the direction
    :math:`(x_1 - x_2)/D` is undefined. Its gradient there is taken as **0**, as
    ``torch.linalg.vector_norm``'s backward does at the origin (0 is also the smallest
    element of the Clarke subdifferential, the ball of radius m). All five
    implementations get this with a safe square root,
    ``D = where(D^2 > 0, sqrt(where(D^2 > 0, D^2, 1)), 0)``, which keeps
    ``0 * inf = nan`` out of the gradients of both terms. (``F.pairwise_distance`` adds
    ``eps = 1e-6`` to the difference instead, so it points every zero-distance gradient
    along the diagonal direction (1, ..., 1).)
    """
    diff = x1 - x2
    d2 = (diff * diff).sum(axis=1)
    dist = _safe_distance(d2)
    hinge = np.maximum(0.0, margin - dist)
    return reduce(0.5 * (1.0 - y) * d2 + 0.5 * y * hinge * hinge, reduction)


def contrastive_loss_vjp(cotangent, x1, x2, y, margin=1.0, reduction="mean"):
    r"""
    .. math:: \frac{\partial \ell_i}{\partial x_{1,i}} = (1 - y_i)(x_{1,i} - x_{2,i})
              - y_i \max(0, m - D_i)\,\frac{x_{1,i} - x_{2,i}}{D_i}
              = -\frac{\partial \ell_i}{\partial x_{2,i}}

    with the second term taken as 0 where :math:`D_i = 0`.
    """
    diff = x1 - x2
    d2 = (diff * diff).sum(axis=1)
    dist = _safe_distance(d2)
    hinge = np.maximum(0.0, margin - dist)
    inv = np.where(d2 > 0, 1.0 / np.where(d2 > 0, dist, 1.0), 0.0)
    g = reduce_vjp(cotangent, reduction, y.size)
    coef = g * ((1.0 - y) - y * hinge * inv)
    d_x1 = coef[..., None] * diff
    return d_x1, -d_x1


def sample_contrastive(rng, n=6, d=3, margin=1.0, identical=False):
    """x1 ~ N(0, 1); x2 = x1 - D u with u a random unit vector and D / margin in
    [0.1, 0.8] or [1.2, 2] (clear of the hinge at D = margin); y in {0, 1}, both present.
    ``identical`` makes the first three pairs identical (D = 0), labelled 1, 0, 1."""
    x1 = rng.standard_normal((n, d))
    u = rng.standard_normal((n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    scale = margin if margin > 0 else 1.0
    dist = scale * np.where(rng.random(n) < 0.5, rng.uniform(0.1, 0.8, n), rng.uniform(1.2, 2.0, n))
    y = np.zeros(n)
    y[rng.permutation(n)[: n // 2]] = 1.0
    if identical:
        dist[:3] = 0.0
        y[:3] = (1.0, 0.0, 1.0)
    x2 = x1 - dist[:, None] * u
    if identical:
        x2[:3] = x1[:3]
    return x1, x2, y


def check_contrastive(args):
    checks.reduction(args["reduction"])
    x1, x2, y = args["x1"], args["x2"], args["y"]
    for a in (x1, x2, y):
        checks.floating(a)
    checks.ndim_in(x1, (2,), "a 2-D array of N embeddings as rows (N, D)")
    checks.same_shape(x1, x2)
    checks.shape_is(y, (x1.shape[0],), "one label per pair")
    checks.same_dtype(x1, x2)
    checks.same_dtype(x1, y)
    checks.values_in(y, (0.0, 1.0), "pair labels (0 similar, 1 dissimilar, as in the paper)")
    checks.finite_nonnegative("margin", args["margin"])  # inf: inf - inf


register(LossSpec(
    name="contrastive_loss", family="custom", forward=contrastive_loss, vjp_fn=contrastive_loss_vjp,
    claims=articles.claims("contrastive_loss"),
    inputs=("x1", "x2", "y"), differentiable=("x1", "x2"),
    sampler=sample_contrastive, check=check_contrastive,
    cases=(
        Case("default"),
        Case("margin=2", {"margin": 2.0}, sample={"margin": 2.0}),
        Case("margin=0", {"margin": 0.0}, sample={"margin": 0.0}),
        Case("identical pairs", sample={"identical": True}),
    ),
    xfails=(XFail("the distance ||x1 - x2|| has no second derivative at x1 = x2 (its gradient is 0 there by "
                  "convention, its curvature unbounded): gradgradcheck's and jax.hvp's finite differences "
                  "straddle the kink",
                  case="identical pairs", check=("gradgradcheck", "jax.hvp")),),
    bad_inputs=(
        BadInput("x2 of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "x2"),
        BadInput("x2 that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "x2"),
        BadInput("x1 that is 1-D", lambda xs, kw: ((xs[0][0], xs[1][0], xs[2][:1]), kw), ValueError, "x1"),
        BadInput("y of another length", replace_input(2, lambda xs: xs[2][:-1]), ValueError, "y"),
        BadInput("y as a column", replace_input(2, lambda xs: xs[2][:, None]), ValueError, "y"),
        BadInput("integer x1", replace_input(0, lambda xs: _as_int(xs[0] * 10)), TypeError, "x1"),
        BadInput("integer y", replace_input(2, lambda xs: _as_int(xs[2])), TypeError, "y"),
        BadInput("label -1 in y (the 1/-1 convention)", replace_input(2, lambda xs: 2 * xs[2] - 1),
                 ValueError, "y"),
        BadInput("label 0.5 in y", replace_input(2, lambda xs: np.full_like(xs[2], 0.5)), ValueError, "y"),
        BadInput("negative margin", set_param("margin", lambda xs: -1.0), ValueError, "margin"),
        BadInput("infinite margin", set_param("margin", lambda xs: float("inf")), ValueError, "margin"),
    ),
))


# == gaussian_kernel_loss ============================================================

def gaussian_kernel_loss(input, sigma, center, reduction="mean"):
    r"""Gaussian (RBF) kernel between each row and a center, the seed article's
    "Gaussian kernel loss" (the ``Gaussian`` module of the GitHub note "Write own Loss Function
    in Pytorch"; its claims in ``reference/articles.py``):

    .. math:: \ell_i = \exp\!\left(-\frac{\|x_i - c_i\|_2^2}{2\sigma_i^2}\right)

    ``input`` is (N, D). ``center`` is either (D,), one center for every row, or (N, D),
    one per row; ``sigma`` is either a 0-d array, one bandwidth for every row, or (N,),
    one per row, and must be positive. These two broadcasts are the documented forms;
    any other shape is an error. ``none`` gives the N values; ``mean`` averages them.
    All three inputs are differentiable (a center or a bandwidth shared by the rows
    gets the sum of their gradients).

    The article's code multiplies the squared distance by :math:`\sigma^2` where the
    Gaussian kernel divides by it, so its ``sigma`` is our ``1 / sigma`` (a recorded
    ``Difference``).
    """
    diff = input - center
    q = (diff * diff).sum(axis=-1)
    return reduce(np.exp(-q / (2.0 * sigma * sigma)), reduction)


def gaussian_kernel_loss_vjp(cotangent, input, sigma, center, reduction="mean"):
    r"""
    With :math:`q_i = \|x_i - c_i\|^2`:

    .. math:: \frac{\partial \ell_i}{\partial x_i} = -\ell_i\,\frac{x_i - c_i}{\sigma_i^2}
              = -\frac{\partial \ell_i}{\partial c_i}, \qquad
              \frac{\partial \ell_i}{\partial \sigma_i} = \ell_i\,\frac{q_i}{\sigma_i^3}

    summed over the rows for a shared center or sigma.
    """
    diff = input - center
    q = (diff * diff).sum(axis=-1)
    value = np.exp(-q / (2.0 * sigma * sigma))
    g = reduce_vjp(cotangent, reduction, q.size) * value
    d_input = -(g / (sigma * sigma))[..., None] * diff
    d_sigma = g * q / sigma ** 3
    d_center = -d_input
    if np.ndim(sigma) == 0:
        d_sigma = d_sigma.sum()
    if center.ndim == 1:
        d_center = d_center.sum(axis=0)
    return d_input, d_sigma, d_center


def sample_gaussian_kernel(rng, n=5, d=3, per_row_center=False, per_row_sigma=False):
    """center ~ N(0, 1); input = center + N(0, 0.7^2) noise, so the kernel values spread
    over (0, 1); sigma ~ U(0.5, 2)."""
    center = rng.standard_normal((n, d) if per_row_center else (d,))
    x = center + 0.7 * rng.standard_normal((n, d))
    sigma = rng.uniform(0.5, 2.0, size=(n,) if per_row_sigma else ())
    return x, np.asarray(sigma), center


def check_gaussian_kernel(args):
    checks.reduction(args["reduction"])
    x, sigma, center = args["input"], args["sigma"], args["center"]
    for a in (x, sigma, center):
        checks.floating(a)
    checks.ndim_in(x, (2,), "a 2-D array of N rows (N, D)")
    n, d = x.shape
    if center.shape not in ((d,), (n, d)):
        raise ValueError(f"center must have shape {(d,)} (one center) or {(n, d)} (one per row of input); "
                         f"got {center.shape}")
    if sigma.shape not in ((), (n,)):
        raise ValueError(f"sigma must have shape () (one bandwidth) or {(n,)} (one per row of input); "
                         f"got {sigma.shape}")
    checks.same_dtype(x, sigma)
    checks.same_dtype(x, center)
    checks.positive_array(sigma, "positive bandwidths")


register(LossSpec(
    name="gaussian_kernel_loss", family="custom", forward=gaussian_kernel_loss,
    claims=articles.claims("gaussian_kernel_loss"),
    vjp_fn=gaussian_kernel_loss_vjp,
    inputs=("input", "sigma", "center"), differentiable=("input", "sigma", "center"),
    sampler=sample_gaussian_kernel, check=check_gaussian_kernel,
    cases=(
        Case("default"),
        Case("per-row center", sample={"per_row_center": True}),
        Case("per-row sigma", sample={"per_row_sigma": True}),
        Case("per-row center and sigma", sample={"per_row_center": True, "per_row_sigma": True}),
    ),
    bad_inputs=(
        BadInput("input that is 1-D", replace_input(0, lambda xs: xs[0][0]), ValueError, "input"),
        BadInput("center of another width", replace_input(2, lambda xs: xs[2][:-1]), ValueError, "center"),
        BadInput("center as a row (1, D)", replace_input(2, lambda xs: xs[2][None]), ValueError, "center"),
        BadInput("sigma as a column (N, 1)", replace_input(1, lambda xs: np.ones((xs[0].shape[0], 1))),
                 ValueError, "sigma"),
        BadInput("sigma of another length", replace_input(1, lambda xs: np.ones(xs[0].shape[0] + 1)),
                 ValueError, "sigma"),
        BadInput("zero sigma", replace_input(1, lambda xs: np.zeros(())), ValueError, "sigma"),
        BadInput("negative sigma", replace_input(1, lambda xs: -np.ones(xs[0].shape[0])), ValueError, "sigma"),
        BadInput("integer input", replace_input(0, lambda xs: _as_int(xs[0] * 10)), TypeError, "input"),
        BadInput("integer sigma", replace_input(1, lambda xs: np.ones((), dtype=np.int64)), TypeError, "sigma"),
        BadInput("center of another dtype", replace_input(2, lambda xs: xs[2].astype(np.float32)),
                 TypeError, "center"),
    ),
    differences=(
        Difference("article", "the seed article's Gaussian kernel loss",
                   "multiplies the squared distance by sigma**2 instead of dividing by it, so its sigma is an "
                   "inverse bandwidth",
                   "article(input, sigma, center) == gaussian_kernel_loss(input, 1 / sigma, center)"),
    ),
))


# == batch_sum_squared_error =========================================================

def batch_sum_squared_error(input, target, reduction="mean"):
    r"""Sum of squared errors per sample, averaged over the batch: the seed article's
    ``OwnLossFunction``, an ``autograd.Function`` with a hand-written backward.

    .. math:: \ell_n = \sum_{k} (x_{n,k} - y_{n,k})^2

    where ``n`` runs over the first (batch) dimension and ``k`` over all the others.
    ``mean`` is :math:`\frac1N \sum_n \ell_n`; ``sum`` is :math:`\sum_n \ell_n`; ``none``
    gives the (N,) vector. A 1-D input is N samples of one value each.

    In torch terms: ``mse_loss(input, target, reduction="sum") / N`` (not
    ``mse_loss``'s mean, which divides by every element).

    Source: the GitHub note "Write own Loss Function in Pytorch". Its ``OwnLossFunction``
    divides by a configured ``batch_size`` (wrong for a smaller last batch), and its
    backward, ``2 (output - target) grad_output``, omits that division: its gradient is
    ``batch_size`` times the derivative (``reference/articles.py`` proves both).
    """
    d = input - target
    return reduce((d * d).reshape(d.shape[0], math.prod(d.shape[1:])).sum(axis=1), reduction)  # not -1: N may be 0


def batch_sum_squared_error_vjp(cotangent, input, target, reduction="mean"):
    r"""
    .. math:: \frac{\partial \ell_n}{\partial x_{n,k}} = 2 (x_{n,k} - y_{n,k})
              = -\frac{\partial \ell_n}{\partial y_{n,k}}
    """
    n = input.shape[0]
    g = np.asarray(reduce_vjp(cotangent, reduction, n))
    g = g.reshape((n,) + (1,) * (input.ndim - 1)) if g.ndim else g
    d_input = 2.0 * (input - target) * g
    return d_input, -d_input


def sample_batch_sum(rng, shape=(4, 3)):
    shape = tuple(shape)
    return rng.standard_normal(shape), rng.standard_normal(shape)


def check_batch_sum(args):
    checks.reduction(args["reduction"])
    x, y = args["input"], args["target"]
    checks.floating(x)
    checks.floating(y)
    checks.ndim_in(x, range(1, 64), "at least 1-D, the first dimension the batch")
    checks.same_shape(x, y)
    checks.same_dtype(x, y)


register(LossSpec(
    name="batch_sum_squared_error", family="custom", forward=batch_sum_squared_error,
    claims=articles.claims("batch_sum_squared_error"),
    vjp_fn=batch_sum_squared_error_vjp,
    inputs=("input", "target"), differentiable=("input", "target"),
    sampler=sample_batch_sum, check=check_batch_sum,
    cases=(
        Case("default"),
        Case("1-d", sample={"shape": (5,)}),
        Case("3-d", sample={"shape": (3, 2, 4)}),
    ),
    bad_inputs=(
        BadInput("target of another shape", replace_input(1, lambda xs: xs[1][:, :-1]), ValueError, "target"),
        BadInput("target that would broadcast", replace_input(1, lambda xs: xs[1][:1]), ValueError, "target"),
        BadInput("0-d input", lambda xs, kw: ((xs[0][0, 0], xs[1][0, 0]), kw), ValueError, "input"),
        BadInput("integer input", replace_input(0, lambda xs: _as_int(xs[0] * 10)), TypeError, "input"),
        BadInput("target of another dtype", replace_input(1, lambda xs: xs[1].astype(np.float32)),
                 TypeError, "target"),
    ),
    builtins={"torch": "torch.nn.functional.mse_loss", "optax": "optax.losses.squared_error"},
    differences=(
        Difference("torch", "torch.nn.functional.mse_loss",
                   "mse_loss's mean divides the sum of squares by every element, not by the batch size",
                   "batch_sum_squared_error(x, y) == mse_loss(x, y, reduction='sum') / x.shape[0]; "
                   "reduction='none' == mse_loss(x, y, reduction='none').flatten(1).sum(1)"),
        Difference("optax", "optax.losses.squared_error",
                   "per-element (x - y)^2, no sum over the non-batch dimensions, no reduction",
                   "batch_sum_squared_error(x, y, reduction='none') == "
                   "squared_error(x, y).reshape(x.shape[0], -1).sum(1)"),
    ),
))
