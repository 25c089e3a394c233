"""Score the kept model of finished critic studies (and their start checkpoints) with one classifier, trained here
with a given number of threads, so that studies scored under different classifiers compare.

    python bench/critic_rescore.py OUT.json NAME [NAME ...] [--start CHECKPOINT ...] [--threads 2]

The digit classifier's weights depend on the thread count it was trained with (float sums in another order); the
notebook's own run, and the committed studies before results/screening_critic/p1_40_w2.json, used two threads. Each
NAME is a study of bench/critic_study.py: its kept model is checkpoints/screening_critic/NAME/<run folder>/best.pt
(phase 2 keeps its last epoch). The measures are critic_study.py's, on the same latents and test images.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, Parser, classifier, cli, config, lib, load_flow, mnist, write_json  # noqa: E402
from bench.critic_study import scores  # noqa: E402


def main(argv=None) -> dict:
    ap = Parser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("names", nargs="*")
    ap.add_argument("--start", action="append", default=[], help="a phase-1 checkpoint to score as well")
    ap.add_argument("--threads", type=int, default=2, help="threads of the classifier's training")
    args = ap.parse_args(argv)
    paths = {p: p for p in args.start}
    for name in args.names:                      # every checkpoint is found before any data is read
        found = sorted((ROOT / "checkpoints" / "screening_critic" / name).glob("*/best.pt"))
        if len(found) != 1:
            raise ValueError(f"study {name!r}: expected one checkpoints/screening_critic/{name}/*/best.pt, "
                             f"found {len(found)}")
        paths[name] = found[0]
    torch.set_num_threads(args.threads)
    cfg, device = config(), lib.pick_device()
    data = mnist(cfg, device)
    clf = classifier(cfg, data, ROOT / "checkpoints" / "screening_critic" / f"classifier_full_{args.threads}threads.pt",
                     device)
    train_ref = lib.from_uint8(data["train_pix"])
    out = {"command": "python bench/critic_rescore.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "classifier_threads": args.threads, "rows": {}}
    for name, path in paths.items():
        model, ck = load_flow(path, device)
        row, _ = scores(model, clf, data, train_ref, cfg)
        out["rows"][name] = {"epoch": ck["epoch"], **{k: row[k] for k in ("test_bpd", "confident", "strict",
                                                                          "class_entropy", "nn_median")}}
        print(name, out["rows"][name], flush=True)
    write_json(args.out, out)
    return out


if __name__ == "__main__":
    cli(main)
