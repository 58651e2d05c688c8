"""Training-level parity: a small LeNet-style CNN trained on scikit-learn's 8x8 digits with the
built-in cross entropy and with ours, from the same initial weights on the same batches.

The cross-entropy article checked its loss by training LeNet-5 with it; this does the same for
every implementation of ``cross_entropy``:

* **torch**: ``torch.nn.functional.cross_entropy`` (the built-in), then our ``module`` and
  ``function`` variants (``torch_impl.get``); ``torch.optim.SGD`` with momentum.
* **JAX**: the same network in ``jax.numpy`` (``lax.conv_general_dilated``) trained with
  ``optax.sgd`` (momentum), with ``optax.softmax_cross_entropy_with_integer_labels`` (the
  built-in), then our ``autodiff`` and ``custom_vjp`` variants (``jax_impl.get``).

Every run starts from one set of initial weights drawn in NumPy (torch's default
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``) and sees the same mini-batches in the same order
(a NumPy permutation per epoch), so torch and JAX train the same network too.

The data: ``sklearn.datasets.load_digits`` (1,797 images of 8x8 pixels, shipped inside
scikit-learn: nothing is downloaded), pixels scaled to [0, 1], split once into 1,437 training
and 360 test images. The network (LeNet-5 scaled to 8x8): conv 5x5 (1 -> 6, padding 2), tanh,
average pool 2 -> conv 3x3 (6 -> 16, padding 1), tanh, average pool 2 -> linear 64 -> 32, tanh ->
linear 32 -> 10. 3,446 parameters.

The tolerance, stated before running
-----------------------------------
Parity is checked in **float64**. The runs compute the same mathematics in a different order
of floating-point operations, so they differ by rounding alone. With unit roundoff
u = 2^-53 ~ 1.1e-16, one step's gradient differs by at most about k*u relative, k ~ 100 (a
log-sum-exp over 10 classes, a mean over a batch of 32, the backward through two convolutions),
so |delta g| <~ 1e-14 |g|. SGD (learning rate 0.1, momentum 0.9) adds lr/(1 - momentum) = 1
times that to the weights at each step; over T = 440 steps (10 epochs of 44 batches of 32) that
sums to at most 440 * 1e-14 ~ 4e-12 times the gradient's scale (|g| <~ 1 here, |w| ~ 0.1 to 1).
The training map can amplify a difference while the loss is non-convex; allowing a factor of 100
for that gives ~4e-10. The tolerance is therefore

    TOLERANCE = 1e-9, relative: |loss_ours(t) - loss_builtin(t)| <= 1e-9 * |loss_builtin(t)| at
    every step t, and max |w_ours - w_builtin| <= 1e-9 * max |w_builtin| after the last step
    (max over every parameter of the network).

It holds for our variants against the framework's built-in, and for JAX's built-in run against
torch's (the same network in another framework: there the convolutions' summation order
differs too). A real mistake in a loss shows up far above it: a loss scaled by 1 + 1e-6 moves the
curve by 1e-6, a label smoothing of 1e-6 (next to nothing while the logits are near uniform) by
2e-8; ``tests/test_training.py`` checks that the comparison catches both.

In float32 (u = 2^-24 ~ 6e-8) the same bound is ~5e8 times larger, about 0.1: no tolerance worth
stating, which is why parity is a float64 statement. ``run(..., dtypes=("float64",
"float32"))`` measures float32 too, for information.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TOLERANCE = 1e-9          # relative, float64: see the module's docstring
PARITY_DTYPE = "float64"
EPOCHS = 10
BATCH_SIZE = 32
LEARNING_RATE = 0.1
MOMENTUM = 0.9
N_TEST = 360

TORCH_VARIANTS = ("builtin", "module", "function")
JAX_VARIANTS = ("builtin", "autodiff", "custom_vjp")
# The parameters, in order, with torch's shapes (conv: out, in, kh, kw; linear: out, in).
SHAPES = (("conv1.weight", (6, 1, 5, 5)), ("conv1.bias", (6,)),
          ("conv2.weight", (16, 6, 3, 3)), ("conv2.bias", (16,)),
          ("fc1.weight", (32, 64)), ("fc1.bias", (32,)),
          ("fc2.weight", (10, 32)), ("fc2.bias", (10,)))
FAN_IN = {"conv1": 25, "conv2": 54, "fc1": 64, "fc2": 32}

# training.csv: one row per run and step. The differences are from the run named in
# ``compared_with`` (the framework's built-in; torch's built-in for JAX's built-in); the weights'
# difference and the test accuracy are filled at the last step of each epoch.
CURVE_COLUMNS = ["framework", "variant", "dtype", "epoch", "step", "loss", "compared_with", "loss_abs_diff",
                 "loss_rel_diff", "weights_max_abs_diff", "weights_rel_diff", "test_accuracy"]
SUMMARY_COLUMNS = ["comparison", "dtype", "steps", "curve_max_abs_diff", "curve_max_rel_diff",
                   "weights_max_abs_diff", "weights_rel_diff", "tolerance", "passed"]


# -- data, weights, batches ------------------------------------------------------------------

def digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): images (N, 1, 8, 8) in [0, 1] (float64), labels int64."""
    from sklearn.datasets import load_digits
    data = load_digits()
    x = (data.images / 16.0).astype(np.float64)[:, None, :, :]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    test, train = order[:N_TEST], order[N_TEST:]
    return x[train], y[train], x[test], y[test]


