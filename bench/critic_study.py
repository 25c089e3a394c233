"""Phase 2 of the notebook (fine-tuning beside a critic) from a trained phase-1 checkpoint, judged after every epoch.

    python bench/critic_study.py NAME --start CHECKPOINT --epochs N [key=value ...]
    python bench/critic_study.py w1 --start checkpoints/flow_<hash>/best.pt --epochs 6 adv_weight=1.0

The fine-tuning is the notebook's own `fit(..., critic=Critic(...))` with the notebook's phase-2 settings (its config
cell) and the overrides: adv_weight (W; 0 is the control, the same optimizer and epochs by likelihood alone),
adv_lr, critic_lr, critic_r1, critic_width, ema_decay. The phase-1 settings come from the start checkpoint, which
may hold a variant of bench's (bench/variants.py: its coupling, split, ... are then part of the study's settings).
After every epoch the kept model (the last epoch's averaged weights) is scored: test bits/dim, the notebook's
classifier (same data and seed, cached) on n_quality samples at T = 1 from the notebook's sample latents, the share
at p >= 0.9 and at p >= 0.99, class entropy, and the median distance to the nearest training image against real
test images'.
Epoch 0 is the start model. Written after every epoch to results/screening_critic/NAME.json, with the first 64
samples of every epoch (uint8) in NAME_samples.npz; checkpoints in checkpoints/screening_critic/NAME/, so a killed
study resumes at its last finished epoch, and a rerun with more epochs keeps the rows and samples of the epochs done
(the checkpoint holds only the last one, so they are never scored again). --quick: the quick preset, into quick_run/.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    BENCH_MODEL_KEYS,
    ROOT,
    Parser,
    UsageError,
    classifier,
    cli,
    config,
    lib,
    load_flow,
    machine,
    mnist,
    parse_overrides,
    run_dir,
    score_samples,
    write_json,
)

STUDY_KEYS = ("adv_weight", "adv_lr", "critic_lr", "critic_r1", "critic_width", "ema_decay")


def scores(model, clf, data, train_ref, cfg) -> tuple:
    """(row of measures, uint8 samples [n, 784]) of a model: test bits/dim and the classifier's reading of its
    samples at T = 1, at p >= confident_p and at p >= strict_p."""
    k = lib.to_uint8(model.sample(cfg["n_quality"], generator=torch.Generator().manual_seed(cfg["sample_seed"])))
    row = score_samples(k, clf, train_ref, cfg)
    row["test_bpd"] = lib.bits_per_dim(lib.evaluate(model, data["test_x"], cfg["eval_batch"]))
    return row, k.cpu()


def main(argv=None) -> dict:
    ap = Parser(description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("overrides", nargs="*", help=f"key=value, of {', '.join(STUDY_KEYS)}")
    ap.add_argument("--start", required=True, help="a phase-1 checkpoint written by fit() (best.pt)")
    ap.add_argument("--epochs", type=int, required=True, help="fine-tuning epochs, each judged")
    ap.add_argument("--quick", action="store_true", help="the quick preset: a smoke run, not a result")
    ap.add_argument("--out-dir", default=None, help="default: results/screening_critic (quick: under quick_run/)")
    ap.add_argument("--ckpt-dir", default=None, help="default: checkpoints/screening_critic (quick: under quick_run/)")
    args = ap.parse_intermixed_args(argv)
    if "/" in args.name or args.name in ("", ".", ".."):
        raise UsageError(f"NAME {args.name!r} must be a plain file name")
    if args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if bad := [a for a in args.overrides if a.split("=", 1)[0] not in STUDY_KEYS]:
        raise UsageError(f"{bad[0]!r}: the study varies only {', '.join(STUDY_KEYS)}")
    top = ROOT / "quick_run" if args.quick else ROOT
    device = lib.pick_device()
    start, ck = load_flow(args.start, device)
    base = config(quick=args.quick)
    # phase 1's settings from its checkpoint (its model variant from the rebuilt model), phase 2's from the
    # notebook's config and the overrides
    cfg = {**base, **{k: ck["cfg"][k] for k in (*lib.TRAIN_KEYS, "epochs")},
           **{k: start.kwargs[k] for k in BENCH_MODEL_KEYS}}
    cfg = {**cfg, **parse_overrides(args.overrides, cfg)}
    data = mnist(cfg, device)
    out_dir = Path(args.out_dir or top / "results" / "screening_critic")
    ckpt_root = Path(args.ckpt_dir or top / "checkpoints" / "screening_critic")
    clf_path = ckpt_root / f"classifier_{'quick' if args.quick else 'full'}.pt"
    clf = classifier(cfg, data, clf_path, device)
    train_ref = lib.from_uint8(data["train_pix"])
    real_nn = lib.nearest_distance(lib.from_uint8(lib.to_uint8(data["test_x"][: cfg["n_quality"]])),
                                   train_ref).median().item()
    out_path = out_dir / f"{args.name}.json"
    ckpt = run_dir(ckpt_root / args.name, cfg, adv=True)
    row, k = scores(start, clf, data, train_ref, cfg)
    rows, grids = [{"epoch": 0, **row, "train_bpd": None, "epoch_s": 0.0}], {"epoch0": k[:64].numpy()}
    out = {"command": "python bench/critic_study.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "quick": args.quick, "start": str(args.start), "start_epoch": ck["epoch"],
           "config": {k: cfg[k] for k in (*lib.TRAIN_KEYS, *BENCH_MODEL_KEYS, "epochs", *lib.ADV_KEYS[:-1])},
           "real_test_nn_median": real_nn, "rows": rows, **machine(device)}
    # the epochs the checkpoint has finished keep their rows and samples from the results file
    done = lib.load_checkpoint(ckpt / "last.pt")["epoch"] if (ckpt / "last.pt").exists() else 0
    old = json.loads(out_path.read_text()) if out_path.exists() else None
    if old is not None and (old["config"], old["start"]) != (out["config"], out["start"]):
        raise UsageError(f"{out_path} holds a study with other settings or another start: choose another NAME")
    if args.epochs < done:
        raise UsageError(f"{ckpt} has run {done} epochs: ask for at least {done}")
    kept = {r["epoch"]: r for r in old["rows"]} if old else {}
    npz = out_path.with_name(f"{args.name}_samples.npz")
    kept_grids = dict(np.load(npz)) if old and npz.exists() else {}
    torch.manual_seed(cfg["seed"])
    critic = lib.Critic(cfg["critic_width"]).to(device)
    model = start
    for epoch in range(1, args.epochs + 1):
        if epoch < done or (epoch == done and epoch in kept):
            if epoch not in kept or f"epoch{epoch}" not in kept_grids:
                raise UsageError(f"{out_path} lacks epoch {epoch}, which {ckpt} has passed: delete both to start again")
            rows.append(kept[epoch])
            grids[f"epoch{epoch}"] = kept_grids[f"epoch{epoch}"]
            continue
        t0 = time.time()
        run = lib.fit(model, data["train_pix"], data["val_x"], {**cfg, "adv_epochs": epoch}, ckpt, critic=critic,
                      quiet=True)
        row, k = scores(model, clf, data, train_ref, cfg)
        rows.append({"epoch": epoch, **row, "train_bpd": run["hist"]["train_bpd"][-1],
                     "epoch_s": run["hist"]["epoch_s"][-1]})
        grids[f"epoch{epoch}"] = k[:64].numpy()
        write_json(out_path, out)
        np.savez_compressed(npz, **grids)
        print(f"{args.name} epoch {epoch}: test {row['test_bpd']:.4f} bpd, p>=0.9 {row['confident']:.3f}, "
              f"p>=0.99 {row['strict']:.3f}, entropy {row['class_entropy']:.3f}, nn {row['nn_median']:.2f} "
              f"(real {real_nn:.2f}), {time.time() - t0:.0f} s", flush=True)
    return out


if __name__ == "__main__":
    cli(main)
