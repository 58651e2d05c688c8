"""``lossparity check``: every correct example passes, every faulty example fails with its named
mistake (and only that one), bad usage gets a plain message and exit status 2, and the Python API
(``check``, ``assert_matches``, ``CheckResult``) says the same. The examples live in ``examples/``;
their docstrings' commands are run as a new user would run them."""

from __future__ import annotations

import argparse
import inspect
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reports.check import (MISTAKES, CheckResult, CheckUsageError, add_check_command, assert_matches, check, load,
                           run_check_command)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def in_the_checkout(monkeypatch):
    """The commands name the examples as a user in the checkout does: examples/FILE.py:NAME."""
    monkeypatch.chdir(ROOT)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``lossparity check ARGV``: through ``reports.cli`` once it has the command, else through a
    parser that ``add_check_command`` builds (the same function cli.py wires in)."""
    from reports import cli as cli_module
    sub = next((a for a in cli_module.parser()._actions if isinstance(a, argparse._SubParsersAction)), None)
    if sub is not None and "check" in sub.choices:
        rc = cli_module.main(["check", *argv])
    else:
        parser = argparse.ArgumentParser(prog="lossparity")
        add_check_command(parser.add_subparsers(dest="command", required=True))
        rc = run_check_command(parser.parse_args(["check", *argv]))
    out, err = capsys.readouterr()
    return rc, out, err


def mistakes_in(out: str) -> list[str]:
    return re.findall(r"^  \[([a-z-]+)\] ", out, flags=re.M)


def block_of(out: str, code: str) -> str:
    start = out.index(f"  [{code}] ")
    end = out.find("\n  [", start + 1)
    return out[start:end if end != -1 else None]


# -- the examples ----------------------------------------------------------------------------

CORRECT = [
    ("torch_function.py:MSE", "mse_loss", ()),
    ("torch_function.py:CrossEntropy", "cross_entropy", ()),
    ("torch_function.py:MulticlassHinge", "multiclass_hinge_loss", ()),
    ("torch_module.py:MSELoss", "mse_loss", ()),
    ("torch_module.py:CrossEntropyLoss", "cross_entropy", ("--param", "label_smoothing=0.1")),
    ("torch_module.py:MulticlassHinge", "multiclass_hinge_loss", ()),
    ("jax_custom_vjp.py:mse", "mse_loss", ("--case", "default")),
    ("jax_custom_vjp.py:cross_entropy", "cross_entropy", ("--case", "default", "--dtype", "float64")),
    ("jax_custom_vjp.py:multiclass_hinge", "multiclass_hinge_loss", ("--case", "default", "--dtype", "float64")),
]

# (example, catalogue loss, the one mistake it makes, whether the report points at its "# MISTAKE" line)
FAULTY = [
    ("torch_function.py:MSEIgnoresGradOutput", "mse_loss", "ignores-grad-output", False),
    ("torch_function.py:MSEWrongInput", "mse_loss", "wrong-input", False),
    ("torch_function.py:MSEWrongShape", "mse_loss", "wrong-shape", False),
    ("torch_function.py:MSEReductionScale", "mse_loss", "reduction-scale", False),
    ("torch_function.py:CrossEntropyHardCodedBatch", "cross_entropy", "hard-coded-batch", False),
    ("torch_function.py:CrossEntropyNumPy", "cross_entropy", "numpy-round-trip", True),
    ("torch_function.py:MulticlassHingeMaxIndices", "multiclass_hinge_loss", "max-indices", True),
    ("torch_module.py:CrossEntropyRequiresGrad", "cross_entropy", "graph-cut", True),
    ("torch_module.py:CrossEntropyVariable", "cross_entropy", "graph-cut", True),
    ("torch_module.py:MSENumPy", "mse_loss", "numpy-round-trip", True),
    ("torch_module.py:MSEMeanOverBatch", "mse_loss", "reduction-scale", False),
    ("torch_module.py:CrossEntropyHardCodedBatch", "cross_entropy", "hard-coded-batch", False),
    ("torch_module.py:MulticlassHingeMaxIndices", "multiclass_hinge_loss", "max-indices", True),
    ("jax_custom_vjp.py:mse_ignores_cotangent", "mse_loss", "ignores-grad-output", False),
    ("jax_custom_vjp.py:mse_wrong_input", "mse_loss", "wrong-input", False),
    ("jax_custom_vjp.py:mse_wrong_shape", "mse_loss", "wrong-shape", False),
    ("jax_custom_vjp.py:mse_reduction_scale", "mse_loss", "reduction-scale", False),
    ("jax_custom_vjp.py:cross_entropy_hard_coded_batch", "cross_entropy", "hard-coded-batch", False),
    ("jax_custom_vjp.py:cross_entropy_stop_gradient", "cross_entropy", "graph-cut", True),
    ("jax_custom_vjp.py:cross_entropy_numpy", "cross_entropy", "numpy-round-trip", True),
    ("jax_custom_vjp.py:multiclass_hinge_max_indices", "multiclass_hinge_loss", "max-indices", True),
]

CLASSIC = {"ignores-grad-output", "wrong-input", "wrong-shape", "graph-cut", "max-indices", "hard-coded-batch",
           "numpy-round-trip", "reduction-scale"}


@pytest.mark.parametrize("target, like, extra", CORRECT, ids=[c[0] for c in CORRECT])
def test_correct_example_passes(capsys, target, like, extra):
    rc, out, err = cli(capsys, f"examples/{target}", "--like", like, *extra)
    assert rc == 0, out + err
    assert "PASSED" in out and "FAILED" not in out


@pytest.mark.parametrize("target, like, mistake, points_at_line", FAULTY, ids=[f[0] for f in FAULTY])
def test_faulty_example_fails_with_its_mistake(capsys, target, like, mistake, points_at_line):
    # the default case, one reduction that shows the mistake: a few cells, both batch sizes
    reduction = "mean" if mistake in ("reduction-scale", "hard-coded-batch") else "none"
    rc, out, err = cli(capsys, f"examples/{target}", "--like", like, "--case", "default", "--reduction", reduction)
    assert rc == 1, out + err
    assert mistakes_in(out) == [mistake], out
    assert MISTAKES[mistake][0] in out
    assert "Reproduce #1" in out
    if points_at_line:
        assert "# MISTAKE" in block_of(out, mistake), out


def test_every_example_is_tested():
    """Each callable in examples/ is a correct example or a faulty one (marked '# MISTAKE')."""
    tested = {c[0] for c in CORRECT} | {f[0] for f in FAULTY}
    for path in EXAMPLES.glob("*.py"):
        if path.name == "custom_loss.py":
            continue
        text = path.read_text()
        for name in re.findall(r"^(?:class (\w+)|(\w+) = jax\.custom_vjp)", text, flags=re.M):
            name = name[0] or name[1]
            assert f"{path.name}:{name}" in tested, f"{path.name}:{name} is in no test"
    assert {f[2] for f in FAULTY} == CLASSIC
    for kind in ("torch_function", "torch_module", "jax_custom_vjp"):
        assert any(c[0].startswith(kind) for c in CORRECT) and any(f[0].startswith(kind) for f in FAULTY)


def shortened(argv: list[str]) -> list[str]:
    """JAX compiles every new shape and dtype: its runs keep to a few cells."""
    if argv[0].startswith(("examples/jax_", "examples/custom_loss.py:charbonnier")):
        return argv + ["--dtype", "float64", "--reduction", "mean"] + (["--case", "default"] * ("--like" in argv))
    return argv


def test_example_docstring_commands(capsys):
    """The commands in the examples' docstrings, as a new user runs them; 'status 1' marks a failure."""
    commands = []
    for path in sorted(EXAMPLES.glob("*.py")):
        doc = re.sub(r"\\+\s*\n\s*", " ", inspect.cleandoc(path.read_text().split('"""')[1]))
        for line in doc.splitlines():
            line = line.strip()
            if line.startswith("lossparity check "):
                command, _, comment = line.partition("#")
                commands.append((shlex.split(command)[2:], 1 if "status 1" in comment else 0))
    assert len(commands) >= 10
    for argv, want in commands:
        rc, out, err = cli(capsys, *shortened(argv))
        assert rc == want, f"lossparity check {' '.join(argv)}\n{out}{err}"


