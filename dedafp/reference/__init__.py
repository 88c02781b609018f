"""Reference solutions that judge the learned outputs.

* :mod:`dedafp.reference.lq`: exact LQ equilibrium, fictitious play and exploitability.
* :mod:`dedafp.reference.grid`: fine-grid solver (fictitious play, online mirror descent) for the
  density games; :mod:`dedafp.reference.grid_scoring` scores learned policies and flows against it;
  :mod:`dedafp.reference.grid_store` caches equilibria under ``results/reference/``.
"""
