"""Command line of the PDE-based solver family: ``dedafp mfgan`` and ``dedafp gan-sde``.

    dedafp mfgan [--problem viscous|first-order] [--dim D] [--mode mfgan|joint|both] [--seeds S ...]
                 [--iterations N] [--set key=value ...] [--device cpu|cuda] [--out DIR]
    dedafp gan-sde [--lrs η ...] [--chains C] [--batch B] [--penalty λ] [--device cpu|cuda] [--out DIR]

Wired into ``dedafp`` through :func:`add_parsers`; standalone: ``python -m dedafp.mfgan.cli ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from dedafp.mfgan.networks import NetworkConfig
from dedafp.mfgan.problems import PROBLEMS
from dedafp.mfgan.solver import MODES, MFGANConfig


def _threads(args: argparse.Namespace) -> None:
    # One thread was fastest on the 2-core machines; --threads (top-level parser) overrides.
    torch.set_num_threads(getattr(args, "threads", 1) or 1)


def build_config(args: argparse.Namespace) -> MFGANConfig:
    """The shared config of an ``mfgan`` study from its flags and ``--set key=value`` overrides."""
    fields: dict[str, Any] = {"problem": args.problem, "dim": args.dim, "iterations": args.iterations,
                              "device": args.device}
    network: dict[str, Any] = {}
    allowed = {f.name for f in dataclasses.fields(MFGANConfig)} - {"mode", "seed", "network"}
    allowed_network = {f.name for f in dataclasses.fields(NetworkConfig)}
    for assignment in args.set or []:
        if "=" not in assignment:
            raise ValueError(f"--set expects key=value, got {assignment!r}")
        key, raw = assignment.split("=", 1)
        key, value = key.strip(), yaml.safe_load(raw)
        if key.startswith("network."):
            name = key.split(".", 1)[1]
            if name not in allowed_network:
                raise ValueError(f"unknown network field {name!r}; allowed: {sorted(allowed_network)}")
            network[name] = value
        elif key in allowed:
            fields[key] = value
        else:
            raise ValueError(f"unknown mfgan config field {key!r}; allowed: {sorted(allowed)} and "
                             f"network.<{'|'.join(sorted(allowed_network))}> (mode and seed have their own flags)")
    return MFGANConfig(**fields, network=NetworkConfig(**network))


def _diverged(error: FloatingPointError) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 1


def cmd_mfgan(args: argparse.Namespace) -> int:
    """Train MFGAN and/or the joint baseline over several seeds; print the table of median errors."""
    try:
        return _mfgan(args)
    except FloatingPointError as error:
        return _diverged(error)


def cmd_gan_sde(args: argparse.Namespace) -> int:
    """Stationary covariance of GAN SGD against the SDE's prediction, over learning rates."""
    try:
        return _gan_sde(args)
    except FloatingPointError as error:
        return _diverged(error)


