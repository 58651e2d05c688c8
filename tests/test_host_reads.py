"""No read back to the host in a loss's forward or backward, in either torch variant.

On CUDA a read of a tensor's values by the host is a copy from the device and a wait for every
kernel queued before it: one in a loss stalls every training step (issue 6: "the Function
variants never copy to the host"). Without a GPU the reads are caught where they are asked for:
``HostReads``, a ``TorchFunctionMode``, records each call that on CUDA makes the host wait for
the device's values:

- a Python value made of a tensor: ``item``, ``tolist``, ``bool()``, ``int()``, ``float()``,
  an index (``range(t)``, ``x[t]`` with a 0-d integer tensor), ``numpy()``, a format;
- a copy to the CPU: ``cpu()``, ``to("cpu")``;
- a result whose shape depends on the values: ``nonzero``, ``masked_select``, indexing by a bool
  mask, ``unique``, ``bincount``, ``equal``, ``torch.where(condition)``, ``repeat_interleave``
  of tensor counts without ``output_size``, ``one_hot`` without ``num_classes``;
- a tensor where torch takes a number: the sizes or fill value of a factory (``torch.full``,
  ``arange``, ``new_full``, ...), ``alpha=``.

The argument checks are exempt, by design: to raise the contract's ``ValueError`` they read the
bounds of the inputs whose domain they check (``aminmax``, two numbers; ``ctc_loss``'s lengths
and ``ntxent``'s labels whole), which on CUDA is one wait per call; within
``reference.value_checks(False)`` they read nothing either, and the whole call, checks included,
is held to none. Reads inside torch's own kernels are not visible here; on a GPU (the ``cuda``
tests) ``torch.cuda.set_sync_debug_mode`` makes every synchronisation an error as well.

Every (loss, case, reduction), both variants, float64 and float32, with the backward run plain
and recorded (``create_graph=True``, the Function's double-backward path), and once more plain
without value checks.
"""

import contextlib
import os
import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode

import reference
import torch_impl
from reports import matrix
from torch_impl import core

_TO_HOST = frozenset({"item", "tolist", "__bool__", "__int__", "__float__", "__complex__", "__index__",
                      "__format__", "__contains__", "__array__", "numpy", "cpu"})
_VALUE_SHAPED = frozenset({"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount",
                           "equal", "is_nonzero"})
_FACTORIES = frozenset({"arange", "full", "zeros", "ones", "empty", "linspace", "logspace", "eye", "randint",
                        "new_full", "new_zeros", "new_ones", "new_empty", "full_like"})
_TORCH_DIR = os.path.dirname(torch.__file__)


def _read_by(name: str, args: tuple, kwargs: dict) -> str | None:
    """What in this call reads values back to the host, or None."""
    if name in _TO_HOST or name in _VALUE_SHAPED:
        return name
    if name == "to" and any(str(a) == "cpu" for a in (*args[1:], kwargs.get("device"))):
        return "to('cpu')"
    if name == "where" and len(args) + len(kwargs) == 1:
        return "where(condition)"
    if name == "repeat_interleave" and len(args) > 1 and isinstance(args[1], torch.Tensor) \
            and "output_size" not in kwargs:
        return "repeat_interleave without output_size"
    if name == "one_hot" and (len(args) < 2 and kwargs.get("num_classes", -1) == -1 or args[1:2] == (-1,)):
        return "one_hot without num_classes"
    if name in _FACTORIES:
        template = 1 if name.startswith("new_") or name.endswith("_like") else 0
        if any(isinstance(a, torch.Tensor) for a in (*args[template:], *kwargs.values())):
            return f"{name} given a tensor for a number"
    if isinstance(kwargs.get("alpha"), torch.Tensor):
        return f"{name}(alpha=tensor)"
    if name in ("__getitem__", "__setitem__") and len(args) > 1:
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        for i in index:
            if isinstance(i, torch.Tensor) and i.dtype == torch.bool:
                return "indexing by a bool mask"
            if isinstance(i, torch.Tensor) and i.dim() == 0 and not i.is_floating_point():
                return "indexing by a 0-d tensor"
    return None


def _caller() -> str:
    """The innermost line on the stack outside torch and this recorder, ``file:line: code``."""
    for frame in reversed(traceback.extract_stack()):
        if not frame.filename.startswith(_TORCH_DIR) and frame.name not in ("_caller", "__torch_function__"):
            return f"{os.path.relpath(frame.filename)}:{frame.lineno}: {frame.line}"
    return "(only torch's own code on the stack)"


class HostReads(TorchFunctionMode):
    """Records the calls that read tensor values back to the host (see the module's docstring)
    as ``(what, where)``; paused while ``paused`` is above 0."""

    def __init__(self):
        super().__init__()
        self.reads: list[tuple[str, str]] = []
        self.paused = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.paused:
            what = _read_by(getattr(func, "__name__", ""), args, kwargs)
            if what:
                self.reads.append((what, _caller()))
        return func(*args, **kwargs)


