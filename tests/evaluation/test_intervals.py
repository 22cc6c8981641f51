"""The report's bootstrap intervals (docs/method.md, "Intervals"): clustered as the data are, paired differences
under shared draws, Holm's adjustment, and intervals that cover the truth about as often as they say."""

from __future__ import annotations

import numpy as np
import pytest

from eqdiff.evaluation.intervals import bootstrap, holm, paired_difference


def runs_of(values_by_subject: dict[str, list[list[float]]]) -> dict[str, list[dict[tuple, float]]]:
    """Subject -> runs -> per-image values keyed by image position."""
    return {
        subject: [{(i,): v for i, v in enumerate(run)} for run in runs] for subject, runs in values_by_subject.items()
    }


def test_a_constant_has_a_zero_width_interval_and_the_value_is_the_mean_of_subject_means():
    found = bootstrap(runs_of({"a": [[1.0, 1.0, 1.0]], "b": [[0.0] * 7]}))
    assert found.value == pytest.approx(0.5)  # subjects weigh alike, whatever their image counts
    assert 0 <= found.low <= 0.5 <= found.high <= 1
    flat = bootstrap(runs_of({"a": [[0.3, 0.3]], "b": [[0.3]]}))
    assert (flat.value, flat.low, flat.high) == pytest.approx((0.3, 0.3, 0.3))
    assert bootstrap({}) is None and bootstrap({"a": [{}]}) is None  # no eligible image: no number


def test_between_subject_spread_widens_the_interval_beyond_what_the_images_alone_give():
    rng = np.random.default_rng(0)
    alike = runs_of({f"s{i}": [list(rng.binomial(1, 0.5, 40).astype(float))] for i in range(6)})
    apart = runs_of({f"s{i}": [list(rng.binomial(1, p, 40).astype(float))] for i, p in enumerate([0.1, 0.9] * 3)})
    narrow, wide = bootstrap(alike), bootstrap(apart)
    assert wide.high - wide.low > 1.5 * (narrow.high - narrow.low)


def test_intervals_cover_the_truth_about_as_often_as_they_say():
    """Subjects whose rates scatter around 0.3, images drawn from each: the 95 % interval of the mean holds 0.3
    in most of 60 simulated experiments (a clustered bootstrap with 6 subjects is a little narrow)."""
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(60):
        rates = np.clip(rng.normal(0.3, 0.08, size=6), 0, 1)
        data = runs_of({f"s{i}": [list(rng.binomial(1, r, 30).astype(float))] for i, r in enumerate(rates)})
        found = bootstrap(data, replicates=500)
        covered += found.low <= 0.3 <= found.high
    assert covered >= 48, covered  # >= 80 %


def test_a_paired_difference_cancels_what_both_variants_share():
    rng = np.random.default_rng(2)
    base = {f"s{i}": [list(rng.uniform(0, 1, 20))] for i in range(4)}
    shifted = {s: [[v + 0.1 for v in run] for run in runs] for s, runs in base.items()}
    found = paired_difference(runs_of(shifted), runs_of(base))
    assert (found.value, found.low, found.high) == pytest.approx((0.1, 0.1, 0.1))
    assert found.p == pytest.approx(2 / 2001)
    same = paired_difference(runs_of(base), runs_of(base))
    assert same.value == 0 and same.p == 1
    # only the images both have are compared; a subject only one variant has drops out
    partial = paired_difference(runs_of({"s0": [[1.0, 1.0]], "s9": [[1.0]]}), runs_of({"s0": [[0.0]]}))
    assert (partial.value, partial.low, partial.high) == pytest.approx((1.0, 1.0, 1.0))
    assert paired_difference(runs_of({"s9": [[1.0]]}), runs_of({"s0": [[0.0]]})) is None


def test_holm_adjusts_step_down_and_keeps_the_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