def initial_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """torch's default initialisation, drawn in NumPy: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    rng = np.random.default_rng(seed + 1)
    out = {}
    for name, shape in SHAPES:
        bound = 1.0 / math.sqrt(FAN_IN[name.split(".")[0]])
        out[name] = rng.uniform(-bound, bound, size=shape)
    return out


def batches(n_train: int, epochs: int, batch_size: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Per epoch, the index arrays of its mini-batches (a fresh permutation; the last, partial
    batch is dropped)."""
    out = []
    for epoch in range(epochs):
        perm = np.random.default_rng([seed, epoch]).permutation(n_train)
        out.append([perm[i:i + batch_size] for i in range(0, n_train - batch_size + 1, batch_size)])
    return out


# -- one training run -----------------------------------------------------------------------

@dataclass
class Run:
    framework: str
    variant: str
    dtype: str
    losses: list = field(default_factory=list)        # per step
    epoch_of_step: list = field(default_factory=list)
    weights: list = field(default_factory=list)       # per epoch: {name: array} after its last step
    accuracy: list = field(default_factory=list)      # per epoch: test accuracy
    seconds: float = 0.0


def _torch_loss(variant: str):
    import torch.nn.functional as F
    if variant == "builtin":
        return F.cross_entropy
    import torch_impl
    return torch_impl.get("cross_entropy", variant)


