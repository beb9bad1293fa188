"""Small-sample statistics: Student-t quantiles, mean with 95 % CI, relative spread."""

import math

import pytest

from aifb.stats import T_975, _central_mass, mean_ci, relative_spread, t_quantile


@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (4, 2.776), (5, 2.571),
                                          (10, 2.228), (20, 2.086), (30, 2.042)])
def test_t_quantile_95_matches_textbook_table(df, expected):
    assert t_quantile(df) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize("df, confidence, expected", [
    (5, 0.99, 4.032), (1, 0.90, 6.314), (10, 0.90, 1.812), (3, 0.99, 5.841),
    (40, 0.95, 2.021), (60, 0.95, 2.000), (120, 0.95, 1.980), (10**7, 0.95, 1.960),
])
def test_t_quantile_computed_beyond_the_table(df, confidence, expected):
    assert t_quantile(df, confidence) == pytest.approx(expected, abs=5e-4)


def test_table_and_closed_form_cdf_agree():
    for df, t in enumerate(T_975, start=1):
        assert _central_mass(t, df) == pytest.approx(0.95, abs=1e-8), df


@pytest.mark.parametrize("df", [0, -1, 1.5, True])
def test_t_quantile_rejects_bad_df(df):
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(df)


def test_t_quantile_rejects_bad_confidence():
    with pytest.raises(ValueError, match="confidence"):
        t_quantile(3, 1.5)


def test_mean_ci_known_values():
    ci = mean_ci([1, 2, 3, 4, 5])
    assert ci["n"] == 5 and ci["mean"] == 3.0
    assert ci["std"] == pytest.approx(math.sqrt(2.5))
    half = 2.776445105 * math.sqrt(2.5) / math.sqrt(5)
    assert ci["half_width"] == pytest.approx(half)
    assert (ci["low"], ci["high"]) == pytest.approx((3 - half, 3 + half))
    assert ci["confidence"] == 0.95


def test_mean_ci_two_values():
    ci = mean_ci([10.0, 12.0])  # std = sqrt(2), t(1) = 12.706
    assert ci["half_width"] == pytest.approx(12.706204736 * math.sqrt(2) / math.sqrt(2))


def test_mean_ci_single_value_has_no_interval():
    ci = mean_ci([4.2])
    assert ci["mean"] == 4.2 and ci["n"] == 1
    assert ci["half_width"] is None and ci["low"] is None and ci["high"] is None and ci["std"] is None


def test_mean_ci_empty_and_missing_values():
    assert mean_ci([])["mean"] is None
    ci = mean_ci([None, 2.0, float("nan"), 4.0])
    assert ci["n"] == 2 and ci["mean"] == 3.0


def test_relative_spread():
    assert relative_spread([9.0, 10.0, 11.0]) == pytest.approx(0.1)
    assert relative_spread([5.0, 5.0]) == 0.0
    assert relative_spread([5.0]) is None
    assert relative_spread([]) is None
    assert relative_spread([-1.0, 1.0]) is None  # zero mean
    assert relative_spread([None, 9.0, 11.0]) == pytest.approx(math.sqrt(2) / 10)
