r"""Sequence losses: ctc_loss.

``ctc_loss`` follows ``torch.nn.functional.ctc_loss`` (torch 2.13): time-major
``log_probs`` ``(T, N, C)`` (or unbatched ``(T, C)``), targets padded ``(N, S)`` or
concatenated ``(sum(target_lengths),)`` (unbatched: ``(target_length,)``), integer
``input_lengths`` and ``target_lengths`` ``(N,)`` (unbatched: ``()`` or ``(1,)``).

The recursion is written once, in pieces that torch_impl and jax_impl repeat with
their own ops, vectorised over the batch (a loop over time only):

* ``padded_targets``: the labels as ``(N, S)``, every position past a target's
  length set to ``blank`` (so padding is never read);
* ``extended``: the blank-interleaved labels :math:`l'` (``(N, 2S + 1)``) and where
  a state may be entered by skipping the blank before it;
* ``alpha``: the forward variables, frozen once ``t >= input_lengths[n]``;
* ``beta``: the backward variables (zero past the input length);
* the gradient is the state occupancy, scattered back to the classes.

Every quantity is in log space with :math:`-\infty` for log 0; an infeasible
alignment (a target that cannot fit its input) gives :math:`+\infty`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from . import checks
from .numerics import nan_propagates
from .reductions import reduce, reduce_vjp
from .spec import BadInput, Case, Difference, LossSpec, XFail, register, replace_input, set_param

NEG_INF = -np.inf


# -- the pieces of the recursion -----------------------------------------------------

def batched(log_probs, targets, input_lengths, target_lengths):
    """An unbatched call as a batch of one: ``(T, C) -> (T, 1, C)``, targets ``(S,) -> (1, S)``
    (for one sample the concatenated form is the padded one), lengths ``() -> (1,)``."""
    if log_probs.ndim == 3:
        return log_probs, targets, input_lengths, target_lengths
    return log_probs[:, None], targets[None], input_lengths.reshape(1), target_lengths.reshape(1)


def padded_targets(targets, target_lengths, blank):
    """``(N, S)`` labels; positions ``s >= target_lengths[n]`` hold ``blank``.

    Concatenated targets ``(sum(target_lengths),)`` are cut at the running offsets;
    ``S`` is then the total length (a static bound on every target's length).
    """
    if targets.ndim == 2:
        positions = np.arange(targets.shape[1])
        labels = targets
    else:
        total = targets.shape[0]
        positions = np.arange(total)
        offsets = np.cumsum(target_lengths) - target_lengths
        index = np.clip(offsets[:, None] + positions[None, :], 0, max(total - 1, 0))
        labels = targets[index] if total else np.zeros((target_lengths.shape[0], 0), targets.dtype)
    return np.where(positions[None, :] < target_lengths[:, None], labels, blank)


def extended(padded, blank):
    r"""The extended labels :math:`l' = (\varnothing, l_1, \varnothing, l_2, \dots, l_S, \varnothing)`,
    ``(N, 2S + 1)``, and ``skip[n, s]``: state ``s`` may be entered from ``s - 2`` (it is a
    label, and not the same label as the one before it)."""
    n, s = padded.shape
    ext = np.full((n, 2 * s + 1), blank, dtype=padded.dtype)
    ext[:, 1::2] = padded
    skip = np.zeros(ext.shape, dtype=bool)
    skip[:, 3::2] = padded[:, 1:] != padded[:, :-1]
    return ext, skip


def emissions(log_probs, ext):
    """``em[t, n, s] = log_probs[t, n, l'_{n, s}]``, ``(T, N, 2S + 1)``."""
    return log_probs[:, np.arange(ext.shape[0])[:, None], ext]


def _shift(x, k):
    """``x[..., s - k]`` along the states, ``-inf`` (log 0) where ``s < k``."""
    pad = np.full(x.shape[:-1] + (k,), NEG_INF)
    return np.concatenate([pad, x], axis=-1)[..., :x.shape[-1]]


def _unshift(x, k, fill=NEG_INF):
    """``x[..., s + k]`` along the states, ``fill`` where ``s + k`` is past the end."""
    pad = np.full(x.shape[:-1] + (k,), fill, dtype=x.dtype)
    return np.concatenate([x, pad], axis=-1)[..., k:]


@nan_propagates
def alpha(em, skip, input_lengths):
    r"""The forward variables, in log space.

    :math:`\alpha_{-1} = (0, -\infty, \dots)` (an empty prefix sits before state 0) and
    :math:`\alpha_t(s) = \mathrm{lse}(\alpha_{t-1}(s), \alpha_{t-1}(s-1),
    [\mathrm{skip}_s]\,\alpha_{t-1}(s-2)) + em_t(s)`.

    Returns every :math:`\alpha_t` ``(T, N, 2S + 1)`` and the last one each sample
    reaches, :math:`\alpha_{T_n - 1}` (``alpha_{-1}`` when ``T_n = 0``).
    """
    steps, n, states = em.shape
    prev = np.where(np.arange(states) == 0, 0.0, NEG_INF) * np.ones((n, 1))
    alphas = []
    for t in range(steps):
        a = np.logaddexp(prev, _shift(prev, 1))
        a = np.where(skip, np.logaddexp(a, _shift(prev, 2)), a) + em[t]
        alphas.append(a)
        prev = np.where((t < input_lengths)[:, None], a, prev)
    return np.stack(alphas) if alphas else np.zeros((0, n, states)), prev


@nan_propagates
def log_likelihood(last_alpha, target_lengths):
    r""":math:`\log p(l \mid x) = \mathrm{lse}(\alpha_{T_n-1}(2|l|), \alpha_{T_n-1}(2|l| - 1))`
    (the second term only when :math:`|l| > 0`)."""
    rows = np.arange(last_alpha.shape[0])
    end = last_alpha[rows, 2 * target_lengths]
    before = np.where(target_lengths > 0, last_alpha[rows, np.maximum(2 * target_lengths - 1, 0)], NEG_INF)
    return np.logaddexp(end, before)


@nan_propagates
def beta(em, skip, input_lengths, target_lengths):
    r"""The backward variables, in log space, without the emission at ``t`` itself:

    :math:`\beta_{T_n-1}(s) = 0` for :math:`s \in \{2|l|, 2|l|-1\}` (else :math:`-\infty`),
    :math:`\beta_t(s) = \mathrm{lse}(e(s), e(s+1), [\mathrm{skip}_{s+2}]\,e(s+2))` with
    :math:`e(s') = em_{t+1}(s') + \beta_{t+1}(s')` for :math:`t < T_n - 1`, and
    :math:`-\infty` for :math:`t \ge T_n`. ``(T, N, 2S + 1)``.
    """
    steps, n, states = em.shape
    s = np.arange(states)
    last = (s == 2 * target_lengths[:, None]) | (s == 2 * target_lengths[:, None] - 1)
    init = np.where(last, 0.0, NEG_INF)
    skip_next = _unshift(skip, 2, False)
    betas = [None] * steps
    following = np.full((n, states), NEG_INF)
    for t in reversed(range(steps)):
        if t + 1 < steps:
            e = em[t + 1] + following
            b = np.logaddexp(e, _unshift(e, 1))
            recursed = np.where(skip_next, np.logaddexp(b, _unshift(e, 2)), b)
        else:
            recursed = np.full((n, states), NEG_INF)
        here = np.where((t == input_lengths - 1)[:, None], init,
                        np.where((t < input_lengths - 1)[:, None], recursed, NEG_INF))
        betas[t] = following = here
    return np.stack(betas) if betas else np.zeros((0, n, states))


def sample_weights(cotangent, reduction, target_lengths):
    """The cotangent of each sample's loss: ``mean`` divides by the clamped target length
    and the batch size, as torch's ``mean`` does."""
    n = target_lengths.shape[0]
    g = reduce_vjp(cotangent, reduction, n)
    if reduction == "mean":
        g = g / np.maximum(target_lengths, 1)
    return np.broadcast_to(np.reshape(g, (-1,)), (n,))


# -- ctc_loss --------------------------------------------------------------------

def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
             zero_infinity=False):
    r"""Connectionist temporal classification, as ``torch.nn.functional.ctc_loss``.

    With :math:`y_{t,k} = e^{x_{t,k}}` (``x = log_probs``; any real numbers, normalised
    or not) and :math:`\mathcal{B}^{-1}(l)` the alignments of length :math:`T_n` that
    collapse to the target :math:`l` (merge repeats, drop blanks),

    .. math:: \ell_n = -\log \sum_{\pi \in \mathcal{B}^{-1}(l)} \prod_{t < T_n} y_{t, \pi_t}
              = -\log p(l \mid x)

    computed by the :math:`\alpha` recursion over the extended labels :math:`l'`
    (blanks interleaved, length :math:`2|l| + 1`). :math:`\ell_n = +\infty` when no
    alignment exists (:math:`T_n <` the target length plus its repeated neighbours);
    ``zero_infinity`` makes those 0. ``mean`` is
    :math:`\frac1N \sum_n \ell_n / \max(|l_n|, 1)`, ``sum`` is :math:`\sum_n \ell_n`.
    """
    lp, tg, il, tl = batched(log_probs, targets, input_lengths, target_lengths)
    ext, skip = extended(padded_targets(tg, tl, blank), blank)
    _, last = alpha(emissions(lp, ext), skip, il)
    nll = -log_likelihood(last, tl)
    if zero_infinity:
        nll = np.where(np.isinf(nll), 0.0, nll)
    if reduction == "mean":
        return reduce(nll / np.maximum(tl, 1), "mean")
    out = reduce(nll, reduction)
    return out[0] if reduction == "none" and log_probs.ndim == 2 else out


def ctc_loss_vjp(cotangent, log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
                 zero_infinity=False):
    r"""The true partial derivative with respect to ``log_probs``.

    Every alignment emits exactly one symbol at each :math:`t < T_n`, so
    :math:`p = \sum_s \alpha_t(s)\,\beta_t(s)` for every such :math:`t` (:math:`\beta`
    without the emission at :math:`t`), and :math:`\alpha_t(s)` is linear in
    :math:`y_{t, l'_s}`. Hence

    .. math:: \frac{\partial \ell_n}{\partial x_{t,k}}
              = -\frac{1}{p} \sum_{s:\, l'_s = k} \alpha_t(s)\,\beta_t(s) = -\gamma_t(k)
              \quad (t < T_n), \qquad 0 \quad (t \ge T_n),

    the occupancy of class :math:`k` at time :math:`t`, with
    :math:`\sum_k \gamma_t(k) = 1`. A sample whose loss is :math:`+\infty` (no
    alignment) gets 0, with or without ``zero_infinity``: the loss is constant there.

    torch's built-in backward returns :math:`e^{x_{t,k}} - \gamma_t(k)` instead (the
    gradient with respect to logits under a ``log_softmax``), that is
    ``ours - exp(log_probs) * ours.sum(-1)``.
    """
    lp, tg, il, tl = batched(log_probs, targets, input_lengths, target_lengths)
    ext, skip = extended(padded_targets(tg, tl, blank), blank)
    em = emissions(lp, ext)
    alphas, last = alpha(em, skip, il)
    nll = -log_likelihood(last, tl)
    feasible = np.isfinite(nll)
    log_occupancy = alphas + beta(em, skip, il, tl) + np.where(feasible, nll, 0.0)[:, None]
    occupancy = np.exp(log_occupancy)  # (T, N, 2S + 1); 0 where t >= T_n or infeasible
    per_class = np.einsum("tns,nsc->tnc", occupancy, np.eye(lp.shape[-1])[ext])
    grad = -per_class * sample_weights(cotangent, reduction, tl)[None, :, None]
    return (grad[:, 0] if log_probs.ndim == 2 else grad,)


def required_lengths(padded, target_lengths):
    """The shortest input that fits each target: its length plus its repeated neighbours."""
    positions = np.arange(1, padded.shape[1])
    repeats = (padded[:, 1:] == padded[:, :-1]) & (positions[None, :] < target_lengths[:, None])
    return target_lengths + repeats.sum(axis=1)


# -- checks ------------------------------------------------------------------------

def check_ctc_loss(args: dict) -> None:
    checks.reduction(args["reduction"])
    lp, targets = args["log_probs"], args["targets"]
    il, tl = args["input_lengths"], args["target_lengths"]
    checks.floating(lp)
    checks.ndim_in(lp, (2, 3), "(T, N, C), or (T, C) unbatched")
    checks.integer(targets, "class indices")
    checks.integer(il, "lengths")
    checks.integer(tl, "lengths")
    blank, steps, num_classes = args["blank"], lp.shape[0], lp.shape[-1]
    checks.integer_value("blank", blank)
    if not 0 <= blank < num_classes:
        raise ValueError(f"blank must be a class index in [0, {num_classes}); got {blank}")
    checks.boolean("zero_infinity", args["zero_infinity"])

    if lp.ndim == 2:
        for lengths in (il, tl):
            if lengths.shape not in ((), (1,)):
                raise ValueError(f"{lengths.name} must have shape () or (1,) for unbatched log_probs; "
                                 f"got {lengths.shape}")
        checks.ndim_in(targets, (1,), "(S,) for unbatched log_probs")
    else:
        n = lp.shape[1]
        checks.shape_is(il, (n,), "one length per sample")
        checks.shape_is(tl, (n,), "one length per sample")
        checks.ndim_in(targets, (1, 2), "(N, S) padded or (sum(target_lengths),) concatenated")
        if targets.ndim == 2 and targets.shape[0] != n:
            raise ValueError(f"targets must have one row per sample, shape ({n}, S); got {targets.shape}")
    checks.within(il, 0, steps, "input lengths (at most T)")
    padded = lp.ndim == 3 and targets.ndim == 2
    checks.within(tl, 0, targets.shape[-1] if padded else np.inf,
                  "target lengths (at most S, the padded targets' width)" if padded else "target lengths")

    tl_values, targets_values = tl.values(), targets.values()
    if tl_values is None or targets_values is None:
        return  # values unknown (under jax.jit): shapes and dtypes were checked
    tl_values = np.reshape(tl_values, (-1,)).astype(np.int64)
    if not padded and tl_values.sum() != targets.shape[0]:
        raise ValueError(f"target_lengths must sum to the length of the concatenated targets, "
                         f"{targets.shape[0]}; they sum to {tl_values.sum()}")
    # Every sample's labels within its target length, in order, beside the sample each is from.
    if padded:
        within = np.arange(targets.shape[-1])[None, :] < tl_values[:, None]
        labels = np.asarray(targets_values)[within]
        sample = np.nonzero(within)[0]
    else:
        labels = np.reshape(targets_values, (-1,))
        sample = np.repeat(np.arange(tl_values.size), tl_values)
    outside = (labels < 0) | (labels >= num_classes)
    is_blank = labels == blank
    # The first sample with either fault; within one sample an index outside the classes comes first.
    first_outside = sample[outside.argmax()] if outside.any() else np.inf
    first_blank = sample[is_blank.argmax()] if is_blank.any() else np.inf
    if first_outside <= first_blank and first_outside < np.inf:
        raise IndexError(f"targets holds class index {int(labels[outside.argmax()])} in sample "
                         f"{int(first_outside)}, outside [0, {num_classes})")
    if first_blank < np.inf:
        raise ValueError(f"targets must not hold the blank label {blank} within target_lengths "
                         f"(sample {int(first_blank)})")


# -- sampling ------------------------------------------------------------------------

def sample_ctc(rng: np.random.Generator, T=8, N=3, C=5, S=3, blank=0, targets="padded", unbatched=False,
               empty_target=False, infeasible=False, repeat=False, nan_log_prob=False):
    """``log_probs = log_softmax(logits)`` with logits ~ N(0, 1), labels drawn from the
    classes other than ``blank``, target lengths in [1, S] (the first is S; the last is 0
    with ``empty_target``), input lengths drawn between the shortest that fits and T
    (the first is T). ``infeasible`` makes the second target S long and its input one
    step too short;
    ``repeat`` repeats the first target's first label; ``nan_log_prob`` makes one
    log-probability of the first sample NaN (at t = 2, a label of its target). Padding holds
    random values in [-1, C), blank included, which the loss never reads."""
    if unbatched:
        N = 1
    log_probs = log_softmax(rng.standard_normal((T, N, C)), axis=-1)
    classes = np.array([c for c in range(C) if c != blank])
    labels = rng.choice(classes, size=(N, S))
    if repeat:
        labels[0, 1] = labels[0, 0]
    target_lengths = rng.integers(1, S + 1, size=N)
    target_lengths[:1] = S  # the first sample's, where there is one (N may be 0)
    if empty_target:
        target_lengths[-1] = 0
    needed = required_lengths(labels, target_lengths)
    input_lengths = rng.integers(needed, T + 1)
    input_lengths[:1] = T
    if infeasible:
        target_lengths[1] = S
        needed = required_lengths(labels, target_lengths)
        input_lengths[1] = needed[1] - 1
    if nan_log_prob:
        log_probs[min(2, T - 1), 0, labels[0, 0]] = np.nan
    padding = rng.integers(-1, C, size=(N, S))
    padded = np.where(np.arange(S)[None, :] < target_lengths[:, None], labels, padding)
    if unbatched:
        return (log_probs[:, 0], padded[0, :target_lengths[0]], np.asarray(input_lengths[0]),
                np.asarray(target_lengths[0]))
    if targets == "concatenated":
        flat = np.concatenate([padded[n, :target_lengths[n]] for n in range(N)])
        return log_probs, flat.astype(np.int64), input_lengths, target_lengths
    return log_probs, padded.astype(np.int64), input_lengths, target_lengths


# -- registry --------------------------------------------------------------------

def _with_label(value, row=0, position=0):
    def make(xs):
        targets = xs[1].copy()
        targets[row, position] = value
        return targets
    return make


def _replace_length(position, index, value):
    def make(xs):
        lengths = xs[position].copy()
        lengths[index] = value(xs)
        return lengths
    return make


CTC_BAD_INPUTS = (
    BadInput("input_lengths longer than T", replace_input(2, _replace_length(2, 0, lambda xs: xs[0].shape[0] + 1)),
             ValueError, "input_lengths"),
    BadInput("negative input_lengths", replace_input(2, _replace_length(2, 1, lambda xs: -1)),
             ValueError, "input_lengths"),
    BadInput("target_lengths wider than the padded targets",
             replace_input(3, _replace_length(3, 0, lambda xs: xs[1].shape[1] + 1)), ValueError, "target_lengths"),
    BadInput("negative target_lengths", replace_input(3, _replace_length(3, 1, lambda xs: -1)),
             ValueError, "target_lengths"),
    BadInput("concatenated targets shorter than sum(target_lengths)",
             replace_input(1, lambda xs: np.concatenate([r[:n] for r, n in zip(xs[1], xs[3])])[:-1]),
             ValueError, "target_lengths"),
    BadInput("blank within the targets", replace_input(1, _with_label(0)), ValueError, "targets"),
    BadInput("label >= C", replace_input(1, _with_label(5)), IndexError, "targets"),
    BadInput("negative label", replace_input(1, _with_label(-1)), IndexError, "targets"),
    BadInput("float input_lengths", replace_input(2, lambda xs: xs[2].astype(np.float64)), TypeError,
             "input_lengths"),
    BadInput("float target_lengths", replace_input(3, lambda xs: xs[3].astype(np.float64)), TypeError,
             "target_lengths"),
    BadInput("float targets", replace_input(1, lambda xs: xs[1].astype(np.float64)), TypeError, "targets"),
    BadInput("integer log_probs", replace_input(0, lambda xs: xs[0].astype(np.int64)), TypeError, "log_probs"),
    BadInput("log_probs of rank 4", replace_input(0, lambda xs: xs[0][None]), ValueError, "log_probs"),
    BadInput("log_probs of rank 1", replace_input(0, lambda xs: xs[0][:, 0, 0]), ValueError, "log_probs"),
    BadInput("targets of rank 3", replace_input(1, lambda xs: xs[1][None]), ValueError, "targets"),
    BadInput("targets with another batch size", replace_input(1, lambda xs: xs[1][:-1]), ValueError, "targets"),
    BadInput("input_lengths of rank 2", replace_input(2, lambda xs: xs[2][None]), ValueError, "input_lengths"),
    BadInput("target_lengths of another batch size", replace_input(3, lambda xs: xs[3][:-1]), ValueError,
             "target_lengths"),
    BadInput("blank >= C", set_param("blank", lambda xs: xs[0].shape[-1]), ValueError, "blank"),
    BadInput("float blank", set_param("blank", lambda xs: 0.0), TypeError, "blank"),
    BadInput("zero_infinity not a bool", set_param("zero_infinity", lambda xs: "yes"), TypeError,
             "zero_infinity"),
)

register(LossSpec(
    name="ctc_loss", family="sequence", forward=ctc_loss, vjp_fn=ctc_loss_vjp,
    inputs=("log_probs", "targets", "input_lengths", "target_lengths"), differentiable=("log_probs",),
    sampler=sample_ctc, check=check_ctc_loss,
    cases=(
        Case("default"),
        Case("concatenated", sample={"targets": "concatenated"}),
        Case("blank=C-1", {"blank": 4}, sample={"blank": 4}),
        Case("repeated_label", sample={"repeat": True}),
        Case("empty_target", sample={"empty_target": True}),
        Case("zero_infinity+infeasible", {"zero_infinity": True}, sample={"infeasible": True}),
        Case("unbatched", sample={"unbatched": True}),
    ),
    # The matrix alone: an infeasible sample's loss is inf (mean and sum too) and its gradient
    # 0, which finite differences, gradcheck and check_grads cannot see (inf - inf is NaN), and
    # torch's built-in gradient there is NaN (a recorded Difference).
    straight_through_cases=(
        Case("infeasible", sample={"infeasible": True}),
        # NaN in, NaN out: a NaN log-probability once read as log 0 (a finite loss, silently).
        Case("a NaN log-probability", sample={"nan_log_prob": True}),
    ),
    bad_inputs=CTC_BAD_INPUTS,
    xfails=tuple(XFail("a NaN log-probability: the loss is NaN, and autodiff carries NaN back along every path "
                       "through it, but gives 0, not NaN, to the log-probabilities on no such path (a class in "
                       "neither the target nor the blank, a state no alignment reaches, whose log-sum-exp has "
                       "gradient 0 where both terms are -inf): 13 of the sample's 40 entries here, where the "
                       "reference (and the hand-written backwards) give NaN to all of them",
                       variant=variant, case="a NaN log-probability") for variant in ("module", "autodiff")) + (
        XFail("torch's built-in gradient is NaN for every t < T_n of an infeasible sample, the reference's 0 (the "
              "recorded Difference)", case="infeasible", check="torch.builtin"),),
    builtins={"torch": "torch.nn.functional.ctc_loss", "optax": "optax.losses.ctc_loss"},
    differences=(
        Difference("torch", "torch.nn.functional.ctc_loss (backward)",
                   "torch's gradient with respect to log_probs is w_n (exp(x[t,n,k]) - gamma_t(k)) for t < T_n: "
                   "the gradient with respect to logits under a log_softmax, not the partial derivative "
                   "-w_n gamma_t(k) (w_n: the sample's cotangent; 0 for a zeroed infinite loss). The two agree once "
                   "passed through log_softmax's backward (the extra term is exp(x) times a constant per t, which "
                   "that backward removes on normalised x). The torch oracle subtracts the extra term with a "
                   "zero-valued term, so the builtin test proves this mapping (torch_impl.sequence)",
                   "torch_grad == ours - exp(log_probs) * ours.sum(-1, keepdim=True)"),
        Difference("torch", "torch.nn.functional.ctc_loss (infeasible, zero_infinity=False)",
                   "the loss is inf in both; torch's gradient is NaN for every t < T_n of that sample (even under a "
                   "zero cotangent), the reference's is 0 (the loss is constant there)",
                   "none: compare gradients only where the loss is finite, or use zero_infinity=True"),
        Difference("optax", "optax.losses.ctc_loss",
                   "batch-major logits (N, T, C) with 0/1 paddings instead of lengths, applies log_softmax to the "
                   "logits, labels padded (N, S) with label_paddings, blank_id, no reduction, and "
                   "log_epsilon=-1e5 for log 0, so an infeasible target gives a large finite loss instead of inf",
                   "ctc_loss(x, y, il, tl, reduction='none') == optax.losses.ctc_loss(x.transpose(1, 0, 2), "
                   "t >= il, y, s >= tl, blank_id=blank) - sum_{t < il} logsumexp(x[t], -1), exactly for every "
                   "real x and every feasible target (the second term is 0 on normalised log-probabilities)"),
    ),
))
