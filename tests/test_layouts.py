"""The implementations on inputs as users hold them, generated from the registry: tensors that
are not contiguous, integer labels of narrow dtypes; and torch's Modules as users keep them
(pickled, deep-copied, saved with ``torch.save`` inside a model).

A user's tensors are often views: a transpose, a slice of a larger batch, every other column.
Code that calls ``.view``, writes in place, or assumes a row-major layout can fail on them or,
worse, read the wrong elements. PyTorch's OpInfo tests run each operator on non-contiguous
samples for this reason; here every case of every loss, in float64, under each of its
reductions, runs the ``module`` and ``function`` variants on its arrays (inputs, array
hyperparameters and the cotangent) laid out as

- ``permuted``: the dims stored in reverse order (dense, strides reversed: ``x.T`` in 2-D), for
  arrays of two or more dims not of size 1;
- ``strided``: every other element of a buffer twice as long along the last dim (``x[..., ::2]``
  of a larger tensor: not dense),

and the value and every gradient must equal the contiguous call's within 1e-10 (the same
operations; only a reduction's order of summation may differ). The differentiable inputs keep
their layout (a ``detach``, not a ``clone``, which would make a strided tensor contiguous).
JAX has no layouts to vary: its arrays are always dense and row-major.

Integer inputs (class labels, CTC targets and lengths) stored as uint8 (a segmentation label
map), int8, int16 or int32 must give what int64 gives, in the reference and all four
implementations: torch's gather, scatter and index_select refuse uint8 and int16 indices, and
torch's indexing reads a uint8 tensor as a mask.

With ``torch.set_default_dtype(torch.float64)`` (a scientific user's setting) a float32 call
gives what it gives under the default float32, bit for bit, in float32: a tensor made inside a
loss takes its dtype from the inputs, never from the default.

Within ``torch.autocast`` both torch variants run as autocast runs torch's own losses (its
float32 list): float32 and bfloat16 inputs give the float32 call's value, in float32, exactly,
and each gradient is that call's in its input's dtype. A matrix product left to autocast
would drop to bfloat16 inside the loss.
"""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
import torch

import reference
import torch_impl
from reports import matrix

LAYOUTS = ("permuted", "strided")
RTOL, ATOL = 1e-10, 1e-12


def relayout(t, layout: str):
    """``t`` copied into ``layout``; ``t`` itself where that layout would be contiguous anyway (a
    0-d or one-element tensor; a permutation of a 1-D one, or of dims of size 1), or where
    ``t`` is not a tensor."""
    if not isinstance(t, torch.Tensor) or t.numel() < 2:
        return t
    if layout == "permuted":
        order = tuple(reversed(range(t.dim())))
        out = torch.empty(tuple(reversed(t.shape)), dtype=t.dtype, device=t.device).permute(order)
    else:
        out = torch.empty(t.shape + (2,), dtype=t.dtype, device=t.device)[..., 0]
    if out.is_contiguous():
        return t
    return out.copy_(t)


def run_in_layout(fn, spec, d: matrix.Drawn, layout: str | None):
    """``matrix.run_torch`` with every array in ``layout`` (None: as drawn, contiguous)."""
    arrays, kw = matrix.torch_arrays(d)
    cotangent = matrix.to_torch(d.cotangent)
    if layout is not None:
        arrays = [relayout(a, layout) for a in arrays]
        kw = {k: relayout(v, layout) for k, v in kw.items()}
        cotangent = relayout(cotangent, layout)
    call, primals = matrix.on_differentiable(fn, spec, arrays, kw)
    diff = [p.detach().requires_grad_(True) for p in primals]
    out = call(*diff)
    grads = torch.autograd.grad(out, diff, cotangent, allow_unused=True)
    return (out.detach().numpy(),
            tuple(np.zeros(tuple(t.shape)) if g is None else g.numpy() for g, t in zip(grads, diff)))


def reproducer(name: str, case: str, reduction: str, variant: str, layout: str) -> str:
    return ("import reference, torch_impl\nfrom reports import matrix\nfrom tests.test_layouts import run_in_layout\n"
            f"spec = reference.get({name!r})\n"
            f"d = matrix.draw(spec, {case!r}, {reduction!r}, 'float64')\n"
            f"fn = torch_impl.get({name!r}, {variant!r})\n"
            f"run_in_layout(fn, spec, d, {layout!r}), run_in_layout(fn, spec, d, None)")