@contextlib.contextmanager
def _sync_debug(device: str, mode):
    if device != "cuda":
        yield
        return
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


def host_reads(fn, spec, d: matrix.Drawn, device: str = "cpu", create_graph: bool = False,
               value_checks: bool = True) -> list:
    """The host reads of ``fn``'s forward and backward on ``d``, as ``(what, file:line: code)``:
    its argument checks exempt, or within ``reference.value_checks(False)`` (``value_checks``
    false) included. On CUDA a synchronisation in between raises too. The backward of an
    ``autograd.Function`` runs under the mode as well: autograd's engine does not carry a
    ``TorchFunctionMode`` into the backward it calls."""
    arrays, kw = matrix.torch_arrays(d, device)
    call, primals = matrix.on_differentiable(fn, spec, arrays, kw)
    diff = [p.clone().requires_grad_(True) for p in primals]
    cotangent = matrix.to_torch(d.cotangent, device)
    recorder = HostReads()
    fn_class = getattr(fn, "function_class", None)

    def checked(*args, **kwargs):
        recorder.paused += 1
        try:
            with _sync_debug(device, "default"):
                return validate(*args, **kwargs)
        finally:
            recorder.paused -= 1

    def backward(ctx, *grads):
        with recorder:
            return fn_class_backward(ctx, *grads)

    validate = core.validate
    fn_class_backward = fn_class.backward if fn_class is not None else None
    if value_checks:
        core.validate = checked
    if fn_class is not None:
        fn_class.backward = staticmethod(backward)
    try:
        with reference.value_checks(value_checks), recorder, _sync_debug(device, "error"):
            out = call(*diff)
            torch.autograd.grad(out, diff, cotangent.to(out.dtype), allow_unused=True, create_graph=create_graph)
    finally:
        core.validate = validate
        if fn_class is not None:
            fn_class.backward = staticmethod(fn_class_backward)
    return recorder.reads


def _params():
    for name in reference.names():
        spec = reference.get(name)
        for case in spec.matrix_cases:
            for reduction in spec.case_reductions(case):
                for device in matrix.DEVICES:
                    marks = [] if device == "cpu" else [
                        pytest.mark.cuda,
                        pytest.mark.skipif(not matrix.device_available("torch", "cuda"), reason="no CUDA device for torch")]
                    yield pytest.param(name, case.name, reduction, device, id=f"{name}-{case.name}-{reduction}-{device}",
                                       marks=marks)


@pytest.mark.parametrize("name, case, reduction, device", list(_params()))
def test_no_read_back_to_the_host(name, case, reduction, device):
    spec = reference.get(name)
    dtypes = [t for t in ("float64", "float32") if spec.case(case).dtypes is None or t in spec.case(case).dtypes]
    failures = []
    for dtype in dtypes:
        d = matrix.draw(spec, case, reduction, dtype)
        for variant in ("module", "function"):
            for create_graph, value_checks in ((False, True), (True, True), (False, False)):
                reads = host_reads(torch_impl.get(name, variant), spec, d, device, create_graph, value_checks)
                if reads:
                    lines = "\n".join(f"  {what} at {where}" for what, where in dict.fromkeys(reads))
                    failures.append(
                        f"torch.{variant} of {name} ({case}, {reduction}, {dtype}, {device}, "
                        f"create_graph={create_graph}) reads values back to the host:\n{lines}\n"
                        f"reproduce with:\n"
                        f"import reference, torch_impl\nfrom reports import matrix\n"
                        f"from tests.test_host_reads import host_reads\n"
                        f"spec = reference.get({name!r})\n"
                        f"d = matrix.draw(spec, {case!r}, {reduction!r}, {dtype!r})\n"
                        f"host_reads(torch_impl.get({name!r}, {variant!r}), spec, d, {device!r}, {create_graph})")
    assert not failures, "\n\n".join(failures)


def test_the_recorder_sees_reads_in_forward_and_backward():
    """HostReads catches a read in a Function's forward and in its backward, and in a module."""

    class Reads(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sum() * float(x.max())

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g * x[x > 0].sum() * torch.ones_like(x)

    def with_reads(input, target, reduction="mean"):
        return Reads.apply(input - target).mean()

    with_reads.function_class = Reads
    spec = reference.get("mse_loss")
    d = matrix.draw(spec, "default", "mean", "float64")
    assert [what for what, _ in host_reads(with_reads, spec, d)] == ["__float__", "indexing by a bool mask"]
    assert host_reads(torch_impl.get("mse_loss", "function"), spec, d) == []
