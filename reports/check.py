"""``lossparity check``: prove or refute a loss you wrote yourself.

    lossparity check FILE.py:NAME --like LOSS [--param key=value ...]
    lossparity check FILE.py:NAME --shape 6,4 --shape 6,4 [--reference FILE.py:NUMPY_FN]

and, from Python, for your own test suite::

    from reports.check import check, assert_matches
    result = check(MyCrossEntropy, like="cross_entropy")   # CheckResult; bool(result) is result.passed
    print(result.report())
    assert_matches(my_mse, like="mse_loss")                # AssertionError carrying the report

NAME may be a plain function, an ``nn.Module`` class or instance, a ``torch.autograd.Function``
(called through ``.apply``), a JAX function or a ``jax.custom_vjp``; the framework is read from
the object (``--framework`` names it where the object does not tell).

**With a catalogue loss** (``like``), the cells are the parity matrix's: the loss's own cases that
the callable can take (a case that sets a hyperparameter the callable does not accept is skipped and
said so), each reduction, float64 and float32, the CPU and CUDA where present, inputs drawn by the
loss's sampler exactly as ``reports.matrix.draw`` draws them, value and the gradient of every
differentiable input under a random cotangent, against the NumPy reference under the matrix's
``TOLERANCES``. The first case runs again at a second batch size. A torch callable is also searched
for NumPy round trips (they raise on CUDA; checked without a GPU too), a JAX one runs once under
``jax.jit``.

**Without** ``like`` (a loss the catalogue lacks), the inputs are drawn from the shapes given; a
``torch.autograd.Function``'s backward is compared with autograd through its forward, a
``jax.custom_vjp``'s with JAX's own derivative of the undecorated function, a NumPy reference (if
given) checks the value and, by central differences, the gradient; ``gradcheck`` (torch) or
``check_grads`` (JAX) runs in float64.

**Mistakes are computed, not guessed**, from extra runs of the callable (``MISTAKES`` lists
them): the cotangent scaled by 3 (a backward that ignores grad_output does not follow it); the
gradients matched against the reference gradients of the other inputs (a gradient for the wrong
input); the ratio to the reference at two batch sizes, read as "divides by U where the reduction
divides by R" (the reduction's scale: U is a count of the draw, nothing, the batch size, the loss
terms; a hard-coded batch size: U is a constant while R follows the batch); the shapes the
hand-written backward returned (autograd silently sums a larger one); the autograd graph (leaves
that are not inputs: ``requires_grad_()`` or ``Variable(...)`` on an intermediate); a trace of the
torch calls in the user's code, with their lines (``.numpy()`` on a tensor not moved to the CPU,
``.detach()``, ``.data``, the indices of ``max(dim)`` / ``argmax`` followed until they reach
floating arithmetic) or of the jaxpr (``argmax`` reaching arithmetic, ``stop_gradient``). A graph
cut on a gradient that is wrong but not zero is named only when undoing the cuts (``.detach()``,
``.data``, ``stop_gradient`` made the identity) makes it agree with the reference.

``add_check_command(subparsers)`` and ``run_check_command(args)`` wire the command into
``reports.cli``. This module imports torch and JAX lazily, so adding the command costs nothing
at start-up; like ``reports.matrix``, running a check turns on ``jax_enable_x64`` (float64 cells
need it).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import linecache
import math
import os
import re
import sys
import sysconfig
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["check", "assert_matches", "CheckResult", "CellCheck", "Mistake", "Input", "CheckUsageError", "custom_inputs",
           "MISTAKES", "load", "adapt", "plain_forward", "cell_inputs", "add_check_command", "run_check_command"]

NAN = float("nan")
SCALE_FACTOR = 3.0  # the cotangent is scaled by this to see whether a backward follows it


class CheckUsageError(ValueError):
    """A mistake in what the check was asked to do (a file that does not import, a name that is
    not callable, shapes that do not fit the loss, an unknown loss): ``lossparity check`` prints
    the message without a traceback and exits with status 2."""


# -- the mistakes ------------------------------------------------------------------------

# code -> (title, how to fix it)
MISTAKES: dict[str, tuple[str, str]] = {
    "ignores-grad-output": (
        "a backward that ignores grad_output",
        "multiply every gradient the backward returns by grad_output (the cotangent; elementwise "
        "for reduction='none')"),
    "wrong-input": (
        "a gradient for the wrong input",
        "return one gradient per argument of forward, in forward's order (None for the arguments "
        "that get none)"),
    "wrong-shape": (
        "a gradient or value of the wrong shape",
        "each gradient must have its input's shape; the value must have the loss's shape for the "
        "reduction (a scalar for 'mean' and 'sum')"),
    "graph-cut": (
        "a graph cut on an intermediate",
        "keep the way from the inputs to the loss in the graph: no requires_grad_(), "
        "Variable(...), .detach(), .data, .item() or stop_gradient on an intermediate"),
    "max-indices": (
        "max indices used where values were needed",
        "x.max(dim) returns (values, indices): take .values (or [0]); indices (and argmax) are "
        "integers that carry no gradient"),
    "hard-coded-batch": (
        "a divide by a hard-coded batch size",
        "divide by the size you were given (input.shape[0], or the number of loss terms), not by "
        "a constant"),
    "numpy-round-trip": (
        "a NumPy round trip",
        "write the computation in torch ops (jax.numpy for JAX): Tensor.numpy() raises on a CUDA "
        "tensor and leaves the autograd graph, and a NumPy call cannot see JAX's traced values"),
    "reduction-scale": (
        "a gradient that differs only by the reduction's scale",
        "apply the reduction's own factor: 'mean' divides by its denominator (the number of loss "
        "terms, or the weight sum where the loss says so), 'sum' and 'none' by nothing"),
    "wrong-sign": ("a gradient with the wrong sign", "check the sign of the derivative"),
    "constant-factor": (
        "a gradient off by a constant factor",
        "check the constants of the derivative (the 2 of a square, a 1/2, a temperature)"),
    "gradient-count": (
        "a backward that returns the wrong number of gradients",
        "return exactly one gradient (or None) per argument of forward, hyperparameters included"),
    "missing-gradient": (
        "no gradient for a differentiable input",
        "return the gradient of every differentiable input (None only for those that get none)"),
    "raised": (
        "the loss raised an exception",
        "read the message; if the case's input form is one your loss is not meant for, choose "
        "the cases with --case"),
    "precision": (
        "agreement in float64 only",
        "the float32 errors exceed the tolerance: look for cancellation (log(sum(exp(x))) without "
        "the max shift, 1 - p for p near 1, a difference of large numbers)"),
    "mismatch": (
        "a disagreement that no known mistake explains",
        "compare the reproducer's output with the reference element by element"),
}


# -- results -----------------------------------------------------------------------------

@dataclass
class CellCheck:
    """One cell: one case, reduction, dtype, device (and batch size) of the callable against
    one oracle (``compared_with``: the reference, autograd, finite differences, gradcheck, ...)."""

    case: str
    reduction: str | None
    dtype: str
    device: str
    compared_with: str
    rtol: float
    atol: float
    batch: int | None = None  # None: the sampler's own size
    value_abs_err: float = NAN
    value_rel_err: float = NAN
    grad_abs_err: float = NAN
    grad_rel_err: float = NAN
    status: str = "passed"  # passed | failed | raised | xfail
    message: str = ""
    reproducer: str = ""

    @property
    def passed(self) -> bool:
        return self.status in ("passed", "xfail")

    @property
    def id(self) -> str:
        parts = [self.case, self.reduction or "-", self.dtype, self.device]
        if self.batch is not None:
            parts.append(f"batch={self.batch}")
        if self.compared_with not in ("reference",):
            parts.append(self.compared_with)
        return "-".join(parts)


@dataclass
class Mistake:
    """A classic mistake that the failing cells show, with the evidence that names it."""

    code: str
    title: str
    detail: str
    hint: str
    cells: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"[{self.code}] {self.title}", *("  " + line for line in self.detail.splitlines())]
        lines += [f"  at {w}" for w in self.where]
        if self.cells:
            shown = ", ".join(self.cells[:4]) + (f" and {len(self.cells) - 4} more" if len(self.cells) > 4 else "")
            lines.append(f"  seen in: {shown}")
        lines.append(f"  fix: {self.hint}")
        return "\n".join(lines)


@dataclass
class CheckResult:
    """What ``check`` found. ``passed`` (also ``bool(result)``) is True when every cell agrees;
    ``mistakes`` names the classic mistakes behind the failing cells; ``report()`` is what
    ``lossparity check`` prints."""

    target: str
    kind: str
    framework: str
    like: str | None
    call: str
    cells: list[CellCheck]
    mistakes: list[Mistake]
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.cells) and all(c.passed for c in self.cells)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failures(self) -> list[CellCheck]:
        return [c for c in self.cells if not c.passed]

    @property
    def mistake_codes(self) -> list[str]:
        return [m.code for m in self.mistakes]

    def table(self) -> str:
        from tabulate import tabulate
        failing = {id(c): i + 1 for i, c in enumerate(self.failures)}
        rows = []
        custom = any(c.compared_with not in ("reference", "NumPy round trips") for c in self.cells)
        for c in self.cells:
            status = {"passed": "ok", "failed": "FAILED", "raised": "RAISED", "xfail": "xfail"}[c.status]
            if id(c) in failing:
                status += f" #{failing[id(c)]}"
            row = [c.case, c.reduction or "-", c.dtype, c.device, "" if c.batch is None else c.batch]
            if custom:
                row.append(c.compared_with)
            row += [_fmt(c.value_abs_err), _fmt(c.value_rel_err), _fmt(c.grad_abs_err), _fmt(c.grad_rel_err),
                    _fmt(c.rtol), _fmt(c.atol), status]
            rows.append(row)
        headers = ["case", "reduction", "dtype", "device", "batch"] + (["vs"] if custom else []) + [
            "value abs err", "value rel err", "grad abs err", "grad rel err", "rtol", "atol", "result"]
        return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)

    def report(self, verbose: bool = False) -> str:
        out = [f"{self.target}: {self.kind} ({self.framework}), called as {self.call}"]
        out.append(f"against: {self.like}" if self.like else "against: its own forward")
        out += [f"note: {n}" for n in self.notes]
        out += [f"skipped: {s}" for s in self.skipped]
        out += ["", self.table(), ""]
        failures = self.failures
        if not failures:
            out.append(f"PASSED: all {len(self.cells)} cells agree within the tolerances.")
            return "\n".join(out) + "\n"
        out.append(f"FAILED: {len(failures)} of {len(self.cells)} cells disagree or raised.")
        for f in failures:
            if f.message:
                out.append(f"  #{failures.index(f) + 1} {f.id}: {_one_line(f.message, 300)}")
        if self.mistakes:
            out += ["", "Mistakes found:"]
            for m in self.mistakes:
                out += ["  " + line for line in str(m).splitlines()]
        shown = failures if verbose else [f for f in failures if f.reproducer][:1]
        for f in shown:
            if f.reproducer:
                out += ["", f"Reproduce #{failures.index(f) + 1} ({f.id}):", _indent(f.reproducer, "    ")]
        if not verbose and len([f for f in failures if f.reproducer]) > 1:
            out += ["", "Every failing cell has its reproducer (CheckResult.failures[i].reproducer); "
                        "--verbose prints them all. The others differ only in the arguments of the "
                        "line that draws the inputs:"]
            for f in failures[1:]:
                if f.reproducer:
                    out.append(f"    #{failures.index(f) + 1}: {_draw_line(f.reproducer)}")
        return "\n".join(out) + "\n"


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x == 0:
        return "0"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.2g}"


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _draw_line(reproducer: str) -> str:
    for line in reproducer.splitlines():
        if line.endswith("# the cell") or line.endswith("# seeded from the loss and the case"):
            return line.split(" = ", 1)[1].split("  #")[0]
    return ""


# -- loading the callable --------------------------------------------------------------

def load(target: str):
    """The object that ``"path/to/file.py:NAME"`` (or ``"package.module:NAME"``) names; NAME may
    be dotted (``MyLoss.apply``). Bad input is a ``CheckUsageError`` with a plain message."""
    if not isinstance(target, str) or ":" not in target:
        raise CheckUsageError(f"expected FILE.py:NAME (or module:NAME); got {target!r}")
    where, _, name = target.rpartition(":")
    if not where or not name:
        raise CheckUsageError(f"expected FILE.py:NAME (or module:NAME); got {target!r}")
    module = _import(where)
    obj = module
    for i, part in enumerate(name.split(".")):
        if not hasattr(obj, part):
            scope = where if i == 0 else ".".join(name.split(".")[:i])
            known = _public_callables(obj if i else module)
            close = difflib.get_close_matches(part, known, n=3, cutoff=0.5)
            hint = (f"; did you mean {', '.join(close)}?" if close else
                    f"; it defines {', '.join(known[:20])}" if known else "; it defines no callable")
            raise CheckUsageError(f"{scope} has no {part!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CheckUsageError(f"{name} in {where} is {_a(type(obj).__name__)} ({_short_repr(obj)}), not a callable; "
                              "name a function, an nn.Module, an autograd.Function or a jax.custom_vjp")
    return obj


def _a(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _short_repr(obj) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."


def _public_callables(scope) -> list[str]:
    own = getattr(scope, "__name__", None)
    out = []
    for k, v in vars(scope).items():
        if k.startswith("_") or not callable(v) or inspect.ismodule(v):
            continue
        if inspect.isclass(scope) or getattr(v, "__module__", own) == own:
            out.append(k)
    return sorted(out)


def _import(where: str):
    looks_like_file = where.endswith(".py") or os.sep in where or "/" in where
    if not looks_like_file:
        try:
            return importlib.import_module(where)
        except ModuleNotFoundError as e:
            if e.name and where.startswith(e.name):
                raise CheckUsageError(f"no module named {where!r} (and no file {where}.py); "
                                      "name a file as path/to/file.py:NAME") from None
            raise CheckUsageError(f"{where} does not import: {_exception_line(e, None)}") from None
        except Exception as e:
            raise CheckUsageError(f"{where} does not import: {_exception_line(e, None)}") from None
    path = Path(where).expanduser()
    if not path.exists():
        raise CheckUsageError(f"no such file: {where}")
    if path.is_dir() or path.suffix != ".py":
        raise CheckUsageError(f"{where} is not a Python file (.py)")
    path = path.resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    mod_name = f"lossparity_user_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(mod_name, None)
        raise CheckUsageError(f"{where} does not import: SyntaxError: {e.msg} (line {e.lineno})") from None
    except BaseException as e:  # noqa: BLE001  (SystemExit from a script is a user mistake too)
        sys.modules.pop(mod_name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise CheckUsageError(f"{where} does not import: {_exception_line(e, str(path))}") from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(path.parent))
    return module


def _exception_line(e: BaseException, user_file: str | None) -> str:
    where = _user_frame_of(e, {user_file} if user_file else set())
    return f"{type(e).__name__}: {e}" + (f" ({where})" if where else "")


# -- frames in user code -----------------------------------------------------------------

_REPORTS_DIR = os.path.dirname(os.path.abspath(__file__))
_LIBRARY_DIRS = tuple({p for p in (sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("purelib"),
                                   sysconfig.get_paths().get("platlib")) if p})


def _is_library(filename: str) -> bool:
    if not filename or filename.startswith("<"):
        return True
    path = os.path.abspath(filename)
    return (path.startswith(_REPORTS_DIR + os.sep) or "site-packages" in path or "dist-packages" in path
            or any(path.startswith(d + os.sep) for d in _LIBRARY_DIRS))


def _location(filename: str, lineno: int) -> str:
    code = linecache.getline(filename, lineno).strip()
    shown = os.path.relpath(filename) if not os.path.relpath(filename).startswith("..") else filename
    return f"{shown}:{lineno}: {code}" if code else f"{shown}:{lineno}"


def _pick_frame(frames: list[tuple[str, int]], user_files: set[str]) -> str:
    """The innermost frame in the user's file, else the innermost outside the libraries."""
    for filename, lineno in reversed(frames):
        if os.path.abspath(filename) in user_files:
            return _location(filename, lineno)
    for filename, lineno in reversed(frames):
        if not _is_library(filename):
            return _location(filename, lineno)
    return ""


def _user_frame_of(e: BaseException, user_files: set[str]) -> str:
    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(e.__traceback__)]
    return _pick_frame(frames, user_files)


