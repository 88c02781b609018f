"""N-player rollouts of a learned policy (agents feel each other, not a frozen mean field), to 10^6 agents.

``simulate`` (the driver: :func:`~dedafp.nplayer.simulate.simulate` and its result), ``config`` (what to
simulate), ``density`` (the others' binned and exact kernel density), ``shards`` (slices of agents,
in-process or on Ray actors), ``fast_policy`` (the average policy evaluated for large rollouts) and
``study`` (throughput, mean field against N, density error).
"""
