"""The ``dedafp`` command line: train, evaluate, plot, bench (and the solver families' commands).

    dedafp train GAME [--algorithm dedafp|algo1|algo2|...] [--iterations K] [--seed S] [--config FILE]
                      [--set key=value ...] [--device cpu|cuda] [--out DIR] [--tensorboard]
                 (GAME: a registered name, path/to/game.py[:ATTR] or module:ATTR)
    dedafp games                                        # registered games and algorithms
    dedafp check-game GAME [--set key=value ...]        # the game contract, one line per violation
    dedafp train --resume RUN [--iterations K]
    dedafp evaluate RUN [--agents N]
    dedafp plot RUN
    dedafp bench env [--agents N ...] [--repeats R] [--out DIR]
    dedafp bench sampling [--device cpu|cuda] [--repeats R] [--samples 5000] [--out DIR]
    dedafp bench dimensions [--device cpu|cuda] [--out DIR]
    dedafp bench refresh [--run RUN] [--iteration K] [--agents N ...] [--repeats R] [--out DIR]
    dedafp bench compare [--envs lq2d four_rooms] [--seeds A..B] [--iterations K] [--best-response exact|ppo]
                         [--set key=value ...] [--backend local|ray] [--workers W] [--runs DIR] [--out DIR]
    dedafp sweep ENV --seeds A..B [--set key=v1,v2 ...] [--backend local|ray] [--address ADDR] [--workers W]
    dedafp simulate RUN --agents N [--steps S] [--seed S] [--device cpu|cuda] [--no-density]
                    [--backend local|ray] [--address ADDR] [--workers W] [--out DIR]
    dedafp simulate RUN --study throughput|mean-field|density-error [--agents N1,N2,...] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path

import yaml

from dedafp.agents.best_response import DEEP_RL, BestResponseConfig
from dedafp.common.files import write_json
from dedafp.common.threads import configure_threads
from dedafp.config import RunConfig, config_differences, load_config, read_run_config, read_yaml_mapping
from dedafp.envs.registry import game_spec, registered_games


def _threads(args: argparse.Namespace) -> None:
    # One thread was fastest on 2-core machines (perf-notes.md); --threads overrides.
    threads = getattr(args, "threads", None)
    configure_threads(1 if threads is None else threads)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _resume_config(args: argparse.Namespace) -> RunConfig:
    """The config of the run ``--resume`` names, with ``--iterations``; any other flag that would change
    it is refused naming the field (the checkpoint's config, checked by ``train``, is the run's)."""
    run_dir = Path(args.resume)
    stored = read_run_config(run_dir)
    conflicts = []
    if args.out is not None and Path(args.out).resolve() != run_dir.resolve():
        conflicts.append(f"--out {args.out} (a resumed run continues in {run_dir}; omit --out)")
    if args.env is not None and args.env != stored.env:
        conflicts.append(f"env: {stored.env!r} -> {args.env!r}")
    requested = stored
    if args.config is not None:
        data = stored.to_dict()
        for key, value in read_yaml_mapping(args.config).items():
            data[key] = {**data[key], **value} if isinstance(data.get(key), dict) and isinstance(value, dict) \
                else value
        requested = RunConfig.from_dict(data)
    requested = requested.with_overrides(list(args.set or []))
    extra = {name: getattr(args, name) for name in ("seed", "device", "algorithm") if getattr(args, name) is not None}
    requested = dataclasses.replace(requested, **extra)
    for difference in config_differences(stored.to_dict(), requested.to_dict()):
        field, _, change = difference.partition(": ")
        old, _, new = change.partition(" != ")
        note = " (use --iterations to extend a run)" if field == "fp.iterations" else ""
        if field == "device":
            note = " (moving a run to another device would change its numbers: not supported)"
        conflicts.append(f"{field}: {old} -> {new}{note}")
    if conflicts:
        raise ValueError(f"--resume continues {run_dir} with its own config; refused: {'; '.join(conflicts)}. "
                         f"Start a new run (another --out) to change it")
    if args.iterations is not None:
        stored = stored.with_overrides([f"fp.iterations={args.iterations}"])
    return stored


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
        config = _resume_config(args)
    else:
        if args.env is None:
            console.print(f"[red]error:[/red] give a game ({', '.join(registered_games())}, a game file "
                          f"or module:ATTR) or --resume RUN")
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
        stem = game_spec(args.env).name
        run_dir = Path(args.out) if args.out else Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"

    spec = game_spec(config.env)
    from dedafp.algorithms import algorithm_class
    algorithm_type = algorithm_class(config.algorithm)
    columns = tuple(spec.progress_columns) + algorithm_type.progress_columns
    labels = [("seconds" if c == "time/iteration" else c) for c in columns]
    widths = [max(10, len(label)) for label in labels]
    console.print(f"[bold]dedafp train[/bold] {config.env} ({config.algorithm}): {config.fp.iterations} iterations, "
                  f"{algorithm_type.describe(config)}, device {config.device} -> {run_dir}")
    console.print("  k  " + "  ".join(f"{label:>{w}}" for label, w in zip(labels, widths, strict=True)))
    status = console.status("iteration 0: population")

    finished = 0    # iterations finished (0..k), which is also the index of the one in progress

    def show(record) -> None:
        nonlocal finished
        cells = [f"{_format(record.metrics[c]) if c in record.metrics else '-':>{w}}"
                 for c, w in zip(columns, widths, strict=True)]
        console.print(f"{record.iteration:>3}  " + "  ".join(cells))
        finished = record.iteration + 1

    def phase(name: str) -> None:
        status.update(f"iteration {finished}: {name}")

    def note(message: str) -> None:
        console.print(f"note: {message}")

    started = time.time()
    try:
        with status:
            run = train(config, run_dir, resume=bool(args.resume), callback=show, progress=phase,
                        tensorboard=args.tensorboard, notify=note)
    except KeyboardInterrupt:
        if (run_dir / "config.yaml").exists():
            kept = f"it keeps its {finished} finished iteration(s)" if finished else "it keeps what was finished"
            print(f"interrupted: {run_dir} can be resumed ({kept}): dedafp train --resume {run_dir}", file=sys.stderr)
        else:
            print("interrupted before anything was written", file=sys.stderr)
        return 130
    figures = plot_run(run)
    console.print(f"done in {time.time() - started:.0f} s this session. Results: {run_dir}/metrics.csv, "
                  f"{run_dir}/summary.json; figures:")
    for figure in figures:
        console.print(f"  {figure}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dedafp.algorithms import IterationRecord
    from dedafp.evaluation import make_evaluator
    from dedafp.evaluation.deep_rl import deep_rl_exploitability
    from dedafp.run import load_run, write_metrics

    _threads(args)
    if args.agents < 2:
        raise ValueError(f"--agents must be an integer >= 2 (the Monte Carlo evaluation's agents), got {args.agents}")
    run = load_run(args.run)
    deep_rl = _deep_rl_config(run.config, args.overrides) if args.deep_rl else None
    _refuse_overwrite(run.path / ("evaluation.csv" if args.all_iterations else "evaluation.json"), args.force)
    seed = run.config.seed if args.seed is None else args.seed
    evaluator = make_evaluator(run.game, args.agents, run.config.fp.iterations, seed=seed)
    if evaluator is None and not args.deep_rl:
        print(f"error: {run.config.env} has no reference evaluator; use --deep-rl", file=sys.stderr)
        return 2
    records = []
    if args.all_iterations:
        if evaluator is None:
            print(f"error: {run.config.env} has no reference evaluator to score its checkpoints", file=sys.stderr)
            return 2
        for path in run.checkpoints():
            algorithm = run.load_algorithm(path)
            metrics = evaluator.evaluate(algorithm.completed, algorithm.average_policy, algorithm.population, [],
                                         None)
            records.append(IterationRecord(algorithm.completed, metrics))
            print(f"iteration {algorithm.completed:>3}: " + ", ".join(f"{k} {_format(v)}" for k, v in metrics.items()))
        if not any(record.metrics for record in records):
            raise ValueError(f"nothing was evaluated (no checkpoint in {run.path / 'checkpoints'} gave metrics); "
                             f"nothing written")
        write_metrics(records, run.path / "evaluation.csv")
        print(f"written to {run.path / 'evaluation.csv'}")
        return 0
    metrics = {} if evaluator is None else evaluator.evaluate(0, run.average_policy, run.population, [], None)
    metrics.pop("reference/exact_fp_exploitability", None)
    if deep_rl is not None:
        print(f"deep-RL best response: {deep_rl.algorithm}, {deep_rl.total_steps} steps")
        metrics.update(deep_rl_exploitability(run.game, run.population, run.average_policy, deep_rl,
                                              args.agents, seed))
    if not metrics:
        raise ValueError(f"nothing was evaluated for {run.path}; nothing written")
    write_json(metrics, run.path / "evaluation.json")
    for key, value in metrics.items():
        print(f"{key:40s} {_format(value)}")
    if args.deep_rl:
        print("deep_rl/*: a fresh best response against the frozen population: a LOWER bound on exploitability")
    print(f"written to {run.path / 'evaluation.json'}")
    return 0


def _refuse_overwrite(path: Path, force: bool) -> None:
    """Outputs of evaluate and simulate never replace an earlier result unless ``--force``."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (an earlier result); pass --force to replace it")


