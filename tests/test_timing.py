"""The timing harness itself: timings.csv's columns, the machine, memory and bandwidth
columns, the size sweep (scaling.csv), ``lossparity bench``, and (slow) the
linear_cross_entropy memory target.

Everything here but the last test runs at tiny sizes with short measurements: it checks
what the harness records, not how fast anything is."""

from __future__ import annotations

import math
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import reference
import torch_impl
from reports import bench, cli, floor, memory, system, timing

TINY = replace(timing.QUICK, min_run_time=0.001, block_time=1e-4)


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(x) and x > 0


@pytest.fixture(scope="module")
def mse_rows():
    rows, skipped = timing.time_loss("mse_loss", variants=["function", "custom_vjp"], budget=TINY)
    assert skipped == []
    return rows


def test_timings_rows_have_every_column_and_the_machine(mse_rows):
    assert sorted((r["framework"], r["variant"]) for r in mse_rows) == [("jax", "custom_vjp"), ("torch", "function")]
    for r in mse_rows:
        assert list(r) == timing.COLUMNS
        assert isinstance(r["cpu_model"], str) and r["cpu_model"]
        assert isinstance(r["threads"], int) and r["threads"] >= 1
        assert isinstance(r["gpu"], str) and r["gpu"]
        assert r["builtin"] and r["note"] == "", r["note"]
        for column in ("fwd_ms", "fwd_bwd_ms", "builtin_fwd_bwd_ms", "ratio_to_builtin", "compiled_fwd_bwd_ms"
                       if r["framework"] == "jax" else "fwd_ms"):
            assert _positive(r[column]), (column, r[column])
        assert r["fwd_bwd_iqr_ms"] >= 0 or math.isnan(r["fwd_bwd_iqr_ms"])
    jax_row = next(r for r in mse_rows if r["framework"] == "jax")
    assert _positive(jax_row["compile_ms"]) and jax_row["compiled_fwd_bwd_ms"] == jax_row["fwd_bwd_ms"]
    torch_row = next(r for r in mse_rows if r["framework"] == "torch")
    assert _positive(torch_row["floor_fwd_bwd_ms"])
    assert torch_row["floor_ratio"] == torch_row["floor_fwd_bwd_ms"] / torch_row["builtin_fwd_bwd_ms"]
    assert math.isnan(jax_row["floor_fwd_bwd_ms"]) and math.isnan(jax_row["floor_ratio"])  # jit has no such cost


@pytest.mark.parametrize("name", sorted(floor.FLOORS))
@pytest.mark.parametrize("reduction", sorted(floor.REDUCTIONS))
def test_each_floor_computes_its_builtin(name, reduction):
    """A floor is a yardstick only if it does the built-in's work: the same value and the same
    gradients (the target's too, where it has one), float64, the default case."""
    import torch
    spec = reference.get(name)
    case = spec.cases[0]
    d = timing.draw(spec, case, timing.sizes_for(spec, case, TINY))
    arrays, kw = timing.matrix.torch_arrays(d, "cpu")
    arrays = [x.double() if x.is_floating_point() else x for x in arrays]
    kw = {**kw, "reduction": reduction}
    got = []
    for fn in (floor.get(name), torch_impl.builtin(name)):
        diff = [arrays[spec.inputs.index(n)].detach().clone().requires_grad_(True) for n in spec.differentiable]
        call, _ = timing.matrix.on_differentiable(fn, spec, arrays, kw)
        out = call(*diff)
        cotangent = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
        got.append((out, torch.autograd.grad(out, diff, cotangent)))
    torch.testing.assert_close(got[0], got[1], rtol=1e-12, atol=1e-12)


