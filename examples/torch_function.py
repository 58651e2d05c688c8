"""Losses written by hand as ``torch.autograd.Function``: three correct ones, then one per
classic mistake, each a small change to a correct one.

    lossparity check examples/torch_function.py:MSE --like mse_loss                       # passes
    lossparity check examples/torch_function.py:CrossEntropy --like cross_entropy         # passes
    lossparity check examples/torch_function.py:MulticlassHinge --like multiclass_hinge_loss
    lossparity check examples/torch_function.py:MSEIgnoresGradOutput --like mse_loss      # exit status 1

``MSE`` is an old-style Function (``forward(ctx, ...)``); ``CrossEntropy`` and
``MulticlassHinge`` are new-style (``forward`` without ctx, ``setup_context``).
"""

import numpy as np
import torch
import torch.nn.functional as F


def reduce(elementwise, reduction):
    if reduction == "none":
        return elementwise
    if reduction == "sum":
        return elementwise.sum()
    if reduction == "mean":
        return elementwise.mean()
    raise ValueError(f"unknown reduction {reduction!r}")


def reduce_backward(grad_output, reduction, count):
    """The gradient of the elementwise losses: grad_output itself (none, sum), or divided by the
    number of terms (mean)."""
    return grad_output / count if reduction == "mean" else grad_output


# -- correct ------------------------------------------------------------------------------

class MSE(torch.autograd.Function):
    """Mean squared error (input - target)^2."""

    @staticmethod
    def forward(ctx, input, target, reduction="mean"):
        ctx.save_for_backward(input, target)
        ctx.reduction = reduction
        return reduce((input - target) ** 2, reduction)

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        g = reduce_backward(grad_output, ctx.reduction, input.numel())
        d = 2 * (input - target) * g
        return d, -d, None


def class_dim(input):
    return 0 if input.dim() == 1 else 1


def soft_targets(input, target):
    """Class probabilities of the input's shape: the target itself, or one-hot class indices."""
    if target.is_floating_point():
        return target
    return F.one_hot(target, input.shape[class_dim(input)]).movedim(-1, class_dim(input)).to(input.dtype)


class CrossEntropy(torch.autograd.Function):
    """Cross entropy of logits with class indices or class probabilities, any number of
    dimensions: -sum_c q_c log softmax(x)_c. Its gradient is softmax(x) - q per element."""

    @staticmethod
    def forward(input, target, reduction="mean"):
        q = soft_targets(input, target)
        return reduce(-(q * F.log_softmax(input, class_dim(input))).sum(class_dim(input)), reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction = inputs
        ctx.save_for_backward(input, target)

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        cd = class_dim(input)
        q = soft_targets(input, target)
        g = reduce_backward(grad_output, ctx.reduction, input.numel() // input.shape[cd])
        if ctx.reduction == "none":
            g = g.unsqueeze(cd)
        return (F.softmax(input, cd) * q.sum(cd, keepdim=True) - q) * g, None, None


class MulticlassHinge(torch.autograd.Function):
    """Crammer-Singer multiclass hinge: max_j (s_j + 1 - [j = y]) - s_y, one value per example
    (optax's multiclass_hinge_loss, whose default reduction is 'none')."""

    @staticmethod
    def forward(scores, labels, reduction="none"):
        onehot = F.one_hot(labels, scores.shape[-1]).to(scores.dtype)
        worst = (scores + 1 - onehot).max(dim=-1).values
        return reduce(worst - (scores * onehot).sum(-1), reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        scores, labels, ctx.reduction = inputs
        ctx.save_for_backward(scores, labels)

    @staticmethod
    def backward(ctx, grad_output):
        scores, labels = ctx.saved_tensors
        num_classes = scores.shape[-1]
        onehot = F.one_hot(labels, num_classes).to(scores.dtype)
        winner = F.one_hot((scores + 1 - onehot).argmax(dim=-1), num_classes).to(scores.dtype)
        g = reduce_backward(grad_output, ctx.reduction, labels.numel())
        if ctx.reduction == "none":
            g = g.unsqueeze(-1)
        return (winner - onehot) * g, None, None


# -- one classic mistake each ---------------------------------------------------------------

class MSEIgnoresGradOutput(MSE):
    """The backward never multiplies by grad_output."""

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        d = 2 * (input - target)
        if ctx.reduction == "mean":
            d = d / input.numel()
        return d, -d, None                       # MISTAKE: * grad_output is missing


class MSEWrongInput(MSE):
    """The gradients come back in the wrong order."""

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        g = reduce_backward(grad_output, ctx.reduction, input.numel())
        d_input = 2 * (input - target) * g
        d_target = -d_input
        return d_target, d_input, None           # MISTAKE: forward takes (input, target, ...)


class MSEWrongShape(MSE):
    """The gradient is summed over the batch, as for a parameter shared by every example."""

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        g = reduce_backward(grad_output, ctx.reduction, input.numel())
        d = (2 * (input - target) * g).sum(dim=0)  # MISTAKE: shape (4,), the input is (6, 4)
        return d, -d, None


class MSEReductionScale(MSE):
    """The backward forgets that 'mean' divides by the number of elements."""

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        d = 2 * (input - target) * grad_output    # MISTAKE: no / input.numel() for 'mean'
        return d, -d, None


BATCH_SIZE = 6  # the batch size of the training script this loss was written for


class CrossEntropyHardCodedBatch(CrossEntropy):
    """The mean divides by the training script's batch size."""

    @staticmethod
    def forward(input, target, reduction="mean"):
        q = soft_targets(input, target)
        losses = -(q * F.log_softmax(input, class_dim(input))).sum(class_dim(input))
        return losses.sum() / BATCH_SIZE if reduction == "mean" else reduce(losses, reduction)  # MISTAKE

    @staticmethod
    def backward(ctx, grad_output):
        input, target = ctx.saved_tensors
        cd = class_dim(input)
        q = soft_targets(input, target)
        g = grad_output / BATCH_SIZE if ctx.reduction == "mean" else grad_output  # MISTAKE
        if ctx.reduction == "none":
            g = g.unsqueeze(cd)
        return (F.softmax(input, cd) * q.sum(cd, keepdim=True) - q) * g, None, None


class CrossEntropyNumPy(CrossEntropy):
    """The forward goes through NumPy: right on the CPU, but Tensor.numpy() raises on CUDA."""

    @staticmethod
    def forward(input, target, reduction="mean"):
        x = input.detach().numpy()                 # MISTAKE: raises for a CUDA tensor
        cd = 0 if x.ndim == 1 else 1
        logp = x - x.max(cd, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(cd, keepdims=True))
        q = soft_targets(input, target).numpy()
        losses = -(q * logp).sum(cd)
        value = {"none": losses, "sum": losses.sum(), "mean": losses.mean()}[reduction]
        return torch.from_numpy(np.asarray(value))


class MulticlassHingeMaxIndices(MulticlassHinge):
    """max(dim) returns (values, indices); the forward takes the indices."""

    @staticmethod
    def forward(scores, labels, reduction="none"):
        onehot = F.one_hot(labels, scores.shape[-1]).to(scores.dtype)
        worst = (scores + 1 - onehot).max(dim=-1)[1]   # MISTAKE: [1] is the argmax; [0] the max
        return reduce(worst - (scores * onehot).sum(-1), reduction)
