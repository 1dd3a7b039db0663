"""Training: the paper's recipe and its ablations, seed sweeps and their comparison.

:func:`edgeleuk.training.loop.train` runs one recipe (``edgeleuk train``),
:func:`edgeleuk.training.sweep.run_sweep` one run per seed and the paper's
Table 2 (``edgeleuk sweep``), :func:`edgeleuk.training.compare.compare_sweeps`
Figure 4 and Mann-Whitney U tests (``edgeleuk compare``). Recipes are TOML files
shipped in ``edgeleuk/configs/recipes`` (:mod:`edgeleuk.training.recipe`).

This package's ``__init__`` imports nothing, so ``edgeleuk compare`` (which reads
run folders only) does not load torch; import from the submodules.
"""
