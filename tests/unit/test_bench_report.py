"""The README table rendered from bench rows (pure: rows in, lines out)."""

from __future__ import annotations

from mlsup.bench.report import readme_table
from mlsup.bench.rows import Row


def test_readme_table_keeps_judged_and_not_run_rows_in_run_order() -> None:
    rows = [
        Row("ipc", "round trip hot p50", "us", 115.94, "raw pyzmq REQ/REP", 79.1, "<= 1.3x", False),
        Row("ipc", "informational only", "us", 3.0),
        Row("proxy", "CUDA tensor 4 MiB", "ms", None, note="not run: no GPU"),
        Row("load", "warm start p50", "ms", 9.073, target="<= 15 ms", met=True),
        Row("load", "cold start", "ms", 108.2, "fresh Python", 3841.6, "<= 1.0x", True),
    ]
    header, rule, *body = readme_table(rows)
    assert header.startswith("| suite | measurement | value |") and rule.startswith("|---")
    assert body == [
        "| ipc | round trip hot p50 | 116 us | raw pyzmq REQ/REP: 79.1 | 1.47x | "
        "<= 1.3x: **missed** |",
        "| proxy | CUDA tensor 4 MiB | - | | | not run: no GPU |",
        "| load | warm start p50 | 9.07 ms |  |  | <= 15 ms: met |",
        "| load | cold start | 108 ms | fresh Python: 3842 | 0.03x | <= 1.0x: met |",
    ]
