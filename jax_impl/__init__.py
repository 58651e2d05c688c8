"""Every loss in JAX, twice: plain ``jax.numpy`` (JAX derives the gradient) and a
``jax.custom_vjp`` whose backward is the reference's VJP in jax.numpy.

    jax_impl.get(name, "autodiff" | "custom_vjp")(*arrays, **kw)

Importing jax_impl does not change ``jax_enable_x64``; float64 inputs need it on.
"""

from .core import BUILTINS, IMPLEMENTATIONS
from . import regression, classification, custom, linear, margin, metric, sequence, segmentation  # noqa: F401  (each family registers its losses)

VARIANTS = IMPLEMENTATIONS.variants


def get(name: str, variant: str):
    """The ``variant`` of loss ``name``: a callable ``(*arrays, **kw) -> jax.Array``."""
    return IMPLEMENTATIONS.get(name, variant)


def builtin(name: str):
    """The framework's own loss for ``name``, called with our signature, or None where it has none."""
    return BUILTINS.get(name)


def names() -> list[str]:
    return IMPLEMENTATIONS.names()


__all__ = ["get", "builtin", "names", "VARIANTS"]
