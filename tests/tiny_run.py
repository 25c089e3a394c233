"""A tiny training run through the notebook's own `fit`, for the crash/resume tests.

    python tiny_run.py CKPT_DIR OUT_JSON [KILL_EPOCH KILL_STEP]

The notebook's quick preset at width 16 on synthetic uint8 'images' (no MNIST needed), 3 epochs of 3 steps. With
KILL_EPOCH/KILL_STEP the process sends itself SIGKILL at that step, like a Colab disconnect: no cleanup, no
exception handler runs. OUT_JSON gets the curves, the final parameters' sums and what fit() says it did.
"""
import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.nbload import load_lib, notebook_config  # noqa: E402

CHANGES = {"hidden": 16, "epochs": 3, "batch_size": 64, "grad_clip": 100.0, "eval_batch": 100}


def tiny_cfg(lib) -> dict:
    return {**notebook_config(quick=True, lib=lib), **CHANGES}


def data():
    g = torch.Generator().manual_seed(123)
    pix = torch.randint(0, 256, (256, 784), generator=g, dtype=torch.uint8)
    pix[torch.rand(256, 784, generator=g) < 0.6] = 0
    return pix[:192], pix[192:]


def main():
    ckpt_dir, out = sys.argv[1], sys.argv[2]
    kill = tuple(map(int, sys.argv[3:5])) if len(sys.argv) > 3 else None
    lib = load_lib()
    cfg = tiny_cfg(lib)
    lib.set_seed(cfg["seed"])
    model = lib.NormalizingFlow(**lib.model_kwargs(cfg))
    train_pix, val_pix = data()
    val_x = lib.fixed_dequantize(val_pix, seed=1)

    def on_step(epoch, step, model):
        if (epoch, step) == kill:
            os.kill(os.getpid(), signal.SIGKILL)

    run = lib.fit(model, train_pix, val_x, cfg, ckpt_dir, on_step=on_step)
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    with open(out, "w") as f:
        json.dump({"hist": {k: v for k, v in run["hist"].items() if k != "epoch_s"}, "best_epoch": run["best"]["epoch"],
                   "param_sum": params.double().sum().item(), "param_abs": params.double().abs().sum().item(),
                   "run": {k: run[k] for k in ("epochs_trained", "resumed_after", "restarted")}}, f)


if __name__ == "__main__":
    main()
