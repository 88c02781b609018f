"""Evaluation of an algorithm's outputs: per-game reference evaluators and the deep-RL lower bound.

``lq`` (exact LQ reference and the error terms of the paper's theorem), ``grid`` (density games on
their reference grid), ``deep_rl`` (a fresh best response: a lower bound for any game).
"""

from dedafp.evaluation.base import Evaluator, make_evaluator

__all__ = ["Evaluator", "make_evaluator"]
