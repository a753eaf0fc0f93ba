"""Fidelity targets and the lambda search (nnlc.calibrated.target) on synthetic rate points."""

import math

import numpy as np

import pytest

from nnlc.calibrated.target import (
    TargetNotReached, accepted, check_target_fits, parse_target, search_lambda, Evaluated,
)
from nnlc.errors import NnlcError


def _classifier_point(kl: float) -> dict:
    return {"mean_kl": kl, "top1_agreement_confident": 1.0, "transparent": kl <= 0.01, "n": 64}


def test_parse_target_reads_transparent_and_bounds():
    target = parse_target("transparent, kl<=0.005")
    assert target.transparent and target.bounds[0].metric == "kl" and target.bounds[0].upper
    assert target.bounds[0].value == 0.005
    assert parse_target("cosine>=0.999").bounds[0].value == 0.999
    assert target.check(_classifier_point(0.004)) and not target.check(_classifier_point(0.006))
    assert not parse_target("kl<=0.1").check({"mean_kl": math.nan})


@pytest.mark.parametrize("text", ["", "kl<0.1", "kl<=abc", "nonsense"])
def test_parse_target_rejects_bad_text_with_one_line(text):
    with pytest.raises(NnlcError) as error:
        parse_target(text)
    assert "\n" not in str(error.value)


def test_target_naming_a_metric_the_kind_lacks_is_an_error():
    with pytest.raises(NnlcError, match="no metric 'cosine'"):
        check_target_fits(parse_target("cosine>=0.99"), _classifier_point(0.0), "classifier")


def test_search_finds_the_largest_passing_lambda_of_a_monotone_problem():
    calls = []

    def evaluate(lmbda):  # kl = lmbda, bits fall as lmbda grows; threshold 0.01
        calls.append(lmbda)
        return 1000.0 / lmbda, _classifier_point(lmbda), {"lmbda": lmbda}

    result = search_lambda(evaluate, parse_target("transparent"), 1e-4, bisections=8, quiet=True)
    assert result.best.passes and result.best.lmbda <= 0.01
    assert result.best.lmbda > 0.01 / 1.02  # bisection closes the bracket
    assert result.best.point == {"lmbda": result.best.lmbda}
    assert len(calls) < 20


def test_search_never_trusts_a_lucky_point_above_a_failure():
    # fails at 0.004 (one flipped image), passes by chance at 0.006: 0.006 must not be chosen
    def evaluate(lmbda):
        passes = lmbda < 0.003 or 0.0055 < lmbda < 0.0065
        return 1.0 / lmbda, {"mean_kl": 0.0, "transparent": passes}, lmbda

    history = [Evaluated(x, 1 / x, evaluate(x)[1]["transparent"], {}) for x in (0.002, 0.004, 0.006)]
    assert [e.lmbda for e in accepted(history)] == [0.002]
    result = search_lambda(evaluate, parse_target("transparent"), 0.0015, bisections=6, quiet=True)
    assert result.best.lmbda < 0.003


def test_search_that_cannot_reach_the_target_names_the_best_fidelity():
    def evaluate(lmbda):
        return 1.0 / lmbda, _classifier_point(0.5 + lmbda), None

    with pytest.raises(TargetNotReached, match=r"best fidelity reached: .*mean_kl 0\.5"):
        search_lambda(evaluate, parse_target("transparent"), 1.0, max_bracket=5, quiet=True)


def test_search_recomputes_the_winner_when_its_integers_were_dropped():
    points = []

    def evaluate(lmbda):
        points.append(lmbda)
        # bits are lowest at lmbda 0.004 (not the largest passing one, 0.008): non-monotone rate
        bits = {0.001: 5.0, 0.002: 4.0, 0.004: 1.0, 0.008: 2.0}.get(round(lmbda, 6), 3.0)
        return bits, _classifier_point(lmbda), ("point", lmbda)

    result = search_lambda(evaluate, parse_target("transparent"), 0.001, bisections=0, quiet=True)
    assert result.best.lmbda == pytest.approx(0.004) and result.best.point == ("point", pytest.approx(0.004))


def test_a_grouped_hold_out_must_meet_the_target_in_every_group():
    from nnlc.calibrated.distortion import Reference

    rng = np.random.default_rng(0)
    originals = [[rng.uniform(0.0, 1.0, 200).astype(np.float32)] for _ in range(4)]
    reference = Reference("vad", [{}] * 4, originals, groups=["sr=16000", "sr=16000", "sr=8000", "sr=8000"])
    good = [[x[0] + 0.001] for x in originals]
    one_bad = good[:2] + [[x[0] + 0.05] for x in originals[2:]]
    assert reference.fidelity(good)["transparent"]
    metrics = reference.fidelity(one_bad)
    assert not metrics["transparent"] and metrics["group"] == "sr=8000"
    assert metrics["groups"]["sr=16000"]["transparent"] and not metrics["groups"]["sr=8000"]["transparent"]
    pooled = Reference("vad", [{}] * 4, originals).fidelity(one_bad)  # without groups the average hides it
    assert pooled["mean_abs_diff"] < metrics["mean_abs_diff"]
    assert not parse_target("abs_diff<=0.01").check(metrics)
    assert parse_target("abs_diff<=0.01").check(reference.fidelity(good))
