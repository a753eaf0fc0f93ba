"""Rate-fidelity plot, markdown and CSV tables, and an ablation table from finished sweeps (a thin absl main).

    python -m launch.report /tmp/lenet5_sweep [MORE_WORKDIRS...] [--output=DIR] \
        [--nncodec_json=benchmarks/results/nncodec_shared_models.json] [--x_axis=bits_per_param]

Every result.json below the given directories is one point. Per model (config.model) it writes
`rate_fidelity_<model>.png` (x: size in bytes or bits/param, log scale past a 10x span; y: the evaluation metric,
chosen automatically: accuracy, top1_agreement_confident, decision_agreement, mean_cosine, mean_kl,
mean_abs_diff, in that order; one curve per config variant; NNCodec beside it when the benchmark
JSON has the same model), and for all models `results.csv` and `report.md`. When runs differ in
config keys other than lmbda, report.md holds an ablation table per model: size at a matched
quality, quality at a matched size and each variant's best point; `launch/results.py` documents
the method (Pareto front, log-size interpolation, how the targets are chosen).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence

from absl import app, flags

from launch import results as results_lib
from launch.results import CurvePoint, Metric, Run

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None, "Output directory (default: FIRST_WORKDIR/report).")
flags.DEFINE_string("nncodec_json", "benchmarks/results/nncodec_shared_models.json",
                    "NNCodec benchmark JSON to draw beside nnlc ('' for none).")
flags.DEFINE_enum("x_axis", "bytes", ["bytes", "bits_per_param"], "Size axis of the plot and the ablation.")
flags.DEFINE_string("metric", None, "Evaluation key for the quality axis (default: chosen from the results).")
flags.DEFINE_float("quality_target", None, "Quality for 'size at matched quality' (default: see results.py).")
flags.DEFINE_float("size_target", None, "Size for 'quality at matched size' (default: see results.py).")
flags.DEFINE_float("max_accuracy_drop", 0.01, "Default quality target for accuracy: uncompressed minus this.")


@dataclasses.dataclass
class ReportOptions:
    """What the flags set; see their help."""

    nncodec_json: str = ""
    x_axis: str = "bytes"
    metric: str | None = None
    quality_target: float | None = None
    size_target: float | None = None
    max_accuracy_drop: float = 0.01


CSV_COLUMNS = ("model", "variant", "lmbda", "bytes", "ratio", "bits_per_param", "metric", "quality",
               "transparent", "config_hash", "workdir")


def _size(value: float | None, axis: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if axis == "bytes" else f"{value:.3f}"


def _number(value: object, digits: int = 4) -> str:
    if value is None or value == "":
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _compact(value: float) -> str:
    """Tick labels: 7,300 / 512k / 2.35M."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:,.0f}"


def csv_rows(model: str, variants: dict[str, list[Run]], metric: Metric | None) -> list[dict]:
    rows = []
    for variant, runs in variants.items():
        for run in sorted(runs, key=lambda r: r.result.get("bytes", 0)):
            rows.append({"model": model, "variant": variant, "lmbda": run.lmbda, "bytes": run.result.get("bytes"),
                         "ratio": run.result.get("ratio"), "bits_per_param": run.result.get("bits_per_param"),
                         "metric": metric.name if metric else "",
                         "quality": results_lib.quality(run, metric) if metric else None,
                         "transparent": run.evaluation.get("transparent", ""),
                         "config_hash": run.result.get("config_hash", ""), "workdir": run.workdir})
    return rows


def write_csv(path: str, rows: Sequence[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if row[k] is None else row[k]) for k in CSV_COLUMNS} for row in rows)


def runs_table(rows: Sequence[dict], metric: Metric | None) -> list[str]:
    quality_name = metric.name if metric else "quality"
    lines = [f"| variant | lmbda | bytes | ratio | bits/param | {quality_name} | transparent | config hash | workdir |",
             "|---|---:|---:|---:|---:|---:|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['variant']} | {_number(row['lmbda'])} | {_size(row['bytes'], 'bytes')} | "
                     f"{_number(row['ratio'])} | {_number(row['bits_per_param'])} | {_number(row['quality'])} | "
                     f"{_number(row['transparent'])} | {row['config_hash']} | `{row['workdir']}` |")
    return lines