def _deep_rl_config(config: RunConfig, overrides: list[str]) -> BestResponseConfig:
    """The deep-RL responder of ``evaluate --deep-rl``: the run's own if it trained with PPO or SAC, else
    the game's default deep-RL settings (a run with exact or pathwise best responses has none; a game
    whose default responder is not deep RL, as LQ's pathwise, gets the generic PPO); then ``--set``."""
    bad = [o for o in overrides if not o.startswith("best_response.")]
    if bad:
        raise ValueError(f"evaluate --set takes best_response.* keys only (the deep-RL responder), got {bad}")
    chosen = config.best_response
    if chosen.algorithm not in DEEP_RL:
        chosen = load_config(config.env).best_response
        chosen = chosen if chosen.algorithm in DEEP_RL else BestResponseConfig()
    return dataclasses.replace(config, best_response=chosen).with_overrides(overrides).best_response


def cmd_plot(args: argparse.Namespace) -> int:
    from dedafp.plots import plot_run
    from dedafp.run import load_run

    _threads(args)
    for path in plot_run(load_run(args.run)):
        print(path)
    return 0


AGENTS_DEFAULT = [1, 8, 64, 256]     # bench env's agents per measurement


def cmd_bench(args: argparse.Namespace) -> int:
    from dedafp.benchmarks import env_flows as bench

    _threads(args)
    args.out = args.out or ("results/compare" if args.what == "compare" else "results/bench")
    if args.what == "env":
        repeats = 5 if args.repeats is None else args.repeats
        bench.bench_env(args.env, args.agents, args.steps, repeats, Path(args.out), print_fn=print)
        return 0
    if args.what == "flows":
        bench.bench_flows(5 if args.repeats is None else args.repeats, Path(args.out), print_fn=print)
        return 0
    if args.what == "sampling":
        from dedafp.benchmarks.sampling import SamplingBenchConfig, bench_sampling
        config = SamplingBenchConfig(samples=args.samples, repeats=3 if args.repeats is None else args.repeats,
                                     device=args.device)
        bench_sampling(config, Path(args.out), print_fn=print)
        return 0
    if args.what == "dimensions":
        from dedafp.benchmarks.dimensions import DimensionSweepConfig, bench_dimensions
        bench_dimensions(DimensionSweepConfig(device=args.device), Path(args.out), print_fn=print)
        return 0
    if args.what == "refresh":
        from dedafp.benchmarks.refresh import RefreshBenchConfig, bench_refresh
        agents = {} if args.agents == AGENTS_DEFAULT else {"kde_agents": tuple(args.agents)}
        config = RefreshBenchConfig(run=Path(args.run or "runs/four_rooms_omd"), iteration=args.iteration,
                                    repeats=3 if args.repeats is None else args.repeats, **agents)
        bench_refresh(config, Path(args.out), print_fn=print)
        return 0
    if args.what == "scaling":
        from dedafp.benchmarks.scaling import ScalingBenchConfig, bench_scaling
        config = ScalingBenchConfig(iterations=12 if args.iterations is None else args.iterations,
                                    best_response=args.best_response, device=args.device)
        bench_scaling(config, Path(args.out), print_fn=print)
        return 0
    if args.what == "compare":
        from dedafp.benchmarks.compare import CompareConfig, bench_compare
        config = CompareConfig(tuple(args.envs), args.seeds, args.iterations, args.best_response,
                               tuple(args.set or []), args.device, Path(args.runs), Path(args.out))
        result = bench_compare(config, args.backend, args.workers, args.threads or 1, not args.table_only, print)
        print(result.paths[0].read_text().rstrip() + "\nwritten: " + ", ".join(map(str, result.paths)))
        failed = [o for o in result.outcomes if o.status == "failed"]
        if failed:
            print(f"error: {len(failed)} run(s) failed (see above); re-run the same command to retry them",
                  file=sys.stderr)
            return 1
        return 0
    print(f"error: unknown benchmark {args.what!r}", file=sys.stderr)
    return 2