@pytest.mark.parametrize("name", reference.names())
def test_non_contiguous_inputs(name):
    spec = reference.get(name)
    failures, compared = [], 0
    for case in spec.matrix_cases:
        if case.dtypes is not None and "float64" not in case.dtypes:
            continue
        for reduction in spec.case_reductions(case):
            d = matrix.draw(spec, case.name, reduction, "float64")
            for variant in matrix.FRAMEWORKS["torch"]:
                fn = matrix.implementation(variant, name)
                want_value, want_grads = run_in_layout(fn, spec, d, None)
                for layout in LAYOUTS:
                    where = f"[{case.name}] {reduction} {variant}, {layout}"
                    try:
                        value, grads = run_in_layout(fn, spec, d, layout)
                    except Exception as e:  # noqa: BLE001  (the contiguous call took it: an error is a finding)
                        failures.append(f"{where}: raised {type(e).__name__}: {e}\n"
                                        + reproducer(name, case.name, reduction, variant, layout))
                        continue
                    compared += 1
                    for what, got, want in [("value", value, want_value)] + [
                            (f"grad {i}", g, w) for i, (g, w) in enumerate(zip(grads, want_grads))]:
                        if not matrix.close(got, want, RTOL, ATOL):
                            a, r = matrix.errors(got, want)
                            failures.append(f"{where}: {what} differs from the contiguous call's (abs {a:.3g}, "
                                            f"rel {r:.3g})\n" + reproducer(name, case.name, reduction, variant, layout))
    assert compared, f"{name}: no case in float64"
    assert not failures, f"{name} on non-contiguous tensors:\n" + "\n".join(failures)


NARROW_INTEGERS = (np.uint8, np.int8, np.int16, np.int32)


def _integer_cases():
    for name in reference.names():
        spec = reference.get(name)
        cases = []
        for case in spec.matrix_cases:
            if case.dtypes is not None and "float64" not in case.dtypes:
                continue
            d = matrix.draw(spec, case.name, spec.case_reductions(case)[0], "float64")
            if any(x.dtype.kind in "iu" for x in d.inputs):
                cases.append(case.name)
        if cases:
            yield pytest.param(name, cases, id=name)


@pytest.mark.parametrize("name, cases", list(_integer_cases()))
def test_narrow_integer_labels(name, cases):
    """Every case of a loss with integer inputs, under its first reduction, with those inputs in
    each narrower dtype that holds their values: the value and every gradient equal the int64
    call's (within 1e-10), for the reference and both torch variants in every case, and for the
    JAX variants in the first case as int16 (jitted: a compile per case and dtype)."""
    spec = reference.get(name)
    failures = []

    def narrowed(d, dtype):
        return matrix.Drawn(tuple(x.astype(dtype) if x.dtype.kind in "iu" else x for x in d.inputs), d.kw, d.cotangent)

    def run(variant, drawn, jax_results):
        if variant == "reference":
            return matrix.expected(spec, drawn)
        if matrix.FRAMEWORK_OF[variant] == "jax":
            result = jax_results[(variant, str(drawn.inputs[0].dtype), *(str(x.dtype) for x in drawn.inputs[1:]))]
            if isinstance(result, BaseException):
                raise result
            return result
        return matrix.run_torch(matrix.implementation(variant, name), spec, drawn, "cpu")

    for i, case in enumerate(cases):
        d = matrix.draw(spec, case, spec.case_reductions(spec.case(case))[0], "float64")
        held = [x for x in d.inputs if x.dtype.kind in "iu"]
        jax_variants = list(matrix.FRAMEWORKS["jax"]) if i == 0 else []
        # the JAX calls, int64 and int16, as one jitted program (a compile each would cost 4x)
        jax_results = matrix.run_jax_calls({
            (v, *(str(x.dtype) for x in drawn.inputs)): (matrix.implementation(v, name), spec, drawn, "cpu")
            for v in jax_variants for drawn in (d, narrowed(d, np.int16))})
        for variant in ["reference", *matrix.FRAMEWORKS["torch"]] + jax_variants:
            want_value, want_grads = run(variant, d, jax_results)
            for dtype in NARROW_INTEGERS if matrix.FRAMEWORK_OF.get(variant) != "jax" else (np.int16,):
                info = np.iinfo(dtype)
                if not all(x.size == 0 or (x.min() >= info.min and x.max() <= info.max) for x in held):
                    continue
                where = f"[{case}] {variant}, integer inputs as {np.dtype(dtype).name}"
                try:
                    value, grads = run(variant, narrowed(d, dtype), jax_results)
                except Exception as e:  # noqa: BLE001  (int64 takes it: an error is a finding)
                    failures.append(f"{where}: raised {type(e).__name__}: {e}")
                    continue
                for what, got, want in [("value", value, want_value)] + [
                        (f"grad {k}", g, w) for k, (g, w) in enumerate(zip(grads, want_grads))]:
                    if not matrix.close(got, want, RTOL, ATOL):
                        failures.append(f"{where}: {what} differs from int64's (abs, rel {matrix.errors(got, want)})")
    assert not failures, f"{name} with narrow integer inputs:\n" + "\n".join(failures)


@pytest.mark.parametrize("name", reference.names())
def test_modules_survive_pickle_deepcopy_and_torch_save(name):
    """Each loss's ``nn.Module``, built with its default case's hyperparameters (array ones as
    buffers), gives the same value after ``pickle``, ``copy.deepcopy`` and ``torch.save`` /
    ``torch.load`` (a checkpoint of a model that holds its loss): the class must be reachable
    under its own name in its module."""
    spec = reference.get(name)
    case = spec.cases[0]
    d = matrix.draw(spec, case.name, spec.case_reductions(case)[0], "float64")
    arrays, kw = matrix.torch_arrays(d)
    loss = torch_impl.get(name, "module").module_class(**kw)
    want = loss(*arrays)

    def saved(m):
        buffer = io.BytesIO()
        torch.save(m, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=False)

    for how, restore in (("pickle", lambda m: pickle.loads(pickle.dumps(m))), ("copy.deepcopy", copy.deepcopy),
                         ("torch.save", saved)):
        restored = restore(loss)
        assert type(restored) is type(loss), how
        torch.testing.assert_close(restored(*arrays), want, rtol=0, atol=0, msg=lambda m: f"{name} after {how}: {m}")


