"""The data stage and the waveform -> tokens function: determinism, shapes, labels, properties."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relgate.errors import ParamsError
from relgate.jsonio import read_json
from stages.common import rankdata, save_npz, spearman
from stages.data import KINDS, DataSpec, make_split
from stages.tokens import N_FRAMES, VOCAB_SIZE, waveform_to_tokens

REPO_ROOT = Path(__file__).resolve().parents[2]

TINY_PARAMS = """\
schema_version: 1
seed: {seed}
data:
  n_train: 40
  n_val: 20
  n_test: 30
  anomaly_share: {share}
gates:
  mode: all
  rules:
    - {{metric: auc, op: ">=", value: 0.5}}
release:
  name: tiny
  promoted: {{path: models/model.onnx}}
"""


def run_data_stage(folder: Path, *, seed: int = 3, share: float = 0.3
                   ) -> subprocess.CompletedProcess[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(TINY_PARAMS.format(seed=seed, share=share))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "stages.data"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ the stage


def test_stage_writes_byte_identical_splits_for_the_same_seed(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder, seed in ((first, 3), (second, 3), (other, 4)):
        proc = run_data_stage(folder, seed=seed)
        assert proc.returncode == 0, proc.stderr
    for split in ("train", "val", "test"):
        a, b, c = (f / "data" / f"{split}.npz" for f in (first, second, other))
        assert sha256(a) == sha256(b)
        assert sha256(a) != sha256(c)
    report = read_json(first / "analysis" / "data_report.json")
    assert report["splits"]["test"]["sha256"] == sha256(first / "data" / "test.npz")
    assert report["splits"]["train"]["n"] == 40


def test_stage_splits_have_the_documented_keys_shapes_and_dtypes(tmp_path: Path) -> None:
    proc = run_data_stage(tmp_path, share=0.25)
    assert proc.returncode == 0, proc.stderr
    for split, n in (("train", 40), ("val", 20), ("test", 30)):
        with np.load(tmp_path / "data" / f"{split}.npz", allow_pickle=False) as npz:
            assert sorted(npz.files) == ["input_tokens", "x", "y"]
            x, tokens, y = npz["x"], npz["input_tokens"], npz["y"]
        assert x.dtype == np.float32 and x.shape == (n, 1600)
        assert tokens.dtype == np.int64 and tokens.shape == (n, N_FRAMES)
        assert y.dtype == np.int8 and set(np.unique(y)) <= {0, 1}
        assert int(y.sum()) == round(0.25 * n)
        assert np.array_equal(tokens, waveform_to_tokens(x))
        assert np.all(np.isfinite(x))


def test_stage_refuses_bad_params_with_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run_data_stage(tmp_path, share=1.5)
    assert proc.returncode == 2
    assert "data.anomaly_share" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------ the pure function


@pytest.mark.parametrize("share", [0.0, 0.1, 0.5, 1.0])
def test_anomaly_share_is_exact_in_every_split(share: float) -> None:
    spec = DataSpec(n_train=50, n_val=21, n_test=13, anomaly_share=share)
    for split in ("train", "val", "test"):
        arrays = make_split(spec, seed=1, split=split)
        n = spec.size(split)
        assert int(arrays["y"].sum()) == round(share * n)
        assert np.array_equal(arrays["kind"] >= 0, arrays["y"] == 1)


def test_splits_differ_from_each_other_and_kinds_all_occur() -> None:
    spec = DataSpec(n_train=200, n_val=200, n_test=200, anomaly_share=0.5)
    splits = {s: make_split(spec, seed=0, split=s) for s in ("train", "val", "test")}
    assert not np.array_equal(splits["train"]["x"], splits["val"]["x"])
    kinds = np.unique(splits["train"]["kind"][splits["train"]["y"] == 1])
    assert list(kinds) == list(range(len(KINDS)))


def test_anomalies_change_the_waveform_but_not_beyond_reason() -> None:
    spec = DataSpec(n_train=300, anomaly_share=0.5)
    arrays = make_split(spec, seed=5, split="train")
    x = arrays["x"].astype(np.float64)
    peak = np.max(np.abs(x - x.mean(axis=1, keepdims=True)), axis=1)
    assert np.all(peak < 50)  # no absurd values
    assert np.all(x.std(axis=1) > 0.01)  # no silent waveforms


def test_only_the_configured_kinds_are_used() -> None:
    spec = DataSpec(n_train=60, anomaly_share=0.5, kinds=("dropout",))
    arrays = make_split(spec, seed=2, split="train")
    assert set(np.unique(arrays["kind"])) == {-1, 0}


@pytest.mark.parametrize(
    ("section", "key"),
    [({"anomaly_share": -0.1}, "anomaly_share"), ({"kinds": ["meteor"]}, "kinds"),
     ({"length": 1000}, "length"), ({"n_test": 1}, "n_test"), ({"noise": [0.3, 0.1]}, "noise"),
     ({"n_train": "many"}, "n_train"), ({"n_train": True}, "n_train"), ({"colour": 1}, "colour")],
)
def test_bad_data_params_are_refused_naming_the_key(section: dict[str, object], key: str) -> None:
    frozen = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
    with pytest.raises(ParamsError, match=key):
        DataSpec.from_params(frozen)


def test_save_npz_is_deterministic_and_loadable(tmp_path: Path) -> None:
    arrays = {"y": np.arange(5, dtype=np.int8), "x": np.ones((5, 3), np.float32)}
    save_npz(tmp_path / "a.npz", arrays)
    save_npz(tmp_path / "b.npz", dict(reversed(arrays.items())))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as npz:
        assert np.array_equal(npz["x"], arrays["x"]) and npz["y"].dtype == np.int8


# ---------------------------------------------------------------------- tokens


def test_tokens_shape_dtype_and_range() -> None:
    x = make_split(DataSpec(n_train=30), seed=0, split="train")["x"]
    tokens = waveform_to_tokens(x)
    assert tokens.shape == (30, N_FRAMES) and tokens.dtype == np.int64
    assert tokens.min() >= 0 and tokens.max() < VOCAB_SIZE
    assert np.array_equal(waveform_to_tokens(x[7]), tokens[7])  # one row = the batch's row


def test_tokens_of_a_steady_sine_sit_in_the_middle() -> None:
    t = np.arange(1600) / 1600
    tokens = waveform_to_tokens(np.sin(2 * np.pi * 32 * t))  # exactly one period per frame
    assert set(tokens.tolist()) == {8 * 4 + 3}


def test_a_dropout_frame_is_quiet_and_a_spike_frame_is_peaky() -> None:
    t = np.arange(1600) / 1600
    base = np.sin(2 * np.pi * 32 * t)
    dropped = base.copy()
    dropped[500:550] *= 0.05  # frame 10
    spiked = base.copy()
    spiked[1012] += 4.0  # frame 20
    assert waveform_to_tokens(dropped)[10] // 8 == 0
    assert waveform_to_tokens(spiked)[20] % 8 == 7
    assert waveform_to_tokens(spiked)[0] == waveform_to_tokens(base)[0]


def test_silence_gives_defined_tokens() -> None:
    tokens = waveform_to_tokens(np.zeros((2, 1600)))
    assert tokens.shape == (2, N_FRAMES) and np.all((tokens >= 0) & (tokens < VOCAB_SIZE))


@pytest.mark.parametrize("bad", [np.zeros(1000), np.zeros((2, 3, 1600)), np.zeros(32)])
def test_tokens_refuse_bad_shapes(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        waveform_to_tokens(bad)


def test_tokens_refuse_nan() -> None:
    x = np.zeros(1600)
    x[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        waveform_to_tokens(x)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), exponent=st.integers(-6, 6),
       offset=st.sampled_from([0.0, 0.5, -2.0, 8.0]))
def test_tokens_ignore_gain_and_offset(seed: int, exponent: int, offset: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(1600) + np.sin(np.arange(1600) / 7.0)
    scaled = x * 2.0**exponent  # a power of two scales exactly in binary floating point
    assert np.array_equal(waveform_to_tokens(scaled), waveform_to_tokens(x))
    shifted = waveform_to_tokens(x + offset)
    # an offset is removed frame by frame; rounding may move a value across a bin edge
    assert np.mean(shifted == waveform_to_tokens(x)) >= 0.9


# ------------------------------------------------------- rank helpers (oracles)


@settings(max_examples=50, deadline=None)
def scipy_like_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of brute-force average ranks (the textbook definition)."""
    ra = np.array([np.sum(a < x) + (np.sum(a == x) + 1) / 2 for x in a])
    rb = np.array([np.sum(b < x) + (np.sum(b == x) + 1) / 2 for x in b])
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@given(st.lists(st.integers(-3, 3), min_size=2, max_size=40), st.integers(0, 2**31))
def test_rank_helpers_match_brute_force(values: list[int], seed: int) -> None:
    v = np.array(values, dtype=np.float64)
    brute = np.array([np.sum(v < a) + (np.sum(v == a) + 1) / 2 for a in v])
    assert np.allclose(rankdata(v), brute)
    other = np.random.default_rng(seed).permutation(v)
    assert spearman(v, other) == pytest.approx(scipy_like_spearman(v, other), nan_ok=True)


def test_spearman_matches_scipy_definition() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(spearman(a, np.ones(5)))
    b = np.array([2.0, 1.0, 4.0, 3.0, 5.0])
    # 1 - 6 * sum(d^2) / (n (n^2 - 1)) with d = (1, 1, 1, 1, 0)
    assert spearman(a, b) == pytest.approx(1 - 6 * 4 / (5 * 24))