def test_a_floor_refuses_what_its_kernels_do_not_compute():
    import torch
    x, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    for call, what in [(lambda: floor.get("nll_loss")(x, labels, weight=torch.ones(3)), "weight="),
                       (lambda: floor.get("cross_entropy")(x, labels, label_smoothing=0.1), "label_smoothing=0.1"),
                       (lambda: floor.get("cross_entropy")(x, torch.rand(4, 3)), "class indices"),
                       (lambda: floor.get("cross_entropy")(x[None], labels[None]), "dimensions"),
                       (lambda: floor.get("soft_margin_loss")(x, torch.rand(4, 3, requires_grad=True)), "target"),
                       (lambda: floor.get("mse_loss")(x, x, reduction="batchmean"), "reduction=")]:
        with pytest.raises(NotImplementedError, match=what):
            call()
    assert floor.get("huber_loss")(x, x + 2, delta=0.5) == torch.nn.functional.huber_loss(x, x + 2, delta=0.5)
    assert floor.get("l1_loss") is None  # its built-in is no single pair of kernels


def _mse_call_and_draw():
    spec = reference.get("mse_loss")
    case = spec.cases[0]
    return spec, timing.draw(spec, case, timing.sizes_for(spec, case, TINY))


def test_a_compiled_module_that_disagrees_with_eager_is_not_timed(monkeypatch):
    """torch.compile's first call is held to the eager module's value and gradients: one that
    computes another loss (here 1% more) gets a note saying by how much and no times."""
    import torch
    spec, d = _mse_call_and_draw()
    monkeypatch.setattr(torch, "compile", lambda module: (lambda *inputs: module(*inputs) * 1.01))
    compile_ms, median, note = timing.time_torch_compiled(torch_impl.get("mse_loss", "module"), spec, d, "cpu", TINY)
    assert math.isnan(compile_ms) and math.isnan(median)
    assert note.startswith("torch.compile disagrees with the eager module: value abs err"), note


def test_a_compiled_module_that_agrees_is_timed(monkeypatch):
    import torch
    spec, d = _mse_call_and_draw()
    monkeypatch.setattr(torch, "compile", lambda module: module)  # inductor itself is timed by the report
    compile_ms, median, note = timing.time_torch_compiled(torch_impl.get("mse_loss", "module"), spec, d, "cpu", TINY)
    assert compile_ms >= 0 and _positive(median) and note == "torch.compile: 0 graphs, 0 graph breaks (it ran eagerly)"


def test_bandwidth_columns_are_positive_and_consistent(mse_rows):
    for r in mse_rows:
        # input and target read, the gradient of each differentiable one written (float32), a scalar written
        assert r["bytes_moved"] == 4 * r["size"] * (2 + len(reference.get("mse_loss").differentiable)) + 4
        for column in ("gbps", "copy_ms", "copy_gbps"):
            assert _positive(r[column]), (column, r[column])
        assert r["gbps"] == pytest.approx(r["bytes_moved"] / r["fwd_bwd_ms"] / 1e6)
        assert r["copy_gbps"] == pytest.approx(r["bytes_moved"] / r["copy_ms"] / 1e6)


def test_memory_columns(mse_rows):
    torch_row = next(r for r in mse_rows if r["framework"] == "torch")
    jax_row = next(r for r in mse_rows if r["framework"] == "jax")
    # XLA's buffer assignment: at least the gradient it returns (float32, the input's size)
    assert jax_row["memory_source"] == "xla_memory_analysis" and jax_row["peak_bytes"] >= 4 * jax_row["size"]
    assert jax_row["builtin_peak_bytes"] >= 4 * jax_row["size"]
    if timing.rss_available():
        assert torch_row["memory_source"] == "rss" and torch_row["peak_bytes"] >= 0
        assert torch_row["peak_rss_bytes"] > 10 * 2**20  # the whole process: libraries included


@pytest.mark.skipif(not timing.rss_available(), reason="no resettable RSS high-water mark here")
def test_rss_peak_sees_an_allocation():
    n = 16 * 2**20
    added, peak = timing.rss_peak(lambda: np.ones(n, np.uint8).sum())
    assert added >= 0.9 * n and peak >= added


def test_xla_peak_counts_outputs_and_temporaries():
    compiled = jax.jit(lambda x: (jnp.sin(x) * 2).sum() + x * 3).lower(jnp.ones(1000, jnp.float32)).compile()
    assert timing.xla_peak(compiled) >= 4000


