"""linear_cross_entropy's peak memory: the chunked path against the unchunked one, beside
torch's own ``F.linear_cross_entropy``.

The point of ``chunk_size`` is that the ``(N, V)`` logits never exist whole. This measures
it at a language-model head's size (by default 8192 tokens, hidden size 1024, 65,536
classes, float32, on CPU: the logits alone are 2 GiB) for one forward + backward
(``torch.autograd.grad`` of the mean loss with respect to ``input`` and ``linear_weight``).
The paths:

* ``ours.module`` and ``ours.function`` (``torch_impl.get("linear_cross_entropy", ...)``)
  with ``chunk_size=CHUNK`` and with ``chunk_size=None``;
* ``torch.builtin``: ``F.linear_cross_entropy`` with
  ``options=LinearCrossEntropyOptions(batch_chunk_size=CHUNK, chunking_method=None)``
  (its chunked path) and with ``options=None`` (its reference path: ``linear`` then
  ``cross_entropy``).

Each path runs in a fresh subprocess (``python -m reports.memory --worker PATH ...``) so
that the peaks do not mix: the worker draws the inputs (seeded, the same in every
worker), hands its allocator's free pages back (``malloc_trim``), resets the RSS
high-water mark (``echo 5 > /proc/self/clear_refs``) and reads ``VmRSS``, runs the forward
+ backward once, then reads ``VmHWM``. ``peak_bytes`` is ``VmHWM`` less the ``VmRSS``
before: what the call added to the process's resident memory at its peak, on top of the
inputs (``input`` 32 MiB, ``linear_weight`` 256 MiB at the default size) and the
libraries. It is process RSS, not a count of tensors. The worker saves the loss and both
gradients; the parent compares every path with ``ours.module.unchunked`` (or the first
unchunked path run) under float32's tolerance (torch.testing's defaults).

A watchdog thread in each worker ends it (exit code 3) when the machine's
``MemAvailable`` falls below ``FLOOR`` bytes, and a path whose estimated need exceeds the
memory available is not started: the experiment never pushes a shared machine out of
memory. The JAX variants are not run at this size; their XLA buffer assignment
(``memory_analysis()`` of the jitted forward + VJP, compiled for the shapes alone) gives
their peak beyond the arguments, chunked and unchunked (``--jax``).

The target: the chunked path's ``peak_bytes`` is at most a quarter of the unchunked
path's, for ``ours.module`` and ``ours.function``, with the same values and gradients.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .system import mem_available, proc_status

TOKENS, HIDDEN, VOCAB, CHUNK = 8192, 1024, 65536, 1024
TARGET_RATIO = 0.25
PATHS = ("ours.module.chunked", "ours.module.unchunked", "ours.function.chunked", "ours.function.unchunked",
         "torch.builtin.chunked", "torch.builtin.unchunked")
JAX_PATHS = ("ours.autodiff.chunked", "ours.autodiff.unchunked", "ours.custom_vjp.chunked",
             "ours.custom_vjp.unchunked")
# A worker stops itself when the machine has less than this available.
FLOOR = 1 << 30
# Leave this much available beyond a path's estimated need before starting it.
MARGIN = 2 << 30
COLUMNS = ["path", "implementation", "chunk_size", "tokens", "hidden", "vocab", "dtype", "device",
           "peak_bytes", "peak_mib", "ratio_to_unchunked", "target_met", "peak_rss_bytes", "baseline_rss_bytes",
           "seconds", "memory_source", "compared_with", "value_err_over_tol", "grad_err_over_tol", "agrees",
           "cpu_model", "threads", "note"]


def estimate(path: str, tokens: int, hidden: int, vocab: int, chunk: int) -> float:
    """Bytes a path is expected to add at its peak (a generous guess, to decide whether it may start)."""
    rows = tokens if path.endswith(".unchunked") else min(chunk, tokens)
    return 4 * (4 * rows * vocab + 2 * vocab * hidden + 2 * tokens * hidden)


# -- the worker (one path, in its own process) ---------------------------------------------

def _watchdog(floor: float) -> None:
    def watch():
        while True:
            if mem_available() < floor:
                print(json.dumps({"error": f"stopped: the machine's available memory fell below "
                                           f"{floor / 2**30:.1f} GiB"}), flush=True)
                os._exit(3)
            time.sleep(0.05)
    threading.Thread(target=watch, daemon=True).start()


def worker(path: str, tokens: int, hidden: int, vocab: int, chunk: int, out: Path, floor: float = FLOOR) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    _watchdog(floor)
    impl, how = path.rsplit(".", 1)
    chunk_size = chunk if how == "chunked" else None
    if impl == "torch.builtin":
        def loss(x, w, target, chunk_size):
            options = (None if chunk_size is None
                       else torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk_size, chunking_method=None))
            return F.linear_cross_entropy(x, w, target, options=options)
    else:
        import torch_impl
        fn = torch_impl.get("linear_cross_entropy", impl.split(".")[1])

        def loss(x, w, target, chunk_size):
            return fn(x, w, target, chunk_size=chunk_size)

    def inputs(tokens, vocab):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(tokens, hidden, generator=gen).requires_grad_(True)
        w = (torch.randn(vocab, hidden, generator=gen) / math.sqrt(hidden)).requires_grad_(True)
        return x, w, torch.randint(0, vocab, (tokens,), generator=gen)

    # A small warm-up through the same code (two chunks where chunked): lazy imports, thread
    # pools and the libraries' code pages are resident before the measured call.
    small = min(chunk, 64)
    x, w, target = inputs(2 * small, 1024)
    torch.autograd.grad(loss(x, w, target, small if chunk_size else None), [x, w])
    x, w, target = inputs(tokens, vocab)
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = proc_status()["VmRSS"]
    start = time.perf_counter()
    value = loss(x, w, target, chunk_size)
    d_x, d_w = torch.autograd.grad(value, [x, w])
    seconds = time.perf_counter() - start
    hwm = proc_status()["VmHWM"]
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "value.npy", value.detach().numpy())
    np.save(out / "d_input.npy", d_x.numpy())
    np.save(out / "d_weight.npy", d_w.numpy())
    return {"path": path, "peak_bytes": hwm - before, "peak_rss_bytes": hwm, "baseline_rss_bytes": before,
            "seconds": seconds, "threads": torch.get_num_threads()}


# -- the parent ------------------------------------------------------------------------------

def _compare(a_dir: Path, b_dir: Path, block: int = 4096) -> tuple[float, float]:
    """The largest |a - b| / (atol + rtol |b|) of the value, and of the two gradients (float32's
    tolerance), over blocks of rows so that no float64 copy of a whole gradient is made."""
    import numpy as np
    from .matrix import TOLERANCES, tolerance_ratio
    rtol, atol = TOLERANCES["float32"]
    value = tolerance_ratio(np.load(a_dir / "value.npy").astype(np.float64),
                            np.load(b_dir / "value.npy").astype(np.float64), rtol, atol)
    grad = 0.0
    for name in ("d_input.npy", "d_weight.npy"):
        a, b = np.load(a_dir / name, mmap_mode="r"), np.load(b_dir / name, mmap_mode="r")
        if a.shape != b.shape:
            return value, math.inf
        for start in range(0, len(a), block):
            grad = max(grad, tolerance_ratio(np.asarray(a[start:start + block], np.float64),
                                             np.asarray(b[start:start + block], np.float64), rtol, atol))
    return value, grad


def _machine() -> dict:
    from .timing import cpu_model
    return {"cpu_model": cpu_model()}


def run(paths=PATHS, tokens: int = TOKENS, hidden: int = HIDDEN, vocab: int = VOCAB, chunk: int = CHUNK,
        with_jax: bool = False, timeout: float = 3600, log=print) -> list[dict]:
    """Run each path in its own subprocess, one after another; compare the values and
    gradients; return one row per path (``COLUMNS``)."""
    root = Path(__file__).resolve().parent.parent
    rows = []
    base = {"tokens": tokens, "hidden": hidden, "vocab": vocab, "dtype": "float32", "device": "cpu", **_machine()}
    with tempfile.TemporaryDirectory(prefix="lossparity-memory-") as tmp:
        dirs = {}
        for path in paths:
            impl, how = path.rsplit(".", 1)
            row = {**base, "path": path, "implementation": impl, "chunk_size": chunk if how == "chunked" else None,
                   "memory_source": "rss", "note": ""}
            need, available = estimate(path, tokens, hidden, vocab, chunk), mem_available()
            if need + MARGIN > available:
                row["note"] = (f"not run: needs about {need / 2**30:.1f} GiB (+{MARGIN / 2**30:.0f} GiB margin), "
                               f"{available / 2**30:.1f} GiB available")
                log(f"  {path:<26} {row['note']}")
                rows.append(row)
                continue
            out = Path(tmp) / path
            cmd = [sys.executable, "-m", "reports.memory", "--worker", path, "--tokens", str(tokens),
                   "--hidden", str(hidden), "--vocab", str(vocab), "--chunk-size", str(chunk), "--dir", str(out)]
            start = time.perf_counter()
            try:
                proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
                result = json.loads(lines[-1]) if lines else {"error": (proc.stderr.strip().splitlines() or
                                                                        [f"exit code {proc.returncode}"])[-1]}
            except subprocess.TimeoutExpired:
                result = {"error": f"timed out after {timeout:.0f} s"}
            if "error" in result:
                row["note"] = f"failed: {result['error']}"
            else:
                row.update({k: result[k] for k in ("peak_bytes", "peak_rss_bytes", "baseline_rss_bytes", "seconds",
                                                   "threads")})
                row["peak_mib"] = result["peak_bytes"] / 2**20
                dirs[path] = out
            log(f"  {path:<26} " + (f"peak {row['peak_mib']:9.1f} MiB, {row['seconds']:.1f} s" if path in dirs
                                    else row["note"]) + f"  ({time.perf_counter() - start:.0f} s)")
            rows.append(row)
        anchor = next((p for p in ("ours.module.unchunked", "ours.function.unchunked", "torch.builtin.unchunked")
                       if p in dirs), next(iter(dirs), None))
        for row in rows:
            if row["path"] in dirs and anchor is not None:
                row["compared_with"] = anchor
                if row["path"] == anchor:
                    row["value_err_over_tol"], row["grad_err_over_tol"] = 0.0, 0.0
                else:
                    row["value_err_over_tol"], row["grad_err_over_tol"] = _compare(dirs[row["path"]], dirs[anchor])
                row["agrees"] = row["value_err_over_tol"] <= 1 and row["grad_err_over_tol"] <= 1
    if with_jax:
        rows += jax_rows(tokens, hidden, vocab, chunk, base)
    _ratios(rows)
    return [{c: row.get(c) for c in COLUMNS} for row in rows]


def _ratios(rows: list[dict]) -> None:
    """Each chunked path's peak over its implementation's unchunked peak, and the target."""
    unchunked = {r["implementation"]: r.get("peak_bytes") for r in rows if r["chunk_size"] is None}
    for r in rows:
        base = unchunked.get(r["implementation"])
        if r["chunk_size"] is not None and r.get("peak_bytes") is not None and base:
            r["ratio_to_unchunked"] = r["peak_bytes"] / base
            r["target_met"] = r["ratio_to_unchunked"] <= TARGET_RATIO


def jax_rows(tokens: int, hidden: int, vocab: int, chunk: int, base: dict) -> list[dict]:
    """The JAX variants' peak beyond their arguments, from XLA's buffer assignment for these
    shapes (compiled, not run)."""
    import jax
    import jax.numpy as jnp

    import jax_impl
    from .timing import xla_peak
    rows = []
    x = jax.ShapeDtypeStruct((tokens, hidden), jnp.float32)
    w = jax.ShapeDtypeStruct((vocab, hidden), jnp.float32)
    t = jax.ShapeDtypeStruct((tokens,), jnp.int32)
    for path in JAX_PATHS:
        impl, how = path.rsplit(".", 1)
        chunk_size = chunk if how == "chunked" else None
        fn = jax_impl.get("linear_cross_entropy", impl.split(".")[1])
        program = jax.jit(jax.value_and_grad(lambda x, w, t: fn(x, w, t, chunk_size=chunk_size), argnums=(0, 1)))
        row = {**base, "path": path, "implementation": impl, "chunk_size": chunk_size,
               "memory_source": "xla_memory_analysis", "note": "compiled for the shapes, not run"}
        try:
            start = time.perf_counter()
            row["peak_bytes"] = xla_peak(program.lower(x, w, t).compile())
            row["peak_mib"] = row["peak_bytes"] / 2**20
            row["note"] += f" (compiled in {time.perf_counter() - start:.1f} s)"
        except Exception as e:  # noqa: BLE001
            row["note"] = f"failed: {type(e).__name__}: {e}"[:200]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    from tabulate import tabulate

    def f(x, fmt):
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    return tabulate([[r["path"], r["chunk_size"] or "", f(r.get("peak_mib"), ".1f"), f(r.get("ratio_to_unchunked"), ".3f"),
                      "" if r.get("target_met") is None else ("yes" if r["target_met"] else "NO"),
                      f(r.get("seconds"), ".1f"), f(r.get("value_err_over_tol"), ".3g"),
                      f(r.get("grad_err_over_tol"), ".3g"), r.get("memory_source") or "", r.get("note") or ""]
                     for r in rows],
                    headers=["path", "chunk", "peak MiB", "chunked / unchunked", "<= 1/4", "seconds",
                             "value err/tol", "grad err/tol", "source", "note"], disable_numparse=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reports.memory")
    p.add_argument("--worker", required=True, choices=PATHS)
    p.add_argument("--tokens", type=int, default=TOKENS)
    p.add_argument("--hidden", type=int, default=HIDDEN)
    p.add_argument("--vocab", type=int, default=VOCAB)
    p.add_argument("--chunk-size", type=int, default=CHUNK)
    p.add_argument("--dir", required=True)
    args = p.parse_args(argv)
    result = worker(args.worker, args.tokens, args.hidden, args.vocab, args.chunk_size, Path(args.dir))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
