"""``mlsup bench --report DIR``: ``DIR/REPORT.md`` with PNG charts, for people.

The report opens with the machine and every judged row (target met or missed, and for a miss
the reason the suite measured), then one table per suite; charts show the ratios against their
targets and the latency distributions of rows that kept their samples. ``DIR/TABLE.md`` is the
README's benchmark table: every row with a target, in the README's columns, from the same run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlsup.bench.rows import Row

__all__ = ["readme_table", "target_limit", "write_report"]

_NO_REASON = "this suite records no measured reason yet: see its rows below"
_RATIO_TARGET = re.compile(r"^\s*(<=|>=|<|>)\s*([0-9.]+)x")


def target_limit(target: str | None) -> tuple[str, float] | None:
    """``("<=", 1.3)`` for a ratio target such as ``"<= 1.3x"``; None for other targets."""
    match = _RATIO_TARGET.match(target or "")
    return (match.group(1), float(match.group(2))) if match else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _verdict(row: Row) -> str:
    if row.value is None:
        return row.note or "not run"
    if row.target is None:
        return ""
    return f"{row.target}: {'met' if row.met else '**missed**'}"


def _table(rows: Sequence[Row]) -> list[str]:
    lines = ["| name | value | unit | baseline | ratio | target |", "|---|---|---|---|---|---|"]
    for row in rows:
        base = "" if row.baseline_value is None else f"{row.baseline}: {_fmt(row.baseline_value)}"
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        lines.append(
            f"| {row.name} | {_fmt(row.value)} | {row.unit} | {base} | {ratio} | {_verdict(row)} |"
        )
    return lines


def _short(value: float) -> str:
    """Three significant digits (whole numbers from 100 on), without an exponent."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def readme_table(rows: Sequence[Row]) -> list[str]:
    """The README's benchmark table: every row with a target (or not run), in run order."""
    lines = [
        "| suite | measurement | value | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.value is None:
            reason = (row.note or "not run").removeprefix("not run: ")
            lines.append(f"| {row.suite} | {row.name} | - | | | not run: {reason} |")
            continue
        if row.target is None:
            continue
        base = "" if row.baseline_value is None else f"{row.baseline}: {_short(row.baseline_value)}"
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        lines.append(
            f"| {row.suite} | {row.name} | {_short(row.value)} {row.unit} | {base} | {ratio} | "
            f"{_verdict(row)} |"
        )
    return lines


def _ratio_chart(rows: Sequence[Row], path: Path) -> bool:
    judged = [(row, limit) for row in rows if row.ratio and (limit := target_limit(row.target))]
    if not judged:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.35 * len(judged) + 1.2), dpi=80)
    names = [f"{row.suite}: {row.name}" for row, _ in judged]
    ratios = [row.ratio or 0.0 for row, _ in judged]
    colors = ["tab:green" if row.met else "tab:red" for row, _ in judged]
    ax.barh(names, ratios, color=colors)
    for y, (_, target) in enumerate(judged):
        ax.plot([target[1], target[1]], [y - 0.4, y + 0.4], color="black", linewidth=2)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("ratio to baseline (log); black mark: target; green met, red missed")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _distribution_chart(suite: str, rows: Sequence[Row], path: Path) -> bool:
    sampled = [row for row in rows if row.samples and row.unit == "ms"][:12]
    if not sampled:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data: list[Any] = []
    labels: list[str] = []
    for row in sampled:
        data.append([s * 1e3 for s in row.samples])
        labels.append(row.name)
        if row.baseline_samples:
            data.append([s * 1e3 for s in row.baseline_samples])
            labels.append(f"  baseline: {row.baseline}")
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(data) + 1.2), dpi=80)
    ax.boxplot(data, vert=False, showfliers=True, flierprops={"markersize": 2})
    ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("ms (log)")
    ax.set_title(f"{suite}: latency distributions", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_report(directory: Path, rows: Sequence[Row], machine: dict[str, Any]) -> Path:
    """Write ``REPORT.md`` and its PNG charts into directory (created); the report's path."""
    directory.mkdir(parents=True, exist_ok=True)
    gpus = ", ".join(g["name"] for g in machine.get("gpus", [])) or "none found by NVML"
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items() if v)
    out = [
        "# mlsup benchmark report",
        "",
        f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, "
        f"{machine.get('memory_gb')} GiB; GPUs: {gpus}; Python {machine.get('python')}; "
        f"{versions}.",
        "",
        "Every ratio compares with a baseline measured in the same run. Reproduce with "
        "`mlsup bench --report DIR` (add `--quick` for a smoke run).",
        "",
        "## Targets",
        "",
        "| suite | name | value | target | verdict | measured reason for a miss |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.target is None and row.value is not None:
            continue
        verdict = "not run" if row.value is None else ("met" if row.met else "**missed**")
        value = "-" if row.value is None else f"{row.value:.4g} {row.unit}"
        if row.ratio is not None:
            value += f" ({row.ratio:.2f}x)"
        reason = "" if row.met or row.value is None else (row.note or _NO_REASON)
        out.append(f"| {row.suite} | {row.name} | {value} | {row.target or ''} | {verdict} | "
                   f"{reason} |")  # fmt: skip
    if _ratio_chart(rows, directory / "ratios.png"):
        out += ["", "![ratios vs targets](ratios.png)"]
    for suite in dict.fromkeys(row.suite for row in rows):
        suite_rows = [row for row in rows if row.suite == suite]
        out += ["", f"## {suite}", "", *_table(suite_rows)]
        notes = [row for row in suite_rows if row.note and row.value is not None]
        out += [""] + [f"- *{row.name}*: {row.note}" for row in notes] if notes else []
        chart = f"latency-{suite}.png"
        if _distribution_chart(suite, suite_rows, directory / chart):
            out += ["", f"![{suite} latency distributions]({chart})"]
    (directory / "TABLE.md").write_text("\n".join(readme_table(rows)) + "\n", encoding="utf-8")
    path = directory / "REPORT.md"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path
