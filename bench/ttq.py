"""Time to quality: train the full preset (with overrides) until validation first reaches 1.85 bits/dim.

    python bench/ttq.py NAME [key=value ...]        # e.g. python bench/ttq.py cosine24 epochs=24 lr_schedule=cosine

Uses the notebook's own `fit()` on its 50,000-image training split, with the notebook's full preset (its CFG, read
from the config cell) unless overridden, and stops after the first epoch whose validation bits/dim is <= 1.85
(stop_val_bpd=-1: train all epochs). Writes results/ttq_NAME.json (per-epoch curves and seconds, config, machine);
bench/bench.py reads it into results/bench.json. Checkpoints: checkpoints/ttq/NAME/ (a killed run resumes).
"""
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
from nbload import load_lib, notebook_config  # noqa: E402

from bench.ablate import notebook_data  # noqa: E402

INTS = {"hidden", "batch_size", "epochs", "n_train"}
MODEL_KEYS = ("hidden", "coupling", "split", "logit_alpha", "scale_bound")      # the notebook's MODEL_KW
QUALITY_BPD = 1.85                     # the quality bar of the issue; stop_val_bpd=-1 trains all epochs instead


def parse(key, value):
    if value == "None":
        return None
    try:
        return int(value) if key in INTS else float(value)
    except ValueError:
        return value


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    name = sys.argv[1]
    cfg = {**notebook_config(), "stop_val_bpd": QUALITY_BPD}
    for arg in sys.argv[2:]:
        key, value = arg.split("=", 1)
        cfg[key] = parse(key, value)
    lib = load_lib()
    device = lib.pick_device()
    t0 = time.time()
    _, train_pix, val_x, _ = notebook_data(lib, cfg, device)
    lib.set_seed(cfg["seed"])
    model = lib.NormalizingFlow(**{k: cfg[k] for k in MODEL_KEYS}).to(device)
    hist, best = lib.fit(model, train_pix, val_x, cfg, ROOT / "checkpoints" / "ttq" / name)
    out = ROOT / "results" / f"ttq_{name}.json"
    out.write_text(json.dumps({
        "command": "python bench/ttq.py " + " ".join(sys.argv[1:]), "config": cfg, "curves": hist,
        "device": str(device), "device_name": lib.describe_device(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "wall_time_s": time.time() - t0,
        "reached": bool(min(hist["val_bpd"]) <= QUALITY_BPD),
    }, indent=1))
    print(f"wrote {out}: best val {lib.bits_per_dim(best['val_nats']):.4f} at epoch {best['epoch']}, "
          f"{sum(hist['epoch_s']) / 60:.1f} min of epochs")


if __name__ == "__main__":
    main()
