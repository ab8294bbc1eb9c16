"""``python -m mlsup.dashboard``: the same as ``mlsup dashboard``."""

from __future__ import annotations

import sys

from mlsup.dashboard.cli import main

sys.exit(main())
