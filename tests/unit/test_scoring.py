"""relgate.scoring against onnxruntime run directly, numpy and scikit-learn oracles."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from relgate import scoring
from relgate.errors import DataError, ModelError
from relgate.scoring import EvalData, Scorer, ScoreResult, score_dataset, write_scores
from tests.support import onnx_factory as f

N = 203  # not a multiple of any batch size used here


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory, torch_cnn_model: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "cnn": torch_cnn_model,
        "tokens": f.token_model(root / "tokens"),
        "fixed1": f.fixed_batch1_model(root / "fixed1"),
        "fixed3": f.fixed_batch1_model(root / "fixed3", batch=3),
        "features": f.features_model(root / "features"),
        "score_feats": f.score_and_features_model(root / "score_feats"),
        "ext_sub": f.external_model(root / "ext_sub", "weights/w.bin", offset=64),
    }


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    x, y = f.waveforms(N, seed=1)
    t, ty = f.tokens(N, seed=2)
    return {
        "wave": f.write_npz(root / "wave.npz", x=x, y=y),
        "wave_z": f.write_npz(root / "wave_z.npz", compressed=True, x=x, y=y),
        "wave_f": f.write_npz(root / "wave_f.npz", x=np.asfortranarray(x), y=y),
        "wave_be": f.write_npz(root / "wave_be.npz", x=x.astype(">f4"), y=y.astype(bool)),
        "tokens": f.write_npz(root / "tokens.npz", input_tokens=t, y=ty),
    }


def _session(path: Path, threads: int) -> ort.InferenceSession:
    """onnxruntime as a user would run it, with the same thread settings as relgate."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _direct(path: Path, feed: dict[str, np.ndarray], *, threads: int, batch: int,
            output: str = "score") -> np.ndarray:
    sess = _session(path, threads)
    n = next(iter(feed.values())).shape[0]
    parts = [sess.run([output], {k: v[i : i + batch] for k, v in feed.items()})[0]
             for i in range(0, n, batch)]
    return np.concatenate(parts).reshape(n, -1)


def _load(p: Path) -> dict[str, np.ndarray]:
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------- bit-identity


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("model", "dataset", "batch"), [
    ("cnn", "wave", 64), ("cnn", "wave_z", 1024), ("tokens", "tokens", 50),
    ("fixed1", "wave", 1), ("ext_sub", "wave", 32), ("score_feats", "wave", 100),
])
def test_scores_bit_identical_to_onnxruntime(models: dict[str, Path], data: dict[str, Path],
                                             model: str, dataset: str, batch: int,
                                             threads: int) -> None:
    arrays = _load(data[dataset])
    y = arrays.pop("y")
    got = score_dataset(models[model], data[dataset], threads=threads, batch_size=batch)
    want = _direct(models[model], arrays, threads=threads, batch=batch)[:, 0].astype(np.float64)
    assert got.scores.dtype == np.float64 and got.scores.shape == (N,)
    assert np.array_equal(got.scores, want)
    assert got.y.dtype == np.int8 and np.array_equal(got.y, y)


def test_repeated_runs_are_bit_identical(models: dict[str, Path], data: dict[str, Path]) -> None:
    a = Scorer(models["cnn"], threads=2, batch_size=37).score(data["wave"])
    b = Scorer(models["cnn"], threads=2, batch_size=37).score(data["wave"])
    assert np.array_equal(a.scores, b.scores)


