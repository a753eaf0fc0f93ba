"""Where the bits go: the per-tensor table of a calibrated run (markdown, CSV, JSON) and a plot.

Columns: name, params, role, coding mode, calibration status (allocated / not exercised / breaks
when perturbed / not fed), sensitivity a_t (output distortion per step^2), chosen step and qp,
bytes, bits/param and share of all tensor bytes. The plot puts bits/param against sensitivity
(log scale), one colour per role: at one lambda, equal slopes mean bits/param grows by one per
factor 4 of sensitivity per parameter (step ~ sqrt(n_t / a_t)).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from nnlc.decoder.files import atomic_write

COLUMNS = ("name", "params", "role", "mode", "calibration", "sensitivity", "step", "qp", "bytes", "bits_per_param",
           "share")


def table_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report columns of the encoder's rows, largest share first."""
    result = []
    for row in rows:
        result.append({column: row.get(column) for column in COLUMNS})
        result[-1]["calibration"] = row.get("calibration") or ("exact" if row.get("mode") != "quantized" else "-")
    return sorted(result, key=lambda r: -(r["bytes"] or 0))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return f"{value:g}"
        return f"{value:.4g}"
    return str(value)


def markdown(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = ["# Calibrated compression: where the bits go", ""]
    for key in ("bytes", "lmbda", "kind", "method", "target"):
        if summary.get(key) is not None:
            lines.append(f"- {key}: {_cell(summary[key])}")
    fidelity = summary.get("holdout_fidelity") or {}
    if fidelity:
        shown = ", ".join(f"{k} {_cell(v)}" for k, v in fidelity.items() if not isinstance(v, str))
        lines.append(f"- hold-out fidelity: {shown}")
    if summary.get("calibration"):
        lines.append(f"- calibration: {summary['calibration'].get('description', '')}")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def plot(rows: Sequence[dict[str, Any]], path: str, title: str = "") -> bool:
    """bits/param against sensitivity per parameter; False (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    points = [r for r in rows if r.get("sensitivity") and r.get("params")]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for role in sorted({r["role"] for r in points}):
        members = [r for r in points if r["role"] == role]
        axis.scatter([r["sensitivity"] / r["params"] for r in members], [r["bits_per_param"] for r in members],
                     s=[8 + 60 * math.sqrt(r["share"] or 0) for r in members], label=role, alpha=0.7)
    axis.set_xscale("log")
    axis.set_xlabel("sensitivity per parameter (output distortion / step^2 / params)")
    axis.set_ylabel("bits / param")
    axis.set_title(title or "bits against sensitivity (marker area ~ share of bytes)")
    if points:
        axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    atomic_write(path, buffer.getvalue())
    return True


def write_analysis(directory: str, rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    """tensors.md, tensors.csv, tensors.json (+ summary) and bits_vs_sensitivity.png; the paths written."""
    os.makedirs(directory, exist_ok=True)
    table = table_rows(rows)
    written = []
    for name, data in (("tensors.md", markdown(table, summary)), ("tensors.csv", csv_text(table)),
                       ("tensors.json", json.dumps({"summary": summary, "tensors": table}, indent=1, default=float))):
        path = os.path.join(directory, name)
        atomic_write(path, data.encode())
        written.append(path)
    path = os.path.join(directory, "bits_vs_sensitivity.png")
    if plot(table, path):
        written.append(path)
    return written
