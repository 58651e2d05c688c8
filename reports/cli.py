"""``lossparity``, the command line (``python -m reports`` is the same).

    lossparity report [--out DIR] [--losses a,b] [--variants ...] [--dtypes ...] [--quick] [--seed N]
                      [--device cpu|cuda|auto] [--format text|markdown|json|csv] [--no-training] [--no-sweep]
                      [--no-slow-tests] [--no-pictures] [--strict]
    lossparity list [--format table|csv|markdown|json]
    lossparity show NAME [--format text|markdown]
    lossparity bench [--losses a,b] [--sizes 1e3,1e4] [--classes 10,100] [--tokens N] [--device cpu|cuda|auto]
                     [--out DIR] [--quick] [--no-compile] [--no-sweep] [--no-timings]
    lossparity bench --memory [--memory-size N,H,V] [--chunk-size C] [--out DIR]

Exit codes: 0 done (``report`` also when cells or slow tests failed, unless ``--strict``),
1 cells or slow tests failed under ``--strict``, 2 a usage error such as an unknown loss name.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path("reports") / "output"  # relative to where it runs: the repository root for `make report`


class UsageError(Exception):
    """A mistake in the command line: printed without a traceback, exit code 2."""


def _split(given: str | list[str] | None) -> list[str] | None:
    """``"a,b"`` or ``["a", "b,c"]`` as a list of names; None when nothing was given."""
    if given is None:
        return None
    parts = [given] if isinstance(given, str) else given
    return [t.strip() for part in parts for t in part.split(",") if t.strip()] or None


def _choose(kind: str, given, known) -> list[str] | None:
    """``given`` checked against ``known``; an unknown entry is a UsageError with close matches."""
    if given is None:
        return None
    for item in given:
        if item not in known:
            close = difflib.get_close_matches(item, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; choose from {', '.join(known)}"
            raise UsageError(f"unknown {kind} {item!r}{hint}")
    return list(dict.fromkeys(given))


def _loss_names(given) -> list[str] | None:
    import reference
    if given is None:
        return None
    out = []
    for name in given:
        try:
            out.append(reference.get(name).name)
        except KeyError as e:
            raise UsageError(e.args[0]) from None
    return list(dict.fromkeys(out))


# -- commands ------------------------------------------------------------------------

def _devices(choice: str) -> list[str] | None:
    """``--device``: cpu; cuda (a UsageError when there is none); auto (None: the CPU, and
    CUDA where present)."""
    if choice == "auto":
        return None
    if choice == "cpu":
        return ["cpu"]
    from . import matrix
    if not any(matrix.device_available(f, "cuda") for f in ("torch", "jax")):
        import torch
        raise UsageError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False, torch "
                         f"{torch.__version__}{' is a CPU build' if torch.version.cuda is None else ''}; JAX sees no "
                         "GPU); use --device cpu, or --device auto for CUDA only where present")
    return ["cuda"]


def cmd_report(args) -> int:
    losses = _loss_names(_split(args.losses))
    from . import matrix, report
    variants = _choose("variant", _split(args.variants), list(report.VARIANT_ORDER))
    dtypes = _choose("dtype", _split(args.dtypes), list(matrix.TOLERANCES))
    devices = _devices(args.device)
    out = Path(args.out)
    start = time.perf_counter()
    bar = report.Progress(stream=sys.stderr)  # progress on stderr: stdout holds only the summary
    rep = report.build(losses, variants, dtypes, seed=args.seed, quick=args.quick, jobs=args.jobs,
                       with_timings=not args.no_timings, devices=devices, with_training=not args.no_training,
                       progress=bar)
    from . import bench
    swept = [n for n in bench.SWEEP_LOSSES if n in rep.losses]
    others = [n for n in rep.losses if n not in bench.SWEEP_LOSSES]
    impl = None if variants is None else [v for v in variants if v != "reference"]
    sweep = bool(rep.losses) and impl != [] and not (args.quick or args.no_sweep or args.no_timings)
    if sweep:  # scaling.csv, before report.write: its pictures may read it
        bench.run_sweep(out, swept, devices=devices, variants=impl, seed=args.seed, others=others,
                        log=lambda m: print(m, file=sys.stderr))
    if not (args.quick or args.no_slow_tests):  # after the timings, which want the cores to themselves
        from . import slow_tests
        rep.slow_tests = slow_tests.run(losses, args.jobs, log=bar.log)
        bar.log(_slow_tests_line(rep.slow_tests))
    written = report.write(rep, out, progress=bar, with_pictures=not args.no_pictures)
    if sweep:
        written.append(out / "scaling.csv")
    seconds = time.perf_counter() - start
    listed = [(loss, f) for loss, fs in sorted(rep.failures.items()) for f in fs]
    failed = [(loss, f) for loss, f in listed if f["status"] != "xfail"]
    known = [(loss, f) for loss, f in listed if f["status"] == "xfail"]  # a spec's XFail: expected to fail
    slow_failed = rep.slow_tests is not None and (bool(rep.slow_tests.problem) or len(rep.slow_tests.failed()) > 0)
    status = 1 if (args.strict and (failed or slow_failed)) else 0
    if args.format != "text":
        sys.stdout.write(_report_summary(args.format, rep, out, written, seconds, report))
        return status
    c = report.counts(rep.parity)
    print()
    figures = sum(1 for p in written if p.suffix == ".png")
    print(f"wrote {len(written)} files to {out}: parity.csv ({len(rep.parity)} rows), timings.csv "
          f"({len(rep.timings)} rows)" + (", training.csv" if rep.training is not None else "")
          + f", {figures} PNGs, REPORT.md, losses/*.md ({len(rep.losses)})")
    xpass = f", {c['xpass']} xpass" if c["xpass"] else ""
    fd = (f"reference vs finite differences {c['reference_passed']}/{c['reference']} passed" if c["reference"]
          else "reference vs finite differences not run")
    print(f"{len(rep.losses)} losses, {c['cells']} cells: {c['passed']} passed, {c['failed']} failed, "
          f"{c['xfail']} xfail{xpass}; {fd} ({seconds:.0f} s)")
    for line in _targets_lines(rep, out):
        print(line)
    if rep.training is not None:
        print(_training_line(rep.training))
    if rep.slow_tests is not None:
        print(_slow_tests_line(rep.slow_tests))
        for r in rep.slow_tests.failed().head(50).itertuples():
            print(f"  {r.outcome:<6} {r.test}: {report._one_line(r.message, 200)}")
    for title, cells in ((f"FAILED ({len(failed)})", failed),
                         (f"XFAIL ({len(known)}), known disagreements marked xfail(strict=True) in their spec", known)):
        if cells:
            print(f"\n{title}:")
            for loss, f in cells[:50]:
                first = f["detail"].splitlines()[0] if f["detail"] else ""
                print(f"  {f['status']:<6} {f['id']}: {report._one_line(first, 200)}")
            if len(cells) > 50:
                print(f"  ... and {len(cells) - 50} more: see REPORT.md and parity.csv")
    if rep.skipped:
        print("\nSKIPPED:")
        for loss, whats, why in report._skipped_rows(rep.skipped):
            print(f"  {loss}: {whats}: {why}")
    if not listed and not rep.skipped:
        print("nothing failed, nothing skipped")
    return status


def _targets_lines(rep, out: Path) -> list[str]:
    """The speed targets at the timings' default sizes (REPORT.md has every point of the sweep too)."""
    from . import bench, report
    targets = report.speed_targets(rep, out)
    return ["speed targets: " + bench.targets_line(r) for r in targets[targets["measured"] == "timings"].itertuples()]