def test_every_storage_layout_gives_the_same_scores(models: dict[str, Path],
                                                    data: dict[str, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = Scorer(models["cnn"], batch_size=40)
    ref = scorer.score(data["wave"]).scores
    for name in ("wave_z", "wave_f", "wave_be"):
        assert np.array_equal(scorer.score(data[name]).scores, ref), name
    monkeypatch.setattr(scoring, "SMALL_MEMBER_BYTES", 0)  # stream the compressed member
    assert np.array_equal(Scorer(models["cnn"], batch_size=40).score(data["wave_z"]).scores, ref)
    arrays = _load(data["wave"])
    assert np.array_equal(scorer.score(arrays).scores, ref)  # in memory
    strided = {"x": np.repeat(arrays["x"], 2, axis=0)[::2], "y": arrays["y"]}
    assert np.array_equal(scorer.score(strided).scores, ref)


# ---------------------------------------------------------------- independent oracles


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_token_model_matches_numpy(models: dict[str, Path], data: dict[str, Path]) -> None:
    w = _initializers(models["tokens"])
    arrays = _load(data["tokens"])
    want = (w["emb"][arrays["input_tokens"]].mean(axis=1) @ w["w"] + w["b"])[:, 0]
    got = score_dataset(models["tokens"], data["tokens"]).scores
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["fixed1", "fixed3"])
def test_fixed_batch_models_loop_and_pad(models: dict[str, Path], data: dict[str, Path],
                                         model: str) -> None:
    x = _load(data["wave"])["x"].astype(np.float64)
    want = (x @ f.fixed_weight().astype(np.float64))[:, 0] + 0.05
    scorer = Scorer(models[model], batch_size=16)
    assert scorer.fixed_batch == (1 if model == "fixed1" else 3)
    np.testing.assert_allclose(scorer.score(data["wave"]).scores, want, rtol=1e-4, atol=1e-5)


def test_probability_model_matches_scikit_learn(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(scale=0.5, size=300) > 0).astype(int)
    clf = LogisticRegression().fit(x, y)
    model = f.probability_model(tmp_path, clf.coef_[0], float(clf.intercept_[0]))
    f.write_npz(tmp_path / "d.npz", x=x, y=y)
    got = score_dataset(model, tmp_path / "d.npz")
    np.testing.assert_allclose(got.scores, clf.predict_proba(x)[:, 1], rtol=1e-5, atol=1e-6)
    neg = score_dataset(model, tmp_path / "d.npz", positive_index=0)
    np.testing.assert_allclose(neg.scores, clf.predict_proba(x)[:, 0], rtol=1e-5, atol=1e-6)


def test_features_outputs(models: dict[str, Path], data: dict[str, Path]) -> None:
    arrays = _load(data["wave"])
    feats = _direct(models["features"], {"x": arrays["x"]}, threads=1, batch=1024,
                    output="features")
    got = score_dataset(models["features"], data["wave"])
    assert got.features is not None and np.array_equal(got.features, feats)
    assert np.array_equal(got.scores, feats.astype(np.float64).mean(axis=1))
    col = score_dataset(models["features"], data["wave"], output_name="features",
                        positive_index=5)
    assert np.array_equal(col.scores, feats[:, 5].astype(np.float64))
    both = score_dataset(models["score_feats"], data["wave"], batch_size=50)
    want = _direct(models["score_feats"], {"x": arrays["x"]}, threads=1, batch=50,
                   output="feats")
    assert both.features is not None and np.array_equal(both.features, want)


def test_scale_and_offset(models: dict[str, Path], data: dict[str, Path]) -> None:
    x = _load(data["wave"])["x"]
    shifted = x * np.float32(1.7) + np.float32(-0.25)
    want = _direct(models["cnn"], {"x": shifted}, threads=1, batch=64)[:, 0]
    scorer = Scorer(models["cnn"], batch_size=64)
    got = scorer.score(data["wave"], scale=1.7, offset=-0.25)
    assert np.array_equal(got.scores, want.astype(np.float64))
    assert np.array_equal(scorer.score({"x": x, "y": _load(data["wave"])["y"]},
                                       scale=1.7, offset=-0.25).scores, got.scores)
    assert np.array_equal(x, _load(data["wave"])["x"])  # caller's arrays untouched
    plain = score_dataset(models["tokens"], data["tokens"])
    ignored = score_dataset(models["tokens"], data["tokens"], scale=3.0, offset=1.0)
    assert np.array_equal(plain.scores, ignored.scores)  # integer inputs are left alone


def test_repeated_calls_reuse_the_scorer(models: dict[str, Path], data: dict[str, Path]) -> None:
    a = scoring.get_scorer(models["cnn"], batch_size=33)
    assert scoring.get_scorer(models["cnn"], batch_size=33) is a
    assert scoring.get_scorer(models["cnn"], batch_size=34) is not a
    seen: list[tuple[int, int]] = []
    score_dataset(models["cnn"], data["wave"], batch_size=33,
                  progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (N, N) and len(seen) == -(-N // 33)


def test_streaming_keeps_numpy_memory_near_one_chunk(models: dict[str, Path],
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = f.waveforms(4000, seed=3)  # 25.6 MB of input
    stored = f.write_npz(tmp_path / "big.npz", x=x, y=y)
    packed = f.write_npz(tmp_path / "big_z.npz", compressed=True, x=x, y=y)
    monkeypatch.setattr(scoring, "SMALL_MEMBER_BYTES", 0)
    scorer = Scorer(models["cnn"], batch_size=128)
    del x
    for path in (stored, packed):
        scorer.score(path, scale=1.1)  # parse once, outside the measurement
        tracemalloc.start()
        try:
            scorer.score(path, scale=1.1)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        chunk = 128 * 1600 * 4
        assert peak < 6 * chunk < 4000 * 1600 * 4 / 5, f"{path.name}: numpy peak {peak} bytes"


# ---------------------------------------------------------------- bad data


def _bad(tmp_path: Path, **arrays: np.ndarray) -> Path:
    return f.write_npz(tmp_path / "bad.npz", **arrays)


@pytest.mark.parametrize(("make", "match"), [
    (lambda x, y: {"y": y}, r"missing key\(s\) 'x'.*found none"),
    (lambda x, y: {"input": x, "y": y}, r"missing key\(s\) 'x'.*found 'input'"),
    (lambda x, y: {"x": x.astype(np.float64), "y": y}, "'x' is float64, the model wants float32"),
    (lambda x, y: {"x": x[:, :1599], "y": y}, r"shape \[10, 1599\], the model wants"),
    (lambda x, y: {"x": x[:, None, :], "y": y}, r"shape \[10, 1, 1600\]"),
    (lambda x, y: {"x": x, "y": y + 1}, r"y\[\d+\] = 2 is not 0 or 1"),
    (lambda x, y: {"x": x, "y": np.where(y == 1, -1, 0).astype(np.int64)},
     r"y\[\d+\] = -1 is not 0 or 1"),  # the value as written, never np.int64(-1)
    (lambda x, y: {"x": x, "y": y[:5]}, "but y has 5 samples"),
    (lambda x, y: {"x": x, "y": y[:, None]}, r"y has shape \[10, 1\]"),
    (lambda x, y: {"x": x}, "no 'y'"),
    (lambda x, y: {"x": x[:0], "y": y[:0]}, "no samples"),
    (lambda x, y: {"x": x, "y": np.array(["a"] * 10)}, "y has dtype"),
])
def test_bad_data_is_one_line_data_error(models: dict[str, Path], tmp_path: Path,
                                         make: Callable[[np.ndarray, np.ndarray],
                                                        dict[str, np.ndarray]],
                                         match: str) -> None:
    x, y = f.waveforms(10)
    path = _bad(tmp_path, **make(x, y))
    with pytest.raises(DataError, match=match) as err:
        score_dataset(models["cnn"], path)
    assert "\n" not in err.value.one_line() and err.value.exit_code == 2


def test_pickles_and_broken_files_are_refused(models: dict[str, Path], tmp_path: Path) -> None:
    x, y = f.waveforms(10)
    np.savez(tmp_path / "obj.npz", x=np.array([x[0], "evil"], dtype=object), y=y)
    with pytest.raises(DataError, match="objects and records are not read"):
        score_dataset(models["cnn"], tmp_path / "obj.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match=r"not an \.npz file"):
        score_dataset(models["cnn"], tmp_path / "text.npz")
    good = f.write_npz(tmp_path / "good.npz", x=x, y=y).read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError):
        score_dataset(models["cnn"], tmp_path / "cut.npz")
    with pytest.raises(DataError, match="no such file"):
        score_dataset(models["cnn"], tmp_path / "missing.npz")


def test_positive_index_beyond_the_output_is_a_model_error(models: dict[str, Path],
                                                          data: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match=r"--positive-index 99 is outside output features"):
        score_dataset(models["features"], data["wave"], output_name="features",
                      positive_index=99)


# ---------------------------------------------------------------- writing


def test_write_scores_is_atomic_and_complete(tmp_path: Path) -> None:
    result = ScoreResult(scores=np.array([0.5, 0.25]), y=np.array([1, 0], dtype=np.int8),
                         features=np.ones((2, 3), dtype=np.float32))
    out = tmp_path / "sub" / "scores.npz"
    write_scores(out, result)
    back = _load(out)
    assert sorted(back) == ["features", "score", "y"]
    assert back["score"].dtype == np.float64 and np.array_equal(back["score"], result.scores)
    assert back["y"].dtype == np.int8
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.npz"]
    write_scores(out, ScoreResult(scores=result.scores, y=result.y))
    assert sorted(_load(out)) == ["score", "y"]


def test_eval_data_reports_shapes(data: dict[str, Path]) -> None:
    ev = EvalData.open(data["wave_z"])
    assert ev.n == N and ev.keys == ["x"]
    assert ev.shapes["x"] == (np.dtype("float32"), (N, 1600))


# ---------------------------------------------------------------- Fortran order, samples, NaN


@pytest.mark.parametrize("shape", [(11, 5), (9, 3, 4), (6, 2, 3, 2)])
@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<i8"])
def test_stored_fortran_members_stream_by_column_strips(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        shape: tuple[int, ...], dtype: str) -> None:
    """Above SMALL_MEMBER_BYTES a stored Fortran-order member is read with one pread per
    column strip, in chunks of rows; every row equals numpy's, in native byte order."""
    rng = np.random.default_rng(7)
    x = np.asfortranarray((rng.normal(size=shape) * 100).astype(dtype))
    path = f.write_npz(tmp_path / "f.npz", x=x, y=np.arange(shape[0]) % 2)
    monkeypatch.setattr(scoring, "SMALL_MEMBER_BYTES", 0)
    ev = EvalData.open(path)
    assert ev._members["x"].fortran and ev._members["x"].data_offset is not None
    got = np.empty_like(x, order="C", dtype=x.dtype.newbyteorder("="))
    buf = np.empty((4, *shape[1:]), dtype=got.dtype)
    with ev.rows(["x"]) as readers:
        for start in range(0, shape[0], 4):
            stop = min(shape[0], start + 4)
            chunk, owned = readers["x"].read(start, stop, buf)
            assert owned
            got[start:stop] = chunk
    assert np.array_equal(got, x)
    rows = np.array([0, 3, shape[0] - 1])
    assert np.array_equal(ev.take(["x"], rows)["x"], x[rows])


def test_take_reads_sampled_rows_from_every_layout(data: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored, compressed (in memory and streamed, skipping rows), Fortran, big-endian."""
    want = _load(data["wave"])["x"]
    rows = np.array([0, 1, 17, 100, N - 1])
    for name in ("wave", "wave_z", "wave_f", "wave_be"):
        assert np.array_equal(EvalData.open(data[name]).take(["x"], rows)["x"], want[rows]), name
    monkeypatch.setattr(scoring, "SMALL_MEMBER_BYTES", 0)
    for name in ("wave_z", "wave_f"):
        assert np.array_equal(EvalData.open(data[name]).take(["x"], rows)["x"], want[rows]), name


@pytest.mark.parametrize(("model", "dataset"), [("cnn", "wave"), ("tokens", "tokens"),
                                                ("fixed3", "wave"), ("score_feats", "wave")])
def test_score_each_scores_every_row_as_a_batch_of_one(models: dict[str, Path],
                                                       data: dict[str, Path], model: str,
                                                       dataset: str) -> None:
    """Equal to onnxruntime run on each row alone (a fixed batch of k: the row repeated)."""
    arrays = _load(data[dataset])
    arrays.pop("y")
    rows = np.array([2, 5, 77, N - 1])
    got = scoring.score_each(models[model], data[dataset], rows, batch_size=64)
    if model == "fixed3":
        feed = {k: np.repeat(v[rows], 3, axis=0) for k, v in arrays.items()}
        want = _direct(models[model], feed, threads=1, batch=3)[::3, 0]
    else:
        want = _direct(models[model], {k: v[rows] for k, v in arrays.items()}, threads=1,
                       batch=1)[:, 0]
    assert np.array_equal(got, want.astype(np.float64))


def test_count_nonfinite_counts_nan_and_inf_per_float_input(models: dict[str, Path],
                                                            tmp_path: Path) -> None:
    x = np.zeros((50, 7), np.float32)
    x[3, 1], x[40, 6], x[41, 0] = np.nan, np.inf, -np.inf
    toks = np.zeros((50, 2), np.int64)
    path = f.write_npz(tmp_path / "n.npz", compressed=True, x=x, t=toks, y=np.arange(50) % 2)
    assert EvalData.open(path).count_nonfinite(["x", "t"]) == {"x": 3}
    wave, y = f.waveforms(30, seed=4)
    wave[29, 1599] = np.nan
    path = f.write_npz(tmp_path / "w.npz", x=wave, y=y)
    assert scoring.nonfinite_inputs(models["cnn"], path) == {"x": 1}
