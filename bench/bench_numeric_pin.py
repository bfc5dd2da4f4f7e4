"""What the numeric pin costs: one training epoch of the reference CNN, pinned vs torch's own choices.

Baseline: the same epoch (640 waveforms x 1600 samples, batch 64, AdamW) in a child process
that lets torch, MKL and oneDNN pick their kernels for this CPU (one thread, as the pipeline).
Ours: a child that pins first (relgate.numeric_env.pin_process, then the train stage's
configure_torch: ATen at AVX2, MKL CBWR COMPATIBLE, oneDNN off). Timing is the child's own CPU
time for the epoch (robust to a busy machine), median of interleaved runs; peak RSS is the
child's VmHWM. The ratio is the price of bytes that do not depend on the machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 5

CHILD = r"""
import json, os, sys, time
pinned = sys.argv[1] == "pinned"
if pinned:
    from relgate.numeric_env import pin_process
    pin_process()
import torch
from stages.train import AnomalyCNN, Arch, configure_torch
if pinned:
    configure_torch(0, 1)
else:
    torch.manual_seed(0)
    torch.set_num_threads(1)
model = AnomalyCNN(Arch())
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x, y = torch.randn(640, 1600), (torch.rand(640) < 0.3).float()
t0 = time.process_time()
for i in range(0, 640, 64):
    opt.zero_grad()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[i:i + 64]), y[i:i + 64])
    loss.backward()
    opt.step()
cpu = time.process_time() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"cpu": cpu, "hwm_kib": int(hwm)}))
"""


def _child(variant: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATEN_", "MKL_", "ONEDNN_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", CHILD, variant], env=env, capture_output=True,
                         text=True, check=True, timeout=600).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    _child("pinned")
    _child("unpinned")
    ours, base = [], []
    for _ in range(REPEATS):
        ours.append(_child("pinned"))
        base.append(_child("unpinned"))
    t_ours = statistics.median(r["cpu"] for r in ours)
    t_base = statistics.median(r["cpu"] for r in base)
    print(f"numeric pin, one training epoch: pinned {t_ours:.3f} s CPU (median) vs torch's own "
          f"kernel choices {t_base:.3f} s -> ratio {t_ours / t_base:.2f} (the price of machine-"
          f"independent bytes; no target)")
    print(f"numeric pin: peak RSS pinned {max(r['hwm_kib'] for r in ours) / 1024:.0f} MiB, "
          f"unpinned {max(r['hwm_kib'] for r in base) / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