def _slow_tests_line(result) -> str:
    if result.problem:
        return f"slow tests: not run: {result.problem}"
    return f"slow tests: {result.summary()} ({result.seconds:.0f} s)"


def _training_line(result) -> str:
    s = result.summary
    checked = s[s["passed"] != "n/a"]
    return (f"training-level parity ({result.settings['parity_dtype']}, {result.settings['epochs']} epochs): "
            f"{'within' if result.passed else 'OUTSIDE'} the tolerance {result.settings['tolerance']:g}; largest "
            f"differences: curves {checked['curve_max_rel_diff'].max():.3g}, weights "
            f"{checked['weights_rel_diff'].max():.3g} (relative)")


def _report_summary(fmt: str, rep, out: Path, written: list, seconds: float, report) -> str:
    """The summary that ``report --format markdown|json|csv`` prints to stdout (for a pipe):
    markdown, the Summary table and the failures; json, one object; csv, one row per loss."""
    c = report.counts(rep.parity)
    failed = [(loss, f) for loss, fs in sorted(rep.failures.items()) for f in fs]
    per_loss = report.per_loss_frame(rep)
    if fmt == "csv":
        return per_loss.to_csv(index=False, lineterminator="\n")
    if fmt == "json":
        slow = None
        if rep.slow_tests is not None:
            slow = {"problem": rep.slow_tests.problem or None, "seconds": round(rep.slow_tests.seconds, 1),
                    **rep.slow_tests.counts(),
                    "failures": [{"test": r.test, "outcome": r.outcome, "message": r.message}
                                 for r in rep.slow_tests.failed().itertuples()]}
        training = None
        if rep.training is not None:
            training = {"passed": rep.training.passed, "tolerance": rep.training.settings["tolerance"],
                        "dtype": rep.training.settings["parity_dtype"], "epochs": rep.training.settings["epochs"],
                        "comparisons": [{k: (v if not isinstance(v, float) or v == v else None) for k, v in r.items()}
                                        for r in rep.training.summary.to_dict("records")]}
        record = {"out": str(out), "files": sorted(str(p.relative_to(out)) for p in written),
                  "losses": len(rep.losses), **{k: c[k] for k in ("cells", "passed", "failed", "xfail", "xpass")},
                  "reference": {"run": c["reference"], "passed": c["reference_passed"]},
                  "failures": [{"loss": loss, "id": f["id"], "status": f["status"],
                                "what": f["detail"].splitlines()[0] if f["detail"] else ""} for loss, f in failed],
                  "skipped": rep.skipped, "training": training, "slow_tests": slow,
                  "speed_targets": json.loads(report.speed_targets(rep, out).to_json(orient="records")),
                  "seconds": round(seconds, 1),
                  "per_loss": json.loads(per_loss.to_json(orient="records"))}
        return json.dumps(record, indent=2) + "\n"
    blocks = [report.heading(2, "lossparity report"),
              report.para(f"{len(rep.losses)} losses, {c['cells']} cells: {c['passed']} passed, {c['failed']} failed, "
                          f"{c['xfail']} xfail; reference vs finite differences {c['reference_passed']}/"
                          f"{c['reference']} passed. Files in `{out}` ({seconds:.0f} s)."),
              report.table(per_loss.values.tolist(), list(per_loss.columns))]
    if rep.training is not None:
        blocks.append(report.para(_training_line(rep.training) + "."))
    if rep.slow_tests is not None:
        blocks.append(report.para(_slow_tests_line(rep.slow_tests) + "."))
    if failed:
        blocks += [report.heading(3, f"Failed ({len(failed)})"),
                   report.table([[f["id"], f["status"], report._one_line(f["detail"].splitlines()[0]
                                                                          if f["detail"] else "", 200)]
                                 for _, f in failed], ["cell", "status", "what"])]
    return report.render(blocks, "markdown")


