"""Fidelity targets (`--target=transparent`, `kl<=0.005`, `cosine>=0.999`) and the search over lambda.

A target is checked on the hold-out calibration split (never used to optimise). The search:
1. starts at the lambda whose equal-slope allocation predicts the target's distortion budget
   (`allocation.predicted_lmbda`; plain rounding, so OPTQ usually passes there);
2. brackets by factors of 2 (up while points pass, down while they fail);
3. bisects the bracket in log(lambda) a few times.
Fidelity is not exactly monotone in lambda (one flipped image among a few dozen confident crops
fails transparency), so the search never trusts a lucky point: a lambda is accepted only when every
evaluated lambda below it passes too. Of the accepted points the one with the fewest estimated bits
wins. When no lambda passes, `TargetNotReached` names the best fidelity reached.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

from nnlc.errors import NnlcError
from nnlc.progress import Phase

# Metric names a user may write, per spelling, in the order they are tried against a kind's metrics.
ALIASES = {
    "kl": ("mean_kl",),
    "agreement": ("top1_agreement_confident", "decision_agreement", "neighbour_agreement"),
    "top1": ("top1_agreement_confident",),
    "cosine": ("mean_cosine",),
    "abs_diff": ("mean_abs_diff",),
    "diff": ("mean_abs_diff",),
    "nmse": ("nmse",),
    "mse": ("nmse",),
}
_BOUND = re.compile(r"^\s*([A-Za-z_0-9]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


class TargetNotReached(NnlcError):
    """No evaluated lambda met the target; the message names the best fidelity reached."""


@dataclasses.dataclass(frozen=True)
class Bound:
    metric: str  # as written (alias or a metric key)
    upper: bool  # metric <= value (else >=)
    value: float

    def describe(self) -> str:
        return f"{self.metric}{'<=' if self.upper else '>='}{self.value:g}"


@dataclasses.dataclass(frozen=True)
class Target:
    """`transparent` (the `nnlc.fidelity` thresholds of the kind) and/or explicit bounds."""

    transparent: bool
    bounds: tuple[Bound, ...] = ()

    def describe(self) -> str:
        parts = (["transparent"] if self.transparent else []) + [bound.describe() for bound in self.bounds]
        return ",".join(parts)

    def check(self, metrics: dict[str, Any]) -> bool:
        """True when `metrics` (a `Reference.fidelity` dict) meets every part of the target (in every
        group, where the hold-out has groups: sample rates)."""
        if isinstance(metrics.get("groups"), dict):
            return all(self.check(group) for group in metrics["groups"].values())
        if self.transparent and not metrics.get("transparent", False):
            return False
        for bound in self.bounds:
            value = metric_value(metrics, bound.metric)
            if value is None or not math.isfinite(value):
                return False
            if (value > bound.value) if bound.upper else (value < bound.value):
                return False
        return True

    def summary(self, metrics: dict[str, Any]) -> str:
        """The metrics the target looks at, e.g. 'mean_kl 0.0042, top1_agreement_confident 1'."""
        names = [resolve(metrics, bound.metric) for bound in self.bounds]
        if self.transparent or not names:
            names += [key for key in ("top1_agreement_confident", "mean_kl", "decision_agreement", "mean_abs_diff",
                                      "mean_cosine", "neighbour_agreement", "nmse") if key in metrics]
        seen = dict.fromkeys(name for name in names if name)
        return ", ".join(f"{name} {metrics[name]:.4g}" for name in seen if isinstance(metrics.get(name), (int, float)))


def resolve(metrics: dict[str, Any], name: str) -> str | None:
    """The metrics key that `name` (a key or an alias) refers to, or None."""
    if name in metrics:
        return name
    for key in ALIASES.get(name.lower(), ()):
        if key in metrics:
            return key
    return None


def metric_value(metrics: dict[str, Any], name: str) -> float | None:
    key = resolve(metrics, name)
    return None if key is None else float(metrics[key])


def parse_target(text: str) -> Target:
    """'transparent', 'kl<=0.005', 'cosine>=0.999', or several joined by commas."""
    if not text or not text.strip():
        raise NnlcError("empty --target: give 'transparent' or bounds such as 'kl<=0.005' or 'cosine>=0.999'")
    transparent, bounds = False, []
    for part in text.split(","):
        part = part.strip()
        if part.lower() == "transparent":
            transparent = True
            continue
        match = _BOUND.match(part)
        if not match:
            raise NnlcError(f"cannot read target {part!r}: use 'transparent' or METRIC<=VALUE / METRIC>=VALUE "
                            f"(metrics: {', '.join(sorted(ALIASES))} or a fidelity key such as mean_kl)")
        try:
            value = float(match.group(3))
        except ValueError:
            raise NnlcError(f"cannot read the number in target {part!r}") from None
        bounds.append(Bound(match.group(1), match.group(2) == "<=", value))
    return Target(transparent, tuple(bounds))


def check_target_fits(target: Target, metrics: dict[str, Any], kind: str) -> None:
    """A clear error when a bound names a metric that the model's kind does not measure."""
    for bound in target.bounds:
        if resolve(metrics, bound.metric) is None:
            known = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
            raise NnlcError(f"target {bound.describe()}: a {kind} model has no metric {bound.metric!r} "
                            f"(it has {', '.join(known)})")


