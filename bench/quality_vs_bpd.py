"""Sample quality of trained flows against their likelihood: does width 256 sample as well as 512 at equal bits/dim?

    python bench/quality_vs_bpd.py                    # the runs below whose checkpoints exist; writes
                                                      # results/quality_vs_bpd.json
    python bench/quality_vs_bpd.py NAME=CKPT ...      # other best.pt checkpoints

For each checkpoint (a best.pt written by the notebook's fit()): validation bits/dim (from the checkpoint), test
bits/dim, and the notebook's sample-quality metrics (confident fraction, class entropy) at T = 1.0 and 0.9, averaged
over 3 draws of 1,000 samples (latent seeds 400-402, the same for every model; one draw's standard error is about
0.016, the mean's about 0.009). The digit classifier is bench/ablate.py's (the notebook's recipe, cached).
The default checkpoints come from: the notebook's full run (checkpoints/), `bench/ttq.py` runs (checkpoints/ttq/)
and `bench/ablate.py` (checkpoints/ablate/).
"""
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
from nbload import load_lib  # noqa: E402

from bench.ablate import BASE_TRAIN, get_classifier, notebook_data  # noqa: E402
from bench.ttq import MODEL_KEYS  # noqa: E402

DEFAULT = {
    "w512_80ep_step (notebook)": "checkpoints/best.pt",
    "w512_40ep_b256_lr2e-3_cosine": "checkpoints/ttq/b256_lr2e3_cos40/best.pt",
    "w512_40ep_cosine": "checkpoints/ttq/w512_cos40/best.pt",
    "w256_45ep_cosine (stopped at 1.85)": "checkpoints/ttq/w256_cosine45/best.pt",
    "w512_10ep_step (ablation base)": "checkpoints/ablate/base/best.pt",
    "w256_10ep_step (ablation width_256)": "checkpoints/ablate/width_256/best.pt",
}
TEMPERATURES, DRAWS, N = (1.0, 0.9), 3, 1000


def main() -> None:
    runs = dict(a.split("=", 1) for a in sys.argv[1:]) or DEFAULT
    lib = load_lib()
    dev = lib.pick_device()
    mnist, _, _, test_x = notebook_data(lib, BASE_TRAIN, dev)
    clf = get_classifier(lib, mnist, BASE_TRAIN, ROOT / "checkpoints" / "ablate" / "classifier.pt", dev)
    out = {"command": "python bench/quality_vs_bpd.py" + "".join(f" {a}" for a in sys.argv[1:]),
           "draws": DRAWS, "samples_per_draw": N, "latent_seeds": [400 + s for s in range(DRAWS)], "runs": {}}
    for name, path in runs.items():
        path = ROOT / path
        if not path.exists():
            print(f"{name}: no {path}, skipped")
            continue
        ck = torch.load(path, map_location=dev, weights_only=False)
        kw = {k: ck["cfg"][k] for k in MODEL_KEYS if k in ck["cfg"]}
        model = lib.NormalizingFlow(**kw).to(dev)
        model.load_state_dict(ck["model"])
        model.eval()
        row = {"checkpoint": str(path.relative_to(ROOT)), "model": kw, "epoch": ck["epoch"],
               "train": {k: ck["cfg"].get(k, lib.TRAIN_DEFAULTS.get(k))
                         for k in ("batch_size", "lr", "lr_schedule", "epochs")},
               "val_bpd": lib.bits_per_dim(ck["val_nats"]), "test_bpd": lib.bits_per_dim(lib.evaluate(model, test_x,
                                                                                                      1000))}
        for T in TEMPERATURES:
            draws = [lib.sample_quality(lib.predict_probs(clf, lib.from_uint8(lib.to_uint8(model.sample(
                N, temperature=T, generator=torch.Generator().manual_seed(400 + s)))))) for s in range(DRAWS)]
            row[f"T{T}"] = {k: sum(d[k] for d in draws) / DRAWS for k in ("confident", "class_entropy")}
            row[f"T{T}"]["confident_per_draw"] = [d["confident"] for d in draws]
        out["runs"][name] = row
        print(f"{name}: val {row['val_bpd']:.4f} test {row['test_bpd']:.4f} bpd | "
              + " | ".join(f"T{T}: confident {row[f'T{T}']['confident']:.3f}, entropy "
                           f"{row[f'T{T}']['class_entropy']:.3f}" for T in TEMPERATURES), flush=True)
    dest = ROOT / "results" / "quality_vs_bpd.json"
    dest.write_text(json.dumps(out, indent=1))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
