"""What every torch family file shares: array descriptions for the shared checks, and
the two wrappers that turn a torch-ops functional into the ``module`` variant and an
``autograd.Function`` into the ``function`` variant."""

from __future__ import annotations

import inspect
import operator

import torch
from torch import nn
from torch._functorch.utils import unwrap_dead_wrappers
from torch.autograd.function import _SingleLevelFunction

import reference
from reference import checks
from reference.reductions import reduce
from reference.variants import Implementations, check_positional_signature, no_gradient_message, undifferentiated

IMPLEMENTATIONS = Implementations("torch", ("module", "function"))


def _transforms_active() -> bool:
    # Under torch.func (vmap, grad) values cannot be read with .item(); checks on values wait.
    return torch._C._functorch.peek_interpreter_stack() is not None


def values_read() -> bool:
    """Whether the value checks read the tensors' values here. Not under ``torch.compile``: as
    under ``jax.jit``, the values are not known while the call is traced (reading them would
    break the graph, and ``fullgraph=True`` refuses that), so the checks on shapes, dtypes and
    hyperparameters run and those on values are skipped; nor under torch.func transforms; nor
    within ``value_checks(False)``. ``is_compiling`` is asked first: dynamo reads it as a
    constant, and cannot trace the ``ContextVar`` behind ``values_checked``."""
    return not torch.compiler.is_compiling() and not _transforms_active() and checks.values_checked()


def in_place_ok() -> bool:
    """Whether a backward may write into the fresh tensors it made: not while it is being
    recorded (``create_graph=True`` keeps them for the double backward), nor under a functorch
    transform (vmap may batch the cotangent but not the tensor written into)."""
    return not torch.is_grad_enabled() and not _transforms_active()


def scaled(fresh: torch.Tensor, g) -> torch.Tensor:
    """``fresh * g`` for a tensor the backward has just made: in place where that is safe."""
    return fresh.mul_(g) if in_place_ok() else fresh * g


def indicator(compare, x: torch.Tensor, threshold: float) -> torch.Tensor:
    """``compare(x, threshold)`` as 1.0 and 0.0 in ``x``'s floating dtype (NaN compares false),
    for the backward's masks. Written straight into a float tensor where that is safe: on the
    CPU a comparison that makes a bool tensor, and ``torch.where`` or a cast that reads one
    back, are not vectorized (at 1e6 float32 elements ``x > 0`` takes ~160 us and
    ``torch.where(mask, t, 0.0)`` ~1.8 ms, against ~43 us for ``torch.gt(x, 0, out=...)``)."""
    if in_place_ok() and x.dtype.is_floating_point:
        return compare(x, threshold, out=torch.empty_like(x))
    return compare(x, threshold).to(x.dtype)


def scatter_value(fresh: torch.Tensor, dim: int, index: torch.Tensor, value: float) -> torch.Tensor:
    """``fresh.scatter(dim, index, value)`` for a tensor just made outside autograd: in place,
    except under vmap, which batches the index but not the tensor written into (and has no
    batching rule for ``scatter_`` of a value). The value is given as a tensor broadcast to the
    index's shape: torch's CPU scatter of a scalar is ~1.5-2x slower than of a source tensor
    (4 x 2560 labels into 5 x 2560: 26.9 against 15.8 us)."""
    src = torch.full((), value, dtype=fresh.dtype, device=fresh.device).expand(index.shape)
    return fresh.scatter(dim, index, src) if _transforms_active() else fresh.scatter_(dim, index, src)