def test_readme_commands(capsys):
    """The README's ``lossparity check`` commands (once the section is merged into README.md)."""
    readme = (ROOT / "README.md").read_text()
    commands = [line.strip()[len("lossparity check "):] for line in readme.splitlines()
                if line.strip().startswith("lossparity check examples/")]
    if not commands:
        pytest.skip("README.md has no `lossparity check` section yet")
    for command in commands:
        command, _, comment = command.partition("#")
        rc, out, err = cli(capsys, *shortened(shlex.split(command)))
        assert rc == (1 if "status 1" in comment else 0), command + "\n" + out + err


# -- a loss the catalogue lacks -----------------------------------------------------------------

def test_custom_loss_passes_against_autograd_reference_and_gradcheck(capsys):
    rc, out, err = cli(capsys, "examples/custom_loss.py:Charbonnier", "--shape", "6,4", "--shape", "6,4",
                       "--reference", "examples/custom_loss.py:charbonnier_reference", "--reduction", "mean")
    assert rc == 0, out + err
    for oracle in ("autograd", "reference", "gradcheck"):
        assert f" {oracle} " in out


def test_custom_loss_faults():
    result = check("examples/custom_loss.py:CharbonnierIgnoresGradOutput", inputs=["6,4", "6,4"], reduction="sum")
    assert not result and result.mistake_codes == ["ignores-grad-output"]
    assert any(c.compared_with == "gradcheck" and not c.passed for c in result.cells)
    result = check("examples/custom_loss.py:charbonnier_half", inputs=["6,4", "6,4"], reduction="mean")
    assert result.mistake_codes == ["constant-factor"] and "1/2 of the reference" in result.mistakes[0].detail
    assert any(c.compared_with == "check_grads" and not c.passed for c in result.cells)
    assert check("examples/custom_loss.py:charbonnier", inputs=["6,4", "6,4"], reduction="mean").passed


