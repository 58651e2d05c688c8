"""``lossparity``, the command line (``python -m reports`` is the same).

    lossparity report [--out DIR] [--losses a,b] [--variants ...] [--dtypes ...] [--quick] [--seed N]
    lossparity list [--format table|csv|markdown|json]
    lossparity show NAME [--format text|markdown]

Exit codes: 0 done (``report`` also when cells failed, unless ``--strict``), 1 cells
failed under ``--strict``, 2 a usage error such as an unknown loss name.
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

def cmd_report(args) -> int:
    losses = _loss_names(_split(args.losses))
    from . import matrix, report
    variants = _choose("variant", _split(args.variants), list(report.VARIANT_ORDER))
    dtypes = _choose("dtype", _split(args.dtypes), list(matrix.TOLERANCES))
    out = Path(args.out)
    start = time.perf_counter()
    rep = report.build(losses, variants, dtypes, seed=args.seed, quick=args.quick, jobs=args.jobs,
                       with_timings=not args.no_timings)
    written = report.write(rep, out)
    c = report.counts(rep.parity)
    print()
    print(f"wrote {len(written)} files to {out}: parity.csv ({len(rep.parity)} rows), timings.csv "
          f"({len(rep.timings)} rows), REPORT.md, losses/*.md ({len(rep.losses)})")
    xpass = f", {c['xpass']} xpass" if c["xpass"] else ""
    fd = (f"reference vs finite differences {c['reference_passed']}/{c['reference']} passed" if c["reference"]
          else "reference vs finite differences not run")
    print(f"{len(rep.losses)} losses, {c['cells']} cells: {c['passed']} passed, {c['failed']} failed, "
          f"{c['xfail']} xfail{xpass}; {fd} ({time.perf_counter() - start:.0f} s)")
    failed = [(loss, f) for loss, fs in sorted(rep.failures.items()) for f in fs]
    if failed:
        print(f"\nFAILED ({len(failed)}):")
        for loss, f in failed[:50]:
            first = f["detail"].splitlines()[0] if f["detail"] else ""
            print(f"  {f['status']:<6} {f['id']}: {report._one_line(first, 200)}")
        if len(failed) > 50:
            print(f"  ... and {len(failed) - 50} more: see REPORT.md and parity.csv")
    if rep.skipped:
        print("\nSKIPPED:")
        for loss, whats, why in report._skipped_rows(rep.skipped):
            print(f"  {loss}: {whats}: {why}")
    if not failed and not rep.skipped:
        print("nothing failed, nothing skipped")
    return 1 if (args.strict and failed) else 0


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


# -- the parser ----------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lossparity", description=(
        "Cross-framework reference suite for loss functions: one NumPy spec, five implementations, "
        "a parity matrix."))
    sub = p.add_subparsers(dest="command", metavar="{report,list,show,check}")
    sub.required = True

    r = sub.add_parser("report", help="run the parity matrix and the timings; write CSV and markdown",
                       description="Run the parity matrix (CPU, and CUDA where present), the reference's VJP "
                                   "against finite differences, and the timings; write parity.csv, timings.csv, "
                                   "REPORT.md and losses/<name>.md.")
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
    r.add_argument("--strict", action="store_true", help="exit with status 1 when a cell failed")
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
