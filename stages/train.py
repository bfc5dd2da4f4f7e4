"""Stage ``train``: a small 1-D CNN anomaly scorer, trained with torch on the CPU.

``python -m stages.train`` reads ``params.yaml`` (``seed`` and ``train:``),
``data/train.npz`` and ``data/val.npz``, and writes:

* ``models/checkpoint.pt``: a plain dict (``state_dict`` of tensors, the
  architecture hyper-parameters, the training threshold, the best epoch and
  its validation AUC), saved with ``torch.save`` and loadable with
  ``weights_only=True``, so it never needs unpickling of arbitrary objects;
* ``analysis/train_report.json``: epochs run, best epoch and validation AUC,
  and the per-epoch history (loss, validation AUC);
* ``analysis/train_metrics.json``: the flat numbers for ``dvc metrics``;
* ``analysis/train_history.json``: one row per epoch, for ``dvc plots``.

Reproducibility: ``torch.manual_seed(seed)``, deterministic algorithms on, a
fixed thread count (``train.threads``) and batches drawn from a seeded
generator, so two runs on the same machine give the same weights. One thread
is the default: on a busy 2-core machine torch's OpenMP workers spin-wait for
each other and two threads ran up to 10x slower than one (measured). Early
stopping keeps the weights of the epoch with the best validation AUC.
Wall time is printed, never written, so the outputs stay reproducible.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from relgate.errors import DataError, ModelError
from relgate.jsonio import atomic_write, write_json
from relgate.metrics import best_f1_threshold, roc_auc
from relgate.params import load_params
from stages.common import PARAMS_FILE, load_npz, require, run_stage, section_value

CHECKPOINT_FORMAT = "relgate-reference-cnn/1"


@dataclass(frozen=True, kw_only=True)
class Arch:
    """Architecture hyper-parameters; stored in the checkpoint to rebuild the model."""

    length: int = 1600
    channels: tuple[int, ...] = (12, 24, 32, 48)
    kernel_size: int = 9
    stride: int = 2
    input_norm: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Arch:
        return cls(length=int(data["length"]), channels=tuple(int(c) for c in data["channels"]),
                   kernel_size=int(data["kernel_size"]), stride=int(data["stride"]),
                   input_norm=bool(data["input_norm"]))


class AnomalyCNN(nn.Module):
    """Conv1d blocks (conv, batch norm, ReLU), then mean- and max-pooling, then one logit.

    Max-pooling over time lets a short event (a spike, a dropout) decide the
    score; mean-pooling carries the signal's overall character. Input ``[N, L]``
    float32, output ``[N]`` logits (``score``: higher means more anomalous).
    """

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in arch.channels:
            layers += [nn.Conv1d(c_in, c_out, arch.kernel_size, stride=arch.stride,
                                 padding=arch.kernel_size // 2, bias=False),
                       nn.BatchNorm1d(c_out), nn.ReLU()]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.input_norm = arch.input_norm
        self.head = nn.Linear(3 * c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm:
            x = x - x.mean(dim=1, keepdim=True)
            x = x / (x.std(dim=1, keepdim=True) + 1e-6)
        h = self.features(x.unsqueeze(1))
        mean = h.mean(dim=-1)
        std = torch.sqrt(torch.clamp((h * h).mean(dim=-1) - mean * mean, min=0.0) + 1e-6)
        pooled = torch.cat([mean, h.amax(dim=-1), std], dim=1)
        logits: torch.Tensor = self.head(pooled).squeeze(-1)
        return logits


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    """The ``train:`` section of params.yaml, typed and range-checked."""

    threads: int = 1
    batch_size: int = 64
    lr: float = 0.003
    weight_decay: float = 0.0001
    max_epochs: int = 30
    patience: int = 6
    min_delta: float = 0.0
    channels: tuple[int, ...] = (12, 24, 32, 48)
    kernel_size: int = 9
    input_norm: bool = True
    augment: bool = True
    checkpoint: str = "models/checkpoint.pt"
    report: str = "analysis/train_report.json"
    metrics: str = "analysis/train_metrics.json"
    history: str = "analysis/train_history.json"

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> TrainSpec:
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(section) - known)
        require(not extra, "train", f"has unknown key(s) {', '.join(extra)}")
        d = cls()
        num = (int, float)
        spec = cls(
            threads=section_value(section, "train", "threads", d.threads, int),
            batch_size=section_value(section, "train", "batch_size", d.batch_size, int),
            lr=float(section_value(section, "train", "lr", d.lr, num)),
            weight_decay=float(section_value(section, "train", "weight_decay", d.weight_decay, num)),
            max_epochs=section_value(section, "train", "max_epochs", d.max_epochs, int),
            patience=section_value(section, "train", "patience", d.patience, int),
            min_delta=float(section_value(section, "train", "min_delta", d.min_delta, num)),
            channels=tuple(section_value(section, "train", "channels", d.channels, tuple)),
            kernel_size=section_value(section, "train", "kernel_size", d.kernel_size, int),
            input_norm=section_value(section, "train", "input_norm", d.input_norm, bool),
            augment=section_value(section, "train", "augment", d.augment, bool),
            checkpoint=section_value(section, "train", "checkpoint", d.checkpoint, str),
            report=section_value(section, "train", "report", d.report, str),
            metrics=section_value(section, "train", "metrics", d.metrics, str),
            history=section_value(section, "train", "history", d.history, str),
        )
        require(1 <= spec.threads <= 64, "train.threads", "must be within [1, 64]")
        require(spec.batch_size >= 2, "train.batch_size", "must be at least 2")
        require(spec.lr > 0 and spec.weight_decay >= 0, "train.lr/weight_decay",
                "must be > 0 and >= 0")
        require(spec.max_epochs >= 1 and spec.patience >= 1, "train.max_epochs/patience",
                "must be at least 1")
        require(len(spec.channels) >= 1
                and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1
                        for c in spec.channels),
                "train.channels", "must be a non-empty list of positive integers")
        require(spec.kernel_size >= 1 and spec.kernel_size % 2 == 1, "train.kernel_size",
                "must be a positive odd integer")
        return spec


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What training returns: the best weights and how it got there."""

    state_dict: dict[str, torch.Tensor]
    arch: Arch
    threshold: float
    best_epoch: int
    best_val_auc: float
    history: list[dict[str, float]]
    stopped_early: bool