def cmd_sweep(args: argparse.Namespace) -> int:
    from dedafp.experiments.sweep import plan_sweep, run_sweep, write_summary

    _threads(args)
    assignments = list(args.set or []) + ([f"fp.iterations={args.iterations}"] if args.iterations is not None else [])
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{args.env}"
    plan = plan_sweep(args.env, args.seeds, assignments, out, args.config)
    total = len(plan.configurations) * len(plan.seeds)
    print(f"dedafp sweep {args.env}: {len(plan.configurations)} configuration(s) x {len(plan.seeds)} seed(s), "
          f"backend {args.backend} -> {out} (re-running the same command resumes it)", flush=True)
    done = []

    def show(outcome) -> None:
        done.append(outcome)
        detail = outcome.error if outcome.error else f"{outcome.seconds:.0f} s"
        print(f"[{len(done)}/{total}] {outcome.label} seed {outcome.seed}: {outcome.status} ({detail})", flush=True)

    started = time.time()
    outcomes = run_sweep(plan, args.backend, args.address, args.workers, args.threads or 1, show)
    paths = write_summary(plan)
    print(f"done in {time.time() - started:.0f} s.\n" + (out / "summary.md").read_text().rstrip())
    print("written: " + ", ".join(str(p) for p in paths))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print(f"error: {len(failed)} of {total} runs failed (see above); re-run the same command to retry them",
              file=sys.stderr)
        return 1
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from dedafp.experiments.distributed import check_address, check_backend, check_workers
    from dedafp.nplayer import study as simulate_study
    from dedafp.nplayer.simulate import parse_count, parse_counts

    _threads(args)
    backend, address = check_backend(args.backend), check_address(args.address)
    workers = tuple(check_workers(w) for w in parse_counts(args.workers, "workers"))
    out = Path(args.out) if args.out else simulate_study.DEFAULT_OUT
    if args.agents is not None and backend == "local":       # Ray shards may live on other machines
        _check_simulation_memory(args.run, max(parse_counts(args.agents, "agents")), args.device)
    if args.study == "throughput":
        agents = parse_counts(args.agents, "agents") if args.agents else simulate_study.THROUGHPUT_AGENTS
        simulate_study.throughput_study(args.run, agents, parse_count(args.repeats, "repeats"), args.device,
                                        workers if backend == "ray" else (), args.seed, args.threads or 1, out, print)
    elif args.study == "mean-field":
        agents = parse_counts(args.agents, "agents") if args.agents else simulate_study.MEAN_FIELD_AGENTS
        simulate_study.mean_field_study(args.run, agents, parse_count(args.seeds, "seeds"), out=out, print_fn=print)
    elif args.study == "density-error":
        agents = parse_count(args.agents) if args.agents else 2000
        simulate_study.density_error_study(args.run, agents, seed=args.seed, out=out, print_fn=print)
    else:
        if args.agents is None or len(workers) != 1:
            raise ValueError("give --agents N (a positive integer) and one --workers W")
        if args.out:
            _refuse_overwrite(out / "simulate.json", args.force)
        steps = None if args.steps is None else parse_count(args.steps, "steps")
        summary = simulate_study.single_run(args.run, parse_count(args.agents), steps, args.seed, args.device,
                                            not args.no_density, backend, address, workers[0])
        print("\n".join(f"{key:24s} {value}" for key, value in summary.items()))
        if args.out:
            out.mkdir(parents=True, exist_ok=True)
            write_json(summary, out / "simulate.json")
            print(f"written to {out / 'simulate.json'}")
    return 0


