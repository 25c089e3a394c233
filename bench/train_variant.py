"""Train one configuration with the notebook's own fit() and write results/runs/NAME.json.

    python bench/train_variant.py NAME [key=value ...] [--stop-at-bpd BPD] [--quality]
    python bench/train_variant.py bf16_20ep epochs=20 cpu_bf16=True          # for example

The configuration is the notebook's full preset (its config cell) with the overrides; any CFG key may be given
(model: hidden, coupling, split, logit_alpha, scale_bound, layer_scale; training: epochs, lr, lr_schedule,
batch_size, grad_clip, cpu_bf16, ...). The output holds the per-epoch curves and seconds, the best validation
epoch, the test bits/dim of that model and, with --quality, the sample-quality metrics at T = 1 (the notebook's
measure_quality). Checkpoints go to checkpoints/runs/NAME/, so a killed run resumes. --quick uses the quick preset and
writes into quick_run/ (results/runs/ and checkpoints/runs/ below it), never beside the real runs. A results file of
the same NAME with other settings is never overwritten: the script stops before training and says so.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    ROOT,
    classifier,
    config,
    draw,
    lib,
    machine,
    parse_overrides,
    score_samples,
    write_json,
)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("overrides", nargs="*", help="key=value, any key of the notebook's CFG")
    ap.add_argument("--stop-at-bpd", type=float, default=None, help="stop after the first epoch at or below this "
                    "validation bits/dim")
    ap.add_argument("--quality", action="store_true", help="also score 1,000 samples at T = 1 with the classifier")
    ap.add_argument("--mala", action="store_true", help="with --quality: also score MALA samples of the tempered "
                    "model p(x)^beta for each of the config's tempered_betas (denoised when the model saw noise)")
    ap.add_argument("--quick", action="store_true", help="the quick preset: a smoke run, not a result")
    ap.add_argument("--out-dir", default=None, help="default: results/runs (quick: quick_run/results/runs)")
    ap.add_argument("--ckpt-dir", default=None, help="default: checkpoints/runs (quick: quick_run/checkpoints/runs)")
    args = ap.parse_intermixed_args(argv)
    top = ROOT / "quick_run" if args.quick else ROOT
    args.out_dir = args.out_dir or str(top / "results" / "runs")
    args.ckpt_dir = args.ckpt_dir or str(top / "checkpoints" / "runs")
    base = config(quick=args.quick)
    try:
        cfg = {**base, **parse_overrides(args.overrides, base)}
        if args.stop_at_bpd is not None:
            cfg["stop_val_bpd"] = args.stop_at_bpd
        lib.check_config(cfg)
    except ValueError as e:
        ap.error(str(e))
    out_path = Path(args.out_dir) / f"{args.name}.json"
    if out_path.exists() and lib.run_id(json.loads(out_path.read_text()).get("config", {})) != lib.run_id(cfg):
        ap.error(f"{out_path} holds a run with other settings: choose another NAME, or move that file away")
    device = lib.pick_device()
    t0 = time.time()
    data = lib.mnist_splits(cfg, lib.data_dir(), device)
    lib.set_seed(cfg["seed"])
    model = lib.NormalizingFlow(**lib.model_kwargs(cfg)).to(device)
    run = lib.fit(model, data["train_pix"], data["val_x"], cfg, Path(args.ckpt_dir) / args.name)
    test_nats = lib.evaluate(model, data["test_x"], cfg["eval_batch"])
    out = {"command": "python bench/train_variant.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "quick": args.quick, "config": cfg, "curves": run["hist"], "best_epoch": run["best"]["epoch"],
           "val_bpd": lib.bits_per_dim(run["best"]["val_nats"]), "test_bpd": lib.bits_per_dim(test_nats),
           "test_nats": test_nats, "train_time_s": sum(run["hist"]["epoch_s"]), "wall_time_s": time.time() - t0,
           "n_params": sum(p.numel() for p in model.parameters()), **machine(device)}
    if args.quality:
        clf = classifier(cfg, data, Path(args.ckpt_dir) / f"classifier_{'quick' if args.quick else 'full'}.pt", device)
        train_ref = lib.from_uint8(data["train_pix"])

        def scored(**kw):          # classifier metrics of 1,000 samples at T = 1, always from the same latents
            k, _ = lib.measure_quality(model, clf, 1.0, cfg["n_quality"], cfg["seed"] + 400,
                                       threshold=cfg["confident_p"], **kw)
            return score_samples(k, clf, train_ref, cfg["confident_p"])
        sigma_end = lib.noise_sigma(cfg, cfg["epochs"])     # the noise of the last epoch (0 once annealed)
        out["quality"] = {"T1.0": scored()}
        out["nn_median_real_test"] = lib.nearest_distance(
            lib.from_uint8(lib.to_uint8(data["test_x"][: cfg["n_quality"]])), train_ref).median().item()
        if sigma_end:              # the same latents, each sample followed by one Tweedie denoising step
            out["quality_denoised"] = {"T1.0": scored(denoise_sigma=sigma_end)}
        for beta in cfg["tempered_betas"] if args.mala else ():   # MALA towards p(x)^beta from the same latents
            z = torch.randn(cfg["n_quality"], lib.D, generator=torch.Generator().manual_seed(cfg["seed"] + 400))
            k, rate = draw(model, z.to(device), sigma_end, beta=beta, cfg=cfg)
            out.setdefault("quality_mala", {})[f"beta{beta}"] = {
                **score_samples(k, clf, train_ref, cfg["confident_p"]), "acceptance": rate, "steps": cfg["mala_steps"]}
        if cfg.get("ema_decay"):      # the raw weights of the last epoch, scored the same way, beside the average's
            raw, _ = lib.load_flow(Path(args.ckpt_dir) / args.name / "last.pt", device)
            out["quality_raw_last"] = {"T1.0": lib.measure_quality(raw, clf, 1.0, cfg["n_quality"],
                                                                   cfg["seed"] + 400,
                                                                   threshold=cfg["confident_p"])[1]}
            out["test_bpd_raw_last"] = lib.bits_per_dim(lib.evaluate(raw, data["test_x"], cfg["eval_batch"]))
    write_json(out_path, out)
    print(f"{args.name}: best val {out['val_bpd']:.4f} (epoch {out['best_epoch']}), test {out['test_bpd']:.4f} bpd, "
          f"{out['train_time_s'] / 60:.1f} min of epochs", flush=True)
    return out


if __name__ == "__main__":
    main()