def _mfgan(args: argparse.Namespace) -> int:
    from dedafp.mfgan.study import run_mfgan_study

    _threads(args)
    base = build_config(args)
    modes = list(MODES) if args.mode == "both" else [args.mode]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"mfgan-{base.problem}-d{base.dim}-{stamp}"
    density_w, value_w = base.resolved_cross_weights()
    print(f"mfgan {base.problem}, d = {base.dim}: modes {', '.join(modes)}, seeds {args.seeds}, "
          f"{base.iterations} iterations, batch {base.batch}, fp form {base.fp_form}, device {base.device} -> {out}")
    if "mfgan" in modes:
        print(f"  mfgan cross-coupling: density player + {density_w:g} x HJB loss, "
              f"value player + {value_w:g} x FP loss")
    print(f"  {'mode':>6} {'seed':>4} {'iter':>6} {'err_m':>9} {'err_u':>9} {'err_hbar':>9} {'loss_hjb':>9} "
          f"{'loss_fp':>9} {'s':>6}")
    every = max(1, base.iterations // 10)

    def progress(mode: str, seed: int, row: dict[str, float]) -> None:
        it = int(row["iteration"])
        if it % every == 0 or it == base.iterations:
            print(f"  {mode:>6} {seed:>4} {it:>6} {row['err_m']:>9.2e} {row['err_u']:>9.2e} "
                  f"{row['err_hbar']:>9.2e} {row['loss_hjb']:>9.2e} {row['loss_fp']:>9.2e} {row['seconds']:>6.0f}",
                  flush=True)

    summary = run_mfgan_study(base, modes, args.seeds, out, progress)
    u_kind = "abs" if base.make_problem().u_is_zero else "rel"
    print(f"\nmedian over {len(args.seeds)} seed(s), final iterate (exact H̄ = {summary['exact_hbar']:.6f}):")
    print(f"  {'mode':>6} {'rel L2 m':>10} {u_kind + ' L2 u':>10} {'|H̄ err|':>10} {'seconds':>8} {'stalled':>8}")
    for mode, row in summary["median"].items():
        print(f"  {mode:>6} {row['err_m']:>10.2e} {row['err_u']:>10.2e} {row['err_hbar']:>10.2e} "
              f"{row['seconds']:>8.0f} {row['stalled_runs']:>8d}")
    for run in summary["runs"]:
        if run["stalled"]:
            print(f"warning: {run['mode']} seed {run['seed']} stalled: the density player lost its signal "
                  f"(FP loss {run['loss_fp']:.1e} vs HJB loss {run['loss_hjb']:.1e}); see docs/mfgan.md")
    print(f"written: {out}/summary.json, {out}/history_*.csv, " + ", ".join(summary["figures"]))
    return 0


def _gan_sde(args: argparse.Namespace) -> int:
    from dedafp.mfgan.gan_sde import LinearGANConfig
    from dedafp.mfgan.study import run_gan_sde_study

    _threads(args)
    config = LinearGANConfig(penalty=args.penalty, batch=args.batch)
    out = Path(args.out)
    print(f"gan-sde: linear GAN in d = {config.dim}, batch {config.batch}, penalty {config.penalty}, "
          f"{args.chains} chains, {args.mixing_times:g} mixing times per learning rate -> {out}")
    summary = run_gan_sde_study(config, args.lrs, out, chains=args.chains, mixing_times=args.mixing_times,
                                seed=args.seed, device=args.device)
    print(f"  {'lr':>8} {'gap exact':>10} {'κη':>10} {'gap sim':>10} {'± s.e.':>9} {'sim-exact':>10} {'steps':>7}")
    for r in summary["rows"]:
        print(f"  {r['lr']:>8.4g} {r['gap_exact']:>10.3e} {r['kappa_eta']:>10.3e} {r['gap_empirical']:>10.3e} "
              f"{r['sampling_error']:>9.1e} {r['sim_vs_exact']:>10.1e} {int(r['steps']):>7d}")
    print(f"log-log slope of the gap: exact {summary['slope_exact']:.3f} (all rates), "
          f"{summary['slope_exact_smallest_rates']:.3f} (three smallest), simulated {summary['slope_simulated']:.3f} "
          f"(all rates); O(η) predicts 1 as η -> 0, gap ~ κη with κ = {summary['kappa']:.4f}")
    print(f"written: {out}/gan_sde.json, {out}/gan_sde.csv, {summary['figure']}")
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``mfgan`` and ``gan-sde`` subcommands to an argparse ``subparsers`` object."""
    mfgan = subparsers.add_parser("mfgan", help="ergodic MFG on the torus solved as a GAN, against exact solutions")
    mfgan.add_argument("--problem", default="viscous", choices=sorted(PROBLEMS))
    mfgan.add_argument("--dim", type=int, default=1, help="space dimension d (default 1)")
    mfgan.add_argument("--mode", default="both", choices=[*MODES, "both"],
                       help="mfgan (alternating), joint (deep Galerkin baseline) or both (default)")
    mfgan.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    mfgan.add_argument("--iterations", type=int, default=5000)
    mfgan.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config field (YAML value), e.g. batch=512, density_hjb_weight=0, "
                            "fp_form=density, network.width=32 (repeatable)")
    mfgan.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    mfgan.add_argument("--out", help="output folder (default runs/mfgan-<problem>-d<d>-<timestamp>)")
    mfgan.set_defaults(func=cmd_mfgan)

    sde = subparsers.add_parser("gan-sde", help="GAN training as an SDE: SGD vs SDE stationary covariance")
    sde.add_argument("--lrs", type=float, nargs="+", default=[0.4, 0.2, 0.1, 0.05, 0.025])
    sde.add_argument("--chains", type=int, default=4096, help="parallel SGD chains per learning rate")
    sde.add_argument("--mixing-times", type=float, default=40.0, help="post-burn-in length in mixing times")
    sde.add_argument("--batch", type=int, default=4, help="minibatch size B")
    sde.add_argument("--penalty", type=float, default=1.0, help="critic's quadratic penalty λ")
    sde.add_argument("--seed", type=int, default=0)
    sde.add_argument("--device", default="cpu")
    sde.add_argument("--out", default="results/mfgan/gan_sde")
    sde.set_defaults(func=cmd_gan_sde)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m dedafp.mfgan.cli mfgan|gan-sde ...``."""
    parser = argparse.ArgumentParser(prog="python -m dedafp.mfgan.cli",
                                     description="MFGAN solver family (dedafp mfgan / dedafp gan-sde).")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
