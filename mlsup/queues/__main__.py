"""``python -m mlsup.queues --runtime DIR --config PATH``: the supervisor's queue runner."""

from __future__ import annotations

import sys

from mlsup.queues.runner import main

sys.exit(main())