#: Bytes per simulated agent per state or action coordinate (states, actions, noise, next states and
#: their float64 sums, with room for the temporaries of one step); a lower bound, measured loosely.
SIMULATION_BYTES_PER_COORDINATE = 32


def _check_simulation_memory(run: str, agents: int, device: str) -> None:
    """Refuse, with the estimate, an N-player simulation whose agents cannot fit in memory."""
    from dedafp.common.memory import check_fits

    config = read_run_config(run)
    game = game_spec(config.env).make(config.game)
    coordinates = game.state_dim + game.action_dim + 4          # + time, reward, return, bin index
    check_fits(agents * coordinates * SIMULATION_BYTES_PER_COORDINATE, f"simulating --agents {agents}",
               "lower --agents (or shard it over Ray workers on several machines)", device)


def cmd_games(args: argparse.Namespace) -> int:
    from dedafp.algorithms import registered_algorithms

    for name in registered_games():
        spec = game_spec(name)
        responder = spec.defaults.get("best_response", {}).get("algorithm", BestResponseConfig().algorithm)
        extras = [f"algorithm {spec.algorithm}", f"reference {'yes' if spec.evaluator else 'no'}",
                  f"best response {responder}",
                  f"exact responder {spec.exact_responder or '-'}",
                  f"N-player {spec.coupling or '-'}"] + ([spec.gym_id] if spec.gym_id else [])
        print(f"{name:12s} {spec.description}  [{', '.join(extras)}]")
    print("algorithms: " + ", ".join(registered_algorithms()))
    return 0


