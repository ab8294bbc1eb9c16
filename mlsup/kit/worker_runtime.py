"""How worker processes run their runtimes' thread pools: the one home for those settings.

A worker shares the machine's cores with its callers, the supervisor and the other workers, and
every result it computes must then cross to another process. libgomp (OpenMP under torch's
intra-op pool) keeps each idle pool thread spinning for 300,000 rounds after every parallel
region by default. In-process that costs nothing visible; in a worker the spinning thread holds
a core while the reply travels (the worker's and the caller's ZeroMQ I/O threads, the caller
itself), and once anything else runs on the machine the pool's threads wait on each other for
whole scheduler slices. Workers spin 10,000 rounds instead (``GOMP_SPINCOUNT``): enough to
bridge the short gaps between a forward pass's parallel regions, then the threads sleep.

Measured on the 2-core machine, MiniLM embed of three sentences, three supervisors side by side
and calls interleaved with an in-process baseline (default policy), quiet machine: p50 passive
(``OMP_WAIT_POLICY=PASSIVE``, a futex wake per parallel region) 21.4 ms = 1.43x in-process,
10,000 rounds 17.3 ms = 1.16x, 300,000 rounds (the default) 17.0 ms = 1.14x. With other
sessions' tests running, the default's p50 was 224 ms (worker CPU 166 ms per call, mostly
spinning) where passive took 21.5 ms. Figures in CHANGELOG.md.

OpenMP reads these settings once, when the library loads: in the worker template, before any
worker exists. So :func:`mlsup.supervisor.template.launch_template` starts the template
inside :func:`template_environment`; a value set in the supervisor's own environment wins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager

__all__ = ["USER_CHOICES", "WORKER_ENV", "template_additions", "template_environment"]

#: What worker processes run with, unless the user chose otherwise.
WORKER_ENV: Mapping[str, str] = {"GOMP_SPINCOUNT": "10000"}
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
