"""Device-dependent paths on CUDA (skipped without a GPU; run by scripts/gpu-check on a lent machine)."""

import pytest
import torch

from dedafp import load_config, make_algorithm
from dedafp.envs.vec_env import BatchedMeanFieldVecEnv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY = ["fp.br_agents=200", "fp.population_agents=2000", "fp.eval_agents=2000", "fp.initial_flow_steps=40",
        "best_response.total_steps=2048", "best_response.n_steps=64", "best_response.batch_size=256",
        "best_response.n_epochs=2", "best_response.hidden=16", "average_policy.steps=40", "average_policy.hidden=16",
        "flow.steps=20", "flow.hidden=8", "flow.transforms=1", "flow.mean_samples=512"]


@pytest.mark.parametrize("responder", ["ppo", "pathwise", "backward", "riccati"])
def test_an_iteration_runs_on_cuda_and_keeps_its_tensors_there(responder):
    algorithm = make_algorithm(load_config("lq1d", overrides=[*TINY, f"best_response.algorithm={responder}"],
                                           device="cuda"))
    record = algorithm.iteration()
    assert record.metrics["fp/exploitability"] >= -1e-3
    assert algorithm.population.sample(3, 10).device.type == "cuda"
    x = torch.zeros(4, 1, device="cuda")
    assert algorithm.average_policy.distribution(3, x)[0].device.type == "cuda"


def test_the_batched_vec_env_steps_on_cuda():
    algorithm = make_algorithm(load_config("four_rooms", overrides=TINY, device="cuda"))
    algorithm.initialise()
    env = BatchedMeanFieldVecEnv(algorithm.game, algorithm.population, 64, device="cuda")
    obs = env.reset()
    for _ in range(3):
        obs, rewards, dones, infos = env.step(torch.zeros(64, 2).numpy())
    assert obs.shape == (64, 3) and torch.isfinite(torch.as_tensor(rewards)).all()
