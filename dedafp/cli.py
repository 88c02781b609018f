"""The ``dedafp`` command line: train, evaluate, plot, bench (and the solver families' commands).

    dedafp train ENV [--algorithm dedafp|algo1|algo2] [--iterations K] [--seed S] [--config FILE]
                     [--set key=value ...] [--device cpu|cuda] [--out DIR]
    dedafp train --resume RUN [--iterations K]
    dedafp evaluate RUN [--agents N]
    dedafp plot RUN
    dedafp bench env [--agents N ...] [--repeats R] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

from dedafp.config import ALGORITHMS, RunConfig, load_config
from dedafp.games import GAMES


def _threads(args: argparse.Namespace) -> None:
    # One thread was fastest on 2-core machines (perf-notes.md); --threads overrides.
    torch.set_num_threads(getattr(args, "threads", 1) or 1)


def _format(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"


def cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dedafp.plots import plot_run
    from dedafp.run import train

    _threads(args)
    console = Console(soft_wrap=True)
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").exists():
            console.print(f"[red]error:[/red] {run_dir} is not a run folder (no config.yaml)")
            return 2
        config = RunConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
        if args.iterations is not None:
            config = config.with_overrides([f"fp.iterations={args.iterations}"])
    else:
        if args.env is None:
            console.print(f"[red]error:[/red] give a game ({', '.join(GAMES)}) or --resume RUN")
            return 2
        overrides = list(args.set or [])
        if args.iterations is not None:
            overrides.append(f"fp.iterations={args.iterations}")
        extra = {"seed": args.seed} if args.seed is not None else {}
        if args.device is not None:
            extra["device"] = args.device
        if args.algorithm is not None:
            extra["algorithm"] = args.algorithm
        config = load_config(args.env, args.config, overrides, **extra)
        run_dir = Path(args.out) if args.out else Path("runs") / f"{args.env}-{time.strftime('%Y%m%d-%H%M%S')}"

    if config.env.startswith("lq"):
        columns = ("fp/exploitability", "fp/exploitability_se", "br/return", "bc/nll", "flow/nll",
                   "theory/br_shortfall", "theory/bc_error", "theory/flow_w2", "time/iteration")
    else:
        columns = ("fp/grid_exploitability", "ref/tv_max", "ref/region_error_max", "ref/misplaced_max",
                   "br/return", "bc/nll", "flow/nll", "time/iteration")
    density = f"flow {config.flow.backend}" if config.algorithm == "dedafp" else f"KDE {config.fp.kde_bandwidth}"
    console.print(f"[bold]dedafp train[/bold] {config.env} ({config.algorithm}): {config.fp.iterations} iterations, "
                  f"best response {config.best_response.algorithm}, {density}, "
                  f"device {config.device} -> {run_dir}")
    console.print("  k  " + "  ".join(f"{c.split('/')[1]:>14}" for c in columns))

    def show(record) -> None:
        cells = [f"{_format(record.metrics[c]):>14}" if c in record.metrics else f"{'-':>14}" for c in columns]
        console.print(f"{record.iteration:>3}  " + "  ".join(cells))

    started = time.time()
    with console.status("training (best response, behavioural cloning, flow)..."):
        run = train(config, run_dir, resume=bool(args.resume), callback=show)
    figures = plot_run(run)
    console.print(f"done in {time.time() - started:.0f} s this session. Results: {run_dir}/metrics.csv, "
                  f"{run_dir}/summary.json; figures:")
    for figure in figures:
        console.print(f"  {figure}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dedafp.evaluation import deep_rl_exploitability
    from dedafp.fictitious_play import FictitiousPlay
    from dedafp.games import make_evaluator
    from dedafp.run import CHECKPOINTS, load_run, write_metrics

    _threads(args)
    run = load_run(args.run)
    seed = run.config.seed if args.seed is None else args.seed
    evaluator = make_evaluator(run.game, args.agents, run.config.fp.iterations, seed=seed)
    if evaluator is None and not args.deep_rl:
        print(f"error: {run.config.env} has no reference evaluator; use --deep-rl", file=sys.stderr)
        return 2
    records = []
    if args.all_iterations:
        from dedafp.fictitious_play import IterationRecord
        for path in sorted((run.path / CHECKPOINTS).glob("iter_*.pt")):
            loop = FictitiousPlay(run.config)
            loop.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))
            metrics = evaluator.evaluate(loop.completed, loop.average_policy, loop.population, [], None)
            records.append(IterationRecord(loop.completed, metrics))
            print(f"iteration {loop.completed:>3}: " + ", ".join(f"{k} {_format(v)}" for k, v in metrics.items()))
        write_metrics(records, run.path / "evaluation.csv")
        print(f"written to {run.path / 'evaluation.csv'}")
        return 0
    metrics = {} if evaluator is None else evaluator.evaluate(0, run.average_policy, run.population, [], None)
    metrics.pop("reference/exact_fp_exploitability", None)
    if args.deep_rl:
        metrics.update(deep_rl_exploitability(run.game, run.population, run.average_policy,
                                              run.config.best_response, args.agents, seed))
    (run.path / "evaluation.json").write_text(json.dumps(metrics, indent=2))
    for key, value in metrics.items():
        print(f"{key:40s} {_format(value)}")
    if args.deep_rl:
        print("deep_rl/*: a fresh best response against the frozen population: a LOWER bound on exploitability")
    print(f"written to {run.path / 'evaluation.json'}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from dedafp.plots import plot_run
    from dedafp.run import load_run

    _threads(args)
    for path in plot_run(load_run(args.run)):
        print(path)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from dedafp import bench

    _threads(args)
    if args.what == "env":
        bench.bench_env(args.env, args.agents, args.steps, args.repeats, Path(args.out), print_fn=print)
        return 0
    if args.what == "flows":
        bench.bench_flows(args.repeats, Path(args.out), print_fn=print)
        return 0
    print(f"error: unknown benchmark {args.what!r}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dedafp", description="Mean-field equilibria with deep RL (DEDA-FP).")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest on 2 cores)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train DEDA-FP on a game; writes a run folder")
    train.add_argument("env", nargs="?", choices=GAMES, help="game to solve")
    train.add_argument("--iterations", type=int, help="fictitious-play iterations K (default from config)")
    train.add_argument("--seed", type=int)
    train.add_argument("--config", help="YAML file with config sections (fp, best_response, ...)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config field, e.g. best_response.total_steps=100000 (repeatable)")
    train.add_argument("--device", choices=["cpu", "cuda"])
    train.add_argument("--algorithm", choices=list(ALGORITHMS),
                       help="dedafp (default), or the paper's baselines algo1 / algo2 (kernel density)")
    train.add_argument("--out", help="run folder (default runs/<env>-<timestamp>)")
    train.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its last checkpoint")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="exploitability and flow accuracy of a run's final policy")
    evaluate.add_argument("run")
    evaluate.add_argument("--agents", type=int, default=100_000)
    evaluate.add_argument("--seed", type=int, help="evaluation seed (default: the run's seed)")
    evaluate.add_argument("--all-iterations", action="store_true",
                          help="evaluate every checkpoint against the reference (writes RUN/evaluation.csv)")
    evaluate.add_argument("--deep-rl", action="store_true",
                          help="also train a fresh best response against the final population (a lower bound)")
    evaluate.set_defaults(func=cmd_evaluate)

    plot = sub.add_parser("plot", help="write a run's figures under RUN/figures")
    plot.add_argument("run")
    plot.set_defaults(func=cmd_plot)

    bench = sub.add_parser("bench", help="benchmarks (ratios measured in one run; figures under results/)")
    bench.add_argument("what", choices=["env", "flows"])
    bench.add_argument("--env", default="lq2d", choices=GAMES)
    bench.add_argument("--agents", type=int, nargs="+", default=[1, 8, 64, 256])
    bench.add_argument("--steps", type=int, default=20_000, help="env steps per measurement")
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--out", default="results/bench")
    bench.set_defaults(func=cmd_bench)

    from dedafp.mfgan.cli import add_parsers as add_mfgan_parsers
    from dedafp.reference.cli import add_parsers as add_reference_parsers
    add_reference_parsers(sub)
    add_mfgan_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
