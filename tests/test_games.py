"""The game registry and the game contract: built-ins, a user's game file, and broken games reported clearly."""

import textwrap
from pathlib import Path

import gymnasium
import pytest
import torch

import dedafp
from dedafp.cli import main
from dedafp.envs.base import Domain
from dedafp.envs.contract import check_game
from dedafp.envs.registry import GameSpec, game_spec, make_game, register_game, registered_games, resolve_game

BUILT_IN = ("lq1d", "lq2d", "four_rooms", "beach_bar")

# A complete user game: a 1-D crowd on [0, 1] that wants to be near 0.7 and avoids crowds.
USER_GAME = '''
import torch
from dedafp import GameSpec, MeanFieldGame
from dedafp.envs.base import Domain


class Drift(MeanFieldGame):
    name = "user_drift"
    state_dim = 1
    action_dim = 1
    horizon = 5
    action_bound = 1.0
    domain = Domain.box((0.0,), (1.0,))

    def __init__(self, target=0.7, sigma=0.1):
        self.target, self.sigma, self.dt = float(target), float(sigma), 0.1

    def initial_states(self, n, generator=None, device="cpu"):
        return torch.rand(n, 1, generator=generator, device=device)

    def bind(self, population):
        return population

    def step(self, t, x, a, field, noise):
        return (x + a * self.dt + self.sigma * self.dt ** 0.5 * noise).clamp(0.0, 1.0)

    def reward(self, t, x, a, field):
        return -((x - self.target) ** 2).sum(-1) * self.dt - 0.5 * (a ** 2).sum(-1) * self.dt

    def terminal_reward(self, x, field):
        return -((x - self.target) ** 2).sum(-1)

    def normalise_state(self, x):
        return 2 * x - 1


SPEC = GameSpec("user_drift", Drift, defaults={"fp": {"iterations": 1}}, description="a user's game")
'''


@pytest.fixture()
def user_game(tmp_path):
    path = tmp_path / "user_game.py"
    path.write_text(textwrap.dedent(USER_GAME))
    return path


def test_import_dedafp_registers_the_games_and_their_gymnasium_ids():
    assert set(BUILT_IN) <= set(registered_games())
    for env_id in ("dedafp/LQ-v0", "dedafp/FourRooms-v0", "dedafp/BeachBar-v0"):
        assert env_id in gymnasium.registry
    env = gymnasium.make("dedafp/LQ-v0", preset="lq1d")
    assert env.observation_space.shape == (2,)
    assert dedafp.make_game("four_rooms").domain == Domain.box((0.0, 0.0), (1.0, 1.0))


