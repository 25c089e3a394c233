"""A tiny training run through the notebook's own `fit`, for the crash/resume tests.

    python tiny_run.py CKPT_DIR OUT_JSON [KILL_EPOCH KILL_STEP] [--critic]

The notebook's quick preset at width 16 on synthetic uint8 'images' (no MNIST needed), 3 epochs of 3 steps; with
--critic, 3 epochs of phase 2 instead (a critic of width 4, W = 1), from the untrained flow. With
KILL_EPOCH/KILL_STEP the process sends itself SIGKILL at that step, like a Colab disconnect: no cleanup, no
exception handler runs. OUT_JSON gets the curves, every final parameter and what fit() says it did.
"""
import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.nbload import load_lib, notebook_config  # noqa: E402

CHANGES = {"hidden": 16, "epochs": 3, "batch_size": 64, "grad_clip": 100.0, "eval_batch": 100, "adv_epochs": 3,
           "adv_weight": 1.0, "critic_width": 4}


def tiny_cfg(lib) -> dict:
    return {**notebook_config(quick=True, lib=lib), **CHANGES}


def data():
    """(train_pix [192, 784], val_pix [64, 784]) uint8, mostly background like MNIST."""
    g = torch.Generator().manual_seed(123)
    pix = torch.randint(0, 256, (256, 784), generator=g, dtype=torch.uint8)
    pix[torch.rand(256, 784, generator=g) < 0.6] = 0
    return pix[:192], pix[192:]


def new_model(lib, cfg):
    torch.manual_seed(cfg["seed"])
    return lib.NormalizingFlow(**{k: cfg[k] for k in lib.MODEL_KEYS})


def main():
    torch.set_num_threads(1)             # as the tests run: small tensors, and no stalls on a shared CPU
    ckpt_dir, out = sys.argv[1], sys.argv[2]
    with_critic = "--critic" in sys.argv
    args = [a for a in sys.argv if a != "--critic"]
    kill = tuple(map(int, args[3:5])) if len(args) > 3 else None
    lib = load_lib()
    cfg = tiny_cfg(lib)
    model = new_model(lib, cfg)
    train_pix, val_pix = data()

    def on_step(epoch, step, model):
        if (epoch, step) == kill:
            os.kill(os.getpid(), signal.SIGKILL)

    torch.manual_seed(cfg["seed"])
    critic = lib.Critic(cfg["critic_width"]) if with_critic else None
    run = lib.fit(model, train_pix, lib.dequantize(val_pix, 1), cfg, ckpt_dir, critic=critic, on_step=on_step,
                  quiet=True)
    params = torch.cat([p.detach().flatten() for p in (*model.parameters(), *(critic.parameters() if critic else ()))])
    with open(out, "w") as f:
        json.dump({"hist": {k: v for k, v in run["hist"].items() if k != "epoch_s"}, "best_epoch": run["best"]["epoch"],
                   "params": params.double().tolist(), "resumed_after": run["resumed_after"]}, f)


if __name__ == "__main__":
    main()
