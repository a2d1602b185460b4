"""``python -m nexus_cli``: the same as the ``nexus`` script, for when it is not on PATH."""

from .main import main

raise SystemExit(main())