def test_specs_carry_what_the_tools_need():
    assert game_spec("lq2d").exact_responder == "riccati" and game_spec("lq2d").coupling == "mean"
    assert game_spec("four_rooms").grid["cells"] == 44 and game_spec("four_rooms").exact_responder == "grid"
    assert game_spec("four_rooms").defaults["fp"]["iterations"] == 20
    with pytest.raises(ValueError, match="unknown game 'nope'"):
        make_game("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_game(GameSpec("lq1d", lambda: None))


def test_a_user_game_file_resolves_and_is_recorded_with_its_hash(user_game):
    spec, source = resolve_game(str(user_game))
    assert spec.name == "user_drift" and source.path == str(user_game.resolve()) and len(source.sha256) == 64
    game = make_game(str(user_game), {"target": 0.2})
    assert game.target == 0.2
    # The registry knows it by name now (tools holding only the game find its spec).
    assert game_spec("user_drift") is spec
    with pytest.raises(ValueError, match="does not exist"):
        resolve_game(str(user_game.parent / "missing.py"))


def test_the_lq_games_default_to_pathwise_best_responses_and_reproduce_the_committed_run(capsys):
    from dedafp.config import config_differences, load_config, read_run_config
    lq_games = [name for name in registered_games() if game_spec(name).factory.__module__ == "dedafp.envs.lq"]
    assert {"lq1d", "lq2d"} <= set(lq_games)
    for name in lq_games:
        assert load_config(name).best_response.algorithm == "pathwise", name
    # `dedafp train lq2d` is the configuration of results/lq2d_pathwise/ field for field.
    committed = read_run_config(Path(__file__).parent.parent / "results" / "lq2d_pathwise")
    assert config_differences(committed.to_dict(), load_config("lq2d").to_dict()) == []
    # ... `dedafp train beach_bar` that of results/beach_bar/ (online mirror descent, the game's algorithm) ...
    committed = read_run_config(Path(__file__).parent.parent / "results" / "beach_bar")
    assert config_differences(committed.to_dict(), load_config("beach_bar").to_dict()) == []
    assert load_config("beach_bar").algorithm == "omd"
    assert {load_config(name).algorithm for name in ("lq1d", "lq2d")} == {"dedafp"}
    # ... `dedafp train four_rooms` that of results/four_rooms_omd/ (online mirror descent too) ...
    committed = read_run_config(Path(__file__).parent.parent / "results" / "four_rooms_omd")
    assert config_differences(committed.to_dict(), load_config("four_rooms").to_dict()) == []
    assert load_config("four_rooms").algorithm == "omd"
    # ... and `--algorithm dedafp` that of results/beach_bar_dedafp/ (the mean-only clone, fixed_std 0.02).
    committed = read_run_config(Path(__file__).parent.parent / "results" / "beach_bar_dedafp")
    dedafp = load_config("beach_bar", algorithm="dedafp")
    assert config_differences(committed.to_dict(), dedafp.to_dict()) == []
    assert dedafp.average_policy.fixed_std == 0.02
    assert load_config("four_rooms").best_response.algorithm == "backward"  # DEDA-FP's responder there
    assert main(["games"]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "best response pathwise" in listed["lq2d"] and "best response backward" in listed["four_rooms"]


@pytest.mark.parametrize("game", BUILT_IN)
def test_check_game_passes_on_every_shipped_game(game):
    report = check_game(game, agents=32)
    assert report.passed, report.failures


BROKEN = {
    "wrong shape": ("return (x + a * self.dt + self.sigma * self.dt ** 0.5 * noise).clamp(0.0, 1.0)",
                    "return torch.cat([x, x], 1)", "step at t=0 has shape"),
    "NaN reward": ("return -((x - self.target) ** 2).sum(-1) * self.dt - 0.5 * (a ** 2).sum(-1) * self.dt",
                   "return torch.full((x.shape[0],), float('nan'))", "reward at t=0 has 64 non-finite"),
    "leaves the domain": ("return (x + a * self.dt + self.sigma * self.dt ** 0.5 * noise).clamp(0.0, 1.0)",
                          "return x + 2.0", "left the domain at t=1"),
    "random without noise": ("return (x + a * self.dt + self.sigma * self.dt ** 0.5 * noise).clamp(0.0, 1.0)",
                             "return (x + 0.01 * torch.rand_like(x)).clamp(0.0, 1.0)", "not deterministic"),
}


@pytest.mark.parametrize("fault", sorted(BROKEN))
def test_check_game_reports_a_broken_game_in_one_line(tmp_path, capsys, fault):
    old, new, message = BROKEN[fault]
    source = textwrap.dedent(USER_GAME).replace(old, new).replace('"user_drift"', f'"broken_{len(fault)}"')
    assert new in source
    path = tmp_path / "broken.py"
    path.write_text(source)
    assert main(["check-game", str(path)]) == 1
    out = capsys.readouterr().out
    failing = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert failing and message in failing[0], out
    assert "Traceback" not in out


def test_check_game_passes_on_the_user_game(user_game, capsys):
    assert main(["check-game", str(user_game)]) == 0
    assert "0 failed" in capsys.readouterr().out


def test_a_user_game_trains_from_the_cli_and_a_changed_file_is_refused(user_game, tmp_path, capsys):
    out = tmp_path / "run"
    tiny = ["fp.br_agents=100", "fp.population_agents=500", "fp.initial_flow_steps=20", "flow.steps=10",
            "flow.hidden=8", "flow.transforms=1", "flow.mean_samples=256", "flow.low=[0.0]", "flow.high=[1.0]",
            "average_policy.steps=20", "average_policy.hidden=8", "best_response.total_steps=640",
            "best_response.n_steps=32", "best_response.batch_size=160", "best_response.num_envs=20",
            "best_response.n_epochs=1", "best_response.hidden=8"]
    args = ["train", str(user_game), "--out", str(out)]
    for item in tiny:
        args += ["--set", item]
    assert main(args) == 0
    assert (out / "game_source.json").exists()
    run = dedafp.load_run(out)
    assert run.game.name == "user_drift" and torch.isfinite(run.population.log_prob(torch.rand(5, 1), 2)).all()
    user_game.write_text(user_game.read_text() + "\n# edited\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--iterations", "2"]) == 2
    assert "changed since the run was trained" in capsys.readouterr().err


RESULTS = sorted(p.parent for p in (Path(__file__).parent.parent / "results").glob("*/config.yaml"))


@pytest.mark.parametrize("folder", RESULTS, ids=[p.name for p in RESULTS])
def test_every_committed_result_still_loads(folder):
    run = dedafp.load_run(folder)
    x = run.game.initial_states(4, torch.Generator().manual_seed(0))
    mean, std = run.average_policy.distribution(0, x)
    assert mean.shape == (4, run.game.action_dim) and torch.isfinite(mean).all() and (std >= 0).all()
    assert torch.isfinite(run.population.log_prob(x, 0)).all()


def test_games_and_policy_types_import_without_the_learners():
    import subprocess
    import sys
    code = ("import sys, dedafp, dedafp.agents.policy, dedafp.envs, gymnasium; "
            "assert 'dedafp/FourRooms-v0' in gymnasium.registry; "
            "print(sorted(m for m in ('stable_baselines3', 'dedafp.algorithms') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
