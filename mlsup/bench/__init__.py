"""The benchmark suites behind ``mlsup bench``.

Every suite measures the supervised path against the best alternative measured *in the same
run* and reports ratios, so that numbers from a noisy, shared machine still compare. A suite is
a module with ``run(quick: bool) -> list[Row]``; :data:`SUITES` maps names to those modules.
"""

from __future__ import annotations

from mlsup.bench.rows import Row, machine_info

__all__ = ["SUITES", "Row", "machine_info"]

#: Suite name -> module path. Modules are imported only when their suite runs.
SUITES: dict[str, str] = {
    "ipc": "mlsup.bench.ipc",
    "leases": "mlsup.bench.leases",
    "proxy": "mlsup.bench.proxy",
    "load": "mlsup.bench.load",
    "infer": "mlsup.bench.infer",
    "recovery": "mlsup.bench.recovery",
    "http": "mlsup.bench.http",
    "queue": "mlsup.bench.queue",
}
