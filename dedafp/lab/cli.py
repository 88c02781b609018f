"""Command line of the generative-model laboratory: ``dedafp lab sgm``.

    dedafp lab sgm [--sizes N ...] [--seeds S ...] [--gammas γ ...] [--steps K] [--hidden H] [--layers L]
                   [--batch B] [--lr η] [--device cpu|cuda] [--out DIR] [--overwrite]
    dedafp lab fp  [--games lq1d lq2d] [--particles N ...] [--gammas γ ...] [--seeds S ...] [--steps K]
                   [--device cpu|cuda] [--out DIR] [--overwrite]

With no options it trains a plain and an HJB-regularised (γ = 0.1) score model on 4,096 points, one
seed (about a minute on one core), prints the three metrics and where the figures are. ``lab fp`` fits
the population flow with and without the Fokker–Planck penalty on the LQ games (part 3 of issue 16).
Wired into ``dedafp`` through :func:`add_parser` and :func:`main`; standalone: ``python -m dedafp.lab.cli sgm``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from dedafp.lab.sde import VPSDE
from dedafp.lab.study import StudyConfig
from dedafp.lab.train import SGMConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``lab`` subcommand (with its ``sgm`` sub-subcommand) to an argparse ``subparsers`` object."""
    lab = subparsers.add_parser("lab", help="mean-field-game laboratory for generative models (score models)")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True)
    defaults, sde = SGMConfig(), VPSDE()
    sgm = lab_sub.add_parser("sgm", help="plain vs HJB-regularised score-based generative model on a 2-D mixture")
    sgm.add_argument("--sizes", type=int, nargs="+", default=[4096], help="training-set sizes (default 4096)")
    sgm.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    sgm.add_argument("--gammas", type=float, nargs="+", default=[0.0, 0.1],
                     help="HJB penalty weights γ; 0 is the plain model (default 0 0.1)")
    sgm.add_argument("--steps", type=int, default=defaults.steps,
                     help=f"Adam steps per model (default {defaults.steps})")
    sgm.add_argument("--batch", type=int, default=defaults.batch_size, help="training points per step")
    sgm.add_argument("--hidden", type=int, default=defaults.hidden, help="width of the potential network")
    sgm.add_argument("--layers", type=int, default=defaults.layers, help="hidden layers of the potential network")
    sgm.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate (cosine-decayed)")
    sgm.add_argument("--beta-max", type=float, default=sde.beta_max, help="β(1) of the VP noise schedule")
    sgm.add_argument("--sample-steps", type=int, default=defaults.sample_steps, help="reverse-SDE Euler steps")
    sgm.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    sgm.add_argument("--out", help="output folder (default runs/lab-sgm-<timestamp>)")
    sgm.add_argument("--overwrite", action="store_true", help="allow writing into a folder that already has results")

    fp = lab_sub.add_parser("fp", help="Fokker-Planck-regularised population flow on lq1d/lq2d vs exact marginals")
    fp.add_argument("--games", nargs="+", default=["lq1d"], choices=["lq1d", "lq2d"], help="LQ presets")
    fp.add_argument("--particles", type=int, nargs="+", default=[200], help="simulated particles per time")
    fp.add_argument("--gammas", type=float, nargs="+", default=[0.0, 0.1], help="fp_penalty values (0 = off)")
    fp.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds")
    fp.add_argument("--steps", type=int, default=200, help="flow Adam steps per fit (default 200)")
    fp.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    fp.add_argument("--out", help="output folder (default runs/lab-fp-<timestamp>)")
    fp.add_argument("--overwrite", action="store_true", help="allow writing into a folder that already has results")
    lab.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run the ``lab`` subcommand parsed by :func:`add_parser`; returns the exit status."""
    if args.lab_command == "sgm":
        return _sgm(args)
    if args.lab_command == "fp":
        return _fp(args)
    raise ValueError(f"unknown lab command {args.lab_command!r}")


def _fp(args: argparse.Namespace) -> int:
    from dedafp.lab.fp_study import FPStudyConfig, run_fp_study
    from dedafp.population.flow import FlowConfig

    torch.set_num_threads(getattr(args, "threads", 1) or 1)
    config = FPStudyConfig(games=tuple(args.games), particles=tuple(args.particles), gammas=tuple(args.gammas),
                           seeds=tuple(args.seeds), flow=FlowConfig(steps=args.steps))
    out = Path(args.out) if args.out else Path("runs") / f"lab-fp-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out / "fp_summary.json").exists() and not args.overwrite:
        raise FileExistsError(f"{out} already holds results (fp_summary.json); pass --overwrite or another --out")
    print(f"lab fp: games {list(config.games)}, particles/time {list(config.particles)}, γ {list(config.gammas)}, "
          f"seeds {list(config.seeds)}, {args.steps} flow steps -> {out}", flush=True)
    summary = run_fp_study(config, out, args.device, progress=lambda line: print("  " + line, flush=True))
    print(f"{'game':>5} {'n/t':>5} {'γ':>6} {'W2 flow (mean over t)':>24} {'W2 empirical Gaussian':>22} "
          f"{'E[R²]':>18} {'ms/step':>8}")
    for r in summary["table"]:
        print(f"{r['game']:>5} {r['particles']:>5} {r['gamma']:>6.3g} {r['w2_flow_mean']:>14.4f} ± "
              f"{r['w2_flow_sd']:<7.4f} {r['w2_empirical_gaussian_mean']:>13.4f} ± "
              f"{r['w2_empirical_gaussian_sd']:<6.4f}"
              f" {r['fp_residual_mean']:>9.3g} ± {r['fp_residual_sd']:<6.2g} {r['ms_per_step_mean']:>8.1f}")
    print(f"written: {out}/fp_table.csv, {out}/fp_runs.csv, {out}/fp_summary.json")
    return 0


def _sgm(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dedafp.lab.study import run_sgm_study

    torch.set_num_threads(getattr(args, "threads", 1) or 1)
    model = SGMConfig(sde=VPSDE(beta_max=args.beta_max), hidden=args.hidden, layers=args.layers, steps=args.steps,
                      batch_size=args.batch, lr=args.lr, sample_steps=args.sample_steps)
    config = StudyConfig(model=model, sizes=tuple(args.sizes), seeds=tuple(args.seeds), gammas=tuple(args.gammas))
    out = Path(args.out) if args.out else Path("runs") / f"lab-sgm-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out / "summary.json").exists() and not args.overwrite:
        raise FileExistsError(f"{out} already holds results (summary.json); pass --overwrite or another --out")
    console = Console(soft_wrap=True)
    runs = len(config.sizes) * len(config.seeds) * len(config.gammas)
    console.print(f"lab sgm: {runs} model(s) (sizes {list(config.sizes)}, seeds {list(config.seeds)}, "
                  f"γ {list(config.gammas)}), {model.steps} steps, batch {model.batch_size}, "
                  f"MLP {model.layers}x{model.hidden}, device {args.device} -> {out}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("training", total=runs * model.steps)
        done = {"steps": 0}

        def progress(label: str, step: int, steps: int) -> None:
            if step % 50 == 0 or step == steps:
                bar.update(task, completed=done["steps"] + step, description=label)
            if step == steps:
                done["steps"] += steps

        summary = run_sgm_study(config, out, device=args.device, progress=progress)
    console.print(f"{'n':>6} {'γ':>7} {'score err (σ²-weighted)':>24} {'sliced W2':>18} {'E[R²]':>20} "
                  f"{'ms/step':>8}")
    for row in summary["table"]:
        console.print(f"{row['size']:>6} {row['gamma']:>7.3g} "
                      f"{row['score_error_mean']:>14.4f} ± {row['score_error_sd']:<7.4f} "
                      f"{row['sliced_w2_mean']:>9.4f} ± {row['sliced_w2_sd']:<6.4f} "
                      f"{row['residual_mean']:>10.3f} ± {row['residual_sd']:<7.3f} {row['ms_per_step_mean']:>8.2f}")
    floors = summary["floors"]
    console.print(f"sliced W2 floors: fresh vs fresh {floors['sliced_w2_fresh_vs_fresh']:.4f}, "
                  f"sampler with the exact score {floors['sliced_w2_exact_score_sampler']:.4f}")
    console.print(f"written: {out}/table.csv, {out}/runs.csv, {out}/summary.json")
    console.print("figures: " + ", ".join(summary["figures"]))
    return 0


def _standalone(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedafp.lab.cli", description="dedafp lab (standalone)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lab", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_standalone())
