"""``python -m jobstead``: the same as the ``jobstead`` command."""

from .cli import main

raise SystemExit(main())
