"""Seed 004's small torch runs, shared by the compare and handoff tests: a tabular split, a
tiny MLP trained with a fixed seed (a frozen copy at each snapshot epoch), and its ONNX
export through torch.onnx.export."""

from __future__ import annotations

import copy
import io
import logging
import warnings
from typing import Any

import numpy as np


def tabular(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x [n, 8] float32 and 0/1 labels drawn from a fixed non-linear logit."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    logit = x[:, 0] * 1.5 - x[:, 1] + 0.8 * x[:, 2] * x[:, 3] - 0.7
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return x, y


def train_mlp(x: np.ndarray, y: np.ndarray, *, seed: int, epochs: int,
              snapshots: tuple[int, ...]) -> list[Any]:
    """A tiny MLP (fixed seed); a frozen copy of the net, in eval mode, at each epoch in
    *snapshots*."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)).reshape(-1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    out = []
    for epoch in range(1, epochs + 1):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(xt), yt).backward()
        opt.step()
        if epoch in snapshots:
            out.append(copy.deepcopy(net).eval())
    return out


def export_onnx(net: Any) -> bytes:
    """``x [N, 8] -> logit [N, 1]`` through torch.onnx.export (TorchScript path)."""
    import torch

    buf = io.BytesIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 8),), buf, dynamo=False, input_names=["x"],
                          output_names=["logit"],
                          dynamic_axes={"x": {0: "N"}, "logit": {0: "N"}})
    return buf.getvalue()