def configure_torch(seed: int, threads: int) -> None:
    """Seed torch and make its CPU kernels deterministic with a fixed thread count.

    oneDNN is switched off: its convolution blocking follows the CPU's cache
    sizes, so two CPUs with the same ISA can still sum in different orders.
    Convolutions then run as ATen im2col + MKL GEMM, both pinned by
    relgate.numeric_env (ATen at AVX2, MKL at its COMPATIBLE branch).
    """
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.mkldnn.enabled = False
    torch.set_num_threads(threads)


def numeric_record(threads: int) -> dict[str, Any]:
    """The numeric settings a training ran under (machine-independent: no CPU model here).

    ``cpu_capability`` is what ATen actually dispatched to: AVX2 on every x86-64
    machine the pin supports, something else where bytes cannot match.
    """
    from relgate.numeric_env import environment_is_pinned, pinned_settings

    return {**pinned_settings(), "threads": threads, "pinned": environment_is_pinned(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn_enabled": bool(torch.backends.mkldnn.enabled)}


def predict(model: nn.Module, x: npt.NDArray[np.float32], batch_size: int = 512
            ) -> npt.NDArray[np.float32]:
    """Scores (logits) of *model* in eval mode, in batches."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(model(torch.from_numpy(x[start:start + batch_size])).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Label-preserving variants: flip the sign and/or reverse time, each with probability 1/2.

    Every anomaly kind stays an anomaly under both (a chirp up becomes a chirp
    down, a clip from above becomes one from below), so the model sees four
    times as many distinct signals at no cost in data generation.
    """
    flip = torch.rand(len(x), 1, generator=gen) < 0.5
    reverse = torch.rand(len(x), 1, generator=gen) < 0.5
    x = torch.where(flip, -x, x)
    return torch.where(reverse, torch.flip(x, dims=[1]), x)


def train_model(spec: TrainSpec, *, seed: int, x_train: npt.NDArray[np.float32],
                y_train: npt.NDArray[Any], x_val: npt.NDArray[np.float32],
                y_val: npt.NDArray[Any],
                on_epoch: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Train with early stopping on validation AUC; pure apart from torch's global settings."""
    for name, labels in (("train", y_train), ("val", y_val)):
        if np.unique(labels).size != 2:
            raise DataError(f"the {name} split has only one class; training and early stopping "
                            "on AUC need both", hint="set data.anomaly_share within (0, 1)")
    configure_torch(seed, spec.threads)
    arch = Arch(length=int(x_train.shape[1]), channels=spec.channels, kernel_size=spec.kernel_size,
                input_norm=spec.input_norm)
    model = AnomalyCNN(arch)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.max_epochs)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train.astype(np.float32))
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history: list[dict[str, float]] = []
    stale = 0
    for epoch in range(1, spec.max_epochs + 1):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for start in range(0, len(perm), spec.batch_size):
            idx = perm[start:start + spec.batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            batch = augment(xt[idx], gen) if spec.augment else xt[idx]
            opt.zero_grad()
            loss = loss_fn(model(batch), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        val_auc = roc_auc(y_val, predict(model, x_val))
        history.append({"epoch": epoch, "train_loss": total / len(perm), "val_auc": val_auc})
        if on_epoch is not None:
            on_epoch(history[-1])
        if best is None or val_auc > best[0] + spec.min_delta:
            best = (val_auc, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
            stale = 0
        else:
            stale += 1
            if stale >= spec.patience:
                break
    assert best is not None
    model.load_state_dict(best[2])
    prob = 1.0 / (1.0 + np.exp(-predict(model, x_val).astype(np.float64)))
    threshold, _ = best_f1_threshold(y_val, prob)
    return TrainResult(state_dict=best[2], arch=arch, threshold=threshold,
                       best_epoch=best[1], best_val_auc=best[0], history=history,
                       stopped_early=len(history) < spec.max_epochs)


def load_checkpoint(path: str | Path) -> tuple[AnomalyCNN, dict[str, Any]]:
    """Rebuild the model from a checkpoint written by this stage (weights_only: no pickles)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file", hint="run the train stage first") from None
    except Exception as exc:  # torch raises several types for a corrupt or hostile file
        raise ModelError(f"{path}: cannot load checkpoint ({type(exc).__name__})",
                         hint="re-run the train stage (dvc repro train)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint",
                         hint="re-run the train stage (dvc repro train)")
    model = AnomalyCNN(Arch.from_dict(ckpt["arch"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def _print_epoch(row: Mapping[str, float]) -> None:
    print(f"train: epoch {row['epoch']:.0f}: loss {row['train_loss']:.4f}, "
          f"val AUC {row['val_auc']:.4f}", flush=True)


def main() -> int:
    params = load_params(PARAMS_FILE)
    spec = TrainSpec.from_params(params.train)
    train = load_npz("data/train.npz", ("x", "y"))
    val = load_npz("data/val.npz", ("x", "y"))
    started = time.perf_counter()
    result = train_model(spec, seed=params.seed, x_train=train["x"], y_train=train["y"],
                         x_val=val["x"], y_val=val["y"], on_epoch=_print_epoch)
    seconds = time.perf_counter() - started
    n_params = sum(int(v.numel()) for k, v in result.state_dict.items()
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    checkpoint = {"format": CHECKPOINT_FORMAT, "state_dict": result.state_dict,
                  "arch": result.arch.to_dict(), "threshold": result.threshold,
                  "best_epoch": result.best_epoch, "best_val_auc": result.best_val_auc,
                  "seed": params.seed}
    atomic_write(spec.checkpoint, lambda fh: torch.save(checkpoint, fh))  # never half a checkpoint
    write_json(spec.report, {
        "schema_version": 1, "seed": params.seed, "arch": result.arch.to_dict(),
        "parameters": n_params, "epochs": len(result.history), "best_epoch": result.best_epoch,
        "best_val_auc": result.best_val_auc, "threshold": result.threshold,
        "stopped_early": result.stopped_early, "history": result.history,
        "data": {"train": len(train["y"]), "val": len(val["y"])},
        "numeric_environment": numeric_record(spec.threads),
    })
    write_json(spec.metrics, {"best_val_auc": result.best_val_auc,
                              "best_epoch": result.best_epoch, "epochs": len(result.history),
                              "train_threshold": result.threshold})
    write_json(spec.history, result.history)
    print(f"train: {len(result.history)} epochs, best val AUC {result.best_val_auc:.4f} at epoch "
          f"{result.best_epoch}, {n_params} parameters, {seconds:.1f} s on {spec.threads} threads")
    return 0


if __name__ == "__main__":
    run_stage("train", main)
