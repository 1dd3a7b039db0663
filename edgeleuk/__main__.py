"""``python -m edgeleuk``: the same command line as the ``edgeleuk`` script."""

from edgeleuk.cli import main

main()
