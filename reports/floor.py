"""The floor of a Python ``autograd.Function``: torch's own kernels, wrapped in one.

A ``function`` variant is a ``torch.autograd.Function`` written in Python: its forward runs
behind ``apply`` and its backward is called back from the autograd engine, costs a built-in
loss (one C++ autograd node) does not pay. Where a built-in is one ATen forward kernel and one
ATen backward kernel, :data:`FLOORS` puts those very kernels in a minimal Python Function,
applied as our variants apply theirs (``torch_impl.core.fast_apply``). No Python Function can
do that loss's work in fewer kernels, so the floor's time over the built-in's is the least
ratio a ``function`` variant can reach: the timings print it beside each ratio
(``floor_fwd_bwd_ms``, ``floor_ratio``), and a ratio bound below it cannot be met by a Python
``autograd.Function`` at that size, however it is written.

Each floor takes our signature (as the built-ins' adapters do) and raises NotImplementedError
for options it does not cover; ``tests/test_timing.py`` checks each against its built-in.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

import reference
from torch_impl.core import fast_apply

REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}  # at::Reduction


def kernel_pair(forward, backward, input_dims=None, symmetric: bool = False,
                labels: bool = False) -> type[torch.autograd.Function]:
    """A minimal ``autograd.Function`` of two kernels: ``forward(input, target, *params) ->
    (loss, *residuals)`` and ``backward(g, input, target, residuals, *params) -> d_input``. A
    ``symmetric`` pair also gives the target its gradient as the built-in does: ``backward``
    with the input and the target swapped (the regression losses' derivatives in torch).
    ``input_dims``: the input ranks the kernels take; ``labels``: the target holds class
    indices (an integer tensor). Applied as our variants apply theirs
    (``fast_apply``: no argument binding)."""

    class KernelPair(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input, target, *params):
            loss, *residuals = forward(input, target, *params)
            ctx.params = params
            ctx.save_for_backward(input, target, *residuals)
            return loss

        @staticmethod
        def backward(ctx, grad_output):
            input, target, *residuals = ctx.saved_tensors
            params = ctx.params
            d_input = backward(grad_output, input, target, residuals, *params)
            d_target = backward(grad_output, target, input, residuals, *params) if ctx.needs_input_grad[1] else None
            return (d_input, d_target) + (None,) * len(params)

    KernelPair.fast_apply = fast_apply(KernelPair)
    KernelPair.input_dims, KernelPair.symmetric, KernelPair.labels = input_dims, symmetric, labels
    return KernelPair


def _quickest(name: str):
    """The ATen operator ``name`` by its quickest door from Python: ``torch._C._nn``'s binding
    (or ``torch``'s) where there is one, else the operator's ``default`` overload (the packet
    ``torch.ops.aten.X`` matches the arguments against every overload at each call: 3.6 us of
    ``huber_loss_backward``'s 8.8 us here)."""
    return (getattr(torch._C._nn, name, None) or getattr(torch._C._VariableFunctions, name, None)
            or getattr(torch.ops.aten, name).default)


aten = SimpleNamespace(**{name: _quickest(name) for name in (
    "mse_loss", "mse_loss_backward", "huber_loss", "huber_loss_backward", "smooth_l1_loss", "smooth_l1_loss_backward",
    "soft_margin_loss", "soft_margin_loss_backward", "nll_loss_forward", "nll_loss_backward",
    "multilabel_margin_loss_forward", "multilabel_margin_loss_backward", "multi_margin_loss",
    "multi_margin_loss_backward", "_log_softmax", "_log_softmax_backward_data")})

MSE = kernel_pair(lambda x, t, r: (aten.mse_loss(x, t, r),),
                  lambda g, x, t, _, r: aten.mse_loss_backward(g, x, t, r), symmetric=True)
HUBER = kernel_pair(lambda x, t, r, delta: (aten.huber_loss(x, t, r, delta),),
                    lambda g, x, t, _, r, delta: aten.huber_loss_backward(g, x, t, r, delta), symmetric=True)
SMOOTH_L1 = kernel_pair(lambda x, t, r, beta: (aten.smooth_l1_loss(x, t, r, beta),),
                        lambda g, x, t, _, r, beta: aten.smooth_l1_loss_backward(g, x, t, r, beta), symmetric=True)
SOFT_MARGIN = kernel_pair(lambda x, t, r: (aten.soft_margin_loss(x, t, r),),
                          lambda g, x, t, _, r: aten.soft_margin_loss_backward(g, x, t, r))
NLL = kernel_pair(lambda x, t, r: aten.nll_loss_forward(x, t, None, r, -100),
                  lambda g, x, t, saved, r: aten.nll_loss_backward(g, x, t, None, r, -100, *saved),
                  input_dims=(1, 2), labels=True)
MULTILABEL_MARGIN = kernel_pair(lambda x, t, r: aten.multilabel_margin_loss_forward(x, t, r),
                                lambda g, x, t, saved, r: aten.multilabel_margin_loss_backward(g, x, t, r, *saved),
                                labels=True)
MULTI_MARGIN = kernel_pair(lambda x, t, r: (aten.multi_margin_loss(x, t, 1, 1.0, None, r),),
                           lambda g, x, t, _, r: aten.multi_margin_loss_backward(g, x, t, 1, 1.0, None, r),
                           labels=True)


def _cross_entropy_forward(x, t, r):
    log_p = aten._log_softmax(x, 1, False)
    loss, total_weight = aten.nll_loss_forward(log_p, t, None, r, -100)
    return loss, log_p, total_weight


def _cross_entropy_backward(g, x, t, saved, r):
    log_p, total_weight = saved
    d_log_p = aten.nll_loss_backward(g, log_p, t, None, r, -100, total_weight)
    return aten._log_softmax_backward_data(d_log_p, log_p, 1, x.dtype)


# F.cross_entropy with class indices: log_softmax's kernels around nll_loss's.
CROSS_ENTROPY = kernel_pair(_cross_entropy_forward, _cross_entropy_backward, input_dims=(2,), labels=True)


def _floor(name: str, kernels: type[torch.autograd.Function], covered: tuple, scale: float = 1.0):
    """The floor of ``name``: ``kernels`` with the reduction and the hyperparameters named in
    ``covered`` (in the kernels' order), every other option at the spec's default. The options
    are read once for the default call (the timings'), so that the floor is the Function's."""
    defaults = reference.get(name).defaults

    def params(kw: dict) -> tuple:
        for k, v in kw.items():
            default = k not in covered and (v is defaults[k] or not isinstance(v, torch.Tensor) and v == defaults[k])
            if not (k in covered or default) or k == "reduction" and v not in REDUCTIONS:
                raise NotImplementedError(f"the floor of {name} covers {', '.join(covered)} only, not {k}={v!r}")
        options = {**defaults, **kw}
        return tuple(REDUCTIONS[options[k]] if k == "reduction" else options[k] for k in covered)

    default_params = params({})

    def call(input, target, **kw):
        if kernels.input_dims is not None and input.dim() not in kernels.input_dims:
            raise NotImplementedError(f"the floor of {name} covers inputs of {kernels.input_dims} dimensions")
        if kernels.labels and target.is_floating_point():
            raise NotImplementedError(f"the floor of {name} covers class indices, not probabilities")
        if target.requires_grad and not kernels.symmetric:
            raise NotImplementedError(f"the floor of {name} has no gradient for the target")
        loss = kernels.fast_apply(input, target, *(params(kw) if kw else default_params))
        return loss if scale == 1.0 else scale * loss

    call.__name__ = f"{name}_floor"
    return call


FLOORS = {
    "mse_loss": _floor("mse_loss", MSE, ("reduction",)),
    "squared_error": _floor("squared_error", MSE, ("reduction",)),
    "l2_loss": _floor("l2_loss", MSE, ("reduction",), scale=0.5),  # as its built-in: half of mse_loss
    "huber_loss": _floor("huber_loss", HUBER, ("reduction", "delta")),
    "smooth_l1_loss": _floor("smooth_l1_loss", SMOOTH_L1, ("reduction", "beta")),
    "soft_margin_loss": _floor("soft_margin_loss", SOFT_MARGIN, ("reduction",)),
    "nll_loss": _floor("nll_loss", NLL, ("reduction",)),
    "cross_entropy": _floor("cross_entropy", CROSS_ENTROPY, ("reduction",)),
    "multilabel_margin_loss": _floor("multilabel_margin_loss", MULTILABEL_MARGIN, ("reduction",)),
    "multi_margin_loss": _floor("multi_margin_loss", MULTI_MARGIN, ("reduction",)),
}


def get(name: str):
    """The floor of ``name``, or None where its built-in is not one pair of ATen kernels."""
    return FLOORS.get(name)
