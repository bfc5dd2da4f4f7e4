"""Calibration fitting: temperature, Platt, thresholds, the sweep, and the one apply formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relgate import calibration as cal
from relgate import metrics
from relgate.errors import DataError, ParamsError


def _synthetic(n: int, seed: int, spread: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """True logits z and labels drawn from sigmoid(z): perfectly calibrated at T = 1."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, spread, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int8)
    return z, y


def _nll(a: float, b: float, s: np.ndarray, y: np.ndarray) -> float:
    z = a * s + b
    return float(np.sum(np.logaddexp(0.0, z) - y * z))


# ---------------------------------------------------------------- the formula


def test_sigmoid_and_logit_are_stable_inverses() -> None:
    z = np.array([-800.0, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0])
    p = cal.sigmoid(z)
    assert np.all(np.isfinite(p)) and p[0] == 0.0 and p[-1] == 1.0 and p[3] == 0.5
    mid = np.array([-20.0, -3.0, 0.0, 2.5, 20.0])
    np.testing.assert_allclose(cal.logit(cal.sigmoid(mid)), mid, rtol=1e-7)
    edge = cal.logit(np.array([0.0, 1.0]))
    assert np.all(np.isfinite(edge)) and edge[0] == pytest.approx(-edge[1], abs=1e-4)
    assert edge[1] == pytest.approx(27.631, abs=1e-3)


def test_apply_calibration_follows_the_schema_formula() -> None:
    scores = np.array([-2.0, 0.0, 1.5], dtype=np.float32)
    record = {"probability": {"method": "platt", "a": 0.7, "b": -0.2,
                              "score_is_probability": False}}
    expected = 1.0 / (1.0 + np.exp(-(0.7 * scores.astype(np.float64) - 0.2)))
    np.testing.assert_allclose(cal.apply_calibration(scores, record), expected, rtol=1e-15)
    probs = np.array([0.1, 0.5, 0.9])
    record["probability"]["score_is_probability"] = True
    logits = np.log(probs / (1 - probs))
    np.testing.assert_allclose(cal.apply_calibration(probs, record),
                               1 / (1 + np.exp(-(0.7 * logits - 0.2))), rtol=1e-12)


def test_decide_marks_the_inconclusive_band() -> None:
    record = {"threshold": {"value": 0.5}, "inconclusive": {"low": 0.4, "high": 0.6}}
    got = cal.decide(np.array([0.1, 0.4, 0.5, 0.59, 0.6, 0.9]), record)
    assert got.tolist() == [0, -1, -1, -1, 1, 1]
    assert cal.decide(np.array([0.49, 0.5]), {"threshold": {"value": 0.5}}).tolist() == [0, 1]


# ---------------------------------------------------------------- temperature


@pytest.mark.parametrize("true_t", [0.5, 3.0])
def test_temperature_recovers_a_known_temperature(true_t: float) -> None:
    z, y = _synthetic(40_000, seed=1)
    fitted = cal.fit_temperature(z * true_t, y)
    assert fitted == pytest.approx(true_t, rel=0.05)


def test_temperature_is_the_nll_minimum_against_a_brute_force_grid() -> None:
    z, y = _synthetic(3000, seed=2)
    s = 3.0 * z
    fitted = cal.fit_temperature(s, y)
    grid = np.linspace(0.5, 10.0, 20_000)
    best = grid[np.argmin([_nll(1.0 / t, 0.0, s, y) for t in grid])]
    assert fitted == pytest.approx(best, abs=1e-3)
    nearby = (best, fitted * 1.001, fitted / 1.001)
    assert _nll(1 / fitted, 0, s, y) <= min(_nll(1 / t, 0, s, y) for t in nearby)


def test_temperature_is_deterministic_and_bounded() -> None:
    z, y = _synthetic(2000, seed=3)
    assert cal.fit_temperature(z, y) == cal.fit_temperature(z.copy(), y.copy())
    # perfectly separable: the NLL keeps falling as T -> 0; the search stops at its bound
    separable = np.where(y == 1, 1.0, -1.0)
    t_sep = cal.fit_temperature(separable, y)
    assert 0 < t_sep <= 1.001e-6
    # scores that rank the wrong way: the optimum has a <= 0, the search stops at T_max
    assert cal.fit_temperature(-separable, y) == pytest.approx(cal.T_RANGE[1])
    assert cal.fit_temperature(np.zeros(10), np.array([0, 1] * 5)) == 1.0


# ---------------------------------------------------------------- Platt


def test_platt_matches_unpenalised_logistic_regression_from_sklearn() -> None:
    from sklearn.linear_model import LogisticRegression

    z, y = _synthetic(20_000, seed=4)
    s = 2.5 * z + 1.0  # slope 0.4, intercept -0.4 recover the true logit
    a, b = cal.fit_platt(s, y)
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=1000).fit(s[:, None], y)
    # Platt's smoothed targets shift the fit by O(1/N) only
    assert a == pytest.approx(float(ref.coef_[0, 0]), abs=2e-3)
    assert b == pytest.approx(float(ref.intercept_[0]), abs=2e-3)
    assert a == pytest.approx(0.4, abs=0.02) and b == pytest.approx(-0.4, abs=0.04)


