"""Finished runs of a sweep as rate-quality curves: loading, variants, metric choice, matched comparisons.

Method of the ablation table (`ablation`), per variant (one curve per set of config values that
differ between runs, lmbda aside):
- Only the Pareto front counts: sorted by size, a point stays when its quality beats every smaller
  point's. Quality is the chosen metric, negated internally when lower is better (mean_kl...).
- Size at matched quality: the front is interpolated linearly in log(size) against quality between
  the two front points that bracket the target. When the smallest point already meets the target,
  its size is reported as an upper bound ("<="); no extrapolation beyond the measured range. A
  variant whose best point misses the target gets "not reached".
- Quality at matched size: the front's quality, interpolated linearly in log(size) between the
  bracketing front points. Above the largest front point, that point's quality is a bound ("at
  least" for higher-is-better); below the smallest point there is no value.
- Targets: the quality target is the metric's transparency threshold from `nnlc.fidelity`
  (classifier agreement 0.99, KL 0.01, VAD agreement 0.99, mean abs diff 0.01, cosine 0.995), or
  for labelled accuracy the uncompressed accuracy minus `max_accuracy_drop`, or else the best
  quality every curve reaches. The size target is the largest of the curves' smallest sizes, so
  every curve has a measured point at or below it. Both can be given explicitly. NNCodec, when
  its benchmark JSON carries the metric, is one more curve.
- Best point: the smallest measured point that meets the quality target; if none does, the
  highest-quality point (marked as missing the target).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from launch.points import parse_point_name

# Config keys that never make two runs different variants.
NOT_VARIANT_KEYS = frozenset({"lmbda", "log_every", "checkpoint_every", "distributed"})
# (metric, higher is better), in order of preference when several are present.
PREFERRED_METRICS = (("accuracy", True), ("top1_agreement_confident", True), ("decision_agreement", True),
                     ("mean_cosine", True), ("mean_kl", False), ("mean_abs_diff", False))
NOT_METRICS = frozenset({"n", "n_confident", "n_frames", "seconds", "original_accuracy", "speech_fraction"})
LOWER_IS_BETTER_HINTS = ("kl", "diff", "err", "mse", "loss", "distortion")


@dataclasses.dataclass
class Run:
    """One finished rate point: result.json and the flattened config.json beside it."""

    workdir: str
    result: dict[str, Any]
    config: dict[str, Any]

    @property
    def evaluation(self) -> dict[str, Any]:
        return self.result.get("evaluation") or {}

    @property
    def model(self) -> str:
        return model_name(str(self.config.get("model", "")))

    @property
    def lmbda(self) -> float | None:
        return self.result.get("lmbda", self.config.get("lmbda"))


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    def meets(self, value: float, target: float) -> bool:
        """value reaches target; a float-rounding margin keeps e.g. 0.95 >= 0.96 - 0.01 true."""
        margin = 1e-9 * max(1.0, abs(target))
        return value >= target - margin if self.higher_is_better else value <= target + margin


@dataclasses.dataclass
class CurvePoint:
    size: float
    quality: float
    run: Run | None = None
    label: str = ""  # e.g. 'qp -32' for baseline points


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'reparam': {'conv_decoder': 'dct'}} -> {'reparam.conv_decoder': 'dct'}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def model_name(model: str) -> str:
    """'zoo:lenet5_digits' -> 'lenet5_digits'; '../shared/models/mobilenet_v2.onnx' -> 'mobilenet_v2'."""
    if not model:
        return "model"
    return os.path.splitext(os.path.basename(model.split(":", 1)[-1]))[0]


def load_runs(paths: Iterable[str]) -> list[Run]:
    """Every result.json below the given directories (or given directly), with its config."""
    runs, seen = [], set()
    for path in paths:
        if os.path.isfile(path):
            found = [path]
        else:
            found = [os.path.join(d, "result.json") for d, _, files in os.walk(path) if "result.json" in files]
        for result_path in sorted(found):
            workdir = os.path.dirname(os.path.abspath(result_path))
            if workdir in seen:
                continue
            seen.add(workdir)
            with open(result_path) as f:
                result = json.load(f)
            config_path = os.path.join(workdir, "config.json")
            if os.path.exists(config_path):
                with open(config_path) as f:
                    config = flatten(json.load(f))
            else:  # no config.json: the point's directory name still says what differs
                config = parse_point_name(os.path.basename(workdir))
            runs.append(Run(workdir, result, config))
    return runs


def group_by_model(runs: Sequence[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.model, []).append(run)
    return groups


def variant_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys whose values differ between runs (lmbda and bookkeeping keys aside)."""
    keys = sorted({key for run in runs for key in run.config} - NOT_VARIANT_KEYS)
    return [key for key in keys
            if len({json.dumps(run.config.get(key), sort_keys=True, default=str) for run in runs}) > 1]


