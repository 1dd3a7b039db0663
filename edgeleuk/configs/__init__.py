"""Training recipes (``recipes/*.toml``) and export profiles (``profiles/*.toml``) shipped with edgeleuk.

Package data, read with :mod:`importlib.resources` by :func:`edgeleuk.core.config.resolve_named`,
so ``--recipe paper`` and the default export profile work after any install, from any
folder. ``edgeleuk recipes`` / ``edgeleuk profiles`` list them; ``edgeleuk recipes NAME``
prints one to copy into an editable file.
"""