def _user_frame_here(user_files: set[str]) -> str:
    frames = []
    f = sys._getframe(2)
    while f is not None:
        frames.append((f.f_code.co_filename, f.f_lineno))
        f = f.f_back
    return _pick_frame(list(reversed(frames)), user_files)


# -- adapting the callable -----------------------------------------------------------------

def _torch():
    import torch
    return torch


def _jax():
    import jax
    return jax


def _engine():
    """reports.matrix (which turns on jax_enable_x64, as the float64 cells need)."""
    from . import matrix
    return matrix


def detect_framework(obj) -> str | None:
    """"torch" or "jax" when the object says which, else None."""
    mod = type(obj).__module__ or ""
    if mod.startswith(("jax", "jaxlib")):
        return "jax"
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if inspect.isclass(obj) and issubclass(obj, (torch.autograd.Function, torch.nn.Module)):
            return "torch"
        if isinstance(obj, torch.nn.Module):
            return "torch"
    if mod.startswith("torch"):
        return "torch"
    if isinstance(obj, functools.partial):
        return detect_framework(obj.func)
    return _scan_names(obj, depth=3, seen=set())


def _scan_names(obj, depth: int, seen: set) -> str | None:
    """Which framework the code refers to: the globals and closure cells its code names, the
    functions of the same module that it calls followed a few levels down."""
    if depth < 0 or id(obj) in seen:
        return None
    seen.add(id(obj))
    votes = set()
    codes = []
    if inspect.isclass(obj):
        for base in inspect.getmro(obj):
            mod = getattr(base, "__module__", "") or ""
            if mod.startswith("torch"):
                votes.add("torch")
            elif mod.startswith(("jax", "flax", "equinox")):
                votes.add("jax")
        for attr in ("forward", "__call__", "__init__"):
            fn = inspect.getattr_static(obj, attr, None)
            fn = getattr(fn, "__func__", fn)
            if inspect.isfunction(fn):
                codes.append(fn)
    else:
        fn = inspect.unwrap(obj) if callable(obj) else obj
        if not inspect.isfunction(fn) and callable(fn):
            fn = getattr(type(fn), "__call__", None)
        if inspect.isfunction(fn):
            codes.append(fn)
    for fn in codes:
        g = fn.__globals__
        closure = {n: c.cell_contents for n, c in zip(fn.__code__.co_freevars, fn.__closure__ or ())
                   if _cell_ok(c)}
        for name in _code_names(fn.__code__):
            v = closure[name] if name in closure else g.get(name, None)
            if v is None:
                continue
            if inspect.ismodule(v):
                root = v.__name__.split(".")[0]
                if root == "torch":
                    votes.add("torch")
                elif root in ("jax", "jaxlib", "optax", "flax"):
                    votes.add("jax")
                continue
            mod = getattr(v, "__module__", "") or type(v).__module__ or ""
            if mod.startswith("torch"):
                votes.add("torch")
            elif mod.startswith(("jax", "jaxlib")):
                votes.add("jax")
            elif (inspect.isfunction(v) or inspect.isclass(v)) and mod == fn.__module__:
                found = _scan_names(v, depth - 1, seen)
                if found:
                    votes.add(found)
    if not votes and depth == 3:
        # nothing in the code names a framework: the one its module imports, if only one
        for fn in codes:
            for v in fn.__globals__.values():
                if inspect.ismodule(v):
                    root = v.__name__.split(".")[0]
                    if root == "torch":
                        votes.add("torch")
                    elif root in ("jax", "jaxlib"):
                        votes.add("jax")
    return votes.pop() if len(votes) == 1 else None


def _cell_ok(cell) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:
        return False


def _code_names(code) -> set[str]:
    names = set(code.co_names) | set(code.co_freevars)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _code_names(const)
    return names


class _FakeCtx:
    """What an old-style ``forward(ctx, ...)`` may touch when it runs as a plain function."""

    needs_input_grad = ()
    materialize_grads = True

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def save_for_forward(self, *tensors):
        pass

    def mark_dirty(self, *args):
        pass

    def mark_non_differentiable(self, *args):
        pass

    def set_materialize_grads(self, value):
        pass


def plain_forward(obj):
    """The forward alone, for autograd (or JAX) to differentiate: an ``autograd.Function``'s
    ``forward`` (called with a stand-in ctx when it takes one), a ``jax.custom_vjp``'s
    undecorated function; None for anything else."""
    if inspect.isclass(obj) and "torch" in sys.modules and issubclass(obj, sys.modules["torch"].autograd.Function):
        if _new_style(obj):
            return obj.forward

        def forward(*args, **kw):
            return obj.forward(_FakeCtx(), *args, **kw)
        forward.__signature__ = _drop_first(inspect.signature(obj.forward))
        forward.__name__ = f"{obj.__name__}.forward"
        return forward
    if "jax" in sys.modules and isinstance(obj, sys.modules["jax"].custom_vjp):
        return obj.fun
    return None


def _new_style(fn_class) -> bool:
    torch = _torch()
    return getattr(fn_class, "setup_context", None) is not torch.autograd.Function.setup_context


def _drop_first(sig: inspect.Signature) -> inspect.Signature:
    params = list(sig.parameters.values())
    return sig.replace(parameters=params[1:])


