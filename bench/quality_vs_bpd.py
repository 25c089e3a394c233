"""Sample quality of trained flows against their likelihood: at equal bits/dim, do two models sample equally well?

    python bench/quality_vs_bpd.py                     # the notebook's run and every bench/train_variant.py run
                                                       # whose checkpoint exists; writes results/quality_vs_bpd.json
    python bench/quality_vs_bpd.py NAME=CKPT ...       # other best.pt checkpoints written by the notebook's fit()

For each checkpoint: validation bits/dim (from the checkpoint), test bits/dim, and bench's measure_quality
(confident fraction, class entropy) at T = 1.0, averaged over DRAWS draws of the config's n_quality samples (latent
seeds sample_seed, +1, ..., the same for every model). Each model is rebuilt from its checkpoint's own arguments.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, classifier, cli, config, lib, load_flow, mnist, run_dir, write_json  # noqa: E402
from bench.samplers import measure_quality  # noqa: E402

DRAWS = 3                     # draws of n_quality samples per model; the mean's standard error is 1/sqrt(3) of one's


def default_checkpoints() -> dict:
    """{name: best.pt} of the notebook's run (checkpoints/<run folder>/) and of bench/train_variant.py's runs
    (the checkpoint folder each results file names)."""
    cfg = config()
    runs = {"notebook": lib.run_dir(ROOT / "checkpoints", cfg) / "best.pt"}
    for path in sorted((ROOT / "results" / "runs").glob("*.json")):
        r = json.loads(path.read_text())
        folder = r.get("checkpoint_dir") or run_dir(ROOT / "checkpoints" / "runs" / path.stem,
                                                    {**cfg, **r.get("config", {})})
        runs[path.stem] = Path(folder) / "best.pt"
    return runs


def main() -> None:
    runs = {k: Path(v) for k, v in (a.split("=", 1) for a in sys.argv[1:])} or default_checkpoints()
    cfg = config()
    dev = lib.pick_device()
    data = mnist(cfg, dev)
    clf = classifier(cfg, data, ROOT / "checkpoints" / "classifier.pt", dev)
    seeds = [cfg["sample_seed"] + i for i in range(DRAWS)]
    out = {"command": "python bench/quality_vs_bpd.py" + "".join(f" {a}" for a in sys.argv[1:]), "draws": DRAWS,
           "samples_per_draw": cfg["n_quality"], "latent_seeds": seeds, "runs": {}}
    for name, path in runs.items():
        if not path.exists():
            print(f"{name}: no {path}, skipped")
            continue
        model, ck = load_flow(path, dev)
        draws = [measure_quality(model, clf, 1.0, cfg["n_quality"], s, threshold=cfg["confident_p"])[1]
                 for s in seeds]
        row = {"checkpoint": str(path), "model": ck["model_kw"], "epoch": ck["epoch"],
               "train": {k: ck["cfg"].get(k) for k in ("batch_size", "lr", "lr_schedule", "epochs", "cpu_bf16")},
               "val_bpd": lib.bits_per_dim(ck["val_nats"]),
               "test_bpd": lib.bits_per_dim(lib.evaluate(model, data["test_x"], cfg["eval_batch"])),
               "T1.0": {k: sum(d[k] for d in draws) / DRAWS for k in ("confident", "class_entropy")}}
        row["T1.0"]["confident_per_draw"] = [d["confident"] for d in draws]
        out["runs"][name] = row
        print(f"{name}: val {row['val_bpd']:.4f} test {row['test_bpd']:.4f} bpd | T1.0: confident "
              f"{row['T1.0']['confident']:.3f}, class entropy {row['T1.0']['class_entropy']:.3f}", flush=True)
    write_json(ROOT / "results" / "quality_vs_bpd.json", out)


if __name__ == "__main__":
    cli(main)
