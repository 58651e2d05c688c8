"""What every torch family file shares: array descriptions for the shared checks, and
the two wrappers that turn a torch-ops functional into the ``module`` variant and an
``autograd.Function`` into the ``function`` variant."""

from __future__ import annotations

import torch
from torch import nn

import reference
from reference import checks
from reference.variants import Implementations, check_positional_signature

IMPLEMENTATIONS = Implementations("torch", ("module", "function"))


def _transforms_active() -> bool:
    # Under torch.func (vmap, grad) values cannot be read with .item(); checks on values wait.
    return torch._C._functorch.peek_interpreter_stack() is not None


def describe(name: str, x) -> checks.ArrayInfo:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.is_floating_point():
        kind = "float"
    elif x.is_complex():
        kind = "complex"
    elif x.dtype == torch.bool:
        kind = "bool"
    else:
        kind = "int"

    def bounds(ignore):
        if _transforms_active():
            return None
        v = x.detach()
        if ignore is not None:
            v = v[v != ignore]
        if v.numel() == 0:
            return None
        lo, hi = torch.aminmax(v)
        return lo.item(), hi.item()

    def values():
        if _transforms_active():
            return None
        v = x.detach().cpu()
        return (v.float() if v.dtype == torch.bfloat16 else v).numpy()

    return checks.ArrayInfo(name, tuple(x.shape), kind, str(x.dtype).removeprefix("torch."), bounds, values)


def validate(name: str, inputs: tuple, kw: dict) -> dict:
    return reference.validate(reference.get(name), inputs, kw, describe)


class LossModule(nn.Module):
    """Base of every ``module`` variant: hyperparameters at construction, inputs at call.

    Array hyperparameters (``weight``, ``pos_weight``) are buffers, so ``.to(device)``
    moves them, as in ``torch.nn.CrossEntropyLoss``.
    """

    loss_name: str
    functional = None

    def __init__(self, **kw):
        super().__init__()
        spec = reference.get(self.loss_name)
        kw = spec.bind(None, kw)
        self._array_params = tuple(k for k in spec.array_params if k in kw)
        for k in self._array_params:
            self.register_buffer(k, kw.pop(k))
        self.hyperparameters = kw

    def forward(self, *inputs):
        kw = {**self.hyperparameters, **{k: getattr(self, k) for k in self._array_params}}
        kw = validate(self.loss_name, inputs, kw)
        return type(self).functional(*inputs, **kw)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())


def module(name: str, class_name: str, functional, sources: tuple | None = None) -> type[LossModule]:
    """The ``module`` variant of ``name``: an ``nn.Module`` over ``functional`` (torch ops,
    autograd does the backward). ``sources`` (default ``(functional,)``) is what ``lossparity
    show`` prints."""
    cls = type(class_name, (LossModule,), {"loss_name": name, "functional": staticmethod(functional),
                                           "__doc__": functional.__doc__, "__module__": functional.__module__})

    def call(*inputs, **kw):
        return cls(**kw)(*inputs)

    IMPLEMENTATIONS.add(name, "module", call, (functional,) if sources is None else sources)
    call.module_class = cls
    return cls


def function(name: str, fn_class: type[torch.autograd.Function]):
    """The ``function`` variant of ``name``: validate, then ``fn_class.apply`` with the inputs
    and the hyperparameters in the spec's order."""
    check_positional_signature(name, fn_class.forward, f"{fn_class.__name__}.forward")

    def call(*inputs, **kw):
        kw = validate(name, inputs, kw)
        return fn_class.apply(*inputs, *kw.values())

    call.__name__ = name
    call.__doc__ = fn_class.__doc__
    call.function_class = fn_class
    return IMPLEMENTATIONS.add(name, "function", call, (fn_class,))


def alias(name: str, class_name: str) -> type[LossModule]:
    """Both variants of the alias ``name`` (a spec built by ``reference.spec.alias_spec``):
    validate with the alias's own spec (messages name its arguments), map the arguments with
    ``spec.alias.arguments``, and run the target's functional (``module``) or the target's
    ``autograd.Function`` (``function``). Register the target first."""
    spec = reference.get(name)
    mapping = spec.alias
    target_module = IMPLEMENTATIONS.get(mapping.target, "module")
    target_function = IMPLEMENTATIONS.get(mapping.target, "function")
    target_functional = target_module.module_class.functional

    def functional(*inputs, **kw):
        t_inputs, t_kw = mapping.arguments(inputs, kw)
        return target_functional(*t_inputs, **t_kw)

    functional.__name__ = name
    functional.__doc__ = spec.doc
    functional.__module__ = target_functional.__module__
    cls = module(name, class_name, functional, sources=target_module.sources)
    fn_class = target_function.function_class

    def call(*inputs, **kw):
        kw = validate(name, inputs, kw)
        t_inputs, t_kw = mapping.arguments(inputs, kw)
        return fn_class.apply(*t_inputs, *t_kw.values())

    call.__name__ = name
    call.__doc__ = spec.doc
    call.function_class = fn_class
    IMPLEMENTATIONS.add(name, "function", call, target_function.sources)
    return cls


# The framework's own losses, called with our signature: the outside oracle of the tests
# and the yardstick of the timings. An adapter raises NotImplementedError for options
# the built-in lacks.
BUILTINS: dict = {}


def builtin(name: str, fn) -> None:
    if name in BUILTINS:
        raise ValueError(f"torch built-in for {name!r} is registered twice")
    BUILTINS[name] = fn