class Adapter:
    """How the check calls one user callable: ``call(*inputs, **hyperparameters)`` passes the
    hyperparameters the callable takes (as keywords to a function, to the constructor of an
    ``nn.Module`` class, positionally to ``Function.apply``) and leaves out the others."""

    def __init__(self, obj, framework: str | None = None, *, n_inputs: int, name: str | None = None,
                 fallback: dict | None = None):
        owner = getattr(obj, "__self__", None)
        if inspect.ismethod(obj) and obj.__name__ == "apply" and inspect.isclass(owner) and "torch" in sys.modules \
                and issubclass(owner, sys.modules["torch"].autograd.Function):
            obj = owner  # MyFunction.apply: the Function itself
            name = name.rpartition(".")[0] if name and name.endswith(".apply") else name
        self.obj = obj
        inner = obj.func if isinstance(obj, functools.partial) else obj
        self.name = name or getattr(inner, "__qualname__", None) or getattr(inner, "__name__", None) or \
            type(inner).__name__
        found = detect_framework(obj)
        if framework is not None and framework not in ("torch", "jax"):
            raise CheckUsageError(f"--framework must be torch or jax; got {framework!r}")
        if framework and found and framework != found and self._obviously(obj, found):
            raise CheckUsageError(f"{self.name} is {found} code, not {framework}")
        self.framework = framework or found
        if self.framework is None:
            raise CheckUsageError(f"cannot tell whether {self.name} is written with torch or JAX; "
                                  "pass --framework torch or --framework jax (framework= from Python)")
        self.n_inputs = n_inputs
        self.fallback = dict(fallback or {})
        self.fixed: dict = {}
        self.backward_log: list[dict] = []
        self.trace_state = None
        self.positional: list[str] = []
        self.defaults: dict = {}
        self.input_names: list[str] = []
        self.hyper_names: list[str] = []
        self._build()

    @staticmethod
    def _obviously(obj, found) -> bool:
        return (type(obj).__module__ or "").startswith(("jax", "jaxlib")) or inspect.isclass(obj) or \
            ("torch" in sys.modules and isinstance(obj, sys.modules["torch"].nn.Module))

    # the kinds ------------------------------------------------------------------------
    def _build(self):
        obj = self.obj
        torch = _torch() if self.framework == "torch" else None
        jax = _jax() if self.framework == "jax" else None
        if torch is not None and inspect.isclass(obj) and issubclass(obj, torch.autograd.Function):
            self.kind, self.variant = "torch.autograd.Function", "function"
            sig = inspect.signature(obj.forward)
            if not _new_style(obj):
                sig = _drop_first(sig)
            self._signature(sig, f"{self.name}.forward")
            self._target = _instrument_function(obj, self)
        elif torch is not None and isinstance(obj, torch.nn.Module):
            self.kind, self.variant = "nn.Module instance", "module"
            self._signature(inspect.signature(obj.forward), f"{self.name}.forward", hyper=False)
            self.accepts = frozenset()
            self.fixed = {k: _from_framework(getattr(obj, k)) for k in self.fallback
                          if k != "reduction" and hasattr(obj, k)}
            if isinstance(getattr(obj, "reduction", None), str):
                self.fixed["reduction"] = obj.reduction
        elif inspect.isclass(obj):
            self.kind = "nn.Module class" if torch is not None and issubclass(obj, torch.nn.Module) else "class"
            self.variant = "module" if self.framework == "torch" else "autodiff"
            call = obj.forward if hasattr(obj, "forward") else obj.__call__
            self._signature(_drop_first(inspect.signature(call)), f"{self.name}.forward", hyper=False)
            init = _drop_first(inspect.signature(obj.__init__)) if "__init__" in _mro_dicts(obj) else inspect.Signature()
            params = [p for p in init.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            self.accepts = None if any(p.kind == p.VAR_KEYWORD for p in init.parameters.values()) else \
                frozenset(p.name for p in params)
            self.hyper_names = [p.name for p in params]
            self.defaults = {p.name: p.default for p in params if p.default is not p.empty}
        elif jax is not None and isinstance(obj, jax.custom_vjp):
            self.kind, self.variant = "jax.custom_vjp", "custom_vjp"
            self._signature(inspect.signature(obj.fun), self.name)
            self._target = _instrument_custom_vjp(obj, self)
        else:
            self.kind = "function" if self.framework == "torch" else "jax function"
            if jax is not None and isinstance(obj, getattr(jax, "custom_jvp", ())):
                self.kind = "jax.custom_jvp"
            self.variant = "module" if self.framework == "torch" else "autodiff"
            try:
                sig = inspect.signature(obj)
            except (TypeError, ValueError):
                sig = None
            if sig is None:
                self.accepts, self.input_names = None, [f"input{i}" for i in range(self.n_inputs)]
            else:
                self._signature(sig, self.name)

    def _signature(self, sig: inspect.Signature, what: str, hyper: bool = True):
        params = list(sig.parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        var_pos = any(p.kind == p.VAR_POSITIONAL for p in params)
        if len(positional) < self.n_inputs and not var_pos:
            names = ", ".join(p.name for p in positional) or "nothing"
            raise CheckUsageError(f"{what} takes {len(positional)} positional argument(s) ({names}), but the loss "
                                  f"has {self.n_inputs} input(s)")
        self.required = sum(1 for p in positional if p.default is p.empty)
        self.input_names = [p.name for p in positional[:self.n_inputs]] + \
            [f"input{i}" for i in range(len(positional), self.n_inputs)]
        rest = positional[self.n_inputs:]
        kw_only = [p for p in params if p.kind == p.KEYWORD_ONLY]
        if hyper:
            self.positional = [p.name for p in rest]
            self.accepts = None if any(p.kind == p.VAR_KEYWORD for p in params) else \
                frozenset(p.name for p in rest + kw_only)
            self.hyper_names = [p.name for p in rest + kw_only]
            self.defaults = {p.name: p.default for p in rest + kw_only if p.default is not p.empty}
        if self.kind == "torch.autograd.Function":
            self.accepts = frozenset(self.positional) | frozenset(p.name for p in kw_only)

    # what it takes -------------------------------------------------------------------
    @property
    def takes_reduction(self) -> bool:
        return self.accepts is None or "reduction" in self.accepts

    def takes(self, key: str) -> bool:
        return self.accepts is None or key in self.accepts

    @property
    def hand_written(self) -> bool:
        return self.kind in ("torch.autograd.Function", "jax.custom_vjp")

    def _hyper(self, kw: dict) -> dict:
        return {k: v for k, v in kw.items() if self.takes(k)}

    def call(self, *inputs, **kw):
        kw = self._hyper(kw)
        if self.kind == "torch.autograd.Function":
            missing = [n for n in self.positional if n not in kw and n not in self.defaults and n not in self.fallback]
            if missing:
                raise TypeError(f"{self.name}.forward needs {missing}, which the check cannot supply")
            args = [kw.pop(n) if n in kw else self.defaults.get(n, self.fallback.get(n)) for n in self.positional]
            return self._target.apply(*inputs, *args, **kw)
        if self.kind in ("nn.Module class", "class"):
            return self.obj(**kw)(*inputs)
        if self.kind == "jax.custom_vjp":
            return self._target(*inputs, **kw)
        return self.obj(*inputs, **kw)

    def describe_call(self) -> str:
        """How the check calls it, e.g. ``CrossEntropyLoss(reduction=..., label_smoothing=...)(input, target)``."""
        ins = ", ".join(self.input_names)
        hyper = ", ".join(f"{k}=..." for k in (self.hyper_names if self.accepts is not None else ["**hyperparameters"]))
        hyper = hyper.replace("**hyperparameters=...", "**hyperparameters")
        if self.kind == "torch.autograd.Function":
            return f"{self.name}.apply({', '.join([*self.input_names, *self.positional])})"
        if self.kind in ("nn.Module class", "class"):
            return f"{self.name}({hyper})({ins})"
        if self.kind == "nn.Module instance":
            return f"{self.name}({ins})"
        return f"{self.name}({ins}{', ' + hyper if hyper else ''})"


def _mro_dicts(cls) -> dict:
    out = {}
    for base in reversed(inspect.getmro(cls)):
        if base is not object:
            out.update(vars(base))
    return out


def _from_framework(v):
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        return v.detach().cpu().numpy()
    return v


def _instrument_function(cls, adapter: Adapter):
    """A subclass of the user's Function whose backward records what it received and returned
    (and traces its torch calls while a trace runs); the maths is the user's own."""
    torch = _torch()
    if getattr(cls, "vjp", None) is not torch.autograd.Function.vjp or \
            getattr(cls, "backward", None) is torch.autograd.Function.backward:
        return cls
    user_backward = cls.backward

    def backward(ctx, *grad_outputs):
        state = adapter.trace_state
        with (_tracer(state, "backward") if state is not None else contextlib.nullcontext()):
            out = user_backward(ctx, *grad_outputs)
        outs = out if isinstance(out, tuple) else (out,)
        adapter.backward_log.append({
            "grad_output": [None if g is None else tuple(g.shape) for g in grad_outputs],
            "returned": [None if g is None else tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
                         for g in outs]})
        return out

    return type(cls.__name__, (cls,), {"backward": staticmethod(backward), "__module__": cls.__module__,
                                      "__qualname__": cls.__qualname__, "__doc__": cls.__doc__})


def _instrument_custom_vjp(obj, adapter: Adapter):
    jax = _jax()
    fwd, bwd = getattr(obj, "fwd", None), getattr(obj, "bwd", None)
    if fwd is None or bwd is None:
        raise CheckUsageError(f"{adapter.name} is a jax.custom_vjp without defvjp(fwd, bwd)")

    def bwd_logged(*args):
        out = bwd(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        adapter.backward_log.append({
            "grad_output": [tuple(np.shape(args[-1]))],
            "returned": [None if g is None else tuple(np.shape(g)) for g in outs]})
        return out

    try:
        new = jax.custom_vjp(obj.fun, nondiff_argnums=obj.nondiff_argnums)
        new.defvjp(fwd, bwd_logged, symbolic_zeros=getattr(obj, "symbolic_zeros", False))
        return new
    except Exception:  # a JAX whose custom_vjp cannot be rebuilt: use it as it is
        return obj


def adapt(obj, framework: str | None = None, *, n_inputs: int | None = None, like: str | None = None) -> Adapter:
    """The ``Adapter`` that calls ``obj`` as the check does (``obj`` may be ``"FILE.py:NAME"``)."""
    if isinstance(obj, str):
        obj = load(obj)
    spec = _spec(like) if like else None
    n = len(spec.inputs) if spec else n_inputs
    if n is None:
        raise CheckUsageError("adapt needs like= or n_inputs=")
    return Adapter(obj, framework, n_inputs=n, fallback=spec.defaults if spec else None)


def _spec(like: str):
    import reference
    try:
        return reference.get(like)
    except KeyError as e:
        raise CheckUsageError(e.args[0]) from None


# -- inputs for a loss the catalogue lacks -------------------------------------------------

_KINDS = ("normal", "positive", "unit", "sign", "labels")


@dataclass(frozen=True)
class Input:
    """One input of a loss the catalogue lacks: a shape and how to draw its values.

    ``normal`` ~ N(0, 1) (the default), ``positive`` ~ U(0.5, 2), ``unit`` ~ U(0.05, 0.95),
    ``sign`` in {-1, +1} (floats), ``labels`` integers in [0, classes). Written ``"6,4"``,
    ``"6,4:positive"``, ``"6:labels4"`` on the command line (``Input.parse``)."""

    shape: tuple[int, ...]
    kind: str = "normal"
    classes: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Input":
        if isinstance(text, Input):
            return text
        shape_text, _, kind = str(text).partition(":")
        try:
            shape = tuple(int(s) for s in shape_text.split(",") if s.strip() != "")
        except ValueError:
            raise CheckUsageError(f"a shape is comma-separated sizes such as 6,4 (optionally :KIND); got {text!r}") from None
        if any(s < 0 for s in shape):
            raise CheckUsageError(f"sizes must not be negative; got {text!r}")
        kind = kind.strip() or "normal"
        m = re.fullmatch(r"(?:labels|int)(\d+)", kind)
        if m:
            if int(m.group(1)) < 1:
                raise CheckUsageError(f"labels need at least one class; got {text!r}")
            return cls(shape, "labels", int(m.group(1)))
        if kind not in _KINDS or kind == "labels":
            raise CheckUsageError(f"unknown input kind {kind!r} in {text!r}; choose from normal, positive, unit, "
                                  "sign, labelsK (integers in [0, K))")
        return cls(shape, kind)

    def draw(self, rng: np.random.Generator, dtype: str = "float64", batch: int | None = None) -> np.ndarray:
        shape = self.shape if batch is None or not self.shape else (batch,) + self.shape[1:]
        if self.kind == "labels":
            return rng.integers(self.classes, size=shape).astype(np.int64)
        x = {"normal": lambda: rng.standard_normal(shape),
             "positive": lambda: rng.uniform(0.5, 2.0, size=shape),
             "unit": lambda: rng.uniform(0.05, 0.95, size=shape),
             "sign": lambda: rng.choice([-1.0, 1.0], size=shape)}[self.kind]()
        return np.asarray(x, dtype=np.float64).astype(dtype)

    @property
    def floating(self) -> bool:
        return self.kind != "labels"

    def __str__(self) -> str:
        kind = f"labels{self.classes}" if self.kind == "labels" else self.kind
        return ",".join(map(str, self.shape)) + ("" if kind == "normal" else f":{kind}")


# -- cells' inputs -------------------------------------------------------------------------

def cell_inputs(like: str, case: str | None = None, reduction: str = "mean", dtype: str = "float64", *,
                seed: int = 0, params: dict | None = None, sample: dict | None = None, batch: int | None = None):
    """The inputs of one ``lossparity check`` cell, a ``reports.matrix.Drawn``: exactly
    ``reports.matrix.draw`` unless ``params`` (fixed hyperparameters), ``sample`` (sampler
    options) or ``batch`` (another batch size) change them."""
    matrix = _engine()
    spec = _spec(like)
    case_obj = spec.case(case)
    if not params and not sample and batch is None:
        return matrix.draw(spec, case_obj.name, reduction, dtype, seed)
    sizes = dict(sample or {})
    if batch is not None:
        sizes.update(_batch_option(spec, case_obj, sizes, batch))
    rng = np.random.default_rng(matrix.seed_for(spec.name, case_obj.name, seed))
    inputs, kw = spec.draw(rng, case_obj, getattr(np, dtype), **sizes)
    for k, v in (params or {}).items():
        kw[k] = v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
    kw["reduction"] = reduction
    import reference
    shape = np.shape(reference.loss(spec.name, *matrix._as64(inputs), **matrix._as64(kw)))
    cot_rng = np.random.default_rng(matrix.seed_for(spec.name, case_obj.name, seed) + 1)
    return matrix.Drawn(inputs, kw, cot_rng.standard_normal(shape).astype(dtype))


def custom_inputs(shapes, reduction=None, dtype: str = "float64", *, batch: int | None = None, seed: int = 0,
                  params: dict | None = None) -> tuple[list, dict]:
    """The inputs and keyword arguments of one cell of a check without ``like``: each input drawn
    from its ``Input`` (or shape string; None leaves a place for an array you give yourself),
    rounded to ``dtype``, as ``check(fn, inputs=shapes, ...)`` draws them."""
    inputs = []
    for i, s in enumerate(shapes):
        if s is None:
            inputs.append(None)
            continue
        x = Input.parse(s).draw(np.random.default_rng([seed, i]), "float64", batch)
        inputs.append(x.astype(dtype) if x.dtype.kind == "f" else x)
    kw = dict(params or {})
    if reduction is not None:
        kw["reduction"] = reduction
    return inputs, kw


def _sampler_params(spec) -> dict | None:
    """The sampler's keyword defaults; None when it hides them behind ``**options``."""
    import reference
    sampler = spec.sampler
    if spec.alias_of:
        sampler = reference.get(spec.alias_of).sampler
    params = inspect.signature(sampler).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()) and len(params) <= 2:
        return None
    return {k: p.default for k, p in params.items() if p.default is not p.empty}


_BATCH_OPTIONS = ("shape", "n", "batch", "N")


def _batch_info(spec, case_obj, sample: dict) -> tuple[str, int] | None:
    """The sampler option that sets the batch size, and the batch size it draws by default."""
    defaults = _sampler_params(spec)
    for key in _BATCH_OPTIONS:
        if key in sample:
            value = sample[key]
        elif defaults is not None and key in defaults:
            value = defaults[key]
        elif defaults is None and key == "shape":
            matrix_rng = np.random.default_rng(0)
            value = np.shape(spec.draw(matrix_rng, case_obj, **sample)[0][0])
        else:
            continue
        if key in ("shape", "batch"):
            if not isinstance(value, tuple) or not value:
                continue
            return key, int(value[0])
        if isinstance(value, (int, np.integer)):
            return key, int(value)
    return None


def _batch_option(spec, case_obj, sample: dict, batch: int) -> dict:
    info = _batch_info(spec, case_obj, {**case_obj.sample, **sample})
    if info is None:
        raise CheckUsageError(f"{spec.name}'s sampler has no batch size option")
    key, _ = info
    current = {**case_obj.sample, **sample}.get(key)
    if key in ("shape", "batch"):
        if current is None:
            defaults = _sampler_params(spec)
            current = defaults[key] if defaults is not None else \
                np.shape(spec.draw(np.random.default_rng(0), case_obj, **sample)[0][0])
        return {key: (batch,) + tuple(current)[1:]}
    return {key: batch}


# -- tracing ---------------------------------------------------------------------------------

@dataclass
class _Event:
    kind: str   # numpy | requires_grad_ | detach | data | item | max-indices | stop_gradient
    what: str
    where: str
    phase: str = "forward"
    moved_to_cpu: bool = False
    origin: str = ""  # max-indices: where the indices were made


class _TraceState:
    def __init__(self, primals, user_files: set[str]):
        self.events: list[_Event] = []
        self.primal_ids = {id(p) for p in primals}
        self.user_files = user_files
        self.indices: dict[int, Any] = {}
        self.cpu: dict[int, Any] = {}
        self._seen: set = set()

    def add(self, kind, what, phase, moved_to_cpu=False, origin=""):
        where = _user_frame_here(self.user_files)
        key = (kind, what, where, phase)
        if key not in self._seen:
            self._seen.add(key)
            self.events.append(_Event(kind, what, where, phase, moved_to_cpu, origin))

    @staticmethod
    def _has(table, t) -> bool:
        ref = table.get(id(t))
        return ref is not None and ref[0]() is t

    def is_index(self, t) -> bool:
        return self._has(self.indices, t)

    def index_origin(self, t) -> tuple[str, str]:
        return self.indices[id(t)][1:]

    def mark_index(self, t, source: str, origin: str | None = None):
        import weakref
        self.indices[id(t)] = (weakref.ref(t), source, _user_frame_here(self.user_files) if origin is None else origin)

    def is_cpu(self, t) -> bool:
        return self._has(self.cpu, t)

    def mark_cpu(self, t):
        import weakref
        self.cpu[id(t)] = (weakref.ref(t),)


_INDEX_SOURCES = {"max", "min", "median", "nanmedian", "mode", "kthvalue", "topk", "sort", "cummax", "cummin"}
_INDEX_PLAIN = {"argmax", "argmin", "argsort"}
_INDEX_CONSUMERS = {
    "gather", "scatter", "scatter_", "scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_",
    "index_select", "take_along_dim", "take", "index_add", "index_add_", "index_copy", "index_copy_",
    "index_fill", "index_fill_", "index_put", "index_put_", "one_hot", "embedding", "eq", "ne", "lt", "le",
    "gt", "ge", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "bincount", "unique", "where",
    "masked_fill", "masked_fill_", "masked_select", "__setitem__", "numel", "size", "dim", "__len__",
    "__index__", "__int__", "item", "tolist", "__format__", "__repr__", "__bool__", "equal", "isin",
    "__hash__", "nonzero", "count_nonzero", "any", "all", "__contains__", "data_ptr", "__iter__"}


@functools.lru_cache(maxsize=1)
def _tracer_class():
    torch = _torch()
    from torch.overrides import TorchFunctionMode

    class Tracer(TorchFunctionMode):
        """Records the torch calls that explain a wrong gradient (in the user's code, with the
        line): NumPy round trips, graph cuts, max indices that reach floating arithmetic."""

        def __init__(self, state: _TraceState, phase: str):
            super().__init__()
            self.state, self.phase = state, phase

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            st, phase = self.state, self.phase
            name = getattr(func, "__name__", "")
            owner = getattr(getattr(func, "__self__", None), "__name__", "")
            this = args[0] if args and isinstance(args[0], torch.Tensor) else None
            grad_on = torch.is_grad_enabled()
            if this is not None:
                if name in ("numpy", "__array__"):
                    st.add("numpy", f"Tensor.{name}()", phase, moved_to_cpu=st.is_cpu(this))
                elif name == "tolist" and this.requires_grad and grad_on:
                    st.add("numpy", "Tensor.tolist()", phase)
                elif name == "item" and this.requires_grad and grad_on:
                    st.add("item", "Tensor.item()", phase)
                elif name == "requires_grad_" and grad_on and id(this) not in st.primal_ids and \
                        (args[1] if len(args) > 1 else kwargs.get("requires_grad", True)):
                    st.add("requires_grad_", "Tensor.requires_grad_()", phase)
                elif name == "__set__" and owner == "requires_grad" and grad_on and id(this) not in st.primal_ids:
                    st.add("requires_grad_", "Tensor.requires_grad = ...", phase)
                elif name == "detach" and this.requires_grad and grad_on:
                    st.add("detach", "Tensor.detach()", phase)
                elif name == "__get__" and owner == "data" and this.requires_grad and grad_on:
                    st.add("data", "Tensor.data", phase)
            result = func(*args, **kwargs)
            try:
                self._follow(func, name, args, kwargs, result)
            except Exception:  # the trace is evidence, never a reason to fail the call
                pass
            return result

        def _follow(self, func, name, args, kwargs, result):
            st = self.state
            if name in ("cpu",) or (name == "to" and isinstance(result, torch.Tensor) and result.device.type == "cpu"
                                    and any(a == "cpu" or getattr(a, "type", None) == "cpu"
                                            for a in list(args[1:]) + list(kwargs.values()))):
                if isinstance(result, torch.Tensor):
                    st.mark_cpu(result)
            if name in ("detach",) and args and st.is_cpu(args[0]) and isinstance(result, torch.Tensor):
                st.mark_cpu(result)
            if name in _INDEX_SOURCES and hasattr(result, "indices"):
                st.mark_index(result.indices, f"the indices of {name}(dim)")
                return
            if name in _INDEX_PLAIN and isinstance(result, torch.Tensor):
                st.mark_index(result, name)
                return
            tensors = [t for t in _flat(args, kwargs) if isinstance(t, torch.Tensor)]
            tainted = [t for t in tensors if st.is_index(t)]
            if not tainted or name in _INDEX_CONSUMERS:
                return
            if name == "__getitem__" and not st.is_index(args[0]):
                return
            source, origin = st.index_origin(tainted[0])
            outs = [t for t in _flat((result,), {}) if isinstance(t, torch.Tensor)]
            if any(t.is_floating_point() for t in outs):
                st.add("max-indices", f"{source} used as numbers (in {name})", self.phase, origin=origin)
            else:
                for t in outs:
                    st.mark_index(t, source, origin)

    return Tracer


def _tracer(state: _TraceState, phase: str):
    return _tracer_class()(state, phase)


@functools.lru_cache(maxsize=1)
def _uncut_class():
    torch = _torch()
    from torch.overrides import TorchFunctionMode

    class Uncut(TorchFunctionMode):
        """The callable with its graph cuts undone: ``.detach()``, ``.data`` and
        ``requires_grad_()`` on a tensor in the graph return that tensor itself. If the gradient
        then agrees with the reference, the cuts were the mistake."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            owner = getattr(getattr(func, "__self__", None), "__name__", "")
            this = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if this is not None and this.requires_grad and torch.is_grad_enabled() and (
                    name in ("detach", "requires_grad_") or (name == "__get__" and owner == "data")):
                return this
            return func(*args, **(kwargs or {}))

    return Uncut


def _eval_uncut(jaxpr, consts, *args):
    """Evaluate a jaxpr with every ``stop_gradient`` (also inside nested ``jit``) the identity."""
    env = {}

    def read(v):
        return v.val if type(v).__name__ == "Literal" else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        inner = eqn.params.get("jaxpr")
        if eqn.primitive.name == "stop_gradient":
            outs = ins
        elif eqn.primitive.name in ("jit", "pjit", "closed_call", "core_call") and hasattr(inner, "consts"):
            outs = _eval_uncut(inner.jaxpr, inner.consts, *ins)
        else:
            outs = eqn.primitive.bind(*ins, **eqn.params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def _uncut_grads(adapter, sig, d) -> list | None:
    """The gradients with the graph cuts undone (see ``_uncut_class``), in float64 on the CPU;
    None when that cannot run."""
    try:
        if adapter.framework == "torch":
            run = _run_torch(adapter, sig, d, "cpu", uncut=True)
            return None if run.error is not None or run.grads is None else run.grads
        jax, matrix = _jax(), _engine()
        arrays, kw = matrix.jax_arrays(d)
        call, primals = matrix.on_differentiable(adapter.call, sig, arrays, kw)
        closed = jax.make_jaxpr(call)(*primals)
        out, pullback = jax.vjp(lambda *p: _eval_uncut(closed.jaxpr, closed.consts, *p)[0], *primals)
        cot = jax.numpy.asarray(d.cotangent).astype(out.dtype).reshape(np.shape(out))
        return [np.asarray(g, dtype=np.float64) for g in pullback(cot)]
    except Exception:
        return None


def _flat(args, kwargs):
    out = []
    stack = list(args) + list(kwargs.values())
    while stack:
        a = stack.pop()
        if isinstance(a, (list, tuple)):
            stack.extend(a)
        else:
            out.append(a)
    return out


def _foreign_leaves(out, primals, extra=()) -> list[tuple]:
    """Shapes of the leaves in ``out``'s graph that require grad but are none of the inputs."""
    known = {id(p) for p in primals} | {id(p) for p in extra}
    leaves, seen, stack = [], set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        var = getattr(node, "variable", None)
        if var is not None and id(var) not in known:
            leaves.append(tuple(var.shape))
        stack.extend(n for n, _ in getattr(node, "next_functions", ()))
    if out.grad_fn is None and out.requires_grad and id(out) not in known:
        leaves.append(tuple(out.shape))
    return leaves


_JAX_CONSUMERS = {"gather", "dynamic_slice", "dynamic_update_slice", "scatter", "scatter-add", "scatter_add",
                  "scatter_mul", "scatter_min", "scatter_max", "eq", "ne", "lt", "le", "gt", "ge", "select_n",
                  "iota", "argsort"}


def _jax_events(call, primals, user_files: set[str]) -> list[_Event]:
    """argmax / top_k indices that reach floating arithmetic, and stop_gradient, in the jaxpr."""
    jax = _jax()
    try:
        closed = jax.make_jaxpr(call)(*primals)
    except Exception as e:
        if _is_tracer_conversion(e):
            return [_Event("numpy", "a NumPy call on a traced array", _user_frame_of(e, user_files))]
        return []
    events: list[_Event] = []
    _walk_jaxpr(closed.jaxpr, {}, events, set())
    return events


def _jaxpr_location(eqn) -> str:
    try:
        from jax._src import source_info_util
        frame = source_info_util.user_frame(eqn.source_info.traceback)
        return _location(frame.file_name, frame.start_line) if frame else ""
    except Exception:
        return ""


def _sub_jaxprs(eqn):
    for v in eqn.params.values():
        items = v if isinstance(v, (tuple, list)) else (v,)
        for item in items:
            jaxpr = getattr(item, "jaxpr", None) if hasattr(item, "consts") else item
            if hasattr(jaxpr, "eqns") and hasattr(jaxpr, "invars"):
                yield jaxpr


def _walk_jaxpr(jaxpr, tainted: set, events: list, seen: set) -> set:
    def is_var(v):
        return type(v).__name__ != "Literal"

    def add(kind, what, where, origin=""):
        if (kind, where) not in seen:
            seen.add((kind, where))
            events.append(_Event(kind, what, where, origin=origin))

    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        hit = [tainted[v] for v in eqn.invars if is_var(v) and v in tainted]
        if name == "stop_gradient":
            add("stop_gradient", "jax.lax.stop_gradient", _jaxpr_location(eqn))
        if name in ("argmax", "argmin"):
            tainted.update({o: (name, _jaxpr_location(eqn)) for o in eqn.outvars})
            continue
        if name == "top_k" and len(eqn.outvars) > 1:
            tainted[eqn.outvars[1]] = ("the indices of top_k", _jaxpr_location(eqn))
            continue
        subs = list(_sub_jaxprs(eqn))
        if subs:
            for sub in subs:
                if len(sub.invars) == len(eqn.invars):
                    inner = {s: tainted[v] for s, v in zip(sub.invars, eqn.invars) if is_var(v) and v in tainted}
                    out = _walk_jaxpr(sub, inner, events, seen)
                    if len(sub.outvars) == len(eqn.outvars):
                        tainted.update({o: out[s] for o, s in zip(eqn.outvars, sub.outvars) if is_var(s) and s in out})
                else:
                    _walk_jaxpr(sub, {}, events, seen)
            continue
        if not hit or name in _JAX_CONSUMERS:
            continue
        source, origin = hit[0]
        if any(np.issubdtype(o.aval.dtype, np.floating) for o in eqn.outvars if hasattr(o, "aval")):
            add("max-indices", f"{source} used as numbers (in {name})", _jaxpr_location(eqn), origin)
        else:
            tainted.update({o: hit[0] for o in eqn.outvars})
    return {v: tainted[v] for v in jaxpr.outvars if is_var(v) and v in tainted}


def _is_tracer_conversion(e: BaseException) -> bool:
    return type(e).__name__ in ("TracerArrayConversionError", "TracerIntegerConversionError") or \
        "__array__() was called on traced array" in str(e)


# -- running the callable --------------------------------------------------------------------

@dataclass
class _Run:
    value: np.ndarray | None = None
    grads: list | None = None          # None entries: no gradient reached that input
    error: BaseException | None = None
    phase: str = ""                    # where it raised: forward | backward
    detached: bool = False
    foreign: list = field(default_factory=list)
    backward_log: list = field(default_factory=list)
    note: str = ""


class _Sig:
    """What ``reports.matrix.on_differentiable`` reads of a spec, for a loss the catalogue lacks."""

    def __init__(self, inputs, differentiable):
        self.inputs, self.differentiable, self.differentiable_params = tuple(inputs), tuple(differentiable), ()

    def gradient_names(self, kw):
        return self.differentiable


def _run_torch(adapter: Adapter, sig, d, device: str, trace: _TraceState | None = None, uncut: bool = False) -> _Run:
    torch, matrix = _torch(), _engine()
    run = _Run()
    arrays, kw = matrix.torch_arrays(d, device)
    call, primals = matrix.on_differentiable(adapter.call, sig, arrays, kw)
    diff = [p.clone().requires_grad_(True) for p in primals]
    if trace is not None:
        trace.primal_ids |= {id(p) for p in diff}
    adapter.backward_log.clear()
    adapter.trace_state = trace
    try:
        try:
            mode = _tracer(trace, "forward") if trace is not None else \
                _uncut_class()() if uncut else contextlib.nullcontext()
            with mode:
                out = call(*diff)
        except Exception as e:
            run.error, run.phase = e, "forward"
            return run
        if not isinstance(out, torch.Tensor):
            kind = " (a NumPy value)" if isinstance(out, (np.ndarray, np.generic)) else ""
            run.error, run.phase = TypeError(f"returned {_a(type(out).__name__)}{kind}, not a torch.Tensor"), "forward"
            return run
        run.value = out.detach().cpu().double().numpy()
        params = list(adapter.obj.parameters()) if isinstance(adapter.obj, torch.nn.Module) else []
        run.foreign = _foreign_leaves(out, diff, params)
        if not out.requires_grad:
            run.detached = True
            run.error = RuntimeError("the result does not require grad and has no grad_fn: it is detached from "
                                     "the inputs")
            run.phase = "backward"
            return run
        cot = torch.as_tensor(d.cotangent, device=out.device).to(out.dtype)
        if tuple(out.shape) != tuple(cot.shape):
            if out.numel() != cot.numel():
                run.note = "the value's shape differs from the reference's: no gradient compared"
                return run
            cot = cot.reshape(out.shape)
        try:
            grads = torch.autograd.grad(out, diff, cot, allow_unused=True)
        except Exception as e:
            run.error, run.phase = e, "backward"
            return run
        run.grads = [None if g is None else g.detach().cpu().double().numpy() for g in grads]
        return run
    finally:
        adapter.trace_state = None
        run.backward_log = list(adapter.backward_log)


def _hashable(v) -> bool:
    try:
        hash(v)
        return True
    except TypeError:
        return False


def _jitted_vjp(adapter: Adapter, sig):
    """One jitted value-and-VJP per callable and signature (JAX then compiles it once per
    shapes, dtypes and static hyperparameters): the jit cell and the diagnosis of its failure."""
    cache = adapter.__dict__.setdefault("_jit_cache", {})
    if id(sig) not in cache:
        jax, matrix = _jax(), _engine()

        def value_and_vjp(arrays, array_kw, cot, static):
            call, primals = matrix.on_differentiable(adapter.call, sig, list(arrays), {**dict(static), **array_kw})
            out, pullback = jax.vjp(call, *primals)
            if np.shape(out) != cot.shape:
                if np.size(out) != cot.size:
                    return out, None
                cot = cot.reshape(np.shape(out))
            return out, pullback(cot.astype(out.dtype))

        cache[id(sig)] = (sig, jax.jit(value_and_vjp, static_argnums=(3,)))
    return cache[id(sig)][1]


def _run_jax(adapter: Adapter, sig, d, device: str, mode: str = "eager") -> _Run:
    """The callable's value and VJP on one cell, "eager" (op by op: JAX reuses each primitive's
    compilation across checks of the same shapes) or under "jit" (the jit cell)."""
    jax, matrix = _jax(), _engine()
    run = _Run()
    arrays, kw = matrix.jax_arrays(d, device)
    adapter.backward_log.clear()
    if mode == "jit":
        static = {k: v for k, v in kw.items() if not isinstance(v, jax.Array)}
        if all(_hashable(v) for v in static.values()):
            key = (tuple(sorted(static.items(), key=lambda kv: kv[0])),
                   tuple((np.shape(a), str(np.asarray(a).dtype)) for a in arrays), d.cotangent.shape, str(d.cotangent.dtype))
            try:
                out, grads = _jitted_vjp(adapter, sig)(
                    arrays, {k: v for k, v in kw.items() if k not in static},
                    jax.device_put(d.cotangent, jax.devices("gpu" if device == "cuda" else "cpu")[0]),
                    key[0])
            except Exception as e:
                run.error, run.phase = e, "forward"
                return run
            else:
                logs = adapter.__dict__.setdefault("_jit_logs", {})
                if adapter.backward_log:
                    logs[key] = list(adapter.backward_log)
                run.backward_log = list(adapter.backward_log) or logs.get(key, [])
                run.value = np.asarray(out, dtype=np.float64)
                if grads is None:
                    run.note = "the value's shape differs from the reference's: no gradient compared"
                else:
                    run.grads = [None if g is None else np.asarray(g, dtype=np.float64) for g in grads]
                return run
    call, primals = matrix.on_differentiable(adapter.call, sig, arrays, kw)
    try:
        try:
            out, pullback = jax.vjp(call, *primals)
        except Exception as e:
            run.error, run.phase = e, "forward"
            return run
        run.value = np.asarray(out, dtype=np.float64)
        cot = jax.numpy.asarray(d.cotangent).astype(out.dtype)
        if tuple(np.shape(out)) != tuple(cot.shape):
            if np.size(out) != cot.size:
                run.note = "the value's shape differs from the reference's: no gradient compared"
                return run
            cot = cot.reshape(np.shape(out))
        try:
            grads = pullback(cot)
        except Exception as e:
            run.error, run.phase = e, "backward"
            return run
        run.grads = [None if g is None else np.asarray(g, dtype=np.float64) for g in grads]
        return run
    finally:
        run.backward_log = run.backward_log or list(adapter.backward_log)


def _run(adapter, sig, d, device, trace=None) -> _Run:
    if adapter.framework == "torch":
        return _run_torch(adapter, sig, d, device, trace)
    return _run_jax(adapter, sig, d, device)


def _value_only(adapter: Adapter, sig, inputs: tuple, kw: dict) -> np.ndarray:
    """The callable's value at NumPy ``inputs`` (float64), no gradient: for finite differences."""
    matrix = _engine()
    d = matrix.Drawn(tuple(inputs), kw, np.zeros(()))
    if adapter.framework == "torch":
        torch = _torch()
        arrays, tkw = matrix.torch_arrays(d)
        with torch.no_grad():
            out = adapter.call(*arrays, **tkw)
        return out.detach().cpu().double().numpy()
    arrays, jkw = matrix.jax_arrays(d)
    return np.asarray(adapter.call(*arrays, **jkw), dtype=np.float64)


def _fd_vjp(value_fn, inputs: tuple, positions: list[int], cotangent: np.ndarray, step: float = 1e-6) -> list:
    """Central differences of ``sum(cotangent * value_fn(*inputs))`` in float64."""
    grads = []
    for i in positions:
        x = np.asarray(inputs[i], dtype=np.float64)
        g = np.zeros_like(x)
        for j in np.ndindex(x.shape):
            def at(delta):
                moved = list(inputs)
                moved[i] = x.copy()
                moved[i][j] += delta
                return float(np.sum(cotangent * np.asarray(value_fn(*moved), dtype=np.float64)))
            g[j] = (at(step) - at(-step)) / (2 * step)
        grads.append(g)
    return grads


# -- comparing ---------------------------------------------------------------------------

def _compare(cell: CellCheck, run: _Run, want_value, want_grads, names=()) -> CellCheck:
    matrix = _engine()
    if run.error is not None:
        cell.status = "raised"
        cell.message = f"{run.phase} raised {type(run.error).__name__}: {run.error}"
        return cell
    cell.value_abs_err, cell.value_rel_err = matrix.errors(run.value, np.asarray(want_value))
    ok = matrix.close(run.value, np.asarray(want_value), cell.rtol, cell.atol)
    if run.grads is None:
        ok = False
        cell.message = run.note or "no gradient"
    else:
        errs = []
        for g, w in zip(run.grads, want_grads):
            g = np.zeros(np.shape(w)) if g is None else g
            errs.append(matrix.errors(g, np.asarray(w)))
            ok = ok and matrix.close(g, np.asarray(w), cell.rtol, cell.atol)
        if errs:
            cell.grad_abs_err, cell.grad_rel_err = max(e[0] for e in errs), max(e[1] for e in errs)
        else:
            cell.grad_abs_err = cell.grad_rel_err = 0.0
    if not ok:
        cell.status = "failed"
        if not cell.message:
            cell.message = _mismatch_message(run, want_value, want_grads, cell, names)
    return cell


def _mismatch_message(run: _Run, want_value, want_grads, cell, names=()) -> str:
    matrix = _engine()
    parts = []
    if np.shape(run.value) != np.shape(want_value):
        parts.append(f"value of shape {np.shape(run.value)}, the reference's is {np.shape(want_value)}")
    elif not matrix.close(run.value, np.asarray(want_value), cell.rtol, cell.atol):
        parts.append(f"value {_preview(run.value)} vs {_preview(want_value)}")
    for i, (g, w) in enumerate(zip(run.grads or [], want_grads)):
        name = names[i] if i < len(names) else f"#{i}"
        if g is None:
            parts.append(f"no gradient reaches {name}")
        elif not matrix.close(g, np.asarray(w), cell.rtol, cell.atol):
            parts.append(f"grad[{name}] {_preview(g)} vs {_preview(w)}")
    return "; ".join(parts)


def _preview(x) -> str:
    flat = np.ravel(np.asarray(x, dtype=np.float64))
    return np.array2string(flat[:4], precision=4, separator=", ") + ("..." if flat.size > 4 else "")


# -- the problems: a catalogue loss, or the callable's own forward -------------------------

def _reduction_counts(out: dict, value_at: Callable[[str], np.ndarray], reduction) -> dict:
    """``out`` with ``terms`` (the number of per-element losses), ``mean`` (what 'mean' divides
    the sum by) and ``R`` (what ``reduction`` divides the sum by: 1 for 'sum' and 'none')."""
    values = {}
    for red in ("none", "sum", "mean", reduction):
        if red and red not in values:
            with contextlib.suppress(Exception):
                values[red] = np.asarray(value_at(red), dtype=np.float64)
    if "none" in values:
        out["terms"] = int(values["none"].size)
    total = float(values["sum"]) if "sum" in values else None
    for name, red in (("mean", "mean"), ("R", reduction)):
        if red in ("none", "sum", None):
            if name == "R":
                out["R"] = 1.0
            continue
        v = values.get(red)
        if total is not None and v is not None and v.shape == () and float(v) != 0 and math.isfinite(total / float(v)):
            out[name] = total / float(v)
    return out


class _LikeProblem:
    """A catalogue loss: its sampler, cases and reference."""

    compared_with = "reference"

    def __init__(self, spec, params: dict, sample: dict, seed: int):
        self.spec, self.params, self.sample, self.seed = spec, params, sample, seed
        self.sig = spec

    def drawn(self, case: str, reduction: str, dtype: str, batch: int | None = None):
        return cell_inputs(self.spec.name, case, reduction, dtype, seed=self.seed, params=self.params,
                           sample=self.sample, batch=batch)

    def want(self, d):
        return _engine().expected(self.spec, d)

    def value_of(self, inputs, kw):
        import reference
        matrix = _engine()
        return reference.loss(self.spec.name, *matrix._as64(tuple(inputs)), **matrix._as64(kw))

    def tolerance(self, dtype: str) -> tuple[float, float]:
        return _engine().TOLERANCES[dtype]

    def grad_names(self, d) -> tuple[str, ...]:
        return self.spec.gradient_names(d.kw)

    def batch(self, case: str) -> tuple[str, int] | None:
        return _batch_info(self.spec, self.spec.case(case), {**self.spec.case(case).sample, **self.sample})

    def counts(self, d, batch: int | None, case: str) -> dict[str, float]:
        """What a reduction might divide by, at these inputs: the batch size, the number of loss
        terms, the number of elements of the first input, the mean's own denominator."""
        import reference
        matrix = _engine()
        inputs, kw = matrix._as64(d.inputs), matrix._as64(d.kw)
        out = {}
        info = self.batch(case)
        if batch is not None:
            out["batch"] = batch
        elif info is not None:
            out["batch"] = info[1]
        first = self.spec.inputs.index(self.spec.differentiable[0]) if self.spec.differentiable else 0
        out["elements"] = int(np.size(inputs[first]))
        return _reduction_counts(out, lambda red: reference.loss(self.spec.name, *inputs, **{**kw, "reduction": red}),
                                 kw.get("reduction"))

    def reproducer(self, adapter: Adapter, target: str, case, reduction, dtype, device, batch) -> str:
        framework = adapter.framework
        args = [repr(self.spec.name), repr(case), repr(reduction), repr(dtype)]
        extra = []
        if self.seed:
            extra.append(f"seed={self.seed}")
        if self.params:
            extra.append(f"params={_literal(self.params)}")
        if self.sample:
            extra.append(f"sample={self.sample!r}")
        if batch is not None:
            extra.append(f"batch={batch}")
        draw = f"d = cell_inputs({', '.join(args + extra)})  # the cell"
        head = [f"from reports.check import adapt, cell_inputs",
                "from reports.matrix import expected, on_differentiable, "
                f"{'torch_arrays' if framework == 'torch' else 'jax_arrays'}",
                "import reference"]
        load_line = (f"fn = adapt({_target_expr(target)}, {framework!r}, like={self.spec.name!r})"
                     f"  # {'' if _is_target(target) else target + ' is your callable; '}"
                     f"calls {adapter.describe_call()}")
        if framework == "torch":
            body = ["import torch", *head, "", f"spec = reference.get({self.spec.name!r})", draw, load_line,
                    f"f, primals = on_differentiable(fn.call, spec, *torch_arrays(d, {device!r}))",
                    "primals = [p.requires_grad_() for p in primals]",
                    "out = f(*primals)",
                    "grads = torch.autograd.grad(out, primals, torch.as_tensor(d.cotangent), allow_unused=True)"]
        else:
            body = ["import jax", *head, "", f"spec = reference.get({self.spec.name!r})", draw, load_line,
                    f"f, primals = on_differentiable(fn.call, spec, *jax_arrays(d, {device!r}))",
                    "out, pullback = jax.vjp(f, *primals)",
                    "grads = pullback(jax.numpy.asarray(d.cotangent))"]
        body += ["want_value, want_grads = expected(spec, d)  # the NumPy reference, in float64",
                 "print(out, want_value, grads, want_grads, sep='\\n')"]
        return "\n".join(body)


def _is_target(target: str) -> bool:
    return ":" in target


def _target_expr(target: str) -> str:
    """How a reproducer names the callable: ``"FILE.py:NAME"`` (loaded), or the object itself."""
    return repr(target) if _is_target(target) else target


def _literal(params: dict) -> str:
    return "{" + ", ".join(f"{k!r}: {(v.tolist() if isinstance(v, np.ndarray) else v)!r}" for k, v in params.items()) + "}"


class _CustomProblem:
    """A loss the catalogue lacks: inputs drawn from the shapes given, the callable's own
    forward (autograd / JAX), a NumPy reference and finite differences as oracles."""

    def __init__(self, adapter: Adapter, inputs: list, differentiable, reference_fn, params: dict, seed: int,
                 target: str, reference_target: str | None):
        self.adapter, self.params, self.seed = adapter, params, seed
        self.target, self.reference_target = target, reference_target
        self.specs = []
        self.arrays = []
        for x in inputs:
            if isinstance(x, np.ndarray) or (hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, Input)):
                self.specs.append(None)
                self.arrays.append(np.asarray(_from_framework(x)))
            else:
                spec = Input.parse(x) if isinstance(x, (str, Input)) else Input(tuple(x))
                self.specs.append(spec)
                self.arrays.append(None)
        names = adapter.input_names or [f"input{i}" for i in range(len(inputs))]
        floating = [i for i in range(len(inputs)) if self._floating(i)]
        if differentiable is None:
            positions = floating
        else:
            positions = []
            for item in differentiable:
                i = names.index(item) if isinstance(item, str) and item in names else item
                if not isinstance(i, int) or not 0 <= i < len(inputs):
                    raise CheckUsageError(f"differentiable: {item!r} is not an input (inputs: {', '.join(names)})")
                if i not in floating:
                    raise CheckUsageError(f"differentiable: input {names[i]} holds integers; it cannot get a gradient")
                positions.append(i)
        if not positions:
            raise CheckUsageError("no input is differentiable: give at least one floating input")
        self.positions = positions
        self.sig = _Sig(names, [names[i] for i in positions])
        self.reference_fn = reference_fn
        self.forward = None
        forward = plain_forward(adapter.obj)
        if forward is not None:
            self.forward = Adapter(forward, adapter.framework, n_inputs=adapter.n_inputs,
                                   name=f"{adapter.name}'s forward")
            self.forward.defaults = {**adapter.defaults, **self.forward.defaults}
        self._cache: dict = {}
        self.oracles = self._oracles()
        self.compared_with = self.oracles[0]

    def _floating(self, i) -> bool:
        spec = self.specs[i]
        return spec.floating if spec is not None else self.arrays[i].dtype.kind == "f"

    def _oracles(self) -> list[str]:
        out = []
        if self.forward is not None:
            out.append("autograd" if self.adapter.framework == "torch" else "jax.vjp of fun")
        if self.reference_fn is not None:
            out.append("reference")
        if not out:
            out.append("finite differences")
        return out

    def batch(self, case=None) -> tuple[str, int] | None:
        if any(s is None or not s.shape for s in self.specs):
            return None
        leading = {s.shape[0] for s in self.specs}
        return ("shape", leading.pop()) if len(leading) == 1 else None

    def drawn(self, case, reduction, dtype, batch=None):
        matrix = _engine()
        key = (reduction, dtype, batch)
        if key in self._cache:
            return self._cache[key]
        inputs, kw = custom_inputs(self.specs, reduction, dtype, batch=batch, seed=self.seed, params=self.params)
        inputs = [(a.astype(dtype) if a.dtype.kind == "f" else a) if x is None else x
                  for x, a in zip(inputs, self.arrays)]
        shape = np.shape(self._oracle_value(tuple(inputs), kw))
        cot = np.random.default_rng([self.seed, 1000]).standard_normal(shape).astype(dtype)
        d = matrix.Drawn(tuple(inputs), kw, cot)
        self._cache[key] = d
        return d

    def value_of(self, inputs, kw):
        return self._oracle_value(tuple(inputs), kw)

    def _as64(self, inputs):
        return tuple(x.astype(np.float64) if x.dtype.kind == "f" else x for x in inputs)

    def _oracle_value(self, inputs, kw):
        inputs = self._as64(inputs)
        try:
            if self.forward is not None:
                return _value_only(self.forward, self.sig, inputs, kw)
            if self.reference_fn is not None:
                return np.asarray(self.reference_fn(*inputs, **self._ref_kw(kw)))
            return _value_only(self.adapter, self.sig, inputs, kw)
        except Exception as e:
            raise CheckUsageError(f"inputs of shapes {', '.join(map(str, self._shapes()))} do not fit {self.target}: "
                                  f"{type(e).__name__}: {e}") from None

    def _shapes(self):
        return [s.shape if s is not None else a.shape for s, a in zip(self.specs, self.arrays)]

    def _ref_kw(self, kw):
        try:
            params = inspect.signature(self.reference_fn).parameters
        except (TypeError, ValueError):
            return kw
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return kw
        return {k: v for k, v in kw.items() if k in params}

    def want(self, d, oracle: str | None = None):
        oracle = oracle or self.oracles[0]
        inputs = self._as64(d.inputs)
        cot = d.cotangent.astype(np.float64)
        if oracle in ("autograd", "jax.vjp of fun"):
            d64 = _engine().Drawn(inputs, d.kw, cot)
            run = _run(self.forward, self.sig, d64, "cpu")
            if run.error is not None or run.grads is None:
                raise _OracleUnavailable(f"{self.forward.name} cannot be differentiated by "
                                         f"{'autograd' if self.adapter.framework == 'torch' else 'JAX'}: "
                                         f"{type(run.error).__name__ if run.error else ''} {run.error or run.note}")
            return run.value, tuple(np.zeros(np.shape(inputs[i])) if g is None else g
                                    for g, i in zip(run.grads, self.positions))
        if oracle == "reference":
            kw = self._ref_kw(d.kw)
            value = np.asarray(self.reference_fn(*inputs, **kw), dtype=np.float64)
            grads = _fd_vjp(lambda *xs: self.reference_fn(*xs, **kw), inputs, self.positions, cot)
            return value, tuple(grads)
        value = _value_only(self.adapter, self.sig, inputs, d.kw)
        grads = _fd_vjp(lambda *xs: _value_only(self.adapter, self.sig, xs, d.kw), inputs, self.positions, cot)
        return value, tuple(grads)

    def tolerance(self, dtype, oracle: str | None = None) -> tuple[float, float]:
        matrix = _engine()
        oracle = oracle or self.oracles[0]
        if dtype == "float64" and oracle in ("reference", "finite differences"):
            return matrix.FD_RTOL, matrix.FD_ATOL
        return matrix.TOLERANCES[dtype]

    def grad_names(self, d):
        return self.sig.differentiable

    def counts(self, d, batch, case) -> dict[str, float]:
        out = {}
        info = self.batch()
        if info is not None:
            out["batch"] = batch if batch is not None else info[1]
        out["elements"] = int(np.size(d.inputs[self.positions[0]]))
        if not (self.adapter.takes_reduction and "reduction" in d.kw):
            return out
        return _reduction_counts(out, lambda red: self._oracle_value(d.inputs, {**d.kw, "reduction": red}),
                                 d.kw.get("reduction"))

    def reproducer(self, adapter, target, case, reduction, dtype, device, batch, oracle=None) -> str:
        oracle = oracle or self.oracles[0]
        framework = adapter.framework
        specs = [str(s) if s is not None else None for s in self.specs]
        kw = dict(self.params)
        if reduction is not None:
            kw["reduction"] = reduction
        lines = ["import numpy as np"]
        lines.append("import torch" if framework == "torch" else "import jax")
        lines += ["from reports.check import adapt, custom_inputs, plain_forward, load", ""]
        if any(s is None for s in specs):
            lines.append("# some inputs were given as arrays: replace the inputs drawn for them (None) by yours")
        lines.append(f"inputs, kw = custom_inputs({specs!r}, {reduction!r}, {dtype!r}, batch={batch!r}, seed={self.seed}"
                     f"{', params=' + _literal(self.params) if self.params else ''})  # the cell")
        lines.append(f"d = dict(kw=kw, differentiable={list(self.positions)!r})")
        n = len(self.specs)
        lines.append(f"fn = adapt({_target_expr(target)}, {framework!r}, n_inputs={n})  # "
                     f"{'' if _is_target(target) else target + ' is your callable; '}calls {adapter.describe_call()}")
        if oracle in ("autograd", "jax.vjp of fun"):
            obj = f"load({target!r})" if _is_target(target) else target
            lines.append(f"oracle = adapt(plain_forward({obj}), {framework!r}, n_inputs={n})"
                         "  # the forward, differentiated by the framework")
        elif oracle == "reference":
            ref = f"load({self.reference_target!r})" if self.reference_target else "your_numpy_reference"
            lines.append(f"reference = {ref}  # NumPy; its gradient by central differences")
        if framework == "torch":
            lines += [f"x = [torch.tensor(a, device={device!r}, requires_grad=i in d['differentiable']) "
                      "for i, a in enumerate(inputs)]",
                      "out = fn.call(*x, **d['kw'])",
                      f"cot = torch.as_tensor(np.random.default_rng([{self.seed}, 1000]).standard_normal(out.shape)"
                      ").to(out)",
                      "grads = torch.autograd.grad(out, [x[i] for i in d['differentiable']], cot, allow_unused=True)"]
            if oracle in ("autograd",):
                lines += ["x64 = [torch.tensor(np.asarray(a, dtype=np.float64) if a.dtype.kind == 'f' else a, "
                          "requires_grad=i in d['differentiable']) for i, a in enumerate(inputs)]",
                          "want = oracle.call(*x64, **d['kw'])",
                          "want_grads = torch.autograd.grad(want, [x64[i] for i in d['differentiable']], "
                          "cot.to(want))"]
        else:
            lines += ["x = [jax.numpy.asarray(a) for a in inputs]",
                      "f = lambda *p: fn.call(*[p[d['differentiable'].index(i)] if i in d['differentiable'] "
                      "else a for i, a in enumerate(x)], **d['kw'])",
                      "out, pullback = jax.vjp(f, *[x[i] for i in d['differentiable']])",
                      f"cot = np.random.default_rng([{self.seed}, 1000]).standard_normal(np.shape(out))",
                      "grads = pullback(jax.numpy.asarray(cot, dtype=out.dtype))"]
            if oracle == "jax.vjp of fun":
                lines += ["x64 = [jax.numpy.asarray(np.asarray(a, dtype=np.float64) if a.dtype.kind == 'f' else a) "
                          "for a in inputs]",
                          "g = lambda *p: oracle.call(*[p[d['differentiable'].index(i)] if i in d['differentiable'] "
                          "else a for i, a in enumerate(x64)], **d['kw'])",
                          "want, want_pullback = jax.vjp(g, *[x64[i] for i in d['differentiable']])",
                          "want_grads = want_pullback(jax.numpy.asarray(cot))"]
        if oracle == "reference":
            lines.append("want = reference(*[np.asarray(a, dtype=np.float64) if a.dtype.kind == 'f' else a "
                         "for a in inputs], **d['kw'])  # its gradient: central differences")
            lines.append("print(out, want, grads, sep='\\n')")
        elif oracle == "finite differences":
            lines.append("print(out, grads, sep='\\n')  # compare with central differences of fn.call")
        else:
            lines.append("print(out, want, grads, want_grads, sep='\\n')")
        return "\n".join(lines)


class _OracleUnavailable(Exception):
    pass


# -- diagnosis ----------------------------------------------------------------------------

_COUNT_WORDS = {
    "one": "nothing",
    "batch": "the batch size",
    "terms": "the number of loss terms",
    "elements": "the number of elements of the input",
    "mean": "the mean's denominator",
    "elements/terms": "the size of the class (or feature) dimension",
    "terms/batch": "the number of loss terms per example",
}
_COUNT_ORDER = ("one", "terms", "batch", "elements", "mean", "elements/terms", "terms/batch")


def _derived_counts(counts: dict) -> dict:
    """What a reduction might divide by (``one``: nothing), at one draw, and ``R``: what the
    reference's reduction does divide by."""
    out = {"one": 1.0, **counts}
    if "elements" in counts and counts.get("terms"):
        out["elements/terms"] = counts["elements"] / counts["terms"]
    if "terms" in counts and counts.get("batch"):
        out["terms/batch"] = counts["terms"] / counts["batch"]
    return {k: float(out[k]) for k in (*_COUNT_ORDER, "R") if k in out and out[k]}


def _same(a, b, tol=1e-6) -> bool:
    return a is not None and b is not None and abs(a - b) <= tol * max(abs(a), abs(b), 1e-300)


def _ratio(got, want) -> float | None:
    """c with ``got == c * want`` everywhere (to 1e-6), or None."""
    if got is None or want is None:
        return None
    got, want = np.ravel(np.asarray(got, dtype=np.float64)), np.ravel(np.asarray(want, dtype=np.float64))
    if got.shape != want.shape or not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
        return None
    denom = float(np.dot(want, want))
    if denom == 0:
        return None
    c = float(np.dot(got, want)) / denom
    scale = max(float(np.max(np.abs(got))), float(np.max(np.abs(c * want))), 1e-300)
    if c == 0 or not np.allclose(got, c * want, rtol=1e-6, atol=1e-9 * scale):
        return None
    return c


def _close64(a, b) -> bool:
    matrix = _engine()
    rtol, atol = matrix.TOLERANCES["float64"]
    return a is not None and b is not None and np.shape(a) == np.shape(b) and \
        matrix.close(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol, atol)


def _zero(a) -> bool:
    return a is None or not np.any(np.asarray(a))


def _times(c: float) -> str:
    if abs(c) >= 1 and _same(c, round(c)):
        return f"{round(c)}×"
    if 0 < abs(c) < 1 and _same(1 / c, round(1 / c)):
        return f"1/{round(1 / c)} of"
    return f"{c:.4g}×"


def _num(x: float) -> str:
    return str(round(x)) if _same(x, round(x)) else f"{x:.4g}"


@dataclass
class _Finding:
    code: str
    detail: str
    where: list[str] = field(default_factory=list)


def _r_words(c1: dict, c2: dict | None) -> str:
    """What the reference's reduction divides by, in words."""
    if _same(c1.get("R"), 1.0) and (c2 is None or _same(c2.get("R"), 1.0)):
        return "nothing"
    for name in ("terms", "batch", "elements"):
        if _same(c1.get(name), c1.get("R")) and (c2 is None or _same(c2.get(name), c2.get("R"))):
            return _COUNT_WORDS[name]
    return "its own denominator"


def _scale_story(what: str, reduction, r1, r2, c1: dict, c2: dict | None, n1, n2) -> _Finding | None:
    """Name the constant ratio of ``what`` to the reference. The reference divides by R (the
    reduction's denominator: the mean's, or nothing); a ratio r = R / U says the callable divides
    by U instead: a count of the draw (the reduction's scale, when U follows the batch the way
    counts do), or a constant that does not follow the batch (a hard-coded batch size).
    ``r1``/``r2`` and the counts ``c1``/``c2`` are those at batch sizes ``n1`` (the sampler's) and
    ``n2``."""
    red = f"reduction={reduction!r}" if reduction else "its reduction"
    both = r2 is not None and c2 is not None
    if r1 is None or (_same(r1, 1) and (not both or _same(r2, 1))):
        if not both or r1 is not None or r2 is None:
            return None
    R1, R2 = c1.get("R", 1.0), (c2 or {}).get("R", 1.0)
    r_words = _r_words(c1, c2 if both else None)
    # the reduction's scale: r == R / U for a count U, at both batch sizes
    for name in _COUNT_ORDER:
        u1, u2 = c1.get(name), (c2 or {}).get(name)
        if u1 is None or (both and u2 is None) or r1 is None:
            continue
        if _same(u1, R1) and (not both or _same(u2, R2)):
            continue
        if _same(r1, R1 / u1) and (not both or _same(r2, R2 / u2)):
            sizes = f"at batch size {n1} and {_times(r2)} at batch size {n2}" if both else ""
            counts = f" ({_num(u1)}, then {_num(u2)})" if both and name != "one" and not _same(u1, u2) else \
                (f" ({_num(u1)})" if name != "one" else "")
            r_values = "" if r_words == "nothing" else \
                f" ({_num(R1)}, then {_num(R2)})" if both and not _same(R1, R2) else f" ({_num(R1)})"
            return _Finding("reduction-scale",
                            f"{what} is {_times(r1)} the reference {sizes}".rstrip() +
                            f": it divides by {_COUNT_WORDS[name]}{counts} where {red} divides by {r_words}{r_values}")
    if both and r1 is not None:
        k1, k2 = R1 / r1, R2 / r2
        if _same(k1, k2) and (not _same(R1, R2) or any(
                _same(k1, c1.get(n)) and not _same(c1.get(n), c2.get(n)) for n in ("batch", "terms", "elements"))):
            agrees = f"agrees at batch size {n1}" if _same(r1, 1) else f"is {_times(r1)} the reference at batch size {n1}"
            follows = f"{r_words} ({_num(R1)}, then {_num(R2)})" if not _same(R1, R2) else "nothing"
            return _Finding("hard-coded-batch",
                            f"{what} {agrees} and is {_times(r2)} the reference at batch size {n2}: it divides by a "
                            f"fixed {_num(k1)} where {red} divides by {follows}")
    if r1 is None:
        return None
    if _same(r1, -1) and (not both or _same(r2, -1)):
        return _Finding("wrong-sign", f"{what} is exactly -1 × the reference")
    if not both or _same(r1, r2):
        return _Finding("constant-factor", f"{what} is {_times(r1)} the reference, everywhere")
    return None


_WRONG_SHAPE_TORCH = re.compile(r"returned an invalid gradient at index (\d+) - got \[([^\]]*)\] but expected shape "
                                r"compatible with \[([^\]]*)\]")
_WRONG_SHAPE_JAX = re.compile(r"at output\[(\d+)\] the bwd rule produced an output of (?:shape/dtype|type) ([^\s,]+) "
                              r"corresponding to an input of (?:shape/dtype|type) ([^\s,]+)")
_WRONG_COUNT_TORCH = re.compile(r"returned an incorrect number of gradients \(expected (\d+), got (\d+)\)")


class _Diagnoser:
    def __init__(self, problem, adapter: Adapter, runs: dict, events: list[_Event], target: str, user_files):
        self.problem, self.adapter, self.runs, self.events = problem, adapter, runs, events
        self.target, self.user_files = target, user_files

    def _arg_name(self, index: int) -> str:
        names = list(self.adapter.input_names) + list(self.adapter.positional)
        return names[index] if 0 <= index < len(names) else f"argument {index}"

    def from_error(self, run: _Run, at: str) -> list[_Finding]:
        e = run.error
        text = str(e)
        where = [w for w in [_user_frame_of(e, self.user_files)] if w]
        numpy = [ev for ev in self.events if ev.kind == "numpy"]
        m = _WRONG_SHAPE_TORCH.search(text)
        if m:
            i = int(m.group(1))
            return [_Finding("wrong-shape", f"backward returned a gradient of shape [{m.group(2)}] for "
                                            f"{self._arg_name(i)}, whose shape is [{m.group(3)}]{at}")]
        m = _WRONG_SHAPE_JAX.search(text)
        if m:
            i = int(m.group(1))
            return [_Finding("wrong-shape", f"bwd returned {m.group(2)} for {self._arg_name(i)}, whose type is "
                                            f"{m.group(3)}{at}")]
        m = _WRONG_COUNT_TORCH.search(text)
        if m:
            return [_Finding("gradient-count", f"backward returned {m.group(2)} gradients; forward takes "
                                               f"{m.group(1)} arguments ({', '.join(self.adapter.input_names + self.adapter.positional)}){at}")]
        if "bwd rule must produce" in text or "bwd output" in text:
            return [_Finding("gradient-count", f"{_one_line(text, 300)}{at}")]
        if "(a NumPy value), not a torch.Tensor" in text:
            return [_Finding("numpy-round-trip", f"the loss {text.split(' (a NumPy')[0]} (a NumPy value): it left torch, "
                                                 f"so no gradient can reach the inputs{at}",
                             [ev.where for ev in numpy if ev.where])]
        if _is_tracer_conversion(e):
            return [_Finding("numpy-round-trip", f"a NumPy call on a traced array ({type(e).__name__}){at}: the loss "
                                                 "cannot run under jax.jit, and jax.grad cannot see through it",
                             where or [ev.where for ev in numpy if ev.where])]
        if "numpy() on Tensor that requires grad" in text or "can't convert cuda" in text:
            return [_Finding("numpy-round-trip", f"{type(e).__name__}: {_one_line(text, 200)}{at}",
                             where or [ev.where for ev in numpy if ev.where])]
        if run.detached or "does not require grad and does not have a grad_fn" in text:
            if numpy:
                return [_Finding("numpy-round-trip", "the result is detached from the inputs: the loss goes through "
                                                     f"NumPy ({', '.join(sorted({ev.what for ev in numpy}))}){at}",
                                 [ev.where for ev in numpy if ev.where])]
            cuts = [ev for ev in self.events if ev.kind in ("detach", "data", "item", "requires_grad_")]
            return [_Finding("graph-cut", "the result is detached from the inputs (no grad_fn)"
                                          + (f": {', '.join(sorted({ev.what for ev in cuts}))}" if cuts else
                                             ": computed under torch.no_grad(), or rebuilt from values") + at,
                             [ev.where for ev in cuts if ev.where])]
        return [_Finding("raised", f"{run.phase} raised {type(e).__name__}: {_one_line(text, 300)}{at}", where)]

    def group(self, case: str, reduction, failing: list[CellCheck]) -> list[_Finding]:
        """The findings behind the failing cells of one (case, reduction), from its float64 CPU
        runs at the sampler's batch size and (first case) at the second batch size."""
        key = (case, reduction, "float64", "cpu", None)
        if key not in self.runs:
            return [_Finding("mismatch", "see the table")]
        d, run, (want_value, want_grads) = self.runs[key]
        info = self.problem.batch(case)
        alt = next(((k[4], v) for k, v in self.runs.items()
                    if k[:4] == (case, reduction, "float64", "cpu") and k[4] is not None), None)
        if run.error is not None:
            return self.from_error(run, "")
        findings: list[_Finding] = []
        alt_run = alt[1][1] if alt else None
        if alt_run is not None and alt_run.error is not None:
            f = self.from_error(alt_run, f" (at batch size {alt[0]})")
            if f[0].code == "raised" and not isinstance(alt_run.error, TypeError):
                f = [_Finding("hard-coded-batch", f"runs at batch size {info[1]} and raises at batch size {alt[0]}: "
                                                  f"{type(alt_run.error).__name__}: {_one_line(str(alt_run.error), 200)}",
                              f[0].where)]
            findings += f
            alt = alt_run = None
        names = self.problem.grad_names(d)
        value_shape_ok = np.shape(run.value) == np.shape(want_value)
        value_ok = _close64(run.value, want_value) and (alt is None or _close64(alt_run.value, alt[1][2][0]))
        if not value_shape_ok:
            other = self._other_reduction(d, run.value, reduction)
            if other:
                findings.append(_Finding("reduction-scale", f"with reduction={reduction!r} the value equals the "
                                                            f"reference's reduction={other!r}: the reduction "
                                                            "argument is ignored"))
            else:
                findings.append(_Finding("wrong-shape", f"the value has shape {np.shape(run.value)}, the "
                                                        f"reference's {np.shape(want_value)} (reduction={reduction!r})"))
        raw = run.backward_log[-1]["returned"] if run.backward_log else None
        if raw is not None and self.adapter.hand_written:
            for i, shape in enumerate(raw[:len(self.adapter.input_names)]):
                name = self.adapter.input_names[i]
                if name in names and isinstance(shape, tuple) and \
                        shape != tuple(np.shape(want_grads[names.index(name)])):
                    findings.append(_Finding("wrong-shape", f"backward returned a gradient of shape {shape} for "
                                                            f"{name}, whose shape is "
                                                            f"{tuple(np.shape(want_grads[names.index(name)]))} "
                                                            "(autograd summed it to fit)"))
        if run.grads is None:
            return findings or [_Finding("mismatch", run.note or "no gradient")]
        bad_here = [i for i, (g, w) in enumerate(zip(run.grads, want_grads)) if not _close64(g, w)]
        bad_there = [] if alt_run is None or alt_run.grads is None else \
            [i for i, (g, w) in enumerate(zip(alt_run.grads, alt[1][2][1])) if not _close64(g, w)]
        explained: set[int] = set()
        # a gradient that matches another input's reference gradient
        for i in bad_here:
            for j, w in enumerate(want_grads):
                if j != i and run.grads[i] is not None and not _zero(w) and _close64(run.grads[i], w) and \
                        not _close64(want_grads[i], w):
                    also = " (for this loss, also -1 × its own)" if _close64(-np.asarray(want_grads[i]), w) else ""
                    findings.append(_Finding("wrong-input", f"grad[{names[i]}] equals the reference gradient of "
                                                            f"{names[j]}{also}"))
                    explained.add(i)
                    break
        # no gradient at all where the reference has one
        for i in bad_here:
            if i in explained or not _zero(run.grads[i]) or _zero(want_grads[i]):
                continue
            explained.add(i)
            position = self.adapter.input_names.index(names[i]) if names[i] in self.adapter.input_names else None
            if self.adapter.hand_written and raw is not None and position is not None and position < len(raw) \
                    and raw[position] is None:
                findings.append(_Finding("missing-gradient", f"backward returned None for {names[i]}, whose "
                                                             "reference gradient is not zero"))
            else:
                findings.append(self._graph_cut(f"no gradient reaches {names[i]}"
                                                + (" (None)" if run.grads[i] is None else " (all zero)")
                                                + " while the reference's is not zero",
                                                self._uncut_agrees(d, want_grads)))
        # the cotangent scaled: does the gradient follow it?
        rest = [i for i in bad_here if i not in explained]
        if rest:
            d3 = _engine().Drawn(d.inputs, d.kw, (d.cotangent * SCALE_FACTOR).astype(d.cotangent.dtype))
            run3 = _run(self.adapter, self.problem.sig, d3, "cpu")
            if run3.error is None and run3.grads is not None:
                for i in list(rest):
                    g, g3 = run.grads[i], run3.grads[i]
                    if not _zero(g) and _close64(g, g3):
                        findings.append(_Finding("ignores-grad-output",
                                                 f"grad[{names[i]}] stays the same when grad_output is scaled by "
                                                 f"{SCALE_FACTOR:g}: the backward does not multiply by it"
                                                 + self._ones_match(d, run.grads[i], i)))
                        explained.add(i)
                        rest.remove(i)
        rest = sorted(set(rest) | (set(bad_there) - explained))
        # ratios to the reference at both batch sizes: the reduction's scale, a hard-coded batch size
        counts1 = _derived_counts(self.problem.counts(d, None, case))
        counts2 = _derived_counts(self.problem.counts(alt[1][0], alt[0], case)) if alt else None
        n1 = counts1.get("batch", info[1] if info else None)
        n1, n2 = (None if n1 is None else int(n1)), (alt[0] if alt else None)
        stories = {}
        quantities = [] if value_ok or not value_shape_ok else \
            [("value", run.value, want_value, (alt_run.value, alt[1][2][0]) if alt else None)]
        quantities += [(f"grad[{names[i]}]", run.grads[i], want_grads[i],
                        (alt_run.grads[i], alt[1][2][1][i]) if alt and alt_run.grads is not None else None)
                       for i in rest]
        for what, got, want, other in quantities:
            r1 = 1.0 if _close64(got, want) else _ratio(got, want)
            r2 = None if other is None else 1.0 if _close64(*other) else _ratio(*other)
            story = _scale_story(what, reduction, r1, r2, counts1, counts2 if other else None, n1, n2)
            if story is not None:
                stories[what] = story
        findings += self._merge_stories(stories, value_ok)
        rest = [i for i in rest if f"grad[{names[i]}]" not in stories]
        value_unexplained = not value_ok and value_shape_ok and "value" not in stories
        # what the trace saw
        if rest and (run.foreign or self._uncut_agrees(d, want_grads)):
            findings.append(self._graph_cut(f"{', '.join(f'grad[{names[i]}]' for i in rest)} disagree(s)",
                                            not run.foreign))
            rest = []
        if (rest or value_unexplained) and not self._indices():
            what = ", ".join([*(["value"] if value_unexplained else []), *(f"grad[{names[i]}]" for i in rest)])
            findings.append(_Finding("mismatch", f"{what}: disagree(s) with the reference in float64, and not by a "
                                                 "constant factor"))
        return findings

    @staticmethod
    def _merge_stories(stories: dict, value_ok: bool) -> list[_Finding]:
        stories = dict(stories)
        value = stories.pop("value", None)
        if value is not None and stories and all(g.code == value.code for g in stories.values()):
            return [_Finding(value.code, f"{value.detail}; the gradient follows it")]
        if value_ok:
            for g in stories.values():
                if g.code in ("reduction-scale", "hard-coded-batch", "constant-factor", "wrong-sign"):
                    g.detail += " (the value agrees: the mistake is in the backward)"
        return ([value] if value else []) + list(stories.values())

    def _indices(self) -> bool:
        return any(ev.kind == "max-indices" for ev in self.events)

    def _uncut_agrees(self, d, want_grads) -> bool:
        """Whether the gradient agrees with the reference once the cuts are undone."""
        if not any(ev.kind in ("requires_grad_", "detach", "data", "stop_gradient") for ev in self.events):
            return False
        grads = _uncut_grads(self.adapter, self.problem.sig, d)
        return grads is not None and all(_close64(g, w) for g, w in zip(grads, want_grads))

    def _graph_cut(self, what: str, confirmed: bool = False) -> _Finding:
        parts, where = [what], []
        numpy = [ev for ev in self.events if ev.kind == "numpy"]
        foreign = next((run.foreign for _, run, _ in self.runs.values() if run.foreign), [])
        if foreign:
            parts.append(f"the output depends on {len(foreign)} leaf tensor(s) of shape "
                         f"{', '.join(map(str, foreign))} that require grad but are not inputs: an intermediate "
                         "re-wrapped by requires_grad_() or Variable(...)")
        cuts = [ev for ev in self.events if ev.kind in ("requires_grad_", "detach", "data", "item", "stop_gradient")]
        if cuts and (confirmed or foreign):
            parts.append("the graph is cut by " + ", ".join(sorted({ev.what for ev in cuts}))
                         + ("; with those made the identity the gradient agrees with the reference" if confirmed
                            else ""))
            where += [ev.where for ev in cuts if ev.where]
        if numpy and not (cuts and (confirmed or foreign)) and not foreign:
            return _Finding("numpy-round-trip", "; ".join(parts) + ": the loss goes through NumPy",
                            [ev.where for ev in numpy if ev.where])
        return _Finding("graph-cut", "; ".join(parts), where)

    def _ones_match(self, d, got, i) -> str:
        """Whether ``got`` is the reference gradient for a cotangent of ones."""
        try:
            ones = _engine().Drawn(d.inputs, d.kw, np.ones_like(d.cotangent))
            _, grads = self.problem.want(ones)
            if _close64(got, grads[i]):
                return "; it equals the reference gradient for grad_output = 1"
        except Exception:
            pass
        return ""

    def _other_reduction(self, d, value, reduction) -> str | None:
        for other in ("none", "mean", "sum"):
            if other == reduction:
                continue
            try:
                want = self.problem.value_of(d.inputs, {**d.kw, "reduction": other})
            except Exception:
                continue
            if np.shape(want) == np.shape(value) and _close64(value, want):
                return other
        return None


# -- the check ----------------------------------------------------------------------------

def check(fn, like: str | None = None, *, framework: str | None = None, cases=None, reductions=None,
          dtypes=None, devices=None, inputs=None, reference=None, differentiable=None, sample: dict | None = None,
          shapes=None, seed: int = 0, params: dict | None = None, **hyperparameters) -> CheckResult:
    """Run ``fn`` (a callable, or ``"FILE.py:NAME"``) through the cells of the catalogue loss
    ``like`` (or, without ``like``, against its own forward on ``inputs``) and name the mistakes
    behind any disagreement. Hyperparameters are keywords (``label_smoothing=0.1``) or
    ``params={...}``; ``reduction="sum"`` fixes the reduction. See the module docstring."""
    params = {**(params or {}), **hyperparameters}
    target = fn if isinstance(fn, str) else None
    obj = load(fn) if isinstance(fn, str) else fn
    if not callable(obj):
        raise CheckUsageError(f"{_short_repr(obj)} is a {type(obj).__name__}, not a callable")
    _engine()  # float64 JAX from here on
    if "reduction" in params:
        red = params.pop("reduction")
        reductions = [red] if isinstance(red, str) else list(red)
    if like is not None:
        if inputs is not None or reference is not None:
            raise CheckUsageError("inputs= and reference= are for a loss the catalogue lacks; with like= the "
                                  "inputs are drawn by the catalogue loss's sampler")
        return _check_like(obj, target, like, framework, cases, reductions, dtypes, devices, sample, shapes, seed,
                           params)
    if inputs is None and shapes is None:
        raise CheckUsageError("give like=LOSS (a catalogue loss) or the inputs' shapes (inputs=[...]; "
                              "--shape on the command line)")
    if cases or sample:
        raise CheckUsageError("cases and sampler options belong to a catalogue loss: they need like= (--like)")
    return _check_custom(obj, target, framework, inputs if inputs is not None else shapes, reference,
                         differentiable, reductions, dtypes, devices, seed, params)


def assert_matches(fn, like: str | None = None, **kw) -> CheckResult:
    """``check(fn, like, **kw)``, raising ``AssertionError`` with the report (table, mistakes,
    reproducer) when a cell disagrees; returns the ``CheckResult`` otherwise. For pytest::

        def test_my_loss():
            assert_matches(MyCrossEntropy, like="cross_entropy", cases=["default", "K-dim"])
    """
    result = check(fn, like, **kw)
    if not result.passed:
        raise AssertionError("\n" + result.report())
    return result


def _name_of(obj, target) -> str:
    if target:
        return target
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
    return name


def _user_files(obj) -> set[str]:
    out = set()
    for candidate in (obj, getattr(obj, "fun", None), type(obj)):
        with contextlib.suppress(TypeError, OSError):
            f = inspect.getsourcefile(candidate)
            if f and not _is_library(f):
                out.add(os.path.abspath(f))
    return out


def _devices(framework: str, devices) -> tuple[list[str], bool]:
    """The devices to run, and whether CUDA was asked for but is absent."""
    matrix = _engine()
    asked = list(devices) if devices else ["cpu", "cuda"]
    for dev in asked:
        if dev not in ("cpu", "cuda"):
            raise CheckUsageError(f"unknown device {dev!r}; choose cpu or cuda")
    present = [d for d in asked if matrix.device_available(framework, d)]
    return present, ("cuda" in asked and "cuda" not in present)


def _choose(kind: str, given, known) -> list:
    given = _split(given)
    for item in given:
        if item not in known:
            close = difflib.get_close_matches(str(item), [str(k) for k in known], n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; choose from {', '.join(map(str, known))}"
            raise CheckUsageError(f"unknown {kind} {item!r}{hint}")
    return list(dict.fromkeys(given))


def _split(given) -> list:
    if given is None:
        return []
    items = [given] if isinstance(given, str) else list(given)
    out = []
    for item in items:
        out += [t.strip() for t in item.split(",") if t.strip()] if isinstance(item, str) else [item]
    return out


def _check_like(obj, target, like, framework, cases, reductions, dtypes, devices, sample, shapes, seed,
                params) -> CheckResult:
    import reference as ref
    matrix = _engine()
    spec = _spec(like)
    name = _name_of(obj, target)
    adapter = Adapter(obj, framework, n_inputs=len(spec.inputs), name=None if not target else target.rpartition(":")[2],
                      fallback=spec.defaults)
    notes, skipped = [], []
    params = _check_params(spec, params)
    fixed = {**adapter.fixed, **params}
    if adapter.fixed:
        notes.append("read from the instance: " + ", ".join(f"{k}={_short_repr(v)}" for k, v in adapter.fixed.items()))
    sample = dict(sample or {})
    if shapes:
        sample.update(_shape_sample(spec, shapes))
    dtypes = _choose("dtype", dtypes, list(matrix.FULL_DTYPES)) or list(matrix.FULL_DTYPES)
    present, cuda_absent = _devices(adapter.framework, devices)
    # cases
    all_cases = [c.name for c in spec.matrix_cases]
    chosen = _choose("case", cases, all_cases) if cases else None
    run_cases = []
    for c in spec.matrix_cases:
        if chosen is not None and c.name not in chosen:
            continue
        why = _case_blocked(spec, c, adapter, fixed, sample) or (_shapes_differ(spec, c, sample, shapes) if shapes else None)
        if why:
            if chosen is not None:
                raise CheckUsageError(f"case {c.name!r} cannot run: {why}")
            skipped.append(f"case {c.name!r}: {why}")
            continue
        run_cases.append(c.name)
    if not run_cases:
        raise CheckUsageError(f"nothing to check: every case of {like} was skipped ({'; '.join(skipped)})")
    problem = _LikeProblem(spec, {k: v for k, v in fixed.items() if k != "reduction"}, sample, seed)
    # reductions
    fixed_reduction = fixed.get("reduction")
    asked = _split(reductions) or ([fixed_reduction] if fixed_reduction else None)
    if asked:
        for r in asked:
            if r not in spec.reductions:
                raise CheckUsageError(f"{like} has no reduction {r!r}; its reductions are {', '.join(spec.reductions)}")
    if not adapter.takes_reduction and not asked:
        detected = _detect_reduction(adapter, problem, run_cases[0])
        if detected[0] is not None:
            asked = [detected[0]]
        notes.append(detected[1])
    user_files = _user_files(obj)
    runs: dict = {}
    cells: list[CellCheck] = []
    for case in run_cases:
        case_reds = [r for r in spec.case_reductions(spec.case(case)) if not asked or r in asked]
        for reduction in case_reds:
            for dtype in dtypes:
                for device in present:
                    cells.append(_cell(problem, adapter, name, runs, case, reduction, dtype, device, None))
    # the first case again at another batch size
    first = run_cases[0]
    info = problem.batch(first)
    if info is not None:
        n2 = _other_batch(problem, first, info)
        if n2 is not None:
            for reduction in [r for r in spec.case_reductions(spec.case(first)) if not asked or r in asked]:
                cells.append(_cell(problem, adapter, name, runs, first, reduction, "float64", "cpu", n2))
    else:
        notes.append(f"{like}'s sampler has no batch size option: a hard-coded batch size is not checked")
    # the trace, the jit run, the CUDA round trip
    first_red = next(c.reduction for c in cells)
    events = _trace(problem, adapter, first, first_red, user_files, notes)
    cells += _extra_cells(problem, adapter, name, runs, events, first, first_red, cuda_absent, devices)
    # xfails of the catalogue's own implementations
    for c in cells:
        if not c.passed and c.compared_with == "reference" and c.batch is None and c.device in ("cpu", "cuda"):
            why = spec.xfail_reason(adapter.variant, c.dtype, c.case, c.reduction)
            if why:
                c.status, c.message = "xfail", f"{c.message} (the catalogue's own {adapter.variant} xfails here: {why})"
    mistakes = _mistakes(problem, adapter, cells, runs, events, name, user_files)
    return CheckResult(name, adapter.kind, adapter.framework, like, adapter.describe_call(), cells, mistakes, notes,
                       skipped)


def _check_params(spec, params: dict) -> dict:
    import reference as ref
    out = {}
    for k, v in params.items():
        if k not in spec.defaults:
            close = difflib.get_close_matches(k, list(spec.defaults), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise CheckUsageError(f"{spec.name} has no hyperparameter {k!r}{hint} (its hyperparameters: "
                                  f"{', '.join(spec.defaults)})")
        if k in spec.array_params and v is not None:
            v = np.asarray(_from_framework(v), dtype=np.float64)
        out[k] = v
    if out:
        rng = np.random.default_rng(0)
        inputs, kw = spec.draw(rng, spec.cases[0])
        try:
            ref.validate(spec, inputs, {**kw, **out})
        except (TypeError, ValueError, IndexError) as e:
            raise CheckUsageError(f"{spec.name} rejects {', '.join(f'{k}={_short_repr(v)}' for k, v in out.items())}:"
                                  f" {e}") from None
    return out


def _case_blocked(spec, case, adapter: Adapter, fixed: dict, sample: dict) -> str | None:
    keys = [k for k in case if k in spec.defaults] + [k for k in case.sample if k in spec.defaults]
    for k in dict.fromkeys(keys):
        value = case.get(k, case.sample.get(k))
        if k in fixed:
            if k in case and not _equal(fixed[k], value):
                return f"it sets {k}, which is fixed to {_short_repr(fixed[k])}"
            continue
        if not adapter.takes(k):
            return f"{adapter.name} takes no {k!r}"
    if sample and "shape" in sample and "shape" in case.sample:
        return "--shape sets the shape"
    return None


def _shapes_differ(spec, case, sample: dict, shapes) -> str | None:
    """Why ``case`` cannot draw inputs of the ``--shape`` shapes (a target of another form), or None."""
    try:
        drawn = spec.draw(np.random.default_rng(0), case, **sample)[0]
    except Exception as e:
        return f"its sampler cannot draw these shapes ({type(e).__name__}: {e})"
    want = [Input.parse(s).shape for s in shapes]
    got = [tuple(np.shape(x)) for x in drawn]
    return None if got == want else f"its inputs have shapes {', '.join(map(str, got))}, not those of --shape"


def _equal(a, b) -> bool:
    try:
        return bool(np.all(np.asarray(a) == np.asarray(b))) and np.shape(a) == np.shape(b)
    except Exception:
        return False


def _shape_sample(spec, shapes) -> dict:
    """Sampler options that draw inputs of ``shapes`` (one per input); a CheckUsageError naming
    the loss's own rule when they do not fit."""
    import reference as ref
    from reference import checks
    parsed = []
    for s in shapes:
        inp = Input.parse(s)
        if inp.kind != "normal":
            raise CheckUsageError(f"with --like the inputs' kinds come from the loss; give bare shapes (got {s!r})")
        parsed.append(inp.shape)
    if len(parsed) != len(spec.inputs):
        raise CheckUsageError(f"{spec.name} takes {len(spec.inputs)} input(s) ({', '.join(spec.inputs)}); got "
                              f"{len(parsed)} shape(s)")
    rng = np.random.default_rng(0)
    drawn, kw = spec.draw(rng, spec.cases[0])
    infos = {n: checks.ArrayInfo(n, shape, checks.dtype_kind(np.asarray(x).dtype.kind), str(np.asarray(x).dtype))
             for n, shape, x in zip(spec.inputs, parsed, drawn)}
    try:
        ref.validate(spec, tuple(spec.inputs), dict(kw), describe=lambda n, x: infos[n] if n in infos else
                     checks.numpy_info(n, x))
    except (TypeError, ValueError, IndexError) as e:
        raise CheckUsageError(f"the shapes {', '.join(map(str, parsed))} do not fit {spec.name}: {e}") from None
    defaults = _sampler_params(spec)
    if defaults is not None and "shape" not in defaults:
        raise CheckUsageError(f"{spec.name}'s sampler takes no shape; set its sizes with --sample "
                              f"({', '.join(f'{k}={v!r}' for k, v in defaults.items())})")
    option = {"shape": parsed[0]}
    try:
        got = spec.draw(np.random.default_rng(0), spec.cases[0], **option)[0]
    except Exception as e:
        raise CheckUsageError(f"{spec.name}'s sampler cannot draw input {parsed[0]}: {e}") from None
    if [tuple(np.shape(x)) for x in got] != parsed:
        raise CheckUsageError(f"the shapes {', '.join(map(str, parsed))} do not fit {spec.name}: with {spec.inputs[0]} "
                              f"{parsed[0]} it takes {', '.join(f'{n} {np.shape(x)}' for n, x in zip(spec.inputs, got))}")
    return option


def _detect_reduction(adapter: Adapter, problem: _LikeProblem, case: str) -> tuple[str | None, str]:
    """For a callable that takes no ``reduction``: the reduction whose reference value its own
    value matches at float64."""
    spec = problem.spec
    default = spec.defaults.get("reduction", "mean")
    try:
        d = problem.drawn(case, default, "float64")
        run = _run(adapter, spec, d, "cpu")
    except Exception:
        run = None
    if run is None or run.value is None:
        return default, f"{adapter.name} takes no reduction; compared with reduction={default!r}, {spec.name}'s default"
    for reduction in spec.case_reductions(spec.case(case)):
        d = problem.drawn(case, reduction, "float64")
        want, _ = problem.want(d)
        if np.shape(want) == np.shape(run.value) and _close64(run.value, want):
            return reduction, (f"{adapter.name} takes no reduction; its value matches reduction={reduction!r}, "
                               "so that one runs (--reduction chooses another)")
    return default, (f"{adapter.name} takes no reduction and its value matches none of {spec.name}'s; compared with "
                     f"reduction={default!r}, the default")


def _other_batch(problem: _LikeProblem, case: str, info) -> int | None:
    """A second batch size that the sampler can draw: n + 3, else 2n, else n + 1."""
    _, n1 = info
    reduction = problem.spec.case_reductions(problem.spec.case(case))[0]
    for n2 in (n1 + 3, 2 * n1, n1 + 1):
        try:
            problem.drawn(case, reduction, "float64", n2)
            return n2
        except Exception:
            continue
    return None


def _cell(problem, adapter, name, runs, case, reduction, dtype, device, batch, oracle=None) -> CellCheck:
    oracle = oracle or problem.compared_with
    tol = problem.tolerance(dtype, oracle) if isinstance(problem, _CustomProblem) else problem.tolerance(dtype)
    cell = CellCheck(case, reduction, dtype, device, oracle, tol[0], tol[1], batch)
    cell.reproducer = (problem.reproducer(adapter, name, case, reduction, dtype, device, batch, oracle)
                       if isinstance(problem, _CustomProblem) else
                       problem.reproducer(adapter, name, case, reduction, dtype, device, batch))
    try:
        d = problem.drawn(case, reduction, dtype, batch)
        want = problem.want(d, oracle) if isinstance(problem, _CustomProblem) else problem.want(d)
    except _OracleUnavailable:
        raise
    except CheckUsageError:
        raise
    except Exception as e:
        raise CheckUsageError(f"cannot draw the inputs of case {case!r} at batch size {batch}: "
                              f"{type(e).__name__}: {e}") from None
    run = _run(adapter, problem.sig, d, device)
    if dtype == "float64" and device == "cpu" and oracle == problem.compared_with:
        runs[(case, reduction, dtype, device, batch)] = (d, run, want)
    return _compare(cell, run, *want, names=problem.grad_names(d))


def _trace(problem, adapter, case, reduction, user_files, notes) -> list[_Event]:
    """Run the first cell once more with the torch calls (or the jaxpr) traced."""
    d = problem.drawn(case, reduction, "float64")
    if adapter.framework == "torch":
        state = _TraceState([], user_files)
        with contextlib.suppress(Exception):
            _run_torch(adapter, problem.sig, d, "cpu", trace=state)
        return state.events
    matrix = _engine()
    arrays, kw = matrix.jax_arrays(d)
    call, primals = matrix.on_differentiable(adapter.call, problem.sig, arrays, kw)
    return _jax_events(call, primals, user_files)


def _extra_cells(problem, adapter, name, runs, events, case, reduction, cuda_absent, devices) -> list[CellCheck]:
    out = []
    if adapter.framework == "jax":
        tol = problem.tolerance("float64") if not isinstance(problem, _CustomProblem) else \
            problem.tolerance("float64", problem.compared_with)
        cell = CellCheck(case, reduction, "float64", "cpu (jax.jit)", problem.compared_with, tol[0], tol[1])
        d = problem.drawn(case, reduction, "float64")
        want = problem.want(d)
        run = _run_jax(adapter, problem.sig, d, "cpu", mode="jit")
        cell.reproducer = (problem.reproducer(adapter, name, case, reduction, "float64", "cpu", None)
                           .replace("out, pullback = jax.vjp(f, *primals)",
                                    "out, pullback = jax.vjp(jax.jit(f), *primals)"))
        out.append(_compare(cell, run, *want))
    elif cuda_absent:
        cell = CellCheck(case, reduction, "float64", "cuda (no GPU: traced)", "NumPy round trips", NAN, NAN)
        numpy = [ev for ev in events if ev.kind == "numpy" and not ev.moved_to_cpu]
        if numpy:
            cell.status = "failed"
            cell.message = ("on a CUDA tensor " + ", ".join(sorted({ev.what for ev in numpy})) +
                            " raises \"can't convert cuda:0 device type tensor to numpy\" (" +
                            "; ".join(ev.where for ev in numpy if ev.where) + ")")
            cell.reproducer = problem.reproducer(adapter, name, case, reduction, "float64", "cuda", None) \
                if not isinstance(problem, _CustomProblem) else \
                problem.reproducer(adapter, name, case, reduction, "float64", "cuda", None)
        out.append(cell)
    return out


def _mistakes(problem, adapter, cells, runs, events, name, user_files) -> list[Mistake]:
    failing = [c for c in cells if not c.passed]
    found: dict[str, Mistake] = {}

    def add(code, detail, cell_ids, where=()):
        title, hint = MISTAKES[code]
        m = found.get(code)
        if m is None:
            m = found[code] = Mistake(code, title, detail, hint)
        elif detail not in m.detail.split("\n") and detail.split(":")[0] not in m.detail:
            m.detail += "\n" + detail
        m.cells += [c for c in cell_ids if c not in m.cells]
        for w in where:
            if w and w not in m.where:
                m.where.append(w)

    if not failing:
        return []
    diag = _Diagnoser(problem, adapter, runs, events, name, user_files)
    groups: dict = {}
    for c in failing:
        if c.device.startswith("cuda (no GPU"):
            numpy = [ev for ev in events if ev.kind == "numpy"]
            add("numpy-round-trip", "a NumPy round trip (" + ", ".join(sorted({ev.what for ev in numpy})) +
                f"{', in the backward' if all(ev.phase == 'backward' for ev in numpy) else ''}) runs on the CPU "
                "but raises on a CUDA tensor", [c.id], [ev.where for ev in numpy])
            continue
        if c.device.endswith("(jax.jit)"):
            run = _run_jax(adapter, problem.sig, problem.drawn(c.case, c.reduction, "float64"), "cpu", mode="jit")
            if run.error is not None:
                for f in diag.from_error(run, " (under jax.jit)"):
                    if f.code == "raised" and _is_tracer_conversion(run.error):
                        f.code = "numpy-round-trip"
                    add(f.code, f.detail, [c.id], f.where)
                continue
        groups.setdefault((c.case, c.reduction), []).append(c)
    for (case, reduction), group in groups.items():
        try:
            findings = diag.group(case, reduction, group)
        except Exception as e:  # diagnosis must never hide the table
            findings = [_Finding("mismatch", f"(the diagnosis itself failed: {type(e).__name__}: {e})")]
        if all(c.dtype != "float64" for c in group) and not any(f.code != "mismatch" for f in findings):
            findings = [_Finding("precision", "float64 agrees; " + ", ".join(
                f"{c.id}: grad rel err {_fmt(c.grad_rel_err)}, value rel err {_fmt(c.value_rel_err)} "
                f"(rtol {c.rtol:g})" for c in group[:2]))]
        elif all(c.dtype != "float64" for c in group):
            findings = [f for f in findings if f.code != "mismatch"]
        for f in findings:
            add(f.code, f.detail, [c.id for c in group], f.where)
    raised = found.get("raised")
    if raised is not None:
        bad_cases = list(dict.fromkeys(c.case for c in failing if c.status == "raised"))
        ok_cases = [c for c in dict.fromkeys(c.case for c in cells if c.compared_with == problem.compared_with)
                    if c not in bad_cases]
        raised.detail += f"\ncases that raised: {', '.join(bad_cases)}"
        if ok_cases and isinstance(problem, _LikeProblem):
            raised.hint = ("if your loss is not meant for those cases' inputs (their shapes and target forms: "
                           "lossparity show " + problem.spec.name + "), leave them out: --case " + ",".join(ok_cases))
    indices = [ev for ev in events if ev.kind == "max-indices"]
    if indices:
        add("max-indices", "integer indices enter floating arithmetic: "
                           + "; ".join(sorted({ev.what for ev in indices}))
                           + " (the lines: where the indices are made, where they are used)",
            [c.id for c in failing], [w for ev in indices for w in (ev.origin, ev.where)])
        found.pop("mismatch", None)
    order = list(MISTAKES)
    return sorted(found.values(), key=lambda m: order.index(m.code))


# -- a loss the catalogue lacks ---------------------------------------------------------------

def _check_custom(obj, target, framework, inputs, reference_fn, differentiable, reductions, dtypes, devices, seed,
                  params) -> CheckResult:
    matrix = _engine()
    name = _name_of(obj, target)
    ref_target = reference_fn if isinstance(reference_fn, str) else None
    if isinstance(reference_fn, str):
        reference_fn = load(reference_fn)
    if reference_fn is not None and not callable(reference_fn):
        raise CheckUsageError(f"reference must be a callable NumPy function; got a {type(reference_fn).__name__}")
    inputs = [Input.parse(x) if isinstance(x, str) else x for x in inputs]
    if not inputs:
        raise CheckUsageError("give the shape of every input")
    adapter = Adapter(obj, framework, n_inputs=len(inputs), name=None if not target else target.rpartition(":")[2])
    if getattr(adapter, "required", 0) > len(inputs):
        raise CheckUsageError(f"{adapter.name} takes {adapter.required} input(s) without a default; got "
                              f"{len(inputs)} shape(s)")
    for k in params:
        if not adapter.takes(k):
            raise CheckUsageError(f"{adapter.name} takes no {k!r}")
    problem = _CustomProblem(adapter, inputs, differentiable, reference_fn, params, seed, name, ref_target)
    notes = []
    if adapter.takes_reduction and adapter.accepts is not None:
        reds = _choose("reduction", reductions, ["none", "mean", "sum"]) or ["none", "mean", "sum"]
    elif reductions:
        reds = _split(reductions)
    else:
        reds = [None]
    dtypes = _choose("dtype", dtypes, list(matrix.FULL_DTYPES)) or list(matrix.FULL_DTYPES)
    present, cuda_absent = _devices(adapter.framework, devices)
    user_files = _user_files(obj)
    runs: dict = {}
    cells: list[CellCheck] = []
    oracles = list(problem.oracles)
    for oracle in list(oracles):
        try:
            for reduction in reds:
                for dtype in dtypes:
                    for device in present:
                        cells.append(_cell(problem, adapter, name, runs, "custom", reduction, dtype, device, None,
                                           oracle))
        except _OracleUnavailable as e:
            notes.append(f"{e}; compared with the other oracles")
            cells = [c for c in cells if c.compared_with != oracle]
            oracles.remove(oracle)
            if oracle == problem.compared_with:
                problem.oracles = [o for o in problem.oracles if o != oracle] or ["finite differences"]
                problem.compared_with = problem.oracles[0]
                if problem.compared_with not in oracles:
                    oracles.append(problem.compared_with)
                    for reduction in reds:
                        for dtype in dtypes:
                            for device in present:
                                cells.append(_cell(problem, adapter, name, runs, "custom", reduction, dtype, device,
                                                   None, problem.compared_with))
    info = problem.batch()
    if info is not None:
        n2 = info[1] + 3
        for reduction in reds:
            cells.append(_cell(problem, adapter, name, runs, "custom", reduction, "float64", "cpu", n2))
    else:
        notes.append("inputs without a common batch dimension: a hard-coded batch size is not checked")
    cells += _tool_cells(problem, adapter, name, reds)
    events = _trace(problem, adapter, "custom", reds[0], user_files, notes)
    cells += _extra_cells(problem, adapter, name, runs, events, "custom", reds[0], cuda_absent, devices)
    mistakes = _mistakes(problem, adapter, cells, runs, events, name, user_files)
    against = {"autograd": "autograd through its forward", "jax.vjp of fun": "JAX's derivative of the undecorated "
               "function", "reference": "the NumPy reference (gradient by central differences)",
               "finite differences": "central differences of its own value"}
    notes.insert(0, "compared with " + "; ".join(against[o] for o in oracles) +
                 f"; {'gradcheck' if adapter.framework == 'torch' else 'check_grads'} in float64")
    return CheckResult(name, adapter.kind, adapter.framework, None, adapter.describe_call(), cells, mistakes, notes, [])


def _tool_cells(problem: _CustomProblem, adapter: Adapter, name, reds) -> list[CellCheck]:
    """gradcheck (torch) or check_grads (JAX) in float64, one per reduction."""
    matrix = _engine()
    out = []
    for reduction in reds:
        tool = "gradcheck" if adapter.framework == "torch" else "check_grads"
        cell = CellCheck("custom", reduction, "float64", "cpu", tool, NAN, NAN)
        d = problem.drawn("custom", reduction, "float64")
        try:
            if adapter.framework == "torch":
                torch = _torch()
                arrays, kw = matrix.torch_arrays(d)
                call, primals = matrix.on_differentiable(adapter.call, problem.sig, arrays, kw)
                torch.autograd.gradcheck(call, [p.clone().requires_grad_(True) for p in primals])
            else:
                from jax.test_util import check_grads
                arrays, kw = matrix.jax_arrays(d)
                call, primals = matrix.on_differentiable(adapter.call, problem.sig, arrays, kw)
                check_grads(call, tuple(primals), order=1, modes=("rev",))
        except Exception as e:
            cell.status = "failed"
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            cell.message = f"{type(e).__name__}: {_one_line(first, 300)}"
        cell.reproducer = ""
        out.append(cell)
    return out


# -- the command line --------------------------------------------------------------------------

_DESCRIPTION = """\
Prove or refute your own loss implementation.

With --like LOSS, NAME runs through the parity matrix's cells for the catalogue loss LOSS:
its cases (those whose hyperparameters NAME takes), each reduction, float64 and float32,
CPU (and CUDA where present), inputs from LOSS's sampler, value and gradient of every
differentiable input against the NumPy reference; the first case again at a second batch
size. Without --like, give the inputs' shapes: an autograd.Function's backward is compared
with autograd through its forward, a jax.custom_vjp's with JAX's derivative of the
undecorated function, a --reference NumPy function checks value and gradient, and
gradcheck / check_grads run in float64.

Failing cells come with the classic mistake that explains them (a backward that ignores
grad_output, a gradient for the wrong input or of the wrong shape, a graph cut, max indices
used as values, a hard-coded batch size, a NumPy round trip, the reduction's scale) and a
Python reproducer. Exit status: 0 everything agrees, 1 something disagrees, 2 bad usage."""

_EPILOG = """\
examples:
  lossparity check examples/torch_function.py:MSE --like mse_loss
  lossparity check examples/torch_module.py:CrossEntropyLoss --like cross_entropy --param label_smoothing=0.1
  lossparity check examples/jax_custom_vjp.py:cross_entropy --like cross_entropy --case default,K-dim
  lossparity check examples/custom_loss.py:Charbonnier --shape 6,4 --shape 6,4 \\
      --reference examples/custom_loss.py:charbonnier_reference"""


def add_check_command(subparsers) -> argparse.ArgumentParser:
    """Add ``check`` to an argparse sub-parser collection (``reports.cli``'s); the parsed
    arguments carry ``func=run_check_command``."""
    p = subparsers.add_parser("check", help="prove or refute your own loss (a function, Module, autograd.Function "
                                            "or jax.custom_vjp) against a catalogue loss",
                              description=_DESCRIPTION, epilog=_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="FILE.py:NAME", help="your callable (also module:NAME)")
    p.add_argument("--like", metavar="LOSS", help="the catalogue loss it implements (lossparity list)")
    p.add_argument("--framework", choices=("torch", "jax"), help="when NAME does not say which")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a hyperparameter (Python literal), passed to NAME and to the reference; "
                        "reduction=R runs that reduction only")
    p.add_argument("--case", action="append", metavar="NAME", help="cases to run, comma-separated or repeated "
                                                                 "(default: all that NAME can take)")
    p.add_argument("--reduction", action="append", metavar="R", help="reductions to run (default: all)")
    p.add_argument("--dtype", action="append", metavar="DTYPE", help="float64, float32 (default: both)")
    p.add_argument("--device", action="append", metavar="DEVICE",
                   help="cpu, cuda (default: both; without a GPU, cuda means NumPy round trips are searched for)")
    p.add_argument("--shape", action="append", metavar="SHAPE[:KIND]",
                   help="one per input, in order: 6,4 (with --like: the shapes to draw); without --like also "
                        "a kind: normal (default), positive, unit, sign, labelsK")
    p.add_argument("--sample", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of LOSS's sampler (its sizes, e.g. n=8)")
    p.add_argument("--reference", metavar="FILE.py:NAME", help="without --like: a NumPy function of the same "
                                                               "inputs and hyperparameters")
    p.add_argument("--differentiable", metavar="I,J", help="without --like: the inputs (positions or names) that "
                                                           "get gradients (default: every floating input)")
    p.add_argument("--seed", type=int, default=0, help="another draw of the inputs (0: the matrix's)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every failing cell's reproducer")
    p.set_defaults(func=run_check_command)
    return p


def _key_values(items, what: str) -> dict:
    out = {}
    for item in items or []:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise CheckUsageError(f"{what} takes KEY=VALUE; got {item!r}")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        if isinstance(value, list):
            value = tuple(value) if what == "--sample" else np.asarray(value, dtype=np.float64)
        out[key] = value
    return out


def run_check_command(args) -> int:
    """``lossparity check``: print the report; 0 when everything agrees, 1 when not, 2 on bad usage."""
    try:
        params = _key_values(args.param, "--param")
        sample = _key_values(getattr(args, "sample", None), "--sample")
        differentiable = None
        if args.differentiable:
            differentiable = [int(t) if t.strip().isdigit() else t.strip() for t in args.differentiable.split(",")]
        if args.like is None and (sample or not args.shape):
            if not args.shape:
                raise CheckUsageError("give --like LOSS (a catalogue loss; lossparity list) or, for a loss the "
                                      "catalogue lacks, one --shape per input")
            raise CheckUsageError("--sample needs --like")
        if args.like is not None and (args.reference or args.differentiable):
            raise CheckUsageError("--reference and --differentiable are for a loss the catalogue lacks (no --like)")
        result = check(args.target, args.like, framework=args.framework, cases=args.case, reductions=args.reduction,
                       dtypes=args.dtype, devices=args.device, sample=sample or None,
                       shapes=args.shape if args.like else None,
                       inputs=None if args.like else args.shape, reference=args.reference,
                       differentiable=differentiable, seed=args.seed, params=params)
    except CheckUsageError as e:
        print(f"lossparity check: error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(result.report(verbose=args.verbose))
    return 0 if result.passed else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m reports.check ...``, the same as ``lossparity check ...``."""
    parser = argparse.ArgumentParser(prog="lossparity")
    add_check_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