def ablation_table(rows: Sequence[results_lib.AblationRow], metric: Metric, axis: str, quality_target: float,
                   size_target: float | None) -> list[str]:
    op = ">=" if metric.higher_is_better else "<="
    unit = "bytes" if axis == "bytes" else "bits/param"
    lines = [f"| variant | points | {unit} at {metric.name} {op} {quality_target:.4g} | rel. size | "
             f"{metric.name} at {_size(size_target, axis)} {unit} | best point: {unit} | {metric.name} | lmbda |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        size = (f"{row.size_note} " if row.size_note == "<=" else "") + _size(row.size_at_target, axis)
        if row.size_note == "not reached":
            size = "not reached"
        value = "-" if row.quality_at_size is None else f"{row.quality_note} {row.quality_at_size:.4f}".strip()
        relative = "-" if row.relative_size is None else f"{row.relative_size:.2f}"
        best = row.best
        best_cells = "- | - | -" if best is None else (
            f"{_size(best.size, axis)} | {best.quality:.4f}{'' if row.best_meets_target else ' (misses target)'} | "
            f"{_number(best.run.lmbda) if best.run else best.label}")
        lines.append(f"| {row.variant} | {row.points} | {size} | {relative} | {value} | {best_cells} |")
    return lines


def plot_rate_fidelity(path: str, curves: dict[str, list[CurvePoint]], metric: Metric, *, axis: str, title: str,
                       quality_target: float | None = None, original: float | None = None,
                       baseline: Sequence[CurvePoint] = (), baseline_sizes: Sequence[float] = ()) -> None:
    """One line per variant; NNCodec as a dashed line, or as ticks on the x axis when it has no quality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for variant, points in curves.items():
        axes.plot([p.size for p in points], [p.quality for p in points], "o-", label=variant)
    if baseline:
        axes.plot([p.size for p in baseline], [p.quality for p in baseline], "s--", color="black", label="NNCodec")
    elif baseline_sizes:
        axes.plot(baseline_sizes, [0.0] * len(baseline_sizes), "|", color="black", markersize=14,
                  transform=axes.get_xaxis_transform(), label=f"NNCodec sizes (no {metric.name} recorded)")
    if original is not None:
        axes.axhline(original, color="gray", linestyle=":", label="uncompressed")
    if quality_target is not None:
        axes.axhline(quality_target, color="gray", linestyle="--", linewidth=0.8, label="quality target")
    sizes = [p.size for points in curves.values() for p in points] + [p.size for p in baseline] + list(baseline_sizes)
    if sizes and max(sizes) > 10 * min(sizes):  # log scale only where it spreads the points
        axes.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _compact(v) if axis == "bytes" else f"{v:g}"))
    axes.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    axes.set_xlabel("size (bytes)" if axis == "bytes" else "bits per parameter")
    direction = "higher" if metric.higher_is_better else "lower"
    axes.set_ylabel(f"{metric.name} ({direction} is better)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def model_section(model: str, runs: list[Run], output: str, options: ReportOptions) -> tuple[list[str], list[dict]]:
    """Markdown lines and CSV rows for one model; writes its plot."""
    axis, nncodec_json = options.x_axis, options.nncodec_json
    variants = results_lib.group_by_variant(runs)
    metric = results_lib.choose_metric(runs, options.metric)
    rows = csv_rows(model, variants, metric)
    lines = [f"## {model}", ""]
    if metric is None:
        lines += ["No evaluation metric common to all runs: no plot, no ablation.", ""]
        return lines + runs_table(rows, None) + [""], rows
    curves = {variant: results_lib.curve(variant_runs, metric, axis) for variant, variant_runs in variants.items()}
    all_baseline, baseline = results_lib.load_baseline(nncodec_json, model, metric, axis)
    comparison = dict(curves, **({"NNCodec": baseline} if baseline else {}))
    if options.quality_target is not None:
        quality_target, why = options.quality_target, "given"
    else:
        quality_target, why = results_lib.default_quality_target(comparison, metric, options.max_accuracy_drop)
    if options.size_target is not None:
        size_target, size_why = options.size_target, "given"
    else:
        size_target, size_why = results_lib.default_size_target(comparison), "the largest of the curves' smallest sizes"
    originals = {float(v) for r in runs if isinstance(v := r.evaluation.get("original_" + metric.name), (int, float))}
    original = originals.pop() if len(originals) == 1 else None  # one uncompressed model: draw its line
    plot_name = f"rate_fidelity_{model}.png"
    plot_rate_fidelity(os.path.join(output, plot_name), curves, metric, axis=axis,
                       title=f"{model}: {metric.name} vs size", quality_target=quality_target, original=original,
                       baseline=baseline, baseline_sizes=[float(r[axis]) for r in all_baseline if axis in r])
    direction = "higher" if metric.higher_is_better else "lower"
    lines += [f"Metric: `{metric.name}` ({direction} is better); {len(runs)} runs, {len(variants)} variant(s).", "",
              f"![{model}]({plot_name})", ""]
    lines += runs_table(rows, metric) + [""]
    if len(comparison) > 1 and quality_target is not None:
        unit = "bytes" if axis == "bytes" else "bits/param"
        lines += ["### Ablation", "",
                  f"Quality target {quality_target:.4g} ({why}); size target {_size(size_target, axis)} {unit} "
                  f"({size_why}).",
                  "Sizes and qualities are interpolated linearly in log(size) along each variant's Pareto front "
                  "(method: launch/results.py).", ""]
        rows_ablation = results_lib.ablation(comparison, metric, quality_target, size_target)
        lines += ablation_table(rows_ablation, metric, axis, quality_target, size_target) + [""]
    if all_baseline and not baseline:
        sizes = ", ".join(f"{_size(float(r[axis]), axis)} (qp {r.get('qp')})" for r in all_baseline if axis in r)
        lines += [f"NNCodec ({nncodec_json}) has no `{metric.name}` per run; its sizes: {sizes}.", ""]
    return lines, rows


def write_report(workdirs: Sequence[str], output: str, options: ReportOptions | None = None) -> list[str]:
    """Writes the plots, results.csv and report.md into `output`; returns the paths written."""
    options = options or ReportOptions()
    runs = results_lib.load_runs(workdirs)
    if not runs:
        raise app.UsageError(f"no result.json below {', '.join(workdirs)}")
    os.makedirs(output, exist_ok=True)
    lines = ["# Rate-fidelity report", "", f"{len(runs)} runs from {', '.join(f'`{w}`' for w in workdirs)}.", ""]
    all_rows: list[dict] = []
    for model, model_runs in sorted(results_lib.group_by_model(runs).items()):
        section, rows = model_section(model, model_runs, output, options)
        lines += section
        all_rows += rows
    write_csv(os.path.join(output, "results.csv"), all_rows)
    with open(os.path.join(output, "report.md"), "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    return sorted(os.path.join(output, name) for name in os.listdir(output))


def main(argv: list[str]) -> None:
    workdirs = argv[1:]
    if not workdirs:
        raise app.UsageError("give one or more sweep directories")
    output = FLAGS.output or os.path.join(workdirs[0], "report")
    options = ReportOptions(nncodec_json=FLAGS.nncodec_json, x_axis=FLAGS.x_axis, metric=FLAGS.metric,
                            quality_target=FLAGS.quality_target, size_target=FLAGS.size_target,
                            max_accuracy_drop=FLAGS.max_accuracy_drop)
    for path in write_report(workdirs, output, options):
        print(path)


if __name__ == "__main__":
    app.run(main)
