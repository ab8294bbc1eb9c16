"""Imported by the worker template (the fork server) first, before the runtimes: from then on
the kernel kills the template the instant the supervisor that started it ends.

Without it the template still leaves once it reads the end of its supervisor's pipe, but only
after its interpreter has shut down (hundreds of milliseconds with the runtimes imported). Its
workers watch the supervisor themselves (:mod:`mlsup.kit.lifeline`); the template is forked
from the supervisor's main thread, whose end is the supervisor's.
"""

from __future__ import annotations

import os

from mlsup.kit.lifeline import die_with_parent

_supervisor = os.getppid()
if die_with_parent() and os.getppid() != _supervisor:
    os._exit(0)  # the supervisor ended before the signal was armed
