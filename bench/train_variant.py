"""Train one configuration with the notebook's own fit() and write results/runs/NAME.json.

    python bench/train_variant.py NAME [key=value ...] [--stop-at-bpd BPD] [--quality] [--mala]
    python bench/train_variant.py bf16_20ep epochs=20 cpu_bf16=True          # for example

The configuration is the notebook's full preset (its config cell) with the overrides; any CFG key may be given
(model: hidden, split_seed, logit_alpha, scale_bound; training: epochs, lr, lr_schedule, batch_size, grad_clip, ...),
and the bench-only keys of bench/common.py: the model variants coupling (affine, additive, spline), split (random,
checkerboard, contiguous, evenodd), spline_bins, spline_bound and layer_scale (bench/variants.py), logit_alpha=None
(no logit), train_noise and noise_anneal (Gaussian noise in logit space, annealed to 0 over the last epochs),
cpu_bf16 (bfloat16 MLPs on a CPU), and the MALA settings of --mala. The output holds the per-epoch curves and
seconds, the best validation epoch, the test bits/dim of that model and, with --quality, the sample measures at
T = 1 (bench/samplers.py's measure_quality; after one Tweedie step too when the last epoch saw noise). Checkpoints
go to <ckpt-dir>/NAME/<run folder>/ (bench.common.run_dir: the notebook's folder per run, the variant and bench-only
keys included), so a killed run resumes and other settings never touch its checkpoints. --quick uses the quick
preset and writes into quick_run/ (results/runs/ and checkpoints/runs/ below it). A results file of the same NAME with
other settings is never overwritten: the script stops before training and says so. Errors are one line on stderr
(exit status 2).
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    ROOT,
    Parser,
    UsageError,
    build_model,
    check_config,
    classifier,
    cli,
    config,
    lib,
    load_flow,
    machine,
    mnist,
    noise_sigma,
    parse_overrides,
    run_dir,
    score_samples,
    train,
    write_json,
)
from bench.samplers import draw, latents, measure_quality  # noqa: E402


def settings(stored: dict, base: dict) -> str:
    """The run folder's name of a stored config (keys it lacks, from an older version, taken from base)."""
    return run_dir("", {**base, **stored}).name


def main(argv=None) -> dict:
    ap = Parser(description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("overrides", nargs="*", help="key=value, any key of the notebook's CFG or a bench-only key")
    ap.add_argument("--stop-at-bpd", type=float, default=None, help="stop after the first epoch at or below this "
                    "validation bits/dim")
    ap.add_argument("--quality", action="store_true", help="also score 1,000 samples at T = 1 with the classifier")
    ap.add_argument("--mala", action="store_true", help="with --quality: also score MALA samples of the tempered "
                    "model p(x)^beta for each of tempered_betas (denoised when the last epoch saw noise)")
    ap.add_argument("--quick", action="store_true", help="the quick preset: a smoke run, not a result")
    ap.add_argument("--out-dir", default=None, help="default: results/runs (quick: quick_run/results/runs)")
    ap.add_argument("--ckpt-dir", default=None, help="default: checkpoints/runs (quick: quick_run/checkpoints/runs)")
    args = ap.parse_intermixed_args(argv)
    if "/" in args.name or args.name in ("", ".", ".."):
        raise UsageError(f"NAME {args.name!r} must be a plain file name")
    top = ROOT / "quick_run" if args.quick else ROOT
    out_dir = Path(args.out_dir or top / "results" / "runs")
    ckpt_root = Path(args.ckpt_dir or top / "checkpoints" / "runs") / args.name
    base = config(quick=args.quick)
    cfg = {**base, **parse_overrides(args.overrides, base)}
    if args.stop_at_bpd is not None:
        cfg["stop_val_bpd"] = args.stop_at_bpd
    check_config(cfg)
    out_path = out_dir / f"{args.name}.json"
    if out_path.exists():
        try:
            stored = json.loads(out_path.read_text()).get("config", {})
        except ValueError:
            raise RuntimeError(f"{out_path} is not valid JSON: move it away, or choose another NAME") from None
        if settings(stored, base) != settings(cfg, base):
            raise UsageError(f"{out_path} holds a run with other settings: choose another NAME, or move that file "
                             "away")
    device = lib.pick_device()
    t0 = time.time()
    data = mnist(cfg, device)
    model = build_model(cfg, device)
    ckpt = run_dir(ckpt_root, cfg)
    run = train(model, data, cfg, ckpt)
    test_nats = lib.evaluate(model, data["test_x"], cfg["eval_batch"])
    out = {"command": "python bench/train_variant.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "quick": args.quick, "config": cfg, "checkpoint_dir": str(ckpt), "curves": run["hist"],
           "best_epoch": run["best"]["epoch"], "val_bpd": lib.bits_per_dim(run["best"]["val_nats"]),
           "test_bpd": lib.bits_per_dim(test_nats), "test_nats": test_nats, "stopped_early": run["stopped_early"],
           "train_time_s": sum(run["hist"]["epoch_s"]), "wall_time_s": time.time() - t0,
           "n_params": sum(p.numel() for p in model.parameters()), **machine(device)}
    if args.quality:
        clf = classifier(cfg, data, ckpt_root.parent / f"classifier_{'quick' if args.quick else 'full'}.pt", device)
        train_ref = lib.from_uint8(data["train_pix"])

        def scored(m, **kw):        # classifier measures of n_quality samples at T = 1, always from the same latents
            k, _ = measure_quality(m, clf, 1.0, cfg["n_quality"], cfg["sample_seed"], threshold=cfg["confident_p"],
                                   **kw)
            return score_samples(k, clf, train_ref, cfg)
        sigma_end = noise_sigma(cfg, cfg["epochs"])      # the noise of the last epoch (0 once annealed)
        out["quality"] = {"T1.0": scored(model)}
        out["nn_median_real_test"] = lib.nearest_distance(
            lib.from_uint8(lib.to_uint8(data["test_x"][: cfg["n_quality"]])), train_ref).median().item()
        if sigma_end:              # the same latents, each sample followed by one Tweedie denoising step
            out["quality_denoised"] = {"T1.0": scored(model, denoise_sigma=sigma_end)}
        for beta in cfg["tempered_betas"] if args.mala else ():    # MALA towards p(x)^beta from the same latents
            k, rate = draw(model, latents(cfg, device), sigma_end, beta=beta, cfg=cfg)
            out.setdefault("quality_mala", {})[f"beta{beta}"] = {
                **score_samples(k, clf, train_ref, cfg), "acceptance": rate, "steps": cfg["mala_steps"]}
        if cfg.get("ema_decay"):      # the raw weights of the last epoch, scored the same way, beside the average's
            raw, _ = load_flow(ckpt / "last.pt", device)
            out["quality_raw_last"] = {"T1.0": scored(raw)}
            out["test_bpd_raw_last"] = lib.bits_per_dim(lib.evaluate(raw, data["test_x"], cfg["eval_batch"]))
    write_json(out_path, out)
    print(f"{args.name}: best val {out['val_bpd']:.4f} (epoch {out['best_epoch']}), test {out['test_bpd']:.4f} bpd, "
          f"{out['train_time_s'] / 60:.1f} min of epochs", flush=True)
    return out


if __name__ == "__main__":
    cli(main)
