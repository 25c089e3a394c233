"""A tiny training run through the notebook's own `fit`, for the crash/resume tests.

    python tiny_run.py CKPT_DIR OUT_JSON [KILL_EPOCH KILL_STEP]

Synthetic uint8 'images' (no MNIST needed), width 16, 3 epochs. With KILL_EPOCH/KILL_STEP the process sends
itself SIGKILL at that step, like a Colab disconnect: no cleanup, no exception handler runs.
"""
import json
import os
import signal
import sys

import torch
from nbload import load_lib

CFG = {"seed": 0, "hidden": 16, "lr": 1e-3, "lr_gamma": 0.99, "epochs": 3, "batch_size": 64, "grad_clip": 100.0,
       "eval_batch": 100}


def data():
    g = torch.Generator().manual_seed(123)
    pix = torch.randint(0, 256, (256, 784), generator=g, dtype=torch.uint8)
    pix[torch.rand(256, 784, generator=g) < 0.6] = 0
    return pix[:192], pix[192:]


def main():
    ckpt_dir, out = sys.argv[1], sys.argv[2]
    kill = tuple(map(int, sys.argv[3:5])) if len(sys.argv) > 3 else None
    lib = load_lib()
    torch.manual_seed(CFG["seed"])
    model = lib.NormalizingFlow(hidden=CFG["hidden"])
    train_pix, val_pix = data()
    val_x = lib.fixed_dequantize(val_pix, seed=1)

    def on_step(epoch, step, model):
        if (epoch, step) == kill:
            os.kill(os.getpid(), signal.SIGKILL)

    hist, best = lib.fit(model, train_pix, val_x, CFG, ckpt_dir, on_step=on_step)
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    with open(out, "w") as f:
        json.dump({"hist": {k: v for k, v in hist.items() if k != "epoch_s"}, "best_epoch": best["epoch"],
                   "param_sum": params.double().sum().item(), "param_abs": params.double().abs().sum().item()}, f)


if __name__ == "__main__":
    main()