def cmd_list(args) -> int:
    from tabulate import tabulate
    from . import report
    df = report.catalogue()
    if args.format == "csv":
        sys.stdout.write(df.to_csv(index=False, lineterminator="\n"))
    elif args.format == "json":
        import reference
        records = []
        for row in df.to_dict("records"):
            spec = reference.get(row["name"])
            records.append({"name": row["name"], "family": row["family"], "inputs": list(spec.inputs),
                            "differentiable": list(spec.differentiable),
                            "hyperparameters": {k: _json_value(v, report) for k, v in spec.defaults.items()},
                            "builtins": report.builtins_of(spec), "implementations": row["implementations"],
                            "alias_of": spec.alias_of})
        print(json.dumps(records, indent=2))
    else:
        shown = df.assign(**{lib: df[lib].map(report._short) for lib in report.BUILTIN_LIBRARIES})
        fmt = "pipe" if args.format == "markdown" else "simple"
        print(tabulate(shown.values.tolist(), headers=list(shown.columns), tablefmt=fmt, disable_numparse=True))
    return 0


def _json_value(v, report):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, tuple) and all(isinstance(x, (bool, int, float, str)) for x in v):
        return list(v)
    return report._value(v)


def cmd_show(args) -> int:
    name = _loss_names([args.name])[0]  # before importing torch and JAX: a typo answers at once
    from . import report
    sys.stdout.write(report.show(name, args.format, seed=args.seed, with_timings=not args.no_timings))
    return 0


def _numbers(kind: str, given: str | None) -> list[int] | None:
    """``"1e3,1e4"`` as ints; None when nothing was given."""
    items = _split(given)
    if items is None:
        return None
    try:
        values = [int(float(x)) for x in items]
    except ValueError:
        raise UsageError(f"--{kind}: expected comma-separated numbers such as 1e3,1e4; got {given!r}") from None
    if any(v < 1 for v in values):
        raise UsageError(f"--{kind}: every entry must be at least 1; got {given!r}")
    return values