def distortion_budget(target: Target, kind: str) -> float:
    """The distortion (the optimiser's, `Reference.distortion`) a target roughly allows: the start of the search."""
    from nnlc import fidelity
    from nnlc.calibrated.distortion import MSE_TRANSPARENT

    for bound in target.bounds:
        name = bound.metric.lower()
        if name in ("kl", "mean_kl") and bound.upper:
            return bound.value
        if name in ("cosine", "mean_cosine") and not bound.upper:
            return max(1.0 - bound.value, 1e-9)
        if name in ("nmse", "mse") and bound.upper:
            return bound.value
        if name in ("abs_diff", "diff", "mean_abs_diff") and bound.upper:
            return bound.value ** 2
    return {"classifier": fidelity.CLASSIFIER_MAX_KL, "embedding": 1.0 - fidelity.EMBEDDING_MIN_COSINE,
            "vad": fidelity.VAD_MAX_ABS_DIFF ** 2, "mse": MSE_TRANSPARENT}.get(kind, MSE_TRANSPARENT)


@dataclasses.dataclass
class Evaluated:
    lmbda: float
    bits: float
    passes: bool
    metrics: dict[str, Any]
    point: Any = None  # the rate point (kept only for accepted candidates)


@dataclasses.dataclass
class SearchResult:
    best: Evaluated
    history: list[Evaluated]  # in evaluation order

    def table(self) -> list[dict[str, Any]]:
        return [{"lmbda": e.lmbda, "bits": e.bits, "passes": e.passes,
                 **{k: v for k, v in e.metrics.items() if isinstance(v, (int, float, bool))}}
                for e in sorted(self.history, key=lambda e: e.lmbda)]


def accepted(history: list[Evaluated]) -> list[Evaluated]:
    """Passing points whose every smaller evaluated lambda passes too."""
    ordered = sorted(history, key=lambda e: e.lmbda)
    result = []
    for evaluated in ordered:
        if not evaluated.passes:
            break
        result.append(evaluated)
    return result


def search_lambda(evaluate: Callable[[float], tuple[float, dict[str, Any], Any]], target: Target, start: float,
                  max_bracket: int = 12, bisections: int = 4, quiet: bool = False,
                  describe: Callable[[dict[str, Any]], str] | None = None) -> SearchResult:
    """The largest-lambda point meeting `target` by bracketing then log-bisection (see module doc).

    `evaluate(lmbda) -> (bits, metrics, point)`. Raises `TargetNotReached` when nothing passes.
    """
    if not (start > 0 and math.isfinite(start)):
        raise ValueError(f"start lambda must be positive and finite, got {start}")
    history: list[Evaluated] = []
    describe = describe or target.summary
    phase = Phase("search points", max_bracket + bisections + 1, quiet)

    def run(lmbda: float) -> Evaluated:
        bits, metrics, point = evaluate(lmbda)
        evaluated = Evaluated(lmbda, bits, target.check(metrics), metrics, point)
        history.append(evaluated)
        phase.step(f"lmbda {lmbda:.4g}: {bits / 8:,.0f} B, {describe(metrics)} "
                   f"{'passes' if evaluated.passes else 'fails'}")
        best_so_far = accepted(history)
        keep = best_so_far[-1] if best_so_far else None
        for other in history:  # keep the integers only of the point most likely to win (memory)
            if other is not keep:
                other.point = None
        return evaluated

    first = run(start)
    low = high = None
    if first.passes:
        low = first
        for _ in range(max_bracket):
            candidate = run(low.lmbda * 2.0)
            if not candidate.passes:
                high = candidate
                break
            low = candidate
    else:
        high = first
        for _ in range(max_bracket):
            candidate = run(high.lmbda / 2.0)
            if candidate.passes:
                low = candidate
                break
            high = candidate
    if low is None:
        phase.finish("no lambda met the target")
        closest = min(history, key=lambda e: e.lmbda)
        raise TargetNotReached(f"no lambda down to {closest.lmbda:.3g} met the target {target.describe()} on the "
                               f"hold-out; the best fidelity reached: {describe(closest.metrics)} "
                               f"({closest.bits / 8:,.0f} B); try a looser target, more calibration inputs, "
                               f"or --lossless for the tensors that matter")
    if high is not None:
        for _ in range(bisections):
            ok = accepted(history)[-1]
            fail = min((e for e in history if not e.passes and e.lmbda > ok.lmbda), key=lambda e: e.lmbda,
                       default=None)
            if fail is None or fail.lmbda / ok.lmbda < 1.02:
                break
            run(math.sqrt(ok.lmbda * fail.lmbda))
    candidates = accepted(history)
    best = min(candidates, key=lambda e: (e.bits, -e.lmbda))
    if best.point is None:  # the cheapest accepted point was not the newest: recompute it
        best = dataclasses.replace(best, point=evaluate(best.lmbda)[2])
    phase.finish(f"lmbda {best.lmbda:.4g}: {best.bits / 8:,.0f} B estimated, {describe(best.metrics)}")
    return SearchResult(best, history)