def test_custom_function_with_a_numpy_forward_falls_back_to_finite_differences():
    class NumpySquare(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.from_numpy(np.asarray((x.detach().numpy() ** 2).sum()))

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 2 * x * g

    result = check(NumpySquare, inputs=[(5, 3)], devices=["cpu"])
    assert result.passed, result.report()
    assert {c.compared_with for c in result.cells} == {"finite differences", "gradcheck"}
    assert any("cannot be differentiated by autograd" in n for n in result.notes)


# -- the Python API -----------------------------------------------------------------------------

def test_builtins_pass_and_module_instances_are_read():
    assert check(F.mse_loss, like="mse_loss").passed  # the weighted case too: torch >= 2.11 takes weight
    result = check(torch.nn.CrossEntropyLoss(label_smoothing=0.1), like="cross_entropy", cases=["default", "K-dim"])
    assert result.passed and result.kind == "nn.Module instance"
    assert any("label_smoothing=0.1" in n for n in result.notes)
    assert {c.reduction for c in result.cells} == {"mean"}


def test_assert_matches_raises_with_the_report():
    assert isinstance(assert_matches("examples/torch_function.py:MSE", like="mse_loss"), CheckResult)
    with pytest.raises(AssertionError) as info:
        assert_matches("examples/torch_function.py:MSEReductionScale", like="mse_loss", reductions=["mean"])
    text = str(info.value)
    assert "[reduction-scale]" in text and "it divides by nothing where reduction='mean' divides by the " \
                                           "number of loss terms (24, then 36)" in text
    assert "cell_inputs('mse_loss', 'default', 'mean', 'float64')" in text


def test_reproducer_reproduces_the_cell():
    result = check("examples/torch_function.py:MSEReductionScale", like="mse_loss", reductions=["mean"],
                   dtypes=["float64"])
    namespace = {}
    exec(result.failures[0].reproducer.replace("print(", "(lambda *a, **k: None)("), namespace)
    got, want = namespace["grads"][0].numpy(), namespace["want_grads"][0]
    np.testing.assert_allclose(got, 24 * want, rtol=1e-12)


def test_reduction_is_detected_when_the_callable_takes_none():
    def mse_sum(x, y):
        return ((x - y) ** 2).sum()

    result = check(mse_sum, like="mse_loss", framework="torch")
    assert result.passed and {c.reduction for c in result.cells} == {"sum"}
    assert any("matches reduction='sum'" in n for n in result.notes)


def test_a_constant_divisor_is_named_with_its_value():
    def mse_over_32(x, y):
        return ((x - y) ** 2).sum() / 32

    result = check(mse_over_32, like="mse_loss", framework="torch", reductions=["mean"])
    assert result.mistake_codes == ["hard-coded-batch"]
    assert "divides by a fixed 32 where reduction='mean' divides by the number of loss terms (24, then 36)" \
        in result.mistakes[0].detail


def test_other_backward_mistakes():
    class TwoGradients(torch.autograd.Function):  # forward takes 3 arguments
        @staticmethod
        def forward(ctx, input, target, reduction="mean"):
            ctx.save_for_backward(input, target)
            return ((input - target) ** 2).sum()

        @staticmethod
        def backward(ctx, g):
            input, target = ctx.saved_tensors
            return 2 * (input - target) * g, -2 * (input - target) * g

    class NoTargetGradient(TwoGradients):
        @staticmethod
        def backward(ctx, g):
            input, target = ctx.saved_tensors
            return 2 * (input - target) * g, None, None

    class WrongSign(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input, target, reduction="sum"):
            ctx.save_for_backward(input, target)
            return -(target * F.log_softmax(input, 1)).sum()

        @staticmethod
        def backward(ctx, g):
            input, target = ctx.saved_tensors
            return (target - F.softmax(input, 1)) * g, None, None

    kw = dict(like="mse_loss", reductions=["sum"], cases=["default"])
    assert check(TwoGradients, **kw).mistake_codes == ["gradient-count"]
    assert check(NoTargetGradient, **kw).mistake_codes == ["missing-gradient"]
    assert check(WrongSign, like="cross_entropy", reductions=["sum"], cases=["probabilities"]).mistake_codes \
        == ["wrong-sign"]


def test_a_graph_cut_is_named_only_when_undoing_it_fixes_the_gradient():
    """jax.nn.log_softmax holds a stop_gradient, and a .detach() for logging is harmless: a wrong
    gradient next to them is not a graph cut unless it agrees once the cuts are the identity."""
    import jax
    import jax.numpy as jnp

    def _ce(x, y, reduction="mean"):
        losses = -jnp.take_along_axis(jax.nn.log_softmax(x, axis=1), y[:, None], 1)[:, 0]
        return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]

    def _bwd(reduction, residuals, g):
        x, y = residuals
        q = jax.nn.one_hot((y + 1) % x.shape[1], x.shape[1], dtype=x.dtype)  # the wrong class
        g = g / x.shape[0] if reduction == "mean" else g
        return (jax.nn.softmax(x, axis=1) - q) * (g[:, None] if reduction == "none" else g), None

    ce = jax.custom_vjp(_ce, nondiff_argnums=(2,))
    ce.defvjp(lambda x, y, r: (_ce(x, y, r), (x, y)), _bwd)
    result = check(ce, like="cross_entropy", cases=["default"], reductions=["mean"], dtypes=["float64"])
    assert result.mistake_codes == ["mismatch"]

    def mse_cubed(input, target, reduction="mean"):
        d = input - target
        mse_cubed.largest = d.detach().abs().max()  # harmless
        e = d ** 2 + 0.1 * d ** 3                   # the wrong loss
        return {"mean": e.mean(), "sum": e.sum(), "none": e}[reduction]

    assert check(mse_cubed, like="mse_loss", framework="torch", reductions=["sum"]).mistake_codes == ["mismatch"]