def cmd_bench(args) -> int:
    out = Path(args.out)
    if args.memory:
        size = _numbers("memory-size", args.memory_size) or []
        if len(size) != 3:
            raise UsageError(f"--memory-size: expected TOKENS,HIDDEN,CLASSES such as 8192,1024,65536; "
                             f"got {args.memory_size!r}")
        from . import memory
        tokens, hidden, vocab = size
        print(f"linear_cross_entropy peak memory: {tokens} tokens x hidden {hidden} x {vocab} classes, float32, "
              f"fwd+bwd, chunk_size {args.chunk_size}; each path in its own process, one at a time")
        rows = memory.run(tokens=tokens, hidden=hidden, vocab=vocab, chunk=args.chunk_size, with_jax=True)
        import pandas as pd
        from .bench import write_csv
        write_csv(pd.DataFrame(rows, columns=memory.COLUMNS), out / "memory.csv")
        print()
        print(memory.table(rows))
        print(f"\nwrote {out / 'memory.csv'}")
        return 0
    losses = _split(args.losses)
    if losses != ["all"]:
        losses = _loss_names(losses)
    else:
        import reference
        losses = reference.names()
    sizes, classes = _numbers("sizes", args.sizes), _numbers("classes", args.classes)
    devices = _devices(args.device)
    from . import bench
    result = bench.bench(out, losses, sizes, classes, args.tokens, quick=args.quick, devices=devices,
                         with_timings=not args.no_timings, with_sweep=not args.no_sweep,
                         torch_compile=not args.no_compile, seed=args.seed,
                         log=lambda m: print(m, file=sys.stderr))
    if "timings" in result:
        print(bench.timings_table(result["timings"]))
        print()
    if "scaling" in result:
        print(bench.scaling_table(result["scaling"]))
        print()
    targets = bench.speed_targets(result.get("timings"), result.get("scaling"))
    if len(targets):
        print(f"speed targets (the fastest variant of each loss over its built-in, forward + backward): median "
              f"at most {bench.TARGET_MEDIAN}x, none above {bench.TARGET_MAX}x")
        print(bench.targets_table(targets))
    skipped = result.get("timings_skipped", []) + result.get("scaling_skipped", [])
    for k in skipped:
        print(f"skipped {k['loss']} {k['what']}: {k['reason']}")
    written = [n for n, key in (("timings.csv", "timings"), ("scaling.csv", "scaling")) if key in result]
    print(f"\nwrote {', '.join(written) or 'nothing'} to {out}")
    return 0


