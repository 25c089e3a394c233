"""Short screening runs of design choices, with the notebook's own `#| lib` code.

    python bench/screen.py NAME EPOCHS [key=value ...]
    python bench/screen.py s_random 4 hidden=256 split=random      # for example

Trains NormalizingFlow on the notebook's 50,000-image training split (same split, seeds, dequantization, Adam +
StepLR(0.99) recipe as the notebook) and measures validation bits/dim after every epoch. Model keys: hidden, coupling,
split, logit_alpha (None for plain [0, 1]), scale_bound; training keys: lr, batch_size, grad_clip, n_train.
Writes results/screening/NAME.json (per-epoch train/val bits/dim and seconds). Data: $NF_DATA_DIR or ../shared/data.
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from nbload import load_lib  # noqa: E402

INTS = {"hidden", "batch_size", "n_train"}


def parse(value: str):
    if value == "None":
        return None
    try:
        return float(value)
    except ValueError:
        return value


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    name, epochs = sys.argv[1], int(sys.argv[2])
    model_kw = {"hidden": 1024, "coupling": "affine", "split": "checkerboard", "logit_alpha": 1e-6, "scale_bound": 2.0}
    train_kw = {"lr": 1e-3, "batch_size": 128, "grad_clip": 100.0, "n_train": 50_000}
    for arg in sys.argv[3:]:
        key, value = arg.split("=", 1)
        value = parse(value)
        value = int(value) if key in INTS else value
        (model_kw if key in model_kw else train_kw)[key] = value

    lib = load_lib()
    torch.manual_seed(0)
    data_dir = os.environ.get("NF_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    mnist = lib.load_mnist(data_dir)
    split = torch.randperm(60_000, generator=torch.Generator().manual_seed(1234))
    pixels = mnist["train_x"][split[:50_000][: train_kw["n_train"]]]
    val_x = lib.fixed_dequantize(mnist["train_x"][split[50_000:]], 1)
    model = lib.NormalizingFlow(**model_kw)
    opt = torch.optim.Adam(model.parameters(), lr=train_kw["lr"], fused=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.99)
    gen = torch.Generator().manual_seed(0)
    res = {"name": name, "kw": model_kw, "tr": train_kw, "train": [], "val": [], "t": []}
    out = ROOT / "results" / "screening" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for epoch in range(1, epochs + 1):
        t0 = time.time()
        train_bpd = lib.train_epoch(model, opt, pixels, train_kw["batch_size"], gen, train_kw["grad_clip"], epoch)
        val_bpd = lib.bits_per_dim(lib.evaluate(model, val_x))
        sched.step()
        res["train"].append(train_bpd)
        res["val"].append(val_bpd)
        res["t"].append(time.time() - t0)
        print(f"{name} epoch {epoch}: train {train_bpd:.4f} val {val_bpd:.4f} bpd, {res['t'][-1]:.0f} s", flush=True)
        out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