def cmd_check_game(args: argparse.Namespace) -> int:
    from dedafp.envs.contract import check_game

    _threads(args)
    overrides = {}
    for assignment in args.set:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {assignment!r}")
        overrides[key.removeprefix("game.")] = yaml.safe_load(raw)
    report = check_game(args.env, overrides, agents=args.agents)
    for line in report.lines():
        print(line)
    return 0 if report.passed else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dedafp", description="Mean-field equilibria with deep RL (DEDA-FP).")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest on 2 cores)")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (anywhere on the command line)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train DEDA-FP on a game; writes a run folder")
    train.add_argument("env", nargs="?", metavar="GAME",
                       help="game: a registered name (dedafp games), path/to/game.py[:ATTR] or module:ATTR")
    train.add_argument("--iterations", type=int, help="fictitious-play iterations K (default from config)")
    train.add_argument("--seed", type=int)
    train.add_argument("--config", help="YAML file with config sections (fp, best_response, ...)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config field, e.g. best_response.total_steps=100000 (repeatable)")
    train.add_argument("--device", choices=["cpu", "cuda"])
    train.add_argument("--algorithm", help="a registered algorithm: dedafp (DEDA-FP), the paper's baselines algo1 / "
                                            "algo2 (kernel density), damped_fp, omd (online mirror descent); "
                                            "default: the game's (dedafp games lists both)")
    train.add_argument("--tensorboard", action="store_true",
                       help="also write TensorBoard scalars under RUN/tensorboard")
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
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="a best_response.* field of the --deep-rl responder, e.g. "
                               "best_response.total_steps=1000000 (repeatable)")
    evaluate.add_argument("--force", action="store_true",
                          help="replace an existing RUN/evaluation.json (or .csv with --all-iterations)")
    evaluate.set_defaults(func=cmd_evaluate)

    plot = sub.add_parser("plot", help="write a run's figures under RUN/figures")
    plot.add_argument("run")
    plot.set_defaults(func=cmd_plot)

    bench = sub.add_parser("bench", help="benchmarks (ratios measured in one run; figures under results/)")
    bench.add_argument("what", choices=["env", "flows", "sampling", "dimensions", "scaling", "compare",
                                                     "refresh"])
    bench.add_argument("--env", default="lq2d", help="env: the game")
    bench.add_argument("--agents", type=int, nargs="+", default=AGENTS_DEFAULT,
                       help="env: agents per measurement; refresh: the kernel estimate's budgets")
    bench.add_argument("--steps", type=int, default=20_000, help="env steps per measurement")
    bench.add_argument("--repeats", type=int, help="repeated measurements (default 5; sampling: 3)")
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="sampling, dimensions: device")
    bench.add_argument("--samples", type=int, default=5_000, help="sampling: agents / samples per t")
    bench.add_argument("--out", help="output folder (default results/bench; compare: results/compare)")
    bench.add_argument("--envs", nargs="+", default=["lq2d", "four_rooms"], help="compare: games")
    bench.add_argument("--seeds", default="0..2", help="compare: seeds, A..B (inclusive) or a comma list")
    bench.add_argument("--iterations", type=int, help="compare: fictitious-play iterations (default: the game's)")
    bench.add_argument("--best-response", default="exact",
                       help="compare: exact (Riccati on LQ, grid on the density games; default) or ppo")
    bench.add_argument("--set", action="append", metavar="KEY=VALUE", help="compare: a setting of every run")
    bench.add_argument("--backend", default="local", choices=["local", "ray"], help="compare: as in dedafp sweep")
    bench.add_argument("--workers", type=int, help="compare: runs at once (ray backend)")
    bench.add_argument("--runs", default="runs/compare", help="compare: folder of the run folders")
    bench.add_argument("--run", help="refresh: the trained run folder, with checkpoints (default runs/four_rooms_omd)")
    bench.add_argument("--iteration", type=int, help="refresh: the iteration k refreshed (default: the last)")
    bench.add_argument("--table-only", action="store_true",
                       help="compare: train nothing; rebuild the table from the runs that exist")
    bench.set_defaults(func=cmd_bench)

    sweep = sub.add_parser("sweep", help="train a grid of configurations x seeds; summary table and curves")
    sweep.add_argument("env", metavar="GAME", help="game: a registered name, path/to/game.py or module:ATTR")
    sweep.add_argument("--seeds", required=True, help="inclusive range A..B, or a comma list such as 0,3,7")
    sweep.add_argument("--set", action="append", metavar="KEY=V1,V2",
                       help="a config field and its values, swept as a cartesian product (repeatable)")
    sweep.add_argument("--iterations", type=int, help="fictitious-play iterations K (same as --set fp.iterations=K)")
    sweep.add_argument("--config", help="YAML file with config sections (fp, best_response, ...)")
    sweep.add_argument("--backend", default="local", choices=["local", "ray"],
                       help="local: one run after another in this process; ray: one Ray task per run")
    sweep.add_argument("--address", help="Ray cluster to join (HOST:PORT, ray://HOST:PORT or auto); default: "
                                         "start a local instance")
    sweep.add_argument("--workers", type=int, help="runs at once (ray backend; default: every CPU)")
    sweep.add_argument("--out", help="sweep folder (default runs/sweep-<env>)")
    sweep.set_defaults(func=cmd_sweep)

    simulate = sub.add_parser("simulate", help="N-player rollouts of a run's average policy (agents feel each other)")
    simulate.add_argument("run", help="run folder (load_run)")
    simulate.add_argument("--agents", help="N agents, e.g. 1000 or 1e6 (--study: a comma list)")
    simulate.add_argument("--steps", help="decision steps (default: the game's horizon)")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    simulate.add_argument("--no-density", action="store_true",
                          help="states only: no density term and no rewards (LQ keeps the mean in its dynamics)")
    simulate.add_argument("--backend", default="local", help="local (in-process, default) or ray")
    simulate.add_argument("--address", help="Ray cluster (auto, HOST:PORT, ray://HOST:PORT); default: a local one")
    simulate.add_argument("--workers", default="1", help="shards, one Ray worker each (--study throughput: a list)")
    simulate.add_argument("--study", choices=["throughput", "mean-field", "density-error"],
                          help="throughput for each N, the mean field's accuracy against N, or the binned density "
                               "term against the exact kernel sum (results/simulate)")
    simulate.add_argument("--seeds", default="5", help="mean-field study: seeds per N")
    simulate.add_argument("--repeats", default="2", help="throughput study: measurements per row")
    simulate.add_argument("--out", help="folder for simulate.json (studies: default results/simulate)")
    simulate.add_argument("--force", action="store_true", help="replace an existing OUT/simulate.json")
    simulate.set_defaults(func=cmd_simulate)

    games = sub.add_parser("games", help="list the registered games and algorithms")
    games.set_defaults(func=cmd_games)

    check = sub.add_parser("check-game", help="run the game contract on a game; one line per violation")
    check.add_argument("env", metavar="GAME", help="a registered name, path/to/game.py[:ATTR] or module:ATTR")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a game parameter")
    check.add_argument("--agents", type=int, default=64, help="agents of the batched checks")
    check.set_defaults(func=cmd_check_game)

    from dedafp.lab.cli import add_parser as add_lab_parser
    from dedafp.mfgan.cli import add_parsers as add_mfgan_parsers
    from dedafp.reference.cli import add_parsers as add_reference_parsers
    add_reference_parsers(sub)
    add_mfgan_parsers(sub)
    add_lab_parser(sub)
    return parser


def _show_warning(message: Warning | str, *_args: object, **_kwargs: object) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command; every error ends in one ``error: ...`` line on stderr (``--debug``: the traceback).

    Exit codes: 0 done, 1 a check failed or an unexpected error, 2 a refused input, 130 interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = (["--debug"] if debug else []) + [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            if not debug:   # a warning is one line too (with --debug: where it came from)
                warnings.showwarning = _show_warning
            return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, yaml.YAMLError) as error:
        # OSError: FileNotFoundError, FileExistsError, PermissionError, a full disk, ... name the file.
        if debug:
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:   # our bug, not the user's: one line and how to see more
        if debug:
            raise
        print(f"error: unexpected {type(error).__name__}: {_one_line(error)} (run again with --debug for the "
              f"traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
