"""Losses written as ``nn.Module`` (autograd does the backward): three correct ones, then one
per classic mistake that a Module can make.

    lossparity check examples/torch_module.py:CrossEntropyLoss --like cross_entropy
    lossparity check examples/torch_module.py:CrossEntropyLoss --like cross_entropy --param label_smoothing=0.1
    lossparity check examples/torch_module.py:CrossEntropyVariable --like cross_entropy  # exit status 1

Hyperparameters go to the constructor, as in ``torch.nn.CrossEntropyLoss(reduction=...)``.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Variable


def reduce(elementwise, reduction):
    if reduction == "none":
        return elementwise
    if reduction == "sum":
        return elementwise.sum()
    if reduction == "mean":
        return elementwise.mean()
    raise ValueError(f"unknown reduction {reduction!r}")


def class_dim(input):
    return 0 if input.dim() == 1 else 1


def soft_targets(input, target, label_smoothing=0.0):
    """Class probabilities of the input's shape (one-hot class indices), smoothed as torch does."""
    cd = class_dim(input)
    num_classes = input.shape[cd]
    q = target if target.is_floating_point() else F.one_hot(target, num_classes).movedim(-1, cd).to(input.dtype)
    return q * (1 - label_smoothing) + label_smoothing / num_classes if label_smoothing else q


# -- correct ------------------------------------------------------------------------------

class MSELoss(nn.Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, input, target):
        return reduce((input - target) ** 2, self.reduction)


class CrossEntropyLoss(nn.Module):
    """Cross entropy of logits with class indices or probabilities, and label smoothing."""

    def __init__(self, reduction="mean", label_smoothing=0.0):
        super().__init__()
        self.reduction, self.label_smoothing = reduction, label_smoothing

    def forward(self, input, target):
        q = soft_targets(input, target, self.label_smoothing)
        return reduce(-(q * F.log_softmax(input, class_dim(input))).sum(class_dim(input)), self.reduction)


class MulticlassHinge(nn.Module):
    """Crammer-Singer multiclass hinge, one value per example (optax's default reduction 'none')."""

    def __init__(self, reduction="none"):
        super().__init__()
        self.reduction = reduction

    def forward(self, scores, labels):
        onehot = F.one_hot(labels, scores.shape[-1]).to(scores.dtype)
        worst = (scores + 1 - onehot).max(dim=-1).values
        return reduce(worst - (scores * onehot).sum(-1), self.reduction)


# -- one classic mistake each ---------------------------------------------------------------

class CrossEntropyRequiresGrad(CrossEntropyLoss):
    """log-softmax made a leaf "to look at its .grad": the graph to the input is cut."""

    def forward(self, input, target):
        q = soft_targets(input, target, self.label_smoothing)
        logp = F.log_softmax(input, class_dim(input)).detach().requires_grad_()  # MISTAKE
        return reduce(-(q * logp).sum(class_dim(input)), self.reduction)


class CrossEntropyVariable(CrossEntropyLoss):
    """The old Variable(tensor.data) idiom on an intermediate: the graph to the input is cut."""

    def forward(self, input, target):
        q = soft_targets(input, target, self.label_smoothing)
        probs = Variable(F.softmax(input, class_dim(input)).data, requires_grad=True)  # MISTAKE
        return reduce(-(q * probs.log()).sum(class_dim(input)), self.reduction)


class MSENumPy(MSELoss):
    """The loss computed in NumPy and wrapped back into a tensor: detached from the inputs."""

    def forward(self, input, target):
        squared = (input - target).detach().numpy() ** 2   # MISTAKE: leaves the graph (and fails on CUDA)
        value = {"none": squared, "mean": np.mean(squared), "sum": np.sum(squared)}[self.reduction]
        return torch.as_tensor(value)


class MSEMeanOverBatch(MSELoss):
    """'mean' divides by the batch size instead of by the number of elements."""

    def forward(self, input, target):
        squared = (input - target) ** 2
        if self.reduction == "mean":
            return squared.sum() / input.shape[0]     # MISTAKE: the mean is over all N*D elements
        return reduce(squared, self.reduction)


BATCH_SIZE = 6  # the batch size of the training script this loss was written for


class CrossEntropyHardCodedBatch(CrossEntropyLoss):
    def forward(self, input, target):
        q = soft_targets(input, target, self.label_smoothing)
        losses = -(q * F.log_softmax(input, class_dim(input))).sum(class_dim(input))
        if self.reduction == "mean":
            return losses.sum() / BATCH_SIZE          # MISTAKE: losses.numel() terms, not BATCH_SIZE
        return reduce(losses, self.reduction)


class MulticlassHingeMaxIndices(MulticlassHinge):
    def forward(self, scores, labels):
        onehot = F.one_hot(labels, scores.shape[-1]).to(scores.dtype)
        worst = (scores + 1 - onehot).max(dim=-1)[1]  # MISTAKE: [1] is the argmax; [0] the max
        return reduce(worst - (scores * onehot).sum(-1), self.reduction)