def variant_label(run: Run, keys: Sequence[str]) -> str:
    return ",".join(f"{key}={run.config.get(key)}" for key in keys) or "nnlc"


def _base_values(runs: Sequence[Run], keys: Sequence[str]) -> dict[str, str]:
    """Per key, the value that more variants hold than any other (an ablation's base), if there is one."""
    variants = {variant_label(run, keys): run for run in runs}
    base = {}
    for key in keys:
        counts: dict[str, int] = {}
        for run in variants.values():
            value = json.dumps(run.config.get(key), sort_keys=True, default=str)
            counts[value] = counts.get(value, 0) + 1
        ranked = sorted(counts.values(), reverse=True)
        if len(ranked) > 1 and ranked[0] > ranked[1]:
            base[key] = max(counts, key=counts.get)
    return base


def group_by_variant(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs by variant. A variant is named by the keys where it differs from the base (the value most
    variants share, when one value is the most common); the variant that differs nowhere is 'base'."""
    keys = variant_keys(runs)
    base = _base_values(runs, keys)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        differing = [key for key in keys
                     if base.get(key) != json.dumps(run.config.get(key), sort_keys=True, default=str)]
        label = variant_label(run, differing) if differing or not keys else "base"
        groups.setdefault(label, []).append(run)
    return dict(sorted(groups.items()))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def choose_metric(runs: Sequence[Run], name: str | None = None) -> Metric | None:
    """The quality axis: `name` if given, else the preferred evaluation key every run has."""
    preferred = dict(PREFERRED_METRICS)
    if name:
        return Metric(name, preferred.get(name, not any(h in name for h in LOWER_IS_BETTER_HINTS)))
    common = None
    for run in runs:
        keys = {k for k, v in run.evaluation.items() if _is_number(v)}
        common = keys if common is None else common & keys
    if not common:
        return None
    for metric, higher in PREFERRED_METRICS:
        if metric in common:
            return Metric(metric, higher)
    fallback = sorted(common - NOT_METRICS) or sorted(common)
    return Metric(fallback[0], not any(h in fallback[0] for h in LOWER_IS_BETTER_HINTS))


def transparency_threshold(metric: str) -> float | None:
    """The per-metric bound of `nnlc.fidelity`'s "transparent" criterion, where there is one."""
    from nnlc import fidelity

    return {"top1_agreement_confident": fidelity.CLASSIFIER_MIN_AGREEMENT, "mean_kl": fidelity.CLASSIFIER_MAX_KL,
            "decision_agreement": fidelity.VAD_MIN_AGREEMENT, "mean_abs_diff": fidelity.VAD_MAX_ABS_DIFF,
            "mean_cosine": fidelity.EMBEDDING_MIN_COSINE}.get(metric)


def quality(run: Run, metric: Metric) -> float | None:
    value = run.evaluation.get(metric.name, run.result.get(metric.name))
    return float(value) if _is_number(value) else None


def curve(runs: Sequence[Run], metric: Metric, size_key: str = "bytes") -> list[CurvePoint]:
    """The runs as (size, quality) points sorted by size; runs without the metric are left out."""
    points = [CurvePoint(float(run.result[size_key]), q, run) for run in runs
              if (q := quality(run, metric)) is not None and _is_number(run.result.get(size_key))]
    return sorted(points, key=lambda p: (p.size, p.quality))


def default_quality_target(curves: Mapping[str, Sequence[CurvePoint]], metric: Metric,
                           max_accuracy_drop: float = 0.01) -> tuple[float | None, str]:
    """(target, why): transparency threshold, else uncompressed quality -/+ max_accuracy_drop, else the
    best quality every curve reaches."""
    threshold = transparency_threshold(metric.name)
    if threshold is not None:
        return threshold, "the transparency threshold of nnlc.fidelity"
    originals = [p.run.evaluation.get("original_" + metric.name) for points in curves.values() for p in points
                 if p.run is not None]
    originals = [v for v in originals if _is_number(v)]
    if originals:
        if metric.higher_is_better:
            return max(originals) - max_accuracy_drop, f"uncompressed {max(originals):.4g} - {max_accuracy_drop:g}"
        return min(originals) + max_accuracy_drop, f"uncompressed {min(originals):.4g} + {max_accuracy_drop:g}"
    bests = [max(p.quality for p in points) if metric.higher_is_better else min(p.quality for p in points)
             for points in curves.values() if points]
    if not bests:
        return None, "no points"
    return (min(bests) if metric.higher_is_better else max(bests)), "the best quality every curve reaches"


def default_size_target(curves: Mapping[str, Sequence[CurvePoint]]) -> float | None:
    """The largest of the curves' smallest sizes: every curve has a point at or below it."""
    smallest = [min(p.size for p in points) for points in curves.values() if points]
    return max(smallest) if smallest else None


def pareto_front(points: Sequence[CurvePoint], metric: Metric) -> list[CurvePoint]:
    """Points sorted by size, each of better quality than every smaller one."""
    ordered = sorted(points, key=lambda p: (p.size, -p.quality if metric.higher_is_better else p.quality))
    front: list[CurvePoint] = []
    for point in ordered:
        if not front or metric.better(point.quality, front[-1].quality):
            front.append(point)
    return front


def size_at_quality(points: Sequence[CurvePoint], target: float, metric: Metric) -> tuple[float | None, str]:
    """(size, note) where the front reaches `target`: note '' (interpolated or exact), '<=' or 'not reached'."""
    front = pareto_front(points, metric)
    if not front:
        return None, "not reached"
    if metric.meets(front[0].quality, target):
        return front[0].size, ("" if math.isclose(front[0].quality, target, rel_tol=1e-9) else "<=")
    for lower, upper in zip(front, front[1:]):
        if metric.meets(upper.quality, target):
            t = min(1.0, max(0.0, (target - lower.quality) / (upper.quality - lower.quality)))
            return math.exp(math.log(lower.size) + t * (math.log(upper.size) - math.log(lower.size))), ""
    return None, "not reached"


def quality_at_size(points: Sequence[CurvePoint], size: float, metric: Metric) -> tuple[float | None, str]:
    """(quality, note) of the front at `size`: note '' (interpolated or exact), 'at least'/'at most' or 'too small'."""
    front = pareto_front(points, metric)
    if not front or size < front[0].size:
        return None, "too small"
    if size >= front[-1].size:
        bound = "" if size == front[-1].size else ("at least" if metric.higher_is_better else "at most")
        return front[-1].quality, bound
    for lower, upper in zip(front, front[1:]):
        if lower.size <= size < upper.size:
            t = (math.log(size) - math.log(lower.size)) / (math.log(upper.size) - math.log(lower.size))
            return lower.quality + t * (upper.quality - lower.quality), ""
    raise AssertionError("unreachable: size lies within the front")


def best_point(points: Sequence[CurvePoint], target: float | None, metric: Metric) -> tuple[CurvePoint | None, bool]:
    """(smallest point meeting the target, True), else (highest-quality point, False)."""
    if not points:
        return None, False
    meeting = [p for p in points if target is not None and metric.meets(p.quality, target)]
    if meeting:
        return min(meeting, key=lambda p: (p.size, -p.quality if metric.higher_is_better else p.quality)), True
    sign = 1 if metric.higher_is_better else -1
    return max(points, key=lambda p: (sign * p.quality, -p.size)), False


@dataclasses.dataclass
class AblationRow:
    variant: str
    points: int
    size_at_target: float | None
    size_note: str
    relative_size: float | None  # size_at_target / the smallest variant's
    quality_at_size: float | None
    quality_note: str
    best: CurvePoint | None
    best_meets_target: bool


def ablation(curves: Mapping[str, Sequence[CurvePoint]], metric: Metric, quality_target: float | None,
             size_target: float | None) -> list[AblationRow]:
    """One row per variant (and per baseline curve given in `curves`); see the module docstring."""
    rows = []
    for variant, points in curves.items():
        size, size_note = (size_at_quality(points, quality_target, metric) if quality_target is not None
                           else (None, "no target"))
        value, value_note = (quality_at_size(points, size_target, metric) if size_target is not None
                             else (None, "no target"))
        best, meets = best_point(points, quality_target, metric)
        rows.append(AblationRow(variant, len(points), size, size_note, None, value, value_note, best, meets))
    sizes = [row.size_at_target for row in rows if row.size_at_target is not None]
    for row in rows:
        if row.size_at_target is not None:
            row.relative_size = row.size_at_target / min(sizes)
    return rows


def load_baseline(path: str, model: str, metric: Metric | None,
                  size_key: str = "bytes") -> tuple[list[dict], list[CurvePoint]]:
    """NNCodec runs for `model` from a benchmark JSON ({'models': {name: {'file', 'runs'}}}).

    Returns (all runs, the runs that carry `metric` as curve points). A run carries the metric as
    `run[metric]` or inside `run['evaluation']` / `run['fidelity']`.
    """
    if not path or not os.path.exists(path):
        return [], []
    with open(path) as f:
        benchmark = json.load(f)
    runs: list[dict] = []
    for name, entry in (benchmark.get("models") or {}).items():
        if model in (name, model_name(str(entry.get("file", "")))):
            runs = list(entry.get("runs") or [])
            break
    points = []
    for run in runs:
        value = None
        if metric is not None:
            for source in (run, run.get("evaluation") or {}, run.get("fidelity") or {}):
                if _is_number(source.get(metric.name)):
                    value = float(source[metric.name])
                    break
        if value is not None and _is_number(run.get(size_key)):
            points.append(CurvePoint(float(run[size_key]), value, None, f"qp {run.get('qp')}"))
    return runs, sorted(points, key=lambda p: p.size)
