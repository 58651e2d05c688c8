"""The registry of implementations that torch_impl and jax_impl share.

Each framework package keeps one :class:`Implementations`, fills it from its
family files, and exposes its ``get``. A registered callable is already wrapped
so that it validates its arguments with the spec's shared checks.
"""

from __future__ import annotations

import inspect
from typing import Callable

from .spec import get as get_spec


class Implementations:
    def __init__(self, framework: str, variants: tuple[str, ...]):
        self.framework = framework
        self.variants = variants
        self._table: dict[str, dict[str, Callable]] = {}

    def add(self, name: str, variant: str, call: Callable, sources: tuple) -> Callable:
        """Register ``call`` as ``variant`` of ``name``; ``sources`` are the objects whose code
        ``lossparity show`` prints."""
        get_spec(name)  # an implementation of a loss the reference lacks is a bug
        if variant not in self.variants:
            raise ValueError(f"{self.framework} variants are {self.variants}; got {variant!r}")
        if variant in self._table.setdefault(name, {}):
            raise ValueError(f"{self.framework} {variant} of {name!r} is registered twice")
        call.sources = sources
        call.loss_name, call.variant, call.framework = name, variant, self.framework
        self._table[name][variant] = call
        return call

    def get(self, name: str, variant: str) -> Callable:
        if variant not in self.variants:
            raise ValueError(f"variant must be one of {', '.join(map(repr, self.variants))}; got {variant!r}")
        spec = get_spec(name)  # KeyError with close names for an unknown loss
        try:
            return self._table[spec.name][variant]
        except KeyError:
            raise KeyError(f"{self.framework} has no {variant} implementation of {name!r}") from None

    def names(self) -> list[str]:
        return sorted(n for n, v in self._table.items() if set(v) == set(self.variants))


def check_positional_signature(name: str, fn: Callable, what: str) -> None:
    """A Function's forward or a custom_vjp takes the inputs, then every hyperparameter, in
    the spec's order: the wrappers pass them positionally."""
    spec = get_spec(name)
    want = list(spec.inputs) + list(spec.defaults)
    got = list(inspect.signature(fn).parameters)
    if got != want:
        raise TypeError(f"{what} of {name} must take {want} positionally; it takes {got}")



def undifferentiated(name: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The positions of ``name``'s inputs and the names of its array hyperparameters that its
    gradient (``reference.vjp``) does not cover: a hand-written backward may give them none."""
    spec = get_spec(name)
    return (tuple(i for i, n in enumerate(spec.inputs) if n not in spec.differentiable),
            tuple(p for p in spec.array_params if p not in spec.differentiable_params))


def no_gradient_message(name: str, variant: str, argument: str, autodiff_variant: str) -> str:
    """What the hand-written variants raise where they would otherwise give a silent zero: a
    gradient asked for ``argument``, which their backward does not compute."""
    spec = get_spec(name)
    return (f"the derivative for {argument!r} is not implemented in {name}'s {variant} variant: its "
            f"hand-written backward differentiates {', '.join(spec.differentiable + spec.differentiable_params)} "
            f"only. Stop the gradient at {argument} (torch: .detach(); JAX: jax.lax.stop_gradient), or use the "
            f"{autodiff_variant} variant, which differentiates it")