# -- the parser ----------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lossparity", description=(
        "Cross-framework reference suite for loss functions: one NumPy spec, five implementations, "
        "a parity matrix."))
    sub = p.add_subparsers(dest="command", metavar="{report,list,show,check,bench}")
    sub.required = True

    r = sub.add_parser("report", help="run the parity matrix and the timings; write CSV and markdown",
                       description="Run the parity matrix (CPU, and CUDA where present), the reference's VJP "
                                   "against finite differences, the timings, the training-level parity and the "
                                   "tests make test leaves out as slow; write parity.csv, timings.csv, "
                                   "slow_tests.csv, REPORT.md and losses/<name>.md.")
    r.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: reports/output/)")
    r.add_argument("--losses", help="comma-separated loss names (default: the whole catalogue)")
    r.add_argument("--variants", nargs="+", metavar="VARIANT",
                   help="implementations to run, comma- or space-separated: reference, module, function, "
                        "autodiff, custom_vjp (default: all)")
    r.add_argument("--dtypes", nargs="+", metavar="DTYPE", help="dtypes, comma- or space-separated (default: all)")
    r.add_argument("--quick", action="store_true", help="small inputs and short measurements for the timings")
    r.add_argument("--seed", type=int, default=0, help="input draw; 0 (default) is the draw the tests use")
    r.add_argument("--jobs", type=int, default=None,
                   help="processes for the parity matrix (default: 1 for a small matrix, else one per core, at most 4)")
    r.add_argument("--no-timings", action="store_true", help="skip the timings")
    r.add_argument("--no-sweep", action="store_true",
                   help="skip the size sweep (scaling.csv: 9 losses at 1e3..1e7 elements, cross_entropy at 10..32,768 "
                        "classes; also skipped with --quick or --no-timings)")
    r.add_argument("--no-training", action="store_true",
                   help="skip the training-level parity (a CNN on the 8x8 digits; about a minute, 10 s with --quick)")
    r.add_argument("--no-slow-tests", action="store_true",
                   help="skip the tests make test leaves out as slow (a pytest run on all cores, after the timings; "
                        "tens of minutes on 2 cores; also skipped with --quick)")
    r.add_argument("--no-pictures", action="store_true",
                   help="skip the PNGs (matplotlib) and their places in the markdown")
    r.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                   help="where the cells and timings run: cpu, cuda (an error when there is none) or auto (default: "
                        "the CPU, and CUDA where present); the training runs on the CPU")
    r.add_argument("--format", choices=("text", "markdown", "json", "csv"), default="text",
                   help="the summary printed to stdout when done: text (default), a markdown table, a JSON object, "
                        "or CSV with one row per loss; progress goes to stderr (a bar on a terminal)")
    r.add_argument("--strict", action="store_true", help="exit with status 1 when a cell or a slow test failed")
    r.set_defaults(func=cmd_report)

    ls = sub.add_parser("list", help="the catalogue: name, family, inputs, hyperparameters, built-ins")
    ls.add_argument("--format", choices=("table", "csv", "markdown", "json"), default="table",
                    help="an aligned table (default), CSV, a markdown table or JSON records")
    ls.set_defaults(func=cmd_list)

    sh = sub.add_parser("show", help="one loss as a reference page (its cells run on the spot)")
    sh.add_argument("name", help="a loss of the catalogue (lossparity list)")
    sh.add_argument("--format", choices=("text", "markdown"), default="text",
                    help="text for the terminal (default), markdown as in losses/<name>.md")
    sh.add_argument("--seed", type=int, default=0, help="input draw; 0 (default) is the draw the tests use")
    sh.add_argument("--no-timings", action="store_true", help="skip the quick timings")
    sh.set_defaults(func=cmd_show)

    b = sub.add_parser("bench", help="time losses beside their built-ins: timings, a size sweep, memory",
                       description="Time the losses' implementations beside the frameworks' built-ins (float32, "
                                   "the default case): timings.csv (medians, spread, torch.compile and jit, peak "
                                   "memory, GB/s beside a copy of the same bytes) and scaling.csv (a sweep over "
                                   "sizes, and cross_entropy over class counts); print them as tables. With "
                                   "--memory: linear_cross_entropy's peak memory, chunked against unchunked and "
                                   "torch's own, each path in its own process (memory.csv).")
    b.add_argument("--losses", help="comma-separated loss names, or all (default: mse_loss, l1_loss, smooth_l1_loss, "
                                    "huber_loss, binary_cross_entropy[_with_logits], kl_div, cross_entropy, nll_loss)")
    b.add_argument("--sizes", help="elements of the first input, comma-separated (default: 1e3,1e4,1e5,1e6,1e7; "
                                   "--quick: 1e3,1e4,1e5)")
    b.add_argument("--classes", help="class counts of the cross_entropy sweep (default: 10,100,1000,10000,32768; "
                                     "--quick: 10,100,1000)")
    b.add_argument("--tokens", type=int, default=None, help="rows of the class sweep (default: 256; --quick: 64)")
    b.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                   help="cpu, cuda (an error when there is none) or auto (default: the CPU, and CUDA where present)")
    b.add_argument("--out", default=str(DEFAULT_OUT / "bench"), help="output folder (default: reports/output/bench/)")
    b.add_argument("--quick", action="store_true", help="small sizes and short measurements, no torch.compile")
    b.add_argument("--no-compile", action="store_true", help="skip torch.compile of the module variant")
    b.add_argument("--no-timings", action="store_true", help="skip timings.csv")
    b.add_argument("--no-sweep", action="store_true", help="skip the sweep (scaling.csv)")
    b.add_argument("--seed", type=int, default=0, help="input draw")
    b.add_argument("--memory", action="store_true",
                   help="instead, measure linear_cross_entropy's peak memory (minutes, several GiB; memory.csv)")
    b.add_argument("--memory-size", default="8192,1024,65536", metavar="N,H,V",
                   help="tokens, hidden size and classes of --memory (default: 8192,1024,65536)")
    b.add_argument("--chunk-size", type=int, default=1024, help="chunk_size of the chunked paths (default: 1024)")
    b.set_defaults(func=cmd_bench)

    from .check import add_check_command
    add_check_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"lossparity {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # lossparity list | head
        return 0
