"""Waveform -> tokens: the input of the token-readout model (contract ``input_tokens``).

A waveform of ``L`` samples (``L`` divisible by 32; 1600 in the reference
pipeline, so 50 samples a frame) is cut into 32 consecutive frames. Each frame
gets one token out of a vocabulary of 64 = 8 loudness levels x 8 pitch levels:

* loudness: ``log2(rms_frame / median(rms_frames))`` (the RMS of the frame
  after removing its mean) quantised with
  ``RMS_EDGES``. The median over the 32 frames is the waveform's own reference,
  so the level says "quieter / louder than this signal usually is" (a dropout
  lands in the lowest levels, a spike or a burst in the highest), whatever the
  sensor's gain.
* pitch: the frame's zero-crossing rate (sign changes between consecutive
  samples after removing the frame's mean, so slow drift does not count),
  again as ``log2`` of its ratio to the median over the frames, quantised with
  ``ZCR_EDGES`` (a frequency shift or a chirp moves frames away from the middle).

``token = 8 * loudness_level + pitch_level``. Both features are ratios to the
signal's own median, so tokens do not change when the waveform is multiplied by
a positive constant or shifted by a constant offset (up to float rounding at a
bin edge). The function is pure numpy, vectorised over the batch, and computes
in float64 so the same waveform gives the same tokens on every platform.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

N_FRAMES = 32
N_LEVELS = 8
VOCAB_SIZE = N_LEVELS * N_LEVELS
# 7 inner edges -> 8 levels, in log2 units of the ratio to the median frame.
RMS_EDGES = np.array([-3.0, -1.5, -0.6, -0.2, 0.2, 0.6, 1.5])
ZCR_EDGES = np.array([-1.0, -0.5, -0.25, -0.08, 0.08, 0.25, 0.5])
_TINY = 1e-12


def _log2_ratio_to_median(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """log2(value / median over frames), with an all-zero row mapped to 0 (the middle)."""
    med = np.median(values, axis=1, keepdims=True)
    return np.log2((values + _TINY) / (med + _TINY))


def waveform_to_tokens(x: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Tokens ``[N, 32]`` int64 in ``[0, 64)`` for waveforms ``[N, L]`` (or ``[32]`` for ``[L]``)."""
    arr = np.asarray(x, dtype=np.float64)
    single = arr.ndim == 1
    if single:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] < 2 * N_FRAMES or arr.shape[1] % N_FRAMES:
        raise ValueError(
            f"waveforms must be [N, L] with L a multiple of {N_FRAMES} and at least "
            f"{2 * N_FRAMES}; got shape {np.shape(x)}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("waveforms contain NaN or infinity")
    frames = arr.reshape(arr.shape[0], N_FRAMES, -1)
    centred = frames - frames.mean(axis=2, keepdims=True)
    rms = np.sqrt(np.mean(centred * centred, axis=2))
    signs = np.signbit(centred)
    zcr = np.count_nonzero(signs[:, :, 1:] != signs[:, :, :-1], axis=2) / (frames.shape[2] - 1)
    loud = np.searchsorted(RMS_EDGES, _log2_ratio_to_median(rms), side="right")
    pitch = np.searchsorted(ZCR_EDGES, _log2_ratio_to_median(zcr), side="right")
    tokens = (N_LEVELS * loud + pitch).astype(np.int64)
    return tokens[0] if single else tokens
