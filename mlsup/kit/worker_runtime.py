"""How worker processes run their runtimes' thread pools: the one home for those settings.

A worker shares the machine's cores with its callers, the supervisor and the other workers, and
every result it computes must then cross to another process. OpenMP's default wait policy
(libgomp, under torch's intra-op pool and MKL) keeps each idle pool thread spinning for up to
300,000 rounds after every parallel region. In-process that costs nothing visible; in a worker
the spinning thread holds a core exactly while the reply travels (the worker's and the caller's
ZeroMQ I/O threads, the caller itself), and once anything else runs on the machine the pool's
threads wait on each other for whole scheduler slices. The passive policy puts them to sleep at
once; it costs one futex wake per parallel region (about 20 per MiniLM embed).

Measured on the 2-core machine (MiniLM embed of three sentences, other sessions' tests running):
the time a call spends outside the model's own method (latency minus the worker's handler time)
fell from 1.4-1.7 ms to 0.7 ms (p25), and the worker's CPU per call from 88-160 ms (mostly
spinning) to 20 ms. Figures in CHANGELOG.md.

OpenMP reads the policy once, when the library loads: in the worker template, before any
worker exists. So :func:`mlsup.supervisor.template.launch_template` starts the template
inside :func:`template_environment`; a value set in the supervisor's own environment wins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager

__all__ = ["USER_CHOICES", "WORKER_ENV", "template_additions", "template_environment"]

#: What worker processes run with, unless the user chose otherwise.
WORKER_ENV: Mapping[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}
#: Variables that already decide the wait policy: when the user set any, we add none.
USER_CHOICES = frozenset({"OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"})


def template_additions(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to ``environ`` for the worker template (pure)."""
    if USER_CHOICES & environ.keys():
        return {}
    return {key: value for key, value in WORKER_ENV.items() if key not in environ}


@contextmanager
def template_environment(
    environ: MutableMapping[str, str] = os.environ,
) -> Iterator[dict[str, str]]:
    """Within: ``environ`` with :func:`template_additions` (start the template here); after:
    as before, so that nothing else the supervisor starts inherits them."""
    added = template_additions(environ)
    environ.update(added)
    try:
        yield added
    finally:
        for key in added:
            environ.pop(key, None)
