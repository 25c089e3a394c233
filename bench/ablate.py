"""Ablation study: train each variant of the flow on one budget and write results/ablations.json.

    python bench/ablate.py                      # all variants, 10 epochs each (about an hour on a 2-core CPU)
    python bench/ablate.py --only base,no_logit  # a subset; rows already in the output file are kept
    python bench/ablate.py --quick --out /tmp/a.json --ckpt /tmp/ck   # a tiny smoke run (used by the tests)

The variants are the notebook's `ablation_variants()`: each changes one thing from the headline configuration
(width 512, affine coupling with log-scale bound 2, random halves, logit alpha 1e-6, per-layer exp(s_i) on), and
each is trained by the notebook's `ablation_row()` with its own `fit()` recipe: same data split, seed,
dequantization noise, Adam 1e-3 + StepLR 0.99, batch 128, gradient clip 1. Per variant: best validation bits/dim
(and the epoch), test bits/dim of that model, the sample-quality metrics of the report (confident fraction, class
entropy) at T = 1.0 and at the report's headline T, parameter count, and training time. Each variant checkpoints
to <ckpt>/<name>/, so a killed run resumes.
Data: $NF_DATA_DIR, else ../shared/data, else data/.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from nbload import load_lib  # noqa: E402

# the notebook's headline model and training recipe (its CFG); each variant overrides one thing
BASE_MODEL = {"hidden": 512, "coupling": "affine", "split": "random", "logit_alpha": 1e-6, "scale_bound": 2.0,
              "layer_scale": True}
BASE_TRAIN = {"seed": 0, "n_train": 50_000, "n_val": 10_000, "n_test": 10_000, "batch_size": 128, "lr": 1e-3,
              "lr_gamma": 0.99, "grad_clip": 1.0, "eval_batch": 1000, "clf_n_train": 60_000, "clf_epochs": 6,
              "n_quality": 1000}
QUICK_TRAIN = {"n_train": 512, "n_val": 256, "n_test": 256, "clf_n_train": 512, "clf_epochs": 1, "n_quality": 100}


def data_dir() -> str:
    if "NF_DATA_DIR" in os.environ:
        return os.environ["NF_DATA_DIR"]
    shared = ROOT.parent / "shared" / "data"
    return str(shared if shared.exists() else ROOT / "data")


def notebook_data(lib, cfg, device):
    """MNIST and the notebook's data: uint8 train pixels, fixed-dequantized validation and test sets."""
    mnist = lib.load_mnist(data_dir())
    split = torch.randperm(60_000, generator=torch.Generator().manual_seed(1234))   # the notebook's split
    train_pix = mnist["train_x"][split[:50_000][: cfg["n_train"]]].to(device)
    val_x = lib.fixed_dequantize(mnist["train_x"][split[50_000:][: cfg["n_val"]]], seed=1).to(device)
    test_x = lib.fixed_dequantize(mnist["test_x"][: cfg["n_test"]], seed=2).to(device)
    return mnist, train_pix, val_x, test_x


def headline_temperature() -> float:
    """The report's headline T, from the committed results/metrics.json (0.9 there); 0.9 if absent."""
    path = ROOT / "results" / "metrics.json"
    return float(json.loads(path.read_text())["headline_temperature"]) if path.exists() else 0.9


def get_classifier(lib, mnist, cfg, path, device):
    """The notebook's sample-quality classifier (same data, epochs and seed), trained once and cached."""
    clf = lib.DigitClassifier().to(device)
    if path.exists():
        clf.load_state_dict(torch.load(path, map_location=device))
        return clf.eval()
    n = cfg["clf_n_train"]
    clf = lib.train_classifier(mnist["train_x"][:n].to(device), mnist["train_y"][:n].to(device), cfg["clf_epochs"],
                               torch.Generator().manual_seed(cfg["seed"] + 10))
    lib.atomic_save(clf.state_dict(), path)
    return clf


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10, help="epochs per variant (default 10)")
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--quick", action="store_true", help="tiny data and width 32: a smoke run, not a result")
    ap.add_argument("--out", default=str(ROOT / "results" / "ablations.json"))
    ap.add_argument("--ckpt", default=str(ROOT / "checkpoints" / "ablate"))
    args = ap.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    lib = load_lib()
    device = lib.pick_device()
    cfg = {**BASE_TRAIN, **(QUICK_TRAIN if args.quick else {}), "epochs": args.epochs}
    out, ckpt = Path(args.out), Path(args.ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    mnist, train_pix, val_x, test_x = notebook_data(lib, cfg, device)
    clf = get_classifier(lib, mnist, cfg, ckpt / "classifier.pt", device)
    temps = sorted({1.0, headline_temperature()}, reverse=True)

    result = json.loads(out.read_text()) if out.exists() else {}
    if result.get("budget", {}).get("train") != cfg or result.get("quick") != args.quick:
        result = {}                                  # another budget: its rows are not comparable, start over
    result.update({
        "command": "python bench/ablate.py" + (" --quick" if args.quick else "") + f" --epochs {args.epochs}",
        "quick": args.quick,
        "budget": {"train": cfg, "note": "same data, seed, epochs and recipe for every variant; each row changes "
                                         "one thing from the headline model"},
        "base_model": BASE_MODEL, "temperatures": temps,
        "machine": {"device": str(device), "device_name": lib.describe_device(device), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
    })
    rows = {r["name"]: r for r in result.get("variants", [])}
    base = {**BASE_MODEL, **({"hidden": 32} if args.quick else {})}
    variants = lib.ablation_variants(base)
    names = [v[0] for v in variants]
    if unknown := sorted(set(only) - set(names)):
        ap.error(f"unknown variant(s) {unknown}; choose from {names}")
    for name, group, change, model_kw in variants:
        if only and name not in only:
            continue
        print(f"== {name}: {change} | {model_kw}", flush=True)
        r = rows[name] = lib.ablation_row(name, group, change, model_kw, cfg, train_pix, val_x, test_x, clf, temps,
                                          ckpt)
        print(f"   val {r['val_bpd']:.4f} (epoch {r['best_epoch']}) test {r['test_bpd']:.4f} bpd | "
              + " | ".join(f"{t}: conf {q['confident']:.3f} ent {q['class_entropy']:.3f}"
                           for t, q in r["quality"].items())
              + f" | {r['n_params']:,} params | {r['train_time_s'] / 60:.1f} min", flush=True)
        result["variants"] = [rows[n] for n in names if n in rows]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, out)


if __name__ == "__main__":
    main()
