"""Waveform -> tokens: the input of the token-readout model (contract ``input_tokens``).

A waveform of ``L`` samples (``L`` a multiple of 32 and at least 64; 1600 in
the reference pipeline, so 50 samples a frame) is cut into 32 consecutive
frames. Each frame's mean is removed (so an offset or a slow drift does not
count) and the frame gets one token out of a vocabulary of 64 =
8 loudness levels x 8 peakiness levels:

* loudness: ``log2(rms / median rms over the 32 frames)``, quantised with
  ``RMS_EDGES``. A dropout lands in the lowest levels, a burst in the highest.
* peakiness: the crest factor (``max |sample| / rms``) as ``log2`` of its
  ratio to the median crest factor over the frames, quantised with
  ``CREST_EDGES``. A spike raises it, clipping flattens the peaks and lowers it.

``token = 8 * loudness_level + peakiness_level``. Both features are ratios to
the waveform's own median, so the tokens describe "how this frame differs
from the rest of this signal" and do not change when the waveform is
multiplied by a positive constant or shifted by a constant (up to float
rounding at a bin edge); what a gain or offset error does to the promoted
model is the calibrate stage's question, not the tokens'. Frequency changes
are deliberately not encoded: zero-crossing counts over 50 noisy samples
carried almost no signal in our tests, and the readout is a bag of tokens, so
it is a weaker, cheaper variant of the CNN, not a rival.

The function is pure numpy, vectorised over the batch, and computes in
float64 so the same waveform gives the same tokens on every platform.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

N_FRAMES = 32
N_LEVELS = 8
VOCAB_SIZE = N_LEVELS * N_LEVELS
# 7 inner edges -> 8 levels, in log2 units of the ratio to the median frame.
RMS_EDGES = np.array([-2.0, -1.0, -0.4, -0.15, 0.15, 0.4, 1.0])
CREST_EDGES = np.array([-0.5, -0.3, -0.15, 0.15, 0.3, 0.5, 0.8])
_TINY = 1e-12


def _log2_ratio_to_median(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """log2(value / median over the frames of its row); a row of zeros maps to 0 (the middle)."""
    med = np.median(values, axis=1, keepdims=True)
    return np.log2((values + _TINY) / (med + _TINY))


def frame_features(x: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-frame (loudness, peakiness) as log2 ratios to the row's median, each ``[N, 32]``."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2 * N_FRAMES or arr.shape[1] % N_FRAMES:
        raise ValueError(
            f"waveforms must be [N, L] with L a multiple of {N_FRAMES} and at least "
            f"{2 * N_FRAMES}; got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("waveforms contain NaN or infinity")
    frames = arr.reshape(arr.shape[0], N_FRAMES, -1)
    centred = frames - frames.mean(axis=2, keepdims=True)
    rms = np.sqrt(np.mean(centred * centred, axis=2))
    crest = np.max(np.abs(centred), axis=2) / (rms + _TINY)
    return _log2_ratio_to_median(rms), _log2_ratio_to_median(crest)


def waveform_to_tokens(x: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Tokens ``[N, 32]`` int64 in ``[0, 64)`` for waveforms ``[N, L]`` (``[32]`` for one ``[L]``)."""
    arr = np.asarray(x, dtype=np.float64)
    single = arr.ndim == 1
    loud, peaky = frame_features(arr[None, :] if single else arr)
    tokens = (N_LEVELS * np.searchsorted(RMS_EDGES, loud, side="right")
              + np.searchsorted(CREST_EDGES, peaky, side="right")).astype(np.int64)
    return tokens[0] if single else tokens