def test_sizes_at_sets_the_elements_and_the_classes():
    ce, mse = reference.get("cross_entropy"), reference.get("mse_loss")
    assert timing.sizes_at(mse, mse.cases[0], 1000) == {"shape": (250, 4)}
    assert timing.sizes_at(ce, ce.cases[0], 640, classes=10) == {"shape": (64, 10)}
    assert bench.points("cross_entropy", sizes=(1000,), classes=(10, 20), tokens=8) == [
        bench.Point("elements", 1000, bench.ELEMENT_SWEEP_CLASSES), bench.Point("classes", 80, 10),
        bench.Point("classes", 160, 20)]
    assert bench.points("mse_loss", sizes=(1000,), classes=(10,)) == [bench.Point("elements", 1000, None)]


def test_a_tiny_sweep():
    budget = replace(bench.QUICK_SWEEP, min_run_time=0.001, block_time=1e-4)
    rows, skipped = bench.sweep_loss("mse_loss", bench.points("mse_loss", sizes=(64, 512)), budget,
                                     variants=["function", "custom_vjp"])
    ce_points = bench.points("cross_entropy", sizes=(64,), classes=(3, 7), tokens=4)
    ce_rows, ce_skipped = bench.sweep_loss("cross_entropy", ce_points, budget, variants=["function"])
    rows, skipped = rows + ce_rows, skipped + ce_skipped
    assert skipped == []
    df = pd.DataFrame(rows)
    assert list(df.columns) == bench.SCALING_COLUMNS
    mse = df[df["loss"] == "mse_loss"]
    assert sorted(mse["elements"].unique()) == [64, 512]
    assert set(zip(mse["framework"], mse["variant"])) == {("torch", "function"), ("torch", "builtin"),
                                                          ("torch", "floor"), ("jax", "custom_vjp"), ("jax", "builtin")}
    assert (mse["fwd_bwd_ms"] > 0).all() and (mse["gbps"] > 0).all() and (mse["copy_gbps"] > 0).all()
    assert (mse["builtin_fwd_bwd_ms"] > 0).all()
    assert (mse[mse["variant"] == "builtin"]["ratio_to_builtin"] == 1).all()
    classes = df[(df["loss"] == "cross_entropy") & (df["sweep"] == "classes")]
    assert sorted(classes["classes"].unique()) == [3, 7]
    assert set(classes["shapes"]) == {"4x3 / 4", "4x7 / 4"}
    assert (df[(df["loss"] == "cross_entropy") & (df["sweep"] == "elements")]["classes"]
            == bench.ELEMENT_SWEEP_CLASSES).all()
    assert set(df["cpu_model"]) == {timing.cpu_model()}


def test_the_report_sweep_times_the_other_losses_at_one_size():
    df, skipped = bench.run_sweep(None, ["mse_loss"], sizes=(64, 128), classes=(), quick=True, variants=["function"],
                                  devices=["cpu"], others=["l1_loss"], other_sizes=(96,), log=None)
    assert skipped == []
    points = df.groupby("loss")["point_elements"].unique().map(sorted).to_dict()
    assert points == {"mse_loss": [64, 128], "l1_loss": [96]}
    from reports import report
    assert set(report._curves(df)["loss"]) == {"mse_loss"}  # a single point draws no curve
    targets = bench.speed_targets(None, df)
    assert targets[targets["framework"] == "torch"]["point"].tolist() == ["64 elements", "96 elements",
                                                                          "128 elements"]


