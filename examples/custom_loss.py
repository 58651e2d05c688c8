"""A loss the catalogue does not have: the Charbonnier loss sqrt((x - y)^2 + eps^2), a smooth
L1. Without --like, give the inputs' shapes (and, optionally, a NumPy reference):

    lossparity check examples/custom_loss.py:Charbonnier --shape 6,4 --shape 6,4
    lossparity check examples/custom_loss.py:Charbonnier --shape 6,4 --shape 6,4 \\
        --reference examples/custom_loss.py:charbonnier_reference
    lossparity check examples/custom_loss.py:charbonnier --shape 6,4 --shape 6,4        # the JAX custom_vjp
    lossparity check examples/custom_loss.py:CharbonnierIgnoresGradOutput --shape 6,4 --shape 6,4   # status 1

The Function's backward is compared with autograd through its forward, the custom_vjp's with
JAX's derivative of the undecorated function; gradcheck / check_grads run in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import torch


def charbonnier_reference(input, target, eps=0.1, reduction="mean"):
    """The NumPy reference: value only (the check differentiates it by central differences)."""
    elementwise = np.sqrt((input - target) ** 2 + eps ** 2)
    return {"none": elementwise, "sum": elementwise.sum(), "mean": elementwise.mean()}[reduction]


def reduce(elementwise, reduction):
    if reduction == "none":
        return elementwise
    if reduction == "sum":
        return elementwise.sum()
    if reduction == "mean":
        return elementwise.mean()
    raise ValueError(f"unknown reduction {reduction!r}")


class Charbonnier(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, eps=0.1, reduction="mean"):
        ctx.save_for_backward(input, target)
        ctx.eps, ctx.reduction = eps, reduction
        return reduce(torch.sqrt((input - target) ** 2 + eps ** 2), reduction)

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        d = input - target
        g = grad_output / input.numel() if ctx.reduction == "mean" else grad_output
        grad = d / torch.sqrt(d ** 2 + ctx.eps ** 2) * g
        return grad, -grad, None, None


class CharbonnierIgnoresGradOutput(Charbonnier):
    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        d = input - target
        grad = d / torch.sqrt(d ** 2 + ctx.eps ** 2)             # MISTAKE: * grad_output is missing
        if ctx.reduction == "mean":
            grad = grad / input.numel()
        return grad, -grad, None, None


def _charbonnier(input, target, eps=0.1, reduction="mean"):
    return reduce(jnp.sqrt((input - target) ** 2 + eps ** 2), reduction)


def _charbonnier_fwd(input, target, eps, reduction):
    return _charbonnier(input, target, eps, reduction), (input, target)


def _charbonnier_bwd(eps, reduction, residuals, g):
    input, target = residuals
    d = input - target
    grad = d / jnp.sqrt(d ** 2 + eps ** 2) * (g / input.size if reduction == "mean" else g)
    return grad, -grad


charbonnier = jax.custom_vjp(_charbonnier, nondiff_argnums=(2, 3))
charbonnier.defvjp(_charbonnier_fwd, _charbonnier_bwd)


def _charbonnier_bwd_half(eps, reduction, residuals, g):
    input, target = residuals
    d = input - target
    grad = d / (2 * jnp.sqrt(d ** 2 + eps ** 2))                # MISTAKE: the chain rule's 2 (x - y) lost its 2
    grad = grad * (g / input.size if reduction == "mean" else g)
    return grad, -grad


charbonnier_half = jax.custom_vjp(_charbonnier, nondiff_argnums=(2, 3))
charbonnier_half.defvjp(_charbonnier_fwd, _charbonnier_bwd_half)
