"""The notebook's training on a GPU: eager against captured (CUDA graphs), then the full preset, timed.

    python bench/gpu_run.py --out results/bench_gpu.json      # on a CUDA machine: at most --budget-s of training
    python bench/gpu_run.py --quick --out /tmp/g.json         # a smoke run of the script itself, on any device

1. One epoch with cuda_graphs=False (eager) and two with cuda_graphs=True (the first includes the capture), on the
   full training split, with the notebook's fit(); seconds per epoch of each.
2. The full preset (the notebook's CFG, captured) for --epochs epochs: the epoch at which validation first reaches
   QUALITY_BPD, the seconds to it, the wall time of the epochs, the test bits/dim of the best model.
Every training call stops at the deadline (--budget-s after the start; the epochs it finished are kept and the
file says "finished": false), so the script ends in about that time even where capture fails and the GPU trains
eagerly. Writes one JSON file with the device name and every number, after each part; checkpoints go to a
temporary folder.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import QUALITY_BPD, config, lib, machine, write_json  # noqa: E402
from bench.time_to_quality import first_epoch_at  # noqa: E402


class OutOfTime(Exception):
    """Raised from fit()'s per-step hook at the deadline."""


def train(cfg, data, ckpt, deadline) -> tuple:
    """(best model, per-epoch curves, finished?, wall seconds) of fit() on cfg, stopped at the deadline."""
    def hook(epoch, step, model):
        if time.time() > deadline:
            raise OutOfTime
    device = data["train_pix"].device
    lib.set_seed(cfg["seed"])
    model = lib.NormalizingFlow(**lib.model_kwargs(cfg)).to(device)
    t0 = time.time()
    try:
        run = lib.fit(model, data["train_pix"], data["val_x"], cfg, ckpt, on_step=hook, quiet=True)
        hist, finished = run["hist"], True
    except OutOfTime:                                  # what the finished epochs left in the checkpoints
        last = Path(ckpt) / "last.pt"
        hist = torch.load(last, weights_only=False)["hist"] if last.exists() else {"epoch": [], "epoch_s": [],
                                                                                     "val_bpd": []}
        model = lib.load_flow(Path(ckpt) / "best.pt", device)[0] if hist["epoch"] else None
        finished = False
    if device.type == "cuda":
        torch.cuda.synchronize()
    return model, hist, finished, time.time() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=80, help="epochs of the full-preset run (default 80)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="seconds after the start at which training stops")
    ap.add_argument("--quick", action="store_true", help="the quick preset: tests the script, measures nothing")
    args = ap.parse_args(argv)
    deadline = time.time() + args.budget_s
    cfg = config(quick=args.quick)
    cfg["epochs"] = min(args.epochs, cfg["epochs"]) if args.quick else args.epochs
    device = lib.pick_device()
    data = lib.mnist_splits(cfg, lib.data_dir(), device)
    out = {"command": "python bench/gpu_run.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "quick": args.quick, **machine(device), "config": cfg, "target_val_bpd": QUALITY_BPD,
           "budget_s": args.budget_s}
    with tempfile.TemporaryDirectory() as tmp:
        for name, c in (("eager", {**cfg, "epochs": 1, "cuda_graphs": False}),
                        ("captured", {**cfg, "epochs": 2, "cuda_graphs": True})):
            _, hist, finished, _ = train(c, data, Path(tmp) / name, deadline)
            out.setdefault("epoch_s", {})[name] = hist["epoch_s"]
            out.setdefault("finished", {})[name] = finished
            print(f"s/epoch {name}: {hist['epoch_s']}", flush=True)
            write_json(args.out, out)
        model, hist, finished, wall = train(cfg, data, Path(tmp) / "full", deadline)
    epoch, seconds = first_epoch_at(hist, QUALITY_BPD)
    out["finished"]["full"] = finished
    out["full"] = {"epochs": len(hist["epoch"]), "train_s": sum(hist["epoch_s"]), "wall_s": wall,
                   "epoch_at_target": epoch, "seconds_to_target": seconds, "curves": hist,
                   "best_val_bpd": min(hist["val_bpd"], default=None),
                   "test_bpd": None if model is None else lib.bits_per_dim(lib.evaluate(model, data["test_x"],
                                                                                          cfg["eval_batch"]))}
    print(f"full preset: {out['full']['epochs']} of {cfg['epochs']} epochs in {out['full']['train_s']:.0f} s "
          f"(finished: {finished}), validation <= {QUALITY_BPD} at epoch {epoch} ({seconds} s), test bpd "
          f"{out['full']['test_bpd']}", flush=True)
    write_json(args.out, out)


if __name__ == "__main__":
    main()
