"""The notebook's training on a GPU: eager against captured (CUDA graphs), then the full preset, timed.

    python bench/gpu_run.py --out results/bench_gpu.json      # on a CUDA machine, a few minutes
    python bench/gpu_run.py --quick --out /tmp/g.json         # a smoke run of the script itself, on any device

1. One epoch with cuda_graphs=False (eager) and two with cuda_graphs=True (the first includes the capture), on the
   full training split, with the notebook's fit(); seconds per epoch of each.
2. The full preset (the notebook's CFG, captured) for its epochs: the epoch at which validation first reaches
   QUALITY_BPD, the seconds to it, the wall time of all epochs, the test bits/dim of the best model.
Writes one JSON file with the device name and every number; checkpoints go to a temporary folder.
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="the quick preset: tests the script, measures nothing")
    args = ap.parse_args(argv)
    cfg = config(quick=args.quick)
    device = lib.pick_device()
    data = lib.mnist_splits(cfg, lib.data_dir(), device)
    out = {"command": "python bench/gpu_run.py" + (" --quick" if args.quick else ""), "quick": args.quick,
           **machine(device), "config": cfg, "target_val_bpd": QUALITY_BPD}

    def train(c, ckpt):
        lib.set_seed(c["seed"])
        model = lib.NormalizingFlow(**lib.model_kwargs(c)).to(device)
        t0 = time.time()
        run = lib.fit(model, data["train_pix"], data["val_x"], c, ckpt, quiet=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return model, run, time.time() - t0

    with tempfile.TemporaryDirectory() as tmp:
        _, eager, _ = train({**cfg, "epochs": 1, "cuda_graphs": False}, Path(tmp) / "eager")
        _, captured, _ = train({**cfg, "epochs": 2, "cuda_graphs": True}, Path(tmp) / "captured")
        out["epoch_s"] = {"eager": eager["hist"]["epoch_s"], "captured": captured["hist"]["epoch_s"]}
        print(f"s/epoch: eager {eager['hist']['epoch_s']}, captured {captured['hist']['epoch_s']}", flush=True)
        write_json(args.out, out)
        model, full, wall = train(cfg, Path(tmp) / "full")
    epoch, seconds = first_epoch_at(full["hist"], QUALITY_BPD)
    out["full"] = {"epochs": len(full["hist"]["epoch"]), "train_s": sum(full["hist"]["epoch_s"]), "wall_s": wall,
                   "epoch_at_target": epoch, "seconds_to_target": seconds, "curves": full["hist"],
                   "best_val_bpd": lib.bits_per_dim(full["best"]["val_nats"]),
                   "test_bpd": lib.bits_per_dim(lib.evaluate(model, data["test_x"], cfg["eval_batch"]))}
    print(f"full preset: {out['full']['train_s']:.0f} s of epochs, validation <= {QUALITY_BPD} at epoch {epoch} "
          f"({seconds} s), test {out['full']['test_bpd']:.4f} bpd", flush=True)
    write_json(args.out, out)


if __name__ == "__main__":
    main()