def run_under_autocast(fn, spec, d: matrix.Drawn, autocast: bool):
    """The value and gradients (tensors, in their own dtypes) of ``fn`` on ``d``'s arrays, its
    forward within ``torch.autocast("cpu", dtype=torch.bfloat16)``; or, ``autocast=False``,
    on float32 copies of its half-precision arrays, outside it. The backward runs outside, as
    in a training step."""
    arrays, kw = matrix.torch_arrays(d)
    if not autocast:
        def float32(t):
            return t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.bfloat16, torch.float16) else t
        arrays, kw = [float32(a) for a in arrays], {k: float32(v) for k, v in kw.items()}
    call, primals = matrix.on_differentiable(fn, spec, arrays, kw)
    diff = [p.detach().requires_grad_(True) for p in primals]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = call(*diff)
    grads = torch.autograd.grad(out, diff, matrix.to_torch(d.cotangent).to(out.dtype), allow_unused=True)
    return out, grads, diff


def bit_for_bit_failures(name: str, runs, attempt, call: str) -> list[str]:
    """For each ``(case, dtype)`` of ``runs`` (the case's first reduction) and both torch variants:
    ``attempt(fn, spec, d)``, which returns what ``run_under_autocast`` does, against the plain
    call on float32 copies, bit for bit, each gradient in its input's dtype. ``call`` is the
    Python of the attempt, for the reproducer."""
    spec = reference.get(name)
    failures = []
    for case, dtype in runs:
        reduction = spec.case_reductions(spec.case(case))[0]
        d = matrix.draw(spec, case, reduction, dtype)
        for variant in matrix.FRAMEWORKS["torch"]:
            fn = matrix.implementation(variant, name)
            where = (f"[{case}] {variant}, {dtype} inputs; reproduce with:\n  import reference, torch, torch_impl; "
                     f"from reports import matrix; from tests.test_layouts import run_under_autocast\n"
                     f"  spec = reference.get({name!r}); fn = torch_impl.get({name!r}, {variant!r}); "
                     f"d = matrix.draw(spec, {case!r}, {reduction!r}, {dtype!r})\n  {call}\n")
            want, want_grads, _ = run_under_autocast(fn, spec, d, autocast=False)
            try:
                value, grads, diff = attempt(fn, spec, d)
            except Exception as e:  # noqa: BLE001  (the plain float32 call took it: an error is a finding)
                failures.append(f"{where}raised {type(e).__name__}: {e}")
                continue
            checks = [("value", value, want)] + [(f"grad {i}", g, None if w is None else w.to(x.dtype))
                                                 for i, (g, w, x) in enumerate(zip(grads, want_grads, diff))]
            for what, got, expected in checks:
                try:
                    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
                except AssertionError as e:
                    failures.append(f"{where}{what}: {e}")
    return failures


def float32_runs(spec) -> list[tuple[str, str]]:
    return [(case.name, "float32") for case in spec.matrix_cases if case.dtypes is None or "float32" in case.dtypes]


@pytest.mark.parametrize("name", reference.names())
def test_autocast_runs_the_loss_in_float32(name):
    """Every float32 case of the loss under its first reduction, and its first case in bfloat16,
    both torch variants: within ``torch.autocast("cpu", dtype=torch.bfloat16)`` the value is
    float32 and equals the call on float32 copies outside autocast, bit for bit, and each
    gradient is that call's in its input's dtype."""
    spec = reference.get(name)
    runs = float32_runs(spec) + [(spec.matrix_cases[0].name, "bfloat16")]
    failures = bit_for_bit_failures(name, runs, lambda fn, spec, d: run_under_autocast(fn, spec, d, autocast=True),
                                    "run_under_autocast(fn, spec, d, autocast=True)")
    assert not failures, f"{name} under torch.autocast:\n" + "\n".join(failures)


@pytest.mark.parametrize("name", reference.names())
def test_the_default_dtype_changes_nothing(name):
    """Every float32 case under its first reduction, both torch variants, once with
    ``torch.set_default_dtype(torch.float64)``: the same value and gradients, bit for bit."""
    def under_default_float64(fn, spec, d):
        torch.set_default_dtype(torch.float64)
        try:
            return run_under_autocast(fn, spec, d, autocast=False)
        finally:
            torch.set_default_dtype(torch.float32)

    failures = bit_for_bit_failures(name, float32_runs(reference.get(name)), under_default_float64,
                                    "torch.set_default_dtype(torch.float64); "
                                    "run_under_autocast(fn, spec, d, autocast=False)")
    assert not failures, f"{name} with torch's default dtype float64:\n" + "\n".join(failures)
