"""Every loss in PyTorch, twice: an ``nn.Module`` over torch ops (autograd does the
backward) and an ``autograd.Function`` with a hand-written backward in torch ops, so
the same code runs on CPU and CUDA.

    torch_impl.get(name, "module" | "function")(*tensors, **kw)
"""

from .core import BUILTINS, IMPLEMENTATIONS, LossModule
from . import regression, classification, custom, linear, margin, metric, sequence, segmentation  # noqa: F401  (each family registers its losses)

VARIANTS = IMPLEMENTATIONS.variants


def get(name: str, variant: str):
    """The ``variant`` of loss ``name``: a callable ``(*tensors, **kw) -> Tensor``."""
    return IMPLEMENTATIONS.get(name, variant)


def builtin(name: str):
    """The framework's own loss for ``name``, called with our signature, or None where it has none."""
    return BUILTINS.get(name)


def names() -> list[str]:
    return IMPLEMENTATIONS.names()


__all__ = ["get", "builtin", "names", "VARIANTS", "LossModule"]
