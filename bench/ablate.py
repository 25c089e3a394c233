"""Ablation study: train each variant of the flow on one budget and write results/ablations.json.

    python bench/ablate.py                      # all variants, 10 epochs each (about an hour on a 2-core CPU)
    python bench/ablate.py --only base,no_logit  # a subset; rows already in the output file are kept
    python bench/ablate.py --quick --out /tmp/a.json --ckpt /tmp/ck   # a tiny smoke run (used by the tests)

The variants are bench/studies.py's `ablation_variants()`: each changes one thing from the notebook's
configuration, and each is trained by its `ablation_row()` with the notebook's `fit()` recipe and config for 10
epochs (--epochs: another number), with the same data split, seed, noise and recipe for every row. Per variant:
best validation bits/dim (and the epoch), test bits/dim of that model, sample quality at T = 1, parameter count
and training time. Each variant checkpoints to <ckpt>/<name>/<run folder>/, so a killed run resumes.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    ROOT,
    Parser,
    classifier,
    cli,
    config,
    lib,
    machine,
    mnist,
    model_kwargs,
    write_json,
)
from bench.studies import ablation_row, ablation_variants  # noqa: E402


def main(argv=None) -> None:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10, help="epochs per variant (default: 10)")
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--quick", action="store_true", help="the quick preset at width 32: a smoke run, not a result")
    ap.add_argument("--out", default=str(ROOT / "results" / "ablations.json"))
    ap.add_argument("--ckpt", default=str(ROOT / "checkpoints" / "ablate"))
    args = ap.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    base_cfg = config(quick=args.quick, **({"hidden": 32} if args.quick else {}))
    cfg = {**base_cfg, "epochs": args.epochs}
    device = lib.pick_device()
    out, ckpt = Path(args.out), Path(args.ckpt)
    data = mnist(cfg, device)
    clf = classifier(cfg, data, ckpt / "classifier.pt", device)

    result = json.loads(out.read_text()) if out.exists() else {}
    if result.get("budget", {}).get("train") != cfg:
        result = {}                                  # another budget: its rows are not comparable, start over
    result.update({"command": "python bench/ablate.py" + (" --quick" if args.quick else "")
                   + f" --epochs {cfg['epochs']}", "quick": args.quick,
                   "budget": {"train": cfg, "note": "same data, seed, epochs and recipe for every variant; each row "
                                                    "changes one thing from the notebook's configuration"},
                   "machine": machine(device)})
    rows = {r["name"]: r for r in result.get("variants", [])}
    variants = ablation_variants(model_kwargs(cfg))
    names = [v["name"] for v in variants]
    if unknown := sorted(set(only) - set(names)):
        ap.error(f"unknown variant(s) {unknown}; choose from {names}")
    for v in variants:
        if only and v["name"] not in only:
            continue
        print(f"== {v['name']}: {v['change']} | {v['model']}", flush=True)
        r = rows[v["name"]] = ablation_row(v, cfg, data, clf, ckpt)
        q = r["quality"]["T1.0"]
        print(f"   val {r['val_bpd']:.4f} (epoch {r['best_epoch']}) test {r['test_bpd']:.4f} bpd | confident "
              f"{q['confident']:.3f}, class entropy {q['class_entropy']:.3f} | {r['n_params']:,} params | "
              f"{r['train_time_s'] / 60:.1f} min", flush=True)
        result["variants"] = [rows[n] for n in names if n in rows]
        write_json(out, result)


if __name__ == "__main__":
    cli(main)
