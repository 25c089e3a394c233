"""Score ways of sampling one trained flow, on the same latents and with the same classifier as the screens.

    python bench/sampler_options.py CHECKPOINT OUT.json [--sigma S] [--denoise S ...] [--temperatures T ...]
                                    [--betas B ...] [--ckpt-dir DIR]
    python bench/sampler_options.py checkpoints/sampler/best.pt results/sampler_options.json --sigma 1.5

For a model trained with logit-space noise sigma (--sigma), every option is scored raw and after one Tweedie step;
--denoise scores T = 1 samples after a Tweedie step of other sizes; --temperatures draws z ~ N(0, T^2 I); --betas
runs bench's MALA (bench/samplers.py; the config's mala_steps) towards p(x)^beta from the T = 1 latents. Each row:
confident, class entropy, speckle, the largest class's share and the median distance to the nearest training
image. The classifier is the screens' (`classifier_full.pt` in --ckpt-dir, trained there if missing).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Parser, classifier, cli, config, lib, load_flow, machine, mnist, score_samples, write_json  # noqa: E402,E501
from bench.samplers import draw, latents  # noqa: E402


def main(argv=None) -> dict:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--sigma", type=float, default=0.0, help="the logit-space noise the model was trained with")
    ap.add_argument("--denoise", type=float, nargs="*", default=[], help="other Tweedie step sizes at T = 1")
    ap.add_argument("--temperatures", type=float, nargs="*", default=[])
    ap.add_argument("--betas", type=float, nargs="*", default=[])
    ap.add_argument("--ckpt-dir", default="checkpoints/screening_noise", help="where the classifier is cached")
    ap.add_argument("--quick", action="store_true", help="the quick preset's data and classifier (a smoke test)")
    args = ap.parse_args(argv)
    cfg = config(quick=args.quick)
    device = lib.pick_device()
    model, ck = load_flow(args.checkpoint, device)             # first: a damaged checkpoint stops it at once
    data = mnist(cfg, device)
    clf = classifier(cfg, data, Path(args.ckpt_dir) / f"classifier_{'quick' if args.quick else 'full'}.pt", device)
    train_ref = lib.from_uint8(data["train_pix"])
    n = cfg["n_quality"]
    z1 = latents(cfg, device)                                   # the screens' latents
    rows = {}

    def add(name, k, **extra):
        rows[name] = {**score_samples(k, clf, train_ref, cfg), **extra}
        r = rows[name]
        print(f"{name:28s} confident {r['confident']:.3f}  entropy {r['class_entropy']:.3f}  largest class "
              f"{r['top_class_share']:.2f}  nn {r['nn_median']:.2f}", flush=True)

    for s in sorted({0.0, args.sigma, *args.denoise}):
        add(f"T1.0_denoise{s:g}", draw(model, z1, s)[0])
    for t in args.temperatures:
        add(f"T{t:g}_denoise{args.sigma:g}", draw(model, z1 * t, args.sigma)[0])
    for b in args.betas:
        k, rate = draw(model, z1, args.sigma, beta=b, cfg=cfg)
        add(f"mala_beta{b:g}_denoise{args.sigma:g}", k, acceptance=rate)
    out = {"command": "python bench/sampler_options.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "checkpoint": str(args.checkpoint), "checkpoint_epoch": ck["epoch"], "checkpoint_cfg": ck.get("cfg"),
           "n": n, "mala_steps": cfg["mala_steps"], "rows": rows,
           "nn_median_real_test": lib.nearest_distance(
               lib.from_uint8(lib.to_uint8(data["test_x"][:n])), train_ref).median().item(), **machine(device)}
    write_json(args.out, out)
    return out


if __name__ == "__main__":
    cli(main)