def train_torch(variant: str, data, weights: dict, schedule, dtype: str = PARITY_DTYPE, lr: float = LEARNING_RATE,
                momentum: float = MOMENTUM, loss_fn=None) -> Run:
    """Train with torch; ``loss_fn(logits, target)`` defaults to the variant's cross entropy."""
    import torch
    import torch.nn.functional as F
    loss_fn = loss_fn or _torch_loss(variant)
    tdtype = getattr(torch, dtype)
    x_train, y_train, x_test, y_test = data
    params = {k: torch.tensor(v, dtype=tdtype, requires_grad=True) for k, v in weights.items()}
    opt = torch.optim.SGD(list(params.values()), lr=lr, momentum=momentum)

    def forward(x):
        p = params
        h = F.avg_pool2d(torch.tanh(F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=2)), 2)
        h = F.avg_pool2d(torch.tanh(F.conv2d(h, p["conv2.weight"], p["conv2.bias"], padding=1)), 2)
        h = torch.tanh(F.linear(h.flatten(1), p["fc1.weight"], p["fc1.bias"]))
        return F.linear(h, p["fc2.weight"], p["fc2.bias"])

    run = Run("torch", variant, dtype)
    start = time.perf_counter()
    xt, yt = torch.tensor(x_train, dtype=tdtype), torch.tensor(y_train)
    xs, ys = torch.tensor(x_test, dtype=tdtype), torch.tensor(y_test)
    # One thread: the network is tiny, and on a busy machine torch's worker threads spend
    # ~50x the work waiting for each other. It also fixes the summation order of every run.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for epoch, epoch_batches in enumerate(schedule):
            for idx in epoch_batches:
                idx = torch.as_tensor(idx)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(forward(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                run.losses.append(loss.item())
                run.epoch_of_step.append(epoch)
            with torch.no_grad():
                run.weights.append({k: v.detach().numpy().astype(np.float64) for k, v in params.items()})
                run.accuracy.append(float((forward(xs).argmax(1) == ys).double().mean()))
    finally:
        torch.set_num_threads(threads)
    run.seconds = time.perf_counter() - start
    return run


def _jax_loss(variant: str):
    if variant == "builtin":
        import optax

        def builtin(logits, target):
            return optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()
        return builtin
    import jax_impl
    return jax_impl.get("cross_entropy", variant)


def jax_forward(params: dict, x):
    """The network in jax.numpy: NCHW activations, OIHW kernels, as torch lays them out."""
    import jax.numpy as jnp
    from jax import lax

    def conv(h, w, b, pad):
        out = lax.conv_general_dilated(h, w, window_strides=(1, 1), padding=[(pad, pad), (pad, pad)],
                                       dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return out + b[None, :, None, None]

    def pool(h):  # average over 2x2 windows, stride 2 (F.avg_pool2d(h, 2))
        return lax.reduce_window(h, 0.0, lax.add, (1, 1, 2, 2), (1, 1, 2, 2), "VALID") / 4.0

    p = params
    h = pool(jnp.tanh(conv(x, p["conv1.weight"], p["conv1.bias"], 2)))
    h = pool(jnp.tanh(conv(h, p["conv2.weight"], p["conv2.bias"], 1)))
    h = jnp.tanh(h.reshape(h.shape[0], -1) @ p["fc1.weight"].T + p["fc1.bias"])
    return h @ p["fc2.weight"].T + p["fc2.bias"]


def train_jax(variant: str, data, weights: dict, schedule, dtype: str = PARITY_DTYPE, lr: float = LEARNING_RATE,
              momentum: float = MOMENTUM, loss_fn=None) -> Run:
    """Train with JAX and optax; ``loss_fn(logits, target)`` defaults to the variant's cross entropy."""
    import jax
    import jax.numpy as jnp
    import optax
    if dtype == "float64" and not jax.config.read("jax_enable_x64"):
        jax.config.update("jax_enable_x64", True)  # float64 parity needs it (as reports.matrix does)
    loss_fn = loss_fn or _jax_loss(variant)
    x_train, y_train, x_test, y_test = data
    params = {k: jnp.asarray(v, dtype=dtype) for k, v in weights.items()}
    opt = optax.sgd(lr, momentum=momentum)
    state = opt.init(params)

    def objective(p, x, y):
        return loss_fn(jax_forward(p, x), y)

    @jax.jit
    def step(p, s, x, y):
        loss, grads = jax.value_and_grad(objective)(p, x, y)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    predict = jax.jit(lambda p, x: jnp.argmax(jax_forward(p, x), axis=1))
    run = Run("jax", variant, dtype)
    start = time.perf_counter()
    xt, yt = jnp.asarray(x_train, dtype=dtype), jnp.asarray(y_train)
    for epoch, epoch_batches in enumerate(schedule):
        for idx in epoch_batches:
            params, state, loss = step(params, state, xt[idx], yt[idx])
            run.losses.append(float(loss))
            run.epoch_of_step.append(epoch)
        run.weights.append({k: np.asarray(v, dtype=np.float64) for k, v in params.items()})
        run.accuracy.append(float((np.asarray(predict(params, jnp.asarray(x_test, dtype=dtype))) == y_test).mean()))
    run.seconds = time.perf_counter() - start
    return run


# -- comparing runs ---------------------------------------------------------------------------

def weights_diff(a: dict, b: dict) -> tuple[float, float]:
    """max |a - b| over every parameter, and that over max |b|."""
    abs_diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in b)
    scale = max(float(np.max(np.abs(b[k]))) for k in b)
    return abs_diff, abs_diff / scale


def curve_diff(a: Run, b: Run) -> tuple[np.ndarray, np.ndarray]:
    la, lb = np.asarray(a.losses), np.asarray(b.losses)
    d = np.abs(la - lb)
    return d, d / np.abs(lb)


def compare(a: Run, b: Run, tolerance: float | None) -> dict:
    d, rel = curve_diff(a, b)
    w_abs, w_rel = weights_diff(a.weights[-1], b.weights[-1])
    ok = "n/a" if tolerance is None else bool(rel.max() <= tolerance and w_rel <= tolerance)
    return {"comparison": f"{a.framework}.{a.variant} vs {b.framework}.{b.variant}", "dtype": a.dtype,
            "steps": len(a.losses), "curve_max_abs_diff": float(d.max()), "curve_max_rel_diff": float(rel.max()),
            "weights_max_abs_diff": w_abs, "weights_rel_diff": w_rel,
            "tolerance": math.nan if tolerance is None else tolerance, "passed": ok}


# -- the whole experiment ---------------------------------------------------------------------

@dataclass
class TrainingResult:
    runs: list               # every Run
    curves: pd.DataFrame     # training.csv: one row per run and step
    summary: pd.DataFrame    # one row per comparison
    settings: dict

    @property
    def passed(self) -> bool:
        checked = self.summary[self.summary["passed"] != "n/a"]
        return bool(len(checked)) and bool(checked["passed"].astype(bool).all())


def run(epochs: int = EPOCHS, n_train: int | None = None, batch_size: int = BATCH_SIZE, lr: float = LEARNING_RATE,
        momentum: float = MOMENTUM, seed: int = 0, dtypes=(PARITY_DTYPE,), frameworks=("torch", "jax"),
        log=lambda msg: None) -> TrainingResult:
    """Train every variant of each framework (the built-in first) and compare the runs.

    ``n_train`` takes the first images of the training split (None: all 1,437). The tolerance
    is asserted for ``PARITY_DTYPE`` only; other dtypes are measured for information."""
    x_train, y_train, x_test, y_test = digits(seed)
    if n_train is not None:
        x_train, y_train = x_train[:n_train], y_train[:n_train]
    data = (x_train, y_train, x_test, y_test)
    weights = initial_weights(seed)
    schedule = batches(len(y_train), epochs, batch_size, seed)
    trainers = {"torch": (train_torch, TORCH_VARIANTS), "jax": (train_jax, JAX_VARIANTS)}
    runs, rows, summary = [], [], []
    for dtype in dtypes:
        tolerance = TOLERANCE if dtype == PARITY_DTYPE else None
        base = {}
        for framework in frameworks:
            trainer, variants = trainers[framework]
            for variant in variants:
                r = trainer(variant, data, weights, schedule, dtype, lr, momentum)
                log(f"  {framework}.{variant} {dtype}: {len(r.losses)} steps, final loss "
                    f"{r.losses[-1]:.4f}, test accuracy {r.accuracy[-1]:.3f} ({r.seconds:.1f} s)")
                runs.append(r)
                if variant == "builtin":
                    base[framework] = r
                    against = base.get("torch") if framework == "jax" else None
                else:
                    against = base[framework]
                if against is not None:
                    summary.append(compare(r, against, tolerance))
                rows += _curve_rows(r, against)
    settings = {"epochs": epochs, "n_train": len(y_train), "n_test": len(y_test), "batch_size": batch_size,
                "lr": lr, "momentum": momentum, "seed": seed, "dtypes": list(dtypes), "tolerance": TOLERANCE,
                "parity_dtype": PARITY_DTYPE, "steps_per_epoch": len(schedule[0]) if schedule else 0}
    return TrainingResult(runs, pd.DataFrame(rows, columns=CURVE_COLUMNS),
                          pd.DataFrame(summary, columns=SUMMARY_COLUMNS), settings)


def _curve_rows(r: Run, base: Run | None) -> list[dict]:
    nan = np.full(len(r.losses), math.nan)
    d, rel = curve_diff(r, base) if base is not None else (nan, nan)
    last_step = {e: i for i, e in enumerate(r.epoch_of_step)}
    rows = []
    for i, (loss, epoch) in enumerate(zip(r.losses, r.epoch_of_step)):
        row = {"framework": r.framework, "variant": r.variant, "dtype": r.dtype, "epoch": epoch, "step": i,
               "loss": loss, "compared_with": f"{base.framework}.{base.variant}" if base is not None else "",
               "loss_abs_diff": d[i], "loss_rel_diff": rel[i], "weights_max_abs_diff": math.nan,
               "weights_rel_diff": math.nan, "test_accuracy": math.nan}
        if last_step[epoch] == i:
            if base is not None:
                row["weights_max_abs_diff"], row["weights_rel_diff"] = weights_diff(r.weights[epoch],
                                                                                     base.weights[epoch])
            row["test_accuracy"] = r.accuracy[epoch]
        rows.append(row)
    return rows
