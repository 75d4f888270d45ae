"""``python -m omnistitch``: the same as the ``omnistitch`` command."""

from omnistitch.cli import main

main()
