"""``python -m riera`` is the ``riera`` command."""

from riera.cli import main

main()