def test_platt_is_the_minimum_of_the_smoothed_target_nll() -> None:
    z, y = _synthetic(500, seed=5)
    s = 5.0 * z - 3.0
    a, b = cal.fit_platt(s, y)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    p = cal.sigmoid(a * s + b)
    assert abs(float(np.dot(p - t, s))) < 1e-6 and abs(float((p - t).sum())) < 1e-6
    base = _nll(a, b, s, t)
    for da, db in ((1e-4, 0), (-1e-4, 0), (0, 1e-3), (0, -1e-3)):
        assert _nll(a + da, b + db, s, t) > base


def test_platt_stays_finite_on_separable_data() -> None:
    y = np.array([0, 0, 0, 1, 1, 1], dtype=np.int8)
    a, b = cal.fit_platt(np.array([-3.0, -2, -1, 1, 2, 3]), y)
    assert math.isfinite(a) and math.isfinite(b) and a > 0


# ---------------------------------------------------------------- thresholds


def _brute_best_f1(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    best = (-1.0, -1.0)
    for t in sorted(set(p.tolist()), reverse=True):
        pred = p >= t
        tp = int(np.sum(pred & (y == 1)))
        f1 = 2 * tp / (2 * tp + int(np.sum(pred & (y == 0))) + int(np.sum(~pred & (y == 1))))
        if f1 > best[1]:
            best = (t, f1)
    return best


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 12)), min_size=2, max_size=60))
def test_threshold_strategies_match_brute_force(pairs: list[tuple[int, int]]) -> None:
    y = np.array([a for a, _ in pairs], dtype=np.int8)
    if y.min() == y.max():
        y[0] = 1 - y[0]
    p = np.array([b / 12 for _, b in pairs])  # heavy ties on purpose
    thr, f1 = _brute_best_f1(y, p)
    got = cal.choose_threshold(y, p, strategy="max_f1")
    assert got.value == thr and got.f1 == pytest.approx(f1, abs=1e-12)
    target = 0.7
    ok = [t for t in sorted(set(p.tolist()))
          if np.sum(p >= t) and np.sum((p >= t) & (y == 1)) / np.sum(p >= t) >= target
          and np.sum((p >= t) & (y == 1)) > 0]
    if ok:
        chosen = cal.choose_threshold(y, p, strategy="precision_target", precision_target=target)
        assert chosen.value == ok[0] and chosen.precision >= target
        assert chosen.to_dict()["precision_target"] == target
    else:
        with pytest.raises(ParamsError, match="no threshold reaches precision"):
            cal.choose_threshold(y, p, strategy="precision_target", precision_target=target)


def test_fixed_threshold_and_missing_settings() -> None:
    y = np.array([0, 1, 0, 1])
    p = np.array([0.1, 0.8, 0.6, 0.4])
    got = cal.choose_threshold(y, p, strategy="fixed", value=0.5)
    assert (got.value, got.precision, got.recall) == (0.5, 0.5, 0.5)
    with pytest.raises(ParamsError, match="no value"):
        cal.choose_threshold(y, p, strategy="fixed")
    with pytest.raises(ParamsError, match="no precision_target"):
        cal.choose_threshold(y, p, strategy="precision_target")


def test_inconclusive_band_is_clipped_and_counts_its_share() -> None:
    p = np.array([0.0, 0.05, 0.1, 0.2, 0.5, 0.95])
    band = cal.inconclusive_band(p, 0.05, 0.1)
    assert band == {"low": 0.0, "high": pytest.approx(0.15), "share": pytest.approx(0.5)}
    assert cal.inconclusive_band(p, 0.5, None) is None
    assert cal.inconclusive_band(p, 0.5, 0.0) is None


# ---------------------------------------------------------------- sweep and the whole fit


def test_sweep_picks_best_auc_and_breaks_ties_toward_identity() -> None:
    sweep = cal.Sweep(scales=(0.5, 1.0, 2.0), offsets=(-1.0, 0.0, 1.0),
                      auc=((0.7, 0.9, 0.9), (0.8, 0.9, None), (0.9, 0.6, 0.5)))
    assert sweep.best() == (1.0, 0.0)
    sweep2 = cal.Sweep(scales=(0.5, 2.0), offsets=(-1.0, 1.0), auc=((0.9, 0.8), (0.8, 0.9)))
    assert sweep2.best() == (0.5, -1.0)  # equal distance: the smaller scale first
    with pytest.raises(DataError, match="undefined at every point"):
        cal.Sweep(scales=(1.0,), offsets=(0.0,), auc=((None,),)).best()
    assert cal.Sweep.from_dict(sweep.to_dict()) == sweep
    assert sweep.long_rows()[:2] == [(0.5, -1.0, 0.7), (0.5, 0.0, 0.9)]