def test_a_case_the_callable_cannot_take_raises_with_a_hint():
    def ce_2d(input, target, reduction="mean"):
        losses = -F.log_softmax(input, dim=1)[torch.arange(input.shape[0]), target]
        return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]

    result = check(ce_2d, like="cross_entropy", dtypes=["float64"])
    assert result.mistake_codes == ["raised"]
    assert "--case default" in result.mistakes[0].hint
    assert check(ce_2d, like="cross_entropy", cases=["default"]).passed


# -- bad usage ------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["examples/nope.py:X", "--like", "mse_loss"], "no such file: examples/nope.py"),
    (["examples/torch_function.py:MSEE", "--like", "mse_loss"], "has no 'MSEE'; did you mean MSE?"),
    (["examples/torch_function.py:BATCH_SIZE", "--like", "mse_loss"], "is an int (6), not a callable"),
    (["examples/torch_function.py:MSE", "--like", "mse_los"], "unknown loss 'mse_los'; did you mean mse_loss"),
    (["examples/torch_function.py:MSE", "--like", "mse_loss", "--shape", "6,4", "--shape", "6,3"],
     "the shapes (6, 4), (6, 3) do not fit mse_loss: target must have the shape of input"),
    (["examples/torch_function.py:CrossEntropy", "--like", "cross_entropy", "--shape", "8,5", "--shape", "8,5"],
     "target must have shape (8,)"),
    (["examples/torch_function.py:MSE", "--like", "mse_loss", "--param", "wieght=1"],
     "mse_loss has no hyperparameter 'wieght'; did you mean weight?"),
    (["examples/torch_function.py:MSE", "--like", "mse_loss", "--case", "defualt"], "unknown case 'defualt'; did "
                                                                                     "you mean default?"),
    (["examples/custom_loss.py:reduce", "--like", "mse_loss"], "cannot tell whether reduce is written with torch "
                                                               "or JAX; pass --framework"),
    (["examples/torch_function.py:MSE"], "give --like LOSS"),
    (["examples/custom_loss.py:Charbonnier", "--shape", "6,4", "--shape", "6,4", "--case", "default"], "need like="),
    (["examples/custom_loss.py:Charbonnier", "--shape", "6,4"], "takes 2 input(s) without a default; got 1"),
    (["examples/custom_loss.py:Charbonnier", "--shape", "6,4", "--shape", "5,4"],
     "inputs of shapes (6, 4), (5, 4) do not fit"),
])
def test_bad_usage_is_a_plain_message(capsys, argv, message):
    rc, out, err = cli(capsys, *argv)
    assert rc == 2
    assert message in err, err
    assert "Traceback" not in err + out


def test_a_file_that_does_not_import(capsys, tmp_path):
    (tmp_path / "syntax.py").write_text("def loss(x, y):\n    return x +\n")
    (tmp_path / "missing.py").write_text("import torch\nimport no_such_module_for_lossparity\n")
    rc, _, err = cli(capsys, f"{tmp_path}/syntax.py:loss", "--like", "mse_loss")
    assert rc == 2 and "does not import: SyntaxError" in err and "line 2" in err
    rc, _, err = cli(capsys, f"{tmp_path}/missing.py:loss", "--like", "mse_loss")
    assert rc == 2 and "does not import: ModuleNotFoundError" in err and "missing.py:2" in err
    with pytest.raises(CheckUsageError, match="not a callable"):
        check(3.0, like="mse_loss")


def test_load_names_the_object():
    assert load("examples/torch_function.py:MSE").__name__ == "MSE"
    assert load("examples/torch_function.py:MSE.backward").__name__ == "backward"