def take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` for a 1-D ``values`` and an integer ``index`` of any shape. Indexing by
    a 0-d tensor reads it with ``.item()``, which ``torch.func.vmap`` refuses; this does not."""
    return values.index_select(0, index.reshape(-1)).reshape(index.shape)


def one_hot(index: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``F.one_hot(index, num_classes).to(dtype)`` for labels known to lie in [0, num_classes):
    ``F.one_hot`` reads the labels' range with ``.item()``, which ``torch.func.vmap`` refuses."""
    return (index.unsqueeze(-1) == torch.arange(num_classes, device=index.device)).to(dtype)


def masked_logsumexp(x: torch.Tensor, dims, mask: torch.Tensor | None = None, keepdim: bool = True,
                     empty: float = float("-inf")):
    """log sum exp of the entries of ``x`` that ``mask`` keeps along ``dims``, and the mask of
    the slices that keep any (None without ``mask``, which keeps every entry). ``empty`` where a
    slice keeps nothing (-inf, log 0, or 0 for a caller that adds it to something), reached
    without a log(0) or an exp overflow, so autograd's gradient there is 0, not NaN. NaN, value
    and gradient, where the largest kept entry is not finite (a NaN, a +inf, or every one -inf):
    the shift is that maximum, as in ``torch.log_softmax`` (NaN in, NaN out)."""
    xm = x if mask is None else x.masked_fill(~mask, float("-inf"))
    m = _amax_or_minus_inf(xm, dims).detach()
    if mask is None:
        lse = torch.log(torch.exp(xm - m).sum(dims, keepdim=True)) + m
        return (lse if keepdim else lse.squeeze(dims)), None
    kept = mask.any(dim=dims, keepdim=True)
    shift = torch.where(kept, m, 0.0)
    s = torch.exp(xm - shift).sum(dims, keepdim=True)
    lse = torch.where(kept, torch.log(torch.where(kept, s, 1.0)) + shift, empty)
    return (lse, kept) if keepdim else (lse.squeeze(dims), kept.squeeze(dims))


def _amax_or_minus_inf(x: torch.Tensor, dims) -> torch.Tensor:
    """``torch.amax(x, dims, keepdim=True)``, and for an empty ``x`` -inf (the max of nothing)
    in that shape, which is empty unless the dims are: ``amax`` refuses empty dims (an empty
    batch's (0, 0) similarity matrix)."""
    if x.numel():
        return torch.amax(x, dim=dims, keepdim=True)
    reduced = {d % x.dim() for d in ((dims,) if isinstance(dims, int) else dims)}
    return x.new_full([1 if i in reduced else n for i, n in enumerate(x.shape)], float("-inf"))


def logaddexp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(exp(a) + exp(b))`` with the larger term factored out (a constant to autograd: its
    derivative cancels exactly), for graphs that autograd differentiates. Not ``torch.logaddexp``:
    its backward divides by ``1 + exp(b - a)``, which is NaN where both are ``-inf`` (CTC's
    unreachable states) and, differentiated again, inf / inf = NaN once a and b lie further apart
    than exp's range (a focal loss's saturated logits, a hard label's log 0). Here the gradient
    is 0 where both are ``-inf``; where the larger is ``+inf`` the value is that, as NumPy's
    ``logaddexp``. A NaN term is not guarded: the shift is NaN, and so are the value and the
    gradient of both terms (a NaN log-probability must not read as log 0, nor leave a gradient
    of 0 where the reference's is NaN)."""
    m = torch.maximum(a, b).detach()  # NaN where a term is
    infinite = torch.isinf(m)
    shift = torch.where(infinite, 0.0, m)
    total = torch.exp(a - shift) + torch.exp(b - shift)
    return torch.where(infinite, m, shift + torch.log(torch.where(infinite, 1.0, total)))


def class_major(x: torch.Tensor) -> torch.Tensor:
    """(..., C) as (C, B), B = the product of the leading dimensions, contiguous. torch's CPU
    kernels broadcast and reduce over a long last dimension ~5-10x faster than over a last
    dimension of a few classes or features; the backward transposes its result back (a view)."""
    return x.reshape(-1, x.shape[-1]).t().contiguous()


def class_major_difference(x1: torch.Tensor, x2: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
    """``class_major(x1 - x2 + shift)`` for two tensors of one shape, the difference written
    straight into the (C, B) layout: one pass where the transposing copy took another (2560 x 4:
    9.5 against 18.7 us). Under torch.func transforms (no ``out=``), or with broadcasting, the
    plain expression."""
    if _transforms_active() or x1.shape != x2.shape or x1.dtype != x2.dtype or x1.dim() == 0:
        return class_major(x1 - x2 + shift)
    a, b = x1.reshape(-1, x1.shape[-1]).t(), x2.reshape(-1, x2.shape[-1]).t()
    out = torch.sub(a, b, out=torch.empty(a.shape, dtype=x1.dtype, device=x1.device))
    return out.add_(shift) if shift else out


def cotangent(grad_output, reduction: str, numel: int, factor: float = 1.0, batch_size: int | None = None):
    """``factor * reduce_vjp(grad_output, reduction, numel)`` in at most one operation on the
    cotangent (a loss's constant factor folded into the mean's 1/n)."""
    if reduction == "mean":
        return grad_output * (factor / max(numel, 1))
    if reduction == "batchmean":
        return grad_output * (factor / batch_size)
    return grad_output if factor == 1.0 else grad_output * factor


def row_mean_reduced(elementwise: torch.Tensor, reduction: str):
    """``reduce(elementwise.mean(-1), reduction)`` (Keras's losses: the mean over the last axis,
    then the reduction), for ``mean`` and ``sum`` without the per-row means, whose rows are of
    one length: on the CPU a mean over a short last dim is slow (2048 x 5: 9.5 us, against
    2.9 us for the mean of all 10,240 elements)."""
    n = elementwise.shape[-1] if elementwise.dim() else 0
    if n and elementwise.numel():
        if reduction == "mean":
            return elementwise.mean()
        if reduction == "sum":
            return elementwise.sum() / n
    return reduce(elementwise.mean(-1), reduction)


def row_sum_reduced(elementwise: torch.Tensor, reduction: str, denominator=None):
    """``reduce(elementwise.sum(-1), reduction, denominator)`` for ``mean`` and ``sum`` without
    the per-row sums (a CPU sum over a last dim of 4 is slow): the total, over the number of
    rows (or ``denominator``) for ``mean``."""
    if reduction in ("mean", "sum") and elementwise.numel():
        total = elementwise.sum()
        if reduction == "sum":
            return total
        return total / (elementwise.numel() // elementwise.shape[-1] if denominator is None else denominator)
    return reduce(elementwise.sum(-1), reduction, denominator)


def shifted_exp_rows(x: torch.Tensor):
    """For logits ``x`` with the classes along the last dim (no autograd): z = x - m, shifted
    by the rows' maxima m, e = exp(z) and the rows' sums s of e (s >= 1 where m is finite).
    Where m is not finite (a NaN, a +inf, or every logit -inf) z, e and s are NaN, as in
    ``torch.log_softmax``: NaN in, NaN out."""
    z = x - _amax_or_minus_inf(x, -1)
    e = z.exp()
    return z, e, e.sum(-1, keepdim=True)


def mass_minus_target(p: torch.Tensor, q: torch.Tensor, g, dim: int = -1, fresh: bool = False) -> torch.Tensor:
    """g (p sum_dim q - q): a softmax's gradient against targets ``q`` of any mass. ``p`` is
    written into only if ``fresh`` (just made by the caller) and where that is safe; a residual
    the backward may run on again is not."""
    total = q.sum(dim, keepdim=True)
    if not in_place_ok():
        return g * (p * total - q)
    return (p.mul_(total) if fresh else p * total).sub_(q).mul_(g)


_DTYPES: dict = {}  # torch dtype -> (kind, name), for the messages


def _dtype_info(dtype) -> tuple[str, str]:
    info = _DTYPES.get(dtype)
    if info is None:
        kind = ("float" if dtype.is_floating_point else "complex" if dtype.is_complex
                else "bool" if dtype == torch.bool else "int")
        info = _DTYPES[dtype] = (kind, str(dtype).removeprefix("torch."))
    return info


def _bound_of_others(v: torch.Tensor, compare, ignore, fill, smallest: bool):
    """The smallest (``smallest``) or largest element of ``v`` other than ``ignore``, one of its
    bounds, found with the elements equal to ``ignore`` replaced by ``fill``, the other bound.
    A label check reads this on every call, so it avoids bool tensors (see ``indicator``):
    ``lerp(fill, v, w)`` with ``w`` 1 where ``compare(v, ignore)`` and 0 elsewhere is exactly
    ``v`` or exactly ``fill`` (torch's lerp is ``end - (end - start) * (1 - w)`` for w >= 0.5 and
    ``start + w * (end - start)`` below) as long as ``v - fill`` cannot overflow; integers are
    read in float64, exactly, below 2**53. Otherwise ``torch.where``."""
    as_float64 = not v.dtype.is_floating_point and v.dtype != torch.bool and max(abs(ignore), abs(fill)) < 2 ** 53
    if as_float64:
        v = v.double()
    if v.dtype.is_floating_point and max(abs(ignore), abs(fill)) <= torch.finfo(v.dtype).max / 4:
        weight = compare(v, ignore, out=torch.empty_like(v))
        others = torch.lerp(torch.full((), fill, dtype=v.dtype, device=v.device), v, weight)
    else:
        others = torch.where(v == ignore, fill, v)
    bound = (others.amin() if smallest else others.amax()).item()
    return int(bound) if as_float64 else bound


class TensorInfo(checks.ArrayInfo):
    """``checks.ArrayInfo`` of a tensor, built without closures (it is built for every
    argument of every call). The values are read only when a check asks for them."""

    def __init__(self, name: str, x: torch.Tensor):
        self.name = name
        self.shape = tuple(x.shape)
        self.kind, self.dtype = _dtype_info(x.dtype)
        self._tensor = x

    def _values_readable(self) -> bool:
        return values_read()  # (torch.compile and torch.func first: dynamo cannot trace values_checked)

    def _read_bounds(self, ignore):
        x = self._tensor
        if x.numel() == 0:
            return None
        v = x.detach()
        lo, hi = (b.item() for b in torch.aminmax(v))  # one pass over the values
        # An ignored value outside the bounds is absent, and one strictly inside them is
        # neither bound. (NaN bounds compare false both ways.)
        if ignore is None or ignore < lo or ignore > hi or (lo < ignore < hi):
            return lo, hi
        if lo == ignore == hi:
            return None  # every element is ignored
        if ignore == lo and lo < hi:  # the smallest of the others: ignored ones read as hi
            return _bound_of_others(v, torch.gt, lo, hi, smallest=True), hi
        if ignore == hi and lo < hi:
            return lo, _bound_of_others(v, torch.lt, hi, lo, smallest=False)
        v = v[v != ignore]  # NaN among the values: read the others
        if v.numel() == 0:
            return None
        lo, hi = (b.item() for b in torch.aminmax(v))
        return lo, hi

    def _read_abs_bounds(self):
        x = self._tensor
        if x.numel() == 0 or x.dtype == torch.bool:
            return None  # (a bool array has no magnitude: the checks say what they expected)
        lo, hi = (b.item() for b in torch.aminmax(x.detach().abs()))
        return lo, hi

    def _read_values(self):
        v = self._tensor.detach().cpu()
        return (v.float() if v.dtype == torch.bfloat16 else v).numpy()


def describe(name: str, x) -> checks.ArrayInfo:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    return TensorInfo(name, x)


def validate(name: str, inputs: tuple, kw: dict) -> dict:
    """``reference.validate`` with torch's ``describe``.

    The same binding (a wrong input count or an unknown keyword goes to ``spec.bind``, which
    raises its TypeError) and the same shared checks, in the same order."""
    spec = reference.get(name)
    defaults = spec.defaults
    if len(inputs) != len(spec.inputs) or not kw.keys() <= defaults.keys():
        spec.bind(inputs, kw)  # raises
    kw = {**defaults, **spec.python_scalars(kw)}
    if torch.compiler.is_compiling():
        kw = {k: _specialized(v) for k, v in kw.items()}
    args = {n: describe(n, x) for n, x in zip(spec.inputs, inputs)}
    array_params = spec.array_params
    for k, v in kw.items():
        args[k] = describe(k, v) if v is not None and k in array_params else v
    spec.check(args)
    return kw


def _specialized(value):
    """An integer hyperparameter (or a tuple of them) as a constant of the graph that
    ``torch.compile`` traces, as the hyperparameters of torch's own modules are. Dynamo makes an
    int argument symbolic once it has seen two values, and then answers ``1 in (axis,)`` False
    whatever ``axis`` is (torch 2.13; pytorch/pytorch#153366): a wrong gradient with no error.
    ``operator.index`` makes dynamo guard on the value instead; a new value recompiles."""
    if type(value) is tuple:
        return tuple(_specialized(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return operator.index(value)
    return value


def in_float32_under_autocast(run, inputs: tuple, kw: dict):
    """``run(*inputs, **kw)``; where ``torch.autocast`` is on for the inputs' device, as autocast
    runs torch's own losses (its float32 list: ``mse_loss``, ``cross_entropy``, ``nll_loss``,
    ``ctc_loss``, ``kl_div``, ...): the half-precision floating tensors among the inputs and the
    array hyperparameters cast to float32 (float64 left as it is), and the loss run with
    autocast off, so that no matrix product inside it drops to the autocast dtype (it cost
    ``ntxent`` and ``binomial_deviance`` 50 to 600 times the float32 tolerance, and broke
    ``linear_cross_entropy``'s backward). The casts are recorded: each gradient returns in
    its input's own dtype."""
    if torch._C._is_any_autocast_enabled():
        device_type = next((x.device.type for x in inputs if isinstance(x, torch.Tensor)), None)
        if device_type is not None and torch.amp.is_autocast_available(device_type) \
                and torch.is_autocast_enabled(device_type):
            def float32(x):
                eligible = (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64
                            and x.device.type == device_type)
                return x.float() if eligible else x

            with torch.autocast(device_type, enabled=False):
                return run(*map(float32, inputs), **{k: float32(v) for k, v in kw.items()})
    return run(*inputs, **kw)


class LossModule(nn.Module):
    """Base of every ``module`` variant: hyperparameters at construction, inputs at call.

    Array hyperparameters (``weight``, ``pos_weight``) are buffers, so ``.to(device)``
    moves them, as in ``torch.nn.CrossEntropyLoss``.
    """

    loss_name: str
    label_inputs: tuple[int, ...] = ()  # the positions of the inputs that get no gradient (``widened``)
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
        kw = self.hyperparameters
        if self._array_params:
            kw = {**kw, **{k: getattr(self, k) for k in self._array_params}}
        return in_float32_under_autocast(self._checked_call, inputs, kw)

    @classmethod
    def _checked_call(cls, *inputs, **kw):
        kw = validate(cls.loss_name, inputs, kw)  # a new dict: the hyperparameters stay as they are
        return cls.functional(*widened(inputs, cls.label_inputs), **kw)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())


def module(name: str, class_name: str, functional, sources: tuple | None = None) -> type[LossModule]:
    """The ``module`` variant of ``name``: an ``nn.Module`` over ``functional`` (torch ops,
    autograd does the backward). ``sources`` (default ``(functional,)``) is what ``lossparity
    show`` prints."""
    cls = type(class_name, (LossModule,), {"loss_name": name, "label_inputs": label_positions(name),
                                           "functional": staticmethod(functional),
                                           "__doc__": functional.__doc__, "__module__": functional.__module__})

    cache: dict = {}

    def call(*inputs, **kw):
        if torch.compiler.is_compiling():  # what forward does, with no module to build and keep
            return in_float32_under_autocast(cls._checked_call, inputs, kw)
        # One module per distinct set of hyperparameters (constructing an nn.Module costs
        # ~20 us); tensors (array hyperparameters) are never cached. The module still
        # validates its hyperparameters with the inputs at every call.
        try:
            key = _cache_key(kw)
            m = cache.get(key)
        except TypeError:  # unhashable, or a tensor
            return cls(**kw)(*inputs)
        if m is None:
            m = cls(**kw)
            if len(cache) < 64:
                cache[key] = m
        return m.forward(*inputs)  # a private module: no hooks to run

    IMPLEMENTATIONS.add(name, "module", call, (functional,) if sources is None else sources)
    call.module_class = cls
    return cls


def _cache_key(kw: dict) -> tuple:
    """A key that tells ``True``, ``1`` and ``1.0`` apart (the checks do); TypeError for a
    tensor or an unhashable value."""
    def key(v):
        if isinstance(v, torch.Tensor):
            raise TypeError("tensors are not cached")
        if isinstance(v, tuple):
            return tuple, tuple(key(i) for i in v)
        hash(v)
        return type(v), v
    return tuple((k, key(v)) for k, v in kw.items())


# Integer dtypes that torch's gather, scatter and index_select refuse as indices, and that
# indexing reads as a mask (uint8): labels in them are widened to int64 once checked.
_NARROW_INTEGERS = frozenset({torch.uint8, torch.int8, torch.int16, torch.uint16, torch.uint32, torch.uint64})


def label_positions(name: str) -> tuple[int, ...]:
    """The positions of ``name``'s inputs that get no gradient: the ones that may hold integers."""
    spec = reference.get(name)
    return tuple(i for i, n in enumerate(spec.inputs) if n not in spec.differentiable)


def widened(inputs: tuple, positions: tuple[int, ...]) -> tuple:
    """``inputs`` with each integer tensor at ``positions`` of a dtype torch cannot index with
    (uint8, int16, ...) as int64, as the reference and JAX take them (a uint8 label map)."""
    if not positions or not any(inputs[i].dtype in _NARROW_INTEGERS for i in positions
                                if isinstance(inputs[i], torch.Tensor)):
        return inputs
    return tuple(x.long() if i in positions and isinstance(x, torch.Tensor) and x.dtype in _NARROW_INTEGERS
                 else x for i, x in enumerate(inputs))


def fast_apply(fn_class: type[torch.autograd.Function]):
    """``fn_class.apply`` for arguments that are all given positionally (the wrappers always
    give every hyperparameter). ``Function.apply`` binds them with ``inspect.signature`` on
    every call (~10 us, a fifth of a small loss's forward and backward); with nothing to bind,
    this goes to the C++ ``apply`` directly, exactly as ``Function.apply`` does after binding.
    Under torch.func transforms it is ``Function.apply`` itself; under torch.compile, that of
    ``_with_contiguous_outputs(fn_class)``."""
    c_apply = super(_SingleLevelFunction, fn_class).apply
    compiled_form = _with_contiguous_outputs(fn_class)

    def apply(*args):
        if torch.compiler.is_compiling():
            return compiled_form.apply(*args)
        if torch._C._are_functorch_transforms_active():
            return fn_class.apply(*args)
        return c_apply(*unwrap_dead_wrappers(args))

    return apply


def _with_contiguous_outputs(fn_class: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    """``fn_class`` with each tensor its forward returns made contiguous, for torch.compile.
    Once the shapes are dynamic, dynamo (torch 2.13) traces the backward reading sizes from the
    strides of the cotangents, taking them to be laid out as the outputs were; the cotangents
    that arrive are contiguous. A loss that is a view (dice_loss's ``losses[..., 1:]`` with
    ``ignore_background``) or a residual that is one (a softmax along ``axis=0``, moved to the
    last axis) then read a wrong size: a reshape that raised, or a mean divided by 1, a gradient
    3 times too large with no error. A contiguous output costs a copy only where it was a view."""

    def contiguous(x):
        return x.contiguous() if isinstance(x, torch.Tensor) else x

    def forward(*args):
        out = fn_class.forward(*args)
        return tuple(contiguous(x) for x in out) if isinstance(out, tuple) else contiguous(out)

    # With no input requiring grad, dynamo calls forward with a context first unless its
    # signature counts the inputs alone.
    forward.__signature__ = inspect.signature(fn_class.forward)
    return type(fn_class.__name__, (fn_class,), {"forward": staticmethod(forward),
                                                 "__module__": fn_class.__module__, "__doc__": fn_class.__doc__})


class _GradientRequired(torch.autograd.Function):
    """The identity, put before a ``function`` variant's input (or array hyperparameter) that
    its backward may give no gradient (``reference.variants.undifferentiated``): where the
    backward gives none and one is asked for, a NotImplementedError that names the input, as
    torch raises for a derivative marked ``not_implemented``, instead of a silent zero. Where
    the backward does give one (cross_entropy's probability targets), it passes."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, message):
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.message = inputs[1]
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad):
        if grad is None:
            raise NotImplementedError(ctx.message)
        return grad, None


def gradients_required(name: str):
    """``(inputs, kw) -> (inputs, kw)`` for ``name``'s ``function`` variant: each input and array
    hyperparameter outside its gradient that requires grad goes through ``_GradientRequired``."""
    positions, params = undifferentiated(name)
    spec = reference.get(name)

    def needs(x) -> bool:
        return isinstance(x, torch.Tensor) and x.requires_grad

    def guard(x, argument):
        return _GradientRequired.apply(x, no_gradient_message(name, "function", argument, "module"))

    def required(inputs: tuple, kw: dict) -> tuple[tuple, dict]:
        if not torch.is_grad_enabled():
            return inputs, kw
        if any(needs(inputs[i]) for i in positions):
            inputs = tuple(guard(x, spec.inputs[i]) if i in positions and needs(x) else x for i, x in enumerate(inputs))
        if any(needs(kw[p]) for p in params):
            kw = {k: guard(v, k) if k in params and needs(v) else v for k, v in kw.items()}
        return inputs, kw

    return required


def function(name: str, fn_class: type[torch.autograd.Function]):
    """The ``function`` variant of ``name``: validate, then ``fn_class.apply`` with the inputs
    and the hyperparameters in the spec's order.

    A Function with ``returns_residuals = True`` returns ``(loss, *residuals)``: what its
    forward computed that its backward needs (a softmax, an exponential), marked
    non-differentiable, so the backward need not compute it again; the variant returns the loss."""
    check_positional_signature(name, fn_class.forward, f"{fn_class.__name__}.forward")
    apply = fast_apply(fn_class)
    labels = label_positions(name)
    required = gradients_required(name)

    if getattr(fn_class, "returns_residuals", False):
        def checked_call(*inputs, **kw):
            inputs, kw = required(inputs, validate(name, inputs, kw))
            return apply(*widened(inputs, labels), *kw.values())[0]
    else:
        def checked_call(*inputs, **kw):
            inputs, kw = required(inputs, validate(name, inputs, kw))
            return apply(*widened(inputs, labels), *kw.values())

    def call(*inputs, **kw):
        return in_float32_under_autocast(checked_call, inputs, kw)

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
    apply = fast_apply(fn_class)
    residuals = getattr(fn_class, "returns_residuals", False)
    labels = label_positions(name)
    required = gradients_required(name)

    def checked_call(*inputs, **kw):
        inputs, kw = required(inputs, validate(name, inputs, kw))
        t_inputs, t_kw = mapping.arguments(widened(inputs, labels), kw)
        out = apply(*t_inputs, *t_kw.values())
        return out[0] if residuals else out

    def call(*inputs, **kw):
        return in_float32_under_autocast(checked_call, inputs, kw)

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