def test_sweep_evaluates_every_grid_point_in_order() -> None:
    z, y = _synthetic(400, seed=6)
    calls: list[tuple[float, float]] = []

    def score_at(scale: float, offset: float) -> np.ndarray:
        calls.append((scale, offset))
        return np.abs(z * scale + offset)  # non-monotone: offset changes the ranking

    sweep = cal.sweep_auc(score_at, y, (0.5, 1.0), (-0.5, 0.0, 4.0))
    assert calls == [(0.5, -0.5), (0.5, 0.0), (0.5, 4.0), (1.0, -0.5), (1.0, 0.0), (1.0, 4.0)]
    assert sweep.auc[1][2] == pytest.approx(metrics.roc_auc(y, np.abs(z + 4.0)), abs=0)
    flat = [(auc, s, o) for s, o, auc in sweep.long_rows()]
    top = max(flat)
    assert sweep.best() == (top[1], top[2]) == (0.5, 4.0)  # |0.5 z + 4| is nearly monotone in z


def test_fit_reduces_ece_on_overconfident_scores() -> None:
    z, y = _synthetic(6000, seed=7)
    fitted = cal.fit_calibration(lambda s, o: 3.0 * z, y, scales=(1.0,), offsets=(0.0,),
                                 method="temperature", threshold_strategy="max_f1", ece_bins=15)
    assert fitted["probability"]["temperature"] == pytest.approx(3.0, rel=0.08)
    assert fitted["ece"]["after"] < 0.5 * fitted["ece"]["before"]
    assert fitted["brier"]["after"] < fitted["brier"]["before"]
    p = cal.apply_calibration(3.0 * z, fitted)
    assert fitted["ece"]["after"] == pytest.approx(metrics.ece(y, p, 15), abs=0)
    platt = cal.fit_calibration(lambda s, o: 3.0 * z, y, scales=(1.0,), offsets=(0.0,),
                                method="platt", threshold_strategy="max_f1")
    assert platt["ece"]["after"] < 0.5 * platt["ece"]["before"]
    none = cal.fit_calibration(lambda s, o: 3.0 * z, y, scales=(1.0,), offsets=(0.0,),
                               method="none", threshold_strategy="fixed", threshold_value=0.5)
    assert none["ece"]["after"] == none["ece"]["before"]
    assert none["probability"] == {"method": "none", "a": 1.0, "b": 0.0, "temperature": None,
                                   "score_is_probability": False}


def test_fit_on_probability_scores_maps_through_logit_first() -> None:
    z, y = _synthetic(6000, seed=8)
    probs = cal.sigmoid(3.0 * z)  # an overconfident probability output
    fitted = cal.fit_calibration(lambda s, o: probs, y, scales=(1.0,), offsets=(0.0,),
                                 method="temperature", threshold_strategy="max_f1",
                                 score_is_probability=True)
    assert fitted["probability"]["score_is_probability"] is True
    assert fitted["probability"]["temperature"] == pytest.approx(3.0, rel=0.08)
    assert fitted["ece"]["after"] < 0.5 * fitted["ece"]["before"]


def test_fit_refuses_one_class_and_non_binary_labels() -> None:
    kwargs = {"scales": (1.0,), "offsets": (0.0,), "method": "temperature",
              "threshold_strategy": "max_f1"}
    with pytest.raises(DataError, match="one class"):
        cal.fit_calibration(lambda s, o: np.arange(4.0), np.ones(4), **kwargs)
    with pytest.raises(DataError, match="0 or 1"):
        cal.fit_calibration(lambda s, o: np.arange(4.0), np.array([0, 1, 2, 1]), **kwargs)
    with pytest.raises(DataError, match="undefined at every point"):
        cal.fit_calibration(lambda s, o: np.array([0.0, np.nan, 1, 2]), np.array([0, 1, 0, 1]),
                            **kwargs)


def test_load_calibration_is_strict(tmp_path) -> None:
    import json
    from pathlib import Path

    from relgate.errors import JSONFormatError, SchemaError

    example = Path(__file__).resolve().parents[1] / "examples" / "calibration" / "positive"
    record = json.loads((example / "temperature.json").read_text())
    good = tmp_path / "good.json"
    good.write_text(json.dumps(record))
    assert cal.load_calibration(good) == record
    dup = tmp_path / "dup.json"
    dup.write_text('{"kind": "calibration", "kind": "calibration"}')
    with pytest.raises(JSONFormatError, match="duplicate"):
        cal.load_calibration(dup)
    for key, value in (("a", 0.7), ("b", 0.1)):
        bad = json.loads(json.dumps(record))
        bad["probability"][key] = value
        path = tmp_path / f"bad-{key}.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(SchemaError, match="temperature scaling needs"):
            cal.load_calibration(path)
    bad = json.loads(json.dumps(record))
    bad["inconclusive"] = {"low": 0.6, "high": 0.4}
    path = tmp_path / "band.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(SchemaError, match=r"inconclusive\.low"):
        cal.load_calibration(path)
    del bad["fit_split"]
    path.write_text(json.dumps(bad))
    with pytest.raises(SchemaError, match="fit_split"):
        cal.load_calibration(path)
