"""Run configuration: one frozen dataclass per component, composed into :class:`RunConfig`.

A run is configured by a game (a registered name or a reference to user code: ``my_game.py``,
``package.module:SPEC``), an optional YAML file and ``--set section.field=value`` overrides (values
parsed as YAML: ``--set game.x_target=[1,0]``). Unknown keys fail with the list of allowed ones;
every component validates its own fields on construction.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from dedafp.agents.average_policy import AveragePolicyConfig, resolve_fixed_std
from dedafp.agents.best_response import BestResponseConfig
from dedafp.agents.mirror_descent import MirrorDescentConfig
from dedafp.common.validation import Rule, validated
from dedafp.envs.registry import game_spec, is_reference, registered_games
from dedafp.population.flow import FlowConfig
from dedafp.population.particles import BANDWIDTH_RULES
from dedafp.reference.damped import DampedConfig


@dataclass(frozen=True)
@validated("fp")
class FictitiousPlayConfig:
    """Sizes of the fictitious-play loop's simulations.

    Attributes:
        iterations: fictitious-play iterations K (>= 1).
        br_agents: agents simulated with each best response for the behaviour-cloning buffer (>= 1).
        population_agents: agents simulated with the average policy to fit the flow (>= 16).
        eval_agents: agents of the Monte Carlo exploitability evaluation (>= 2; 0 disables it).
        initial_flow_steps: flow steps of the first fit (from scratch; later fits warm-start).
        kde_bandwidth: kernel bandwidth of the baselines' density estimate: ``"scott"``,
            ``"silverman"`` or a positive factor of the particles' standard deviation.
        evaluate_every: evaluate against the reference every this many iterations and at the last
            one (>= 1); the grid reference of the density games costs minutes per evaluation.
        measure_best_response: measure every best response against the frozen population it answers,
            on the agents and noise of its own rollout: ``br/gain`` (its return minus the previous
            average policy's: oracle-free, a lower bound of that average's exploitability up to the
            best response's own shortfall) and, where the game's spec declares an exact responder,
            ``br/shortfall`` (the exact best response's return minus the learned one's: how far deep RL
            is from a best response; 0 where the run uses the exact responder). Online mirror descent
            measures the greedy policy of its mirror step's Q-function the same way.
        reward_density_nodes: on a bounded domain (box or periodic) of at most 3 dimensions, the frozen
            population every best response answers is a table of its log-density with about this many
            nodes per t, interpolated (:func:`~dedafp.population.grid_cache.reward_table`, built once per
            iteration): the responders, the kept-best comparison and ``br/*`` read it instead of the
            model (>= 0; 0: the model itself, as everywhere on euclidean domains). The reference
            evaluators still read the model.
    """

    RULES: ClassVar[dict[str, Rule]] = {
        "iterations": ">= 1", "br_agents": ">= 1", "population_agents": ">= 16", "eval_agents": ">= 0",
        "initial_flow_steps": ">= 0", "kde_bandwidth": (*BANDWIDTH_RULES, "> 0"), "evaluate_every": ">= 1",
        "reward_density_nodes": ">= 0"}

    iterations: int = 10
    br_agents: int = 2_000
    population_agents: int = 20_000
    eval_agents: int = 50_000
    initial_flow_steps: int = 800
    kde_bandwidth: str | float = "scott"
    evaluate_every: int = 1
    measure_best_response: bool = True
    reward_density_nodes: int = 8192

    def __post_init__(self) -> None:
        """fp.eval_agents is 0 or at least 2."""
        if self.eval_agents == 1:
            raise ValueError("fp.eval_agents must be 0 (no evaluation) or >= 2, got 1")


@dataclass(frozen=True)
@validated("")
class RunConfig:
    """Everything a training run needs. ``game`` holds overrides of the game's parameters.

    ``env`` is a registered game name or a game reference (``path/to/game.py``, ``module:SPEC``).
    ``algorithm`` names a registered algorithm (:mod:`dedafp.algorithms`): ``dedafp`` or one of the
    paper's baselines, which share every other part: ``algo1`` keeps every best response (each
    simulated agent follows one for its whole episode, no behavioural cloning) and ``algo2`` keeps
    the behaviour-cloned average; both estimate the density with a Gaussian kernel over the
    simulated agents instead of the flow.
    """

    RULES: ClassVar[dict[str, Rule]] = {"seed": ">= 0"}

    env: str = "lq2d"
    algorithm: str = "dedafp"
    seed: int = 0
    device: str = "cpu"
    game: dict[str, Any] = field(default_factory=dict)
    fp: FictitiousPlayConfig = field(default_factory=FictitiousPlayConfig)
    best_response: BestResponseConfig = field(default_factory=BestResponseConfig)
    average_policy: AveragePolicyConfig = field(default_factory=AveragePolicyConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    damped: DampedConfig = field(default_factory=DampedConfig)
    omd: MirrorDescentConfig = field(default_factory=MirrorDescentConfig)

    def __post_init__(self) -> None:
        """env names a game, algorithm a registered algorithm, device a torch device."""
        if not (self.env in registered_games() or is_reference(self.env)):
            raise ValueError(f"env must be a registered game ({', '.join(registered_games())}) or a game file "
                             f"(path/to/game.py) or module:attribute, got {self.env!r}")
        from dedafp.algorithms import registered_algorithms  # here: the algorithms import this module
        if self.algorithm not in registered_algorithms():
            raise ValueError(f"algorithm must be one of {registered_algorithms()}, got {self.algorithm!r}")
        if not (self.device in ("cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-serialisable)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a nested dict, rejecting unknown keys with the allowed ones."""
        if not isinstance(data, dict):
            raise ValueError(f"a run config must be a mapping of sections (env, fp, flow, ...), "
                             f"got {type(data).__name__}")
        data = dict(data)
        kwargs: dict[str, Any] = {}
        sections = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if key not in sections:
                raise ValueError(f"unknown config key {key!r}; allowed: {sorted(sections)}")
            section_type = _SECTION_TYPES.get(key)
            if section_type is not None:
                if not isinstance(value, dict):
                    raise ValueError(f"config section {key!r} must be a mapping, got {value!r}")
                allowed = {f.name for f in dataclasses.fields(section_type)}
                unknown = set(value) - allowed
                if unknown:
                    raise ValueError(f"unknown key(s) {sorted(unknown)} in section {key!r}; allowed: {sorted(allowed)}")
                kwargs[key] = section_type(**{k: _coerce(section_type, k, v) for k, v in value.items()})
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def with_overrides(self, assignments: list[str]) -> RunConfig:
        """Apply ``key=value`` / ``section.key=value`` assignments (values parsed as YAML)."""
        data = self.to_dict()
        for assignment in assignments:
            if "=" not in assignment:
                raise ValueError(f"--set expects key=value, got {assignment!r}")
            key, raw = assignment.split("=", 1)
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError as error:
                raise ValueError(f"--set {key}: cannot parse {raw!r} as a value ({_first_line(error)})") from None
            parts = key.strip().split(".")
            if len(parts) == 1:
                data[parts[0]] = value
            elif len(parts) == 2:
                section = parts[0]
                if section not in data or not isinstance(data[section], dict):
                    raise ValueError(f"unknown config section {section!r} in {key!r}; allowed: "
                                     f"{sorted(k for k, v in data.items() if isinstance(v, dict))}")
                data[section] = {**data[section], parts[1]: value}
            else:
                raise ValueError(f"config keys have at most one dot (section.field), got {key!r}")
        return RunConfig.from_dict(data)


_SECTION_TYPES = {"fp": FictitiousPlayConfig, "best_response": BestResponseConfig,
                  "average_policy": AveragePolicyConfig, "flow": FlowConfig, "damped": DampedConfig,
                  "omd": MirrorDescentConfig}


#: A number written the way YAML 1.1 reads as a string (``1e-3``, ``2E5``): PyYAML needs ``1.0e-3``.
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _coerce(section_type: type, name: str, value: Any) -> Any:
    """YAML gives ints for ``1e5``-free integers, strings for ``1e-3`` and lists for tuples: map to the
    field's type (anything else is left for the field's validation to judge)."""
    if isinstance(value, list):
        return tuple(value)
    hint = {f.name: f.type for f in dataclasses.fields(section_type)}[name]
    if isinstance(value, str) and _NUMBER.match(value.strip()) and ("int" in str(hint) or "float" in str(hint)):
        value = float(value)
    if isinstance(value, float) and "int" in str(hint) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and str(hint) == "float":
        return float(value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _first_line(error: Exception) -> str:
    return " ".join(str(error).split())


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The mapping a YAML file holds; ``ValueError`` naming the file if it is missing, unreadable,
    not YAML, empty or not a mapping."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{what} {path} is a directory, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {what} {path}: {_first_line(error)}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{what} {path} is not valid YAML: {_first_line(error)}") from None
    if not isinstance(loaded, dict):
        kind = "empty" if loaded is None else f"a {type(loaded).__name__}"
        raise ValueError(f"{what} {path} must hold a mapping of config sections (env, fp, ...), it is {kind}")
    return loaded


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The :class:`RunConfig` of a run folder's ``config.yaml``; errors name the file."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    data = read_yaml_mapping(path, "run config")
    try:
        return RunConfig.from_dict(data)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from None


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two :meth:`RunConfig.to_dict` trees,
    with both values: ``["game.sigma: 0.9 != 0.5"]``."""
    out = []
    for key in sorted(set(a) | set(b), key=str):
        name = f"{prefix}{key}"
        left, right = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(left, dict) and isinstance(right, dict) and prefix == "":
            out += config_differences(left, right, f"{name}.")
        elif left != right:
            out.append(f"{name}: {left!r} != {right!r}")
    return out


def load_config(env: str, path: str | Path | None = None, overrides: list[str] | None = None,
                **fields: Any) -> RunConfig:
    """The run config of game ``env``: the game's defaults (its sections and its algorithm), a YAML file,
    ``--set`` overrides, then ``fields``; an ``"auto"`` ``average_policy.fixed_std`` is then resolved for the
    run's best responder (:func:`~dedafp.agents.average_policy.resolve_fixed_std`), so a run folder records
    the spread it cloned with.

    A file naming another ``env`` than ``env`` is refused (``ValueError``), as are values that fail
    validation (the message names the file).
    """
    spec = game_spec(env)
    data: dict[str, Any] = {"env": env, "algorithm": spec.algorithm, **{k: dict(v) for k, v in spec.defaults.items()}}
    if path is not None:
        loaded = read_yaml_mapping(path)
        if "env" in loaded and loaded["env"] != env:
            raise ValueError(f"config file {path} is for env {loaded['env']!r}, but the command names {env!r}; "
                             f"train {loaded['env']} or remove env from the file")
        for key, value in loaded.items():
            data[key] = {**data[key], **value} if isinstance(data.get(key), dict) and isinstance(value, dict) \
                else value
        try:
            base = RunConfig.from_dict(data)
        except (ValueError, TypeError) as error:
            raise ValueError(f"config file {path}: {error}") from None
    else:
        base = RunConfig.from_dict(data)
    config = base.with_overrides(overrides or [])
    config = dataclasses.replace(config, **fields) if fields else config
    return dataclasses.replace(config, average_policy=resolve_fixed_std(config.average_policy,
                                                                        config.best_response.algorithm))