def test_bench_command_writes_scaling_csv(tmp_path, capsys):
    assert cli.main(["bench", "--losses", "l1_loss", "--sizes", "100", "--quick", "--no-timings",
                     "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "scaling.csv")
    assert list(df.columns) == bench.SCALING_COLUMNS and set(df["elements"]) == {100}
    out = capsys.readouterr().out
    assert "l1_loss" in out and "copy GB/s" in out and "scaling.csv" in out
    assert "speed targets" in out and "100 elements" in out


class _Stop(Exception):
    pass


@pytest.mark.parametrize("phase", ["timings", "sweep"])
def test_a_bench_stopped_part_way_keeps_the_losses_it_finished(tmp_path, monkeypatch, phase):
    """``.ci/device`` stops a step at its time limit: the CSV holds every loss timed before it."""
    monkeypatch.setattr(timing, "QUICK", TINY)
    monkeypatch.setattr(bench, "QUICK_SWEEP", replace(bench.QUICK_SWEEP, min_run_time=0.001, block_time=1e-4))

    def log(line):
        if "l1_loss" in line:  # the second loss is measured, and may not be written yet
            raise _Stop

    with pytest.raises(_Stop):
        bench.bench(tmp_path, losses=["mse_loss", "l1_loss"], sizes=(64,), classes=(), quick=True, devices=["cpu"],
                    with_timings=phase == "timings", with_sweep=phase == "sweep", log=log)
    df = pd.read_csv(tmp_path / ("timings.csv" if phase == "timings" else "scaling.csv"))
    assert "mse_loss" in set(df["loss"])


def _ratio_rows(framework, variants, ratios, **point):
    return [{"loss": loss, "framework": framework, "variant": v, "device": "cpu", "ratio_to_builtin": r + 0.1 * k,
             **point} for loss, r in ratios.items() for k, v in enumerate(variants)]


def test_speed_targets_take_each_loss_best_variant():
    timings = pd.DataFrame(_ratio_rows("torch", ["module", "function"], {"a": 1.0, "b": 1.04, "c": 1.3, "d": 1.02})
                           + _ratio_rows("jax", ["autodiff", "custom_vjp"], {"a": 0.9, "b": 1.25})
                           + [{"loss": "e", "framework": "torch", "variant": "module", "device": "cpu",
                               "ratio_to_builtin": math.nan}])  # no built-in: not counted
    timings["floor_ratio"] = timings["loss"].map({"c": 1.28, "d": 1.3})  # d is not above the bound itself
    sweep = [("elements", 1000, 998, math.nan), ("elements", 10 ** 6, 10 ** 6 + 2, math.nan),
             ("classes", 256 * 10, 256 * 10, 10)]
    scaling = pd.DataFrame([row for sw, asked, drawn, classes in sweep
                            for row in _ratio_rows("torch", ["function", "builtin"],
                                                   {"a": 2.0 if asked == 1000 else 1.0}, sweep=sw,
                                                   point_elements=asked, elements=drawn, classes=classes)]
                           + _ratio_rows("torch", ["floor"], {"a": 1.2}, sweep="elements", point_elements=1000,
                                         elements=998, classes=math.nan))
    got = bench.speed_targets(timings, scaling)
    assert list(got.columns) == bench.TARGET_COLUMNS
    assert got[["framework", "measured", "point"]].values.tolist() == [
        ["torch", "timings", "default sizes"], ["torch", "sweep", "1e3 elements"], ["torch", "sweep", "1e6 elements"],
        ["torch", "sweep", "256 rows x 10 classes"], ["jax", "timings", "default sizes"]]
    torch_row, jax_row = got.iloc[0], got.iloc[4]
    assert (torch_row.losses, torch_row.median_ratio, torch_row.max_ratio) == (4, 1.03, 1.3)
    assert (torch_row.worst_loss, torch_row.above_max, torch_row.above_max_floor, torch_row.met) == ("c", 1, 1, False)
    assert (got.iloc[1].max_ratio, got.iloc[1].above_max, got.iloc[1].above_max_floor) == (2.0, 1, 0)  # floor 1.2x
    assert (jax_row.median_ratio, jax_row.above_max, jax_row.met) == (1.075, 0, False)  # the median misses
    assert math.isnan(jax_row.above_max_floor) and "floor" not in bench.targets_line(jax_row)  # no floor timed
    assert got.iloc[1].met == False and got.iloc[2].met == True  # noqa: E712 (numpy bools)
    assert set(got["losses"].iloc[1:4]) == {1}  # the sweep's built-in and floor rows are not variants
    assert "not met" in bench.targets_line(torch_row) and "1 above 1.25x" in bench.targets_line(torch_row)
    assert bench.speed_targets(None, None).empty


def test_interleaved_blocks_each_follow_an_untimed_block_of_their_own_call():
    log = []  # (label, number of calls) of every block, timed or not, in order

    def once(label):
        return {"ours": 1e-3, "builtin": 2e-3}[label]

    def block(label, number):
        log.append((label, number))
        return number * once(label) * (len(log) % 3 + 1)  # each block slower than the last warm-up

    budget = replace(TINY, block_time=4e-3, min_run_time=0.0, warm_fraction=0.5)
    got = timing._interleaved_medians_ms({"ours": "ours", "builtin": "builtin"}, once, block, budget)
    assert log[:4] == [("ours", 2), ("ours", 4), ("builtin", 1), ("builtin", 2)]
    assert len(log) == 4 * 5  # 5 timed blocks each, each after its warm-up
    timed = log[1::2]
    assert all(warm[0] == timed_block[0] and warm[1] == round(timed_block[1] / 2)
               for warm, timed_block in zip(log[::2], timed))
    # medians come from the timed blocks only (per call, in milliseconds)
    per_call = {"ours": [], "builtin": []}
    for i, (label, number) in enumerate(log):
        if i % 2:
            per_call[label].append(once(label) * ((i + 1) % 3 + 1))
    assert got["ours"][0] == pytest.approx(np.median(per_call["ours"]) * 1e3)
    assert got["builtin"][0] == pytest.approx(np.median(per_call["builtin"]) * 1e3)
    log.clear()
    timing._interleaved_medians_ms({"ours": "ours"}, once, block, replace(budget, warm_fraction=0.0))
    assert log == [("ours", 4)] * 5


def test_noisy_blocks_get_more_rounds_and_steady_ones_do_not():
    def measure(per_call):  # label -> per-call seconds of its i-th timed block
        log = {label: 0 for label in per_call}

        def block(label, number):
            log[label] += 1
            return number * per_call[label](log[label] // 2)  # (every other block is a warm-up)

        budget = replace(TINY, block_time=1e-2, min_run_time=0.05, warm_fraction=0.5, noisy_spread=0.5,
                         extra_rounds=2)
        got = timing._interleaved_medians_ms({k: k for k in per_call}, lambda label: 1e-3, block, budget)
        return got, {label: n // 2 for label, n in log.items()}

    steady = {"ours": lambda i: 1e-3, "builtin": lambda i: 2e-3}
    got, timed = measure(steady)
    assert timed == {"ours": 5, "builtin": 5}  # one round: 5 blocks of 10 ms reach 0.05 s
    assert got["ours"][0] == pytest.approx(1.0) and got["builtin"][0] == pytest.approx(2.0)
    # bimodal blocks (1 and 4 ms a call, IQR 3 ms > half the median) get two more rounds, both labels
    bimodal = {"ours": lambda i: 1e-3 if i % 2 else 4e-3, "builtin": lambda i: 2e-3}
    got, timed = measure(bimodal)
    assert timed["ours"] > 5 and timed["builtin"] > 5
    assert timed["builtin"] == 5 + 3 + 3  # three rounds: at least 5 blocks in the first, 0.05 s in each
    settles = {"ours": lambda i: (1e-3 if i % 2 else 4e-3) if i < 6 else 1e-3, "builtin": lambda i: 2e-3}
    got, timed = measure(settles)
    assert timed["builtin"] == 5 + 3  # a second round, after which the spread is small: no third
    assert got["ours"][0] == pytest.approx(1.0)


def test_a_slow_call_is_the_median_of_single_calls_interleaved():
    """A call over ``SLOW_CALL`` is timed in ``SLOW_CALL_BLOCKS`` single calls (``once``'s the
    first), round-robin with the other labels and without warm-up blocks: one disturbed call
    does not stand for it."""
    log = []
    slow_times = iter([0.25, 0.3])  # once's call took 2.5 s; the next two calls 0.25 and 0.3 s

    def once(label):
        return {"slow": 2.5, "fast": 1e-3}[label]

    def block(label, number):
        log.append((label, number))
        return next(slow_times) if label == "slow" else number * 1e-3

    budget = replace(TINY, block_time=4e-3, min_run_time=0.0, warm_fraction=0.5)
    got = timing._interleaved_medians_ms({"slow": "slow", "fast": "fast"}, once, block, budget)
    assert [entry for entry in log if entry[0] == "slow"] == [("slow", 1)] * (timing.SLOW_CALL_BLOCKS - 1)
    assert log[:3] == [("slow", 1), ("fast", 2), ("fast", 4)]  # interleaved; only the fast label warms up
    assert got["slow"][0] == pytest.approx(300.0) and math.isnan(got["slow"][1])  # median of 2.5, 0.25, 0.3 s
    assert got["fast"][0] == pytest.approx(1.0)


def test_bench_command_refuses_bad_sizes(capsys):
    assert cli.main(["bench", "--sizes", "1e3,lots"]) == 2
    assert "--sizes" in capsys.readouterr().err


def test_memory_ratios_and_target():
    rows = [{"implementation": "ours.module", "chunk_size": None, "peak_bytes": 1000},
            {"implementation": "ours.module", "chunk_size": 8, "peak_bytes": 240},
            {"implementation": "ours.function", "chunk_size": None, "peak_bytes": 1000},
            {"implementation": "ours.function", "chunk_size": 8, "peak_bytes": 260}]
    memory._ratios(rows)
    assert [r.get("target_met") for r in rows] == [None, True, None, False]
    assert rows[1]["ratio_to_unchunked"] == pytest.approx(0.24)


@pytest.mark.slow
def test_linear_cross_entropy_chunked_peak_is_at_most_a_quarter():
    """8192 tokens x hidden 1024 x 65,536 classes, float32, forward + backward, each path in
    its own process: chunked (1024 rows) peak <= 1/4 of unchunked, same values and gradients.
    Minutes, and about 7 GiB at the unchunked paths' peak."""
    paths = ("ours.module.chunked", "ours.module.unchunked", "ours.function.chunked", "ours.function.unchunked")
    need = max(memory.estimate(p, memory.TOKENS, memory.HIDDEN, memory.VOCAB, memory.CHUNK) for p in paths)
    if need + memory.MARGIN > system.mem_available():
        pytest.skip(f"needs about {(need + memory.MARGIN) / 2**30:.1f} GiB available")
    rows = memory.run(paths, log=lambda m: None)
    table = memory.table(rows)
    assert all(r["peak_bytes"] for r in rows), table
    for r in rows:
        assert r["agrees"], table
        if r["chunk_size"] is not None:
            assert r["target_met"], table


@pytest.mark.skipif(timing._libc("mallopt") is None, reason="glibc's mallopt only")
def test_timings_keep_freed_memory_and_peak_memory_gives_it_back():
    """While timed, a 40 MB tensor made again after one was freed reuses its pages (what the
    loss costs, not glibc's fresh mapping's page faults); after, each peak's trim hands the
    pages back, so that a fresh tensor's pages count in the RSS peak again."""
    import resource

    import torch

    def faults_of_a_fresh_tensor() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(10 ** 7)  # 40 MB, above the 32 MiB that glibc ever takes from its heap by itself
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    def faults_after_a_trim() -> int:
        timing._reset_peak_rss()  # malloc_trim, as before each peak
        return faults_of_a_fresh_tensor()

    with timing.freed_memory_kept() as kept:
        assert kept
        least_kept = min(faults_of_a_fresh_tensor() for _ in range(4))
    least_returned = min(faults_after_a_trim() for _ in range(4))
    assert least_kept * 8 < least_returned, (least_kept, least_returned)  # 0 and 9,766 here (4 KiB pages)
    assert timing.allocator() == "glibc malloc, freed memory kept while timed"
