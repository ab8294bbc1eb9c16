"""``python -m mlsup`` is the ``mlsup`` command."""

from mlsup.cli import main

raise SystemExit(main())
