"""`gpuscale bench`: simulate autoscalers on a trace and print their latency and GPU cost side by side;
`--all` runs the standard comparison, `--write-doc` also redraws and rewrites docs/policy-comparison.md."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from inference_app.exit_codes import EXIT_USAGE

TRACES = ("steady", "step", "spike", "diurnal", "replay")
DEFAULT_POLICIES = "gpuscale,hpa,keda,kpa"
DEFAULT_DOC = "docs/policy-comparison.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gpuscale.sim.model import ROUTINGS
    from gpuscale.sim.suite import MAX_REPLICAS, MIN_REPLICAS, POLICY_KEYS
    from gpuscale.sim.traces import JOB_KINDS

    whole = parser.add_argument_group("the standard comparison")
    whole.add_argument(
        "--all",
        action="store_true",
        help="every standard trace and autoscaler, several seeds; prints the tables",
    )
    whole.add_argument(
        "--write-doc",
        nargs="?",
        const=DEFAULT_DOC,
        metavar="PAGE",
        help=f"with --all: redraw docs/img/policy-*.png and fill the tables of PAGE (default {DEFAULT_DOC})",
    )
    one = parser.add_argument_group("one trace")
    one.add_argument("--trace", choices=TRACES, default="spike", help="arrival shape (default spike)")
    one.add_argument("--csv", metavar="FILE", help="with --trace replay: rows of timestamp,job_seconds")
    one.add_argument(
        "--rate", type=float, help="req/s: steady's rate, or the low level of step/spike/diurnal"
    )
    one.add_argument("--peak", type=float, help="req/s: the high level of step, spike or diurnal")
    one.add_argument("--at", type=float, metavar="SECONDS", help="when the step or spike begins")
    one.add_argument("--length", type=float, metavar="SECONDS", help="how long the step or spike lasts")
    one.add_argument("--duration", type=float, metavar="SECONDS", help="length of the trace")
    one.add_argument("--jobs", choices=JOB_KINDS, default="lognormal", help="job length distribution")
    one.add_argument("--job-mean", type=float, default=1.0, metavar="SECONDS", help="mean job length (1)")
    one.add_argument("--job-sigma", type=float, default=0.5, help="lognormal shape (0.5)")
    one.add_argument(
        "--startup", default="60", metavar="SECONDS|LOW-HIGH", help="model load time per replica (60; 30-120)"
    )
    one.add_argument("--slots", type=int, default=1, help="requests per replica at once (1)")
    one.add_argument("--routing", choices=ROUTINGS, default="single", help="one queue, or random pod queues")
    one.add_argument("--max-queue", type=int, metavar="N", help="bound the queue (per pod when random)")
    one.add_argument("--min-replicas", type=int, default=MIN_REPLICAS, help=f"default {MIN_REPLICAS}")
    one.add_argument("--max-replicas", type=int, default=MAX_REPLICAS, help=f"default {MAX_REPLICAS}")
    one.add_argument(
        "--policies",
        default=DEFAULT_POLICIES,
        metavar="A,B,...",
        help=f"from {', '.join(POLICY_KEYS)} (default {DEFAULT_POLICIES})",
    )
    one.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="an autoscaling field of ours as in a manifest, e.g. targetPerReplica=0.8 (repeatable)",
    )
    one.add_argument(
        "--warmup",
        type=float,
        metavar="SECONDS",
        help="count figures from here on (default 600, 0 for a replay)",
    )
    one.add_argument("--seed", type=int, default=1, help="first seed (1)")
    one.add_argument("--seeds", type=int, default=1, help="seeds to pool (1)")
    one.add_argument("--plot", metavar="FILE.png", help="draw the runs' timelines side by side")
    one.add_argument("--json", metavar="FILE", help="write the figures as JSON")


class UsageError(ValueError):
    pass


def _startup(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        values = (float(low), float(high or low))
    except ValueError:
        raise UsageError(f"--startup must be SECONDS or LOW-HIGH, not {text!r}") from None
    if not 0 <= values[0] <= values[1]:
        raise UsageError(f"--startup must be 0 or more, low before high, not {text!r}")
    return values


def _overrides(pairs: list[str]) -> dict[str, Any]:
    import yaml

    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes FIELD=VALUE, not {pair!r}")
        found[key.strip()] = yaml.safe_load(value)
    return found


def _warmup(args: argparse.Namespace) -> float:
    from gpuscale.sim.suite import WARMUP

    if args.warmup is None:
        return 0.0 if args.trace == "replay" else WARMUP
    _positive(args.warmup, "--warmup", zero=True)
    return float(args.warmup)


def _positive(value: float | None, flag: str, *, zero: bool = False) -> None:
    if value is not None and not (value >= 0 if zero else value > 0):
        raise UsageError(f"{flag} must be {'0 or more' if zero else 'positive'}, not {value:g}")


def build_traces(args: argparse.Namespace) -> list[Any]:
    from gpuscale.sim.suite import CASES, traces_for
    from gpuscale.sim.traces import Diurnal, Jobs, Spike, Steady, Step, read_replay

    if args.seeds < 1:
        raise UsageError(f"--seeds must be 1 or more, not {args.seeds}")
    if args.trace == "replay":
        if not args.csv:
            raise UsageError("--trace replay needs --csv FILE")
        return [read_replay(args.csv)]
    if args.csv:
        raise UsageError("--csv goes with --trace replay")
    for value, flag in ((args.rate, "--rate"), (args.peak, "--peak"), (args.at, "--at")):
        _positive(value, flag, zero=True)
    _positive(args.length, "--length")
    _positive(args.duration, "--duration")
    jobs = Jobs(args.jobs, args.job_mean, args.job_sigma)
    case = CASES[args.trace]
    shape: Any
    if args.trace == "steady":
        base = case.shape
        assert isinstance(base, Steady)
        shape = Steady(base.rate if args.rate is None else args.rate)
    elif args.trace in ("step", "spike"):
        edge = case.shape
        assert isinstance(edge, Step)
        kind = Spike if args.trace == "spike" else Step
        shape = kind(
            edge.low if args.rate is None else args.rate,
            edge.high if args.peak is None else args.peak,
            edge.start if args.at is None else args.at,
            edge.length if args.length is None else args.length,
        )
    else:
        sine = case.shape
        assert isinstance(sine, Diurnal)
        shape = Diurnal(
            sine.low if args.rate is None else args.rate, sine.high if args.peak is None else args.peak
        )
    duration = case.duration if args.duration is None else args.duration
    return traces_for(replace(case, shape=shape, duration=duration), jobs, args.seed, args.seeds)


def run(args: argparse.Namespace, prog: str = "gpuscale bench") -> int:
    try:
        if args.all:
            return _run_all(args, prog)
        if args.write_doc is not None:
            raise UsageError("--write-doc goes with --all")
        return _run_one(args, prog)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_all(args: argparse.Namespace, prog: str) -> int:
    from gpuscale.sim.page import print_page, run_page, write_page

    doc = Path(args.write_doc) if args.write_doc is not None else None
    if doc is not None and not doc.is_file():
        raise UsageError(f"{doc}: no such page (run from the repository root, or give its path)")
    page = run_page(args.seed, note=_note)
    print_page(page, note=print)
    if doc is not None:
        try:
            write_page(page, doc, note=_note)
        except ValueError as exc:
            raise UsageError(f"{doc}: {exc}") from None
    return 0


def _run_one(args: argparse.Namespace, prog: str) -> int:
    from gpuscale.sim.model import SimConfig
    from gpuscale.sim.report import results_table
    from gpuscale.sim.suite import contender, ours_spec, run_traces

    if not 0 <= args.min_replicas <= args.max_replicas or args.max_replicas < 1:
        raise UsageError(
            f"replicas must satisfy 0 <= --min-replicas <= --max-replicas, 1 <= --max-replicas; got "
            f"{args.min_replicas} and {args.max_replicas}"
        )
    overrides = _overrides(args.set)
    try:
        ours_spec(args.min_replicas, args.max_replicas, overrides)
        contenders = [contender(key.strip(), overrides) for key in args.policies.split(",") if key.strip()]
        if not contenders:
            raise UsageError("--policies names no autoscaler")
        config = SimConfig(
            startup=_startup(args.startup),
            slots=args.slots,
            routing=args.routing,
            max_queue=args.max_queue,
            seed=args.seed,
            warmup=_warmup(args),
        )
        traces = build_traces(args)
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc).replace("\n", "; ")) from None
    _note(f"{traces[0].description}; {len(traces)} seed(s), {sum(t.requests for t in traces):,} requests")
    result = run_traces(args.trace, traces, contenders, config, args.min_replicas, args.max_replicas)
    print(results_table(list(result.summaries.values()), show_trace=False))
    work = sum(t.work for t in traces)
    print(f"\nwork (replica-seconds lower bound): {work / 3600:.1f} replica-hours")
    for summary in result.summaries.values():
        print(f"{summary.label}: {summary.wall_seconds:.2f} s of wall time per run")
    if args.plot:
        from gpuscale.sim.plot import plot_timelines

        runs = [(result.summaries[key].label, run) for key, run in result.first.items()]
        plot_timelines(runs, args.plot, traces[0].description)
        _note(f"wrote {args.plot}")
    if args.json:
        figures = {key: s.to_json() for key, s in result.summaries.items()}
        Path(args.json).write_text(
            json.dumps({"trace": traces[0].description, "runs": figures}, indent=2) + "\n"
        )
        _note(f"wrote {args.json}")
    return 0
