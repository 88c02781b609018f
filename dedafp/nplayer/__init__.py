"""N-player rollouts of a learned policy (agents feel each other, not a frozen mean field), to 10^6 agents.

``simulate`` (the batched N-player game, binned density of the others, Ray shards) and ``study``
(throughput, mean field against N, density error).
"""
