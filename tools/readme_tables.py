"""Write the generated tables of README.md and bench/README.md from results/, so that no number in them is typed
by hand.

    python tools/readme_tables.py            # rewrites every block <!-- table:NAME --> ... <!-- /table --> in both
    python tools/readme_tables.py --check    # exit 1 if a block of either file differs from what results/ gives
    python tools/readme_tables.py --print NAME   # print one table (any name of TABLES), whether or not a file has it

README.md holds one block, `results` (the notebook's run, from results/metrics.json); bench/README.md holds the
studies' tables (the critic study, the screens, the samplers, speed, the ablation). A block may stand in either
file, and any name of TABLES may be placed in either. A table whose results file is missing is written as a
one-line note saying which command produces it.

results/metrics.json is read in every format the notebook has written: the first (with `sample_quality`), the lean
notebook's (with `samples_T1`, `phase2` and config keys such as `coupling` and `split`), and the current one, whose
config has no `coupling`, `split`, `spline_bins`, `spline_bound` or `layer_scale` (the affine coupling with random
halves), whose `phase2` holds `checks` ({label: passed}) and which adds `layer_grid_confident`.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
README = ROOT / "README.md"
BENCH_README = ROOT / "bench" / "README.md"
FILES = (README, BENCH_README)             # the files whose table blocks are generated


def studies():
    """bench/studies.py, for the tables with computed rows and sentences (imported when first needed: it loads the
    notebook's `#| lib` cells)."""
    import bench.studies
    return bench.studies


def load(rel):
    path = ROOT / "results" / rel
    return json.loads(path.read_text()) if path.exists() else None


def table(header, rows) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
                     + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def results() -> str:
    m = load("metrics.json")
    if m is None:
        return "_No results/metrics.json: run the notebook (command 1)._"
    if "sample_quality" not in m:                    # the lean notebook's results file
        return results_lean(m)
    q, real = m["sample_quality"]["T1.0"], m["real_test_quality"]
    c = m["config"]
    rows = [("test log-likelihood", f"**{m['test_nats']:.1f} nats per image = {m['test_bpd']:.4f} bits/dim**"),
            ("validation (best epoch)", f"{m['val_bpd']:.4f} bits/dim (epoch {m['best_epoch']} of {m['epochs']})"),
            ("model", f"logit (α = {c['logit_alpha']}) + 4 {c['coupling']} couplings (log-scale bound c = "
                      f"{c['scale_bound']}), 5-Linear MLPs of width "
                      f"{c['hidden']}, {c['split']} halves, exp(s_i) per layer; {m['n_params']:,} parameters"),
            ("training", f"Adam {c['lr']}, {c['lr_schedule']} schedule (γ = {c['lr_gamma']}), batch {c['batch_size']}, "
                         f"clip {c['grad_clip']}, CPU bf16 MLPs: {c['cpu_bf16']}, moving average of the weights: "
                         f"{c.get('ema_decay')}; {m['epochs']} epochs in {m['train_time_s'] / 60:.1f} min on "
                         f"{m['device_name']} ({m['device']}, {m['threads']} threads); the whole notebook "
                         f"{m['wall_time_s'] / 60:.1f} min"),
            ("samples at T = 1 (classifier-scored)", f"{q['confident']:.3f} confident (top class p ≥ 0.9), class "
                                                     f"entropy {q['class_entropy']:.3f}, speckle "
                                                     f"{q.get('speckle', float('nan')):.2f}"),
            ("real test images, same classifier", f"{real['confident']:.3f} confident, class entropy "
                                                  f"{real['class_entropy']:.3f}, speckle "
                                                  f"{real.get('speckle', float('nan')):.2f}; classifier test "
                                                  f"accuracy {m['classifier_test_acc']:.4f}")]
    if "second_model" in m:
        sm, c2 = m["second_model"], m["samples_T1"]
        rows.insert(5, ("samples at T = 1, guards", f"class entropy {c2['class_entropy']:.3f}; median distance to the "
                        f"nearest training image {c2['nn_median']:.2f} (real test images "
                        f"{m['real_test_nn_median']:.2f})"))
        rows.append(("second model (for samples)", f"trained {sm['epochs']} epochs with logit-space noise σ = "
                     f"{sm['train_noise']}: test {sm['test_bpd']:.4f} bits/dim; "
                     f"{sm['samples']['raw']['confident']:.3f} confident, after one Tweedie denoising step "
                     f"{sm['samples']['denoised']['confident']:.3f} (class entropy "
                     f"{sm['samples']['denoised']['class_entropy']:.3f}, nearest-image distance "
                     f"{sm['samples']['denoised']['nn_median']:.2f})"))
    return table(["quantity", "value"], rows)


def se(p, n) -> float:
    """One standard error of a fraction p of n."""
    return (p * (1 - p) / n) ** 0.5


def n_params(c) -> int:
    """The parameter count of the flow of config c, from its keys alone (the notebook's code of the day may not build
    a flow of an older or newer config). Each of the 4 layers: a coupling MLP Linear(392, h), 3 × Linear(h, h),
    Linear(h, 2 · 392) (log-scale and shift of the 392 transformed pixels), and s_i of 784 (unless layer_scale is off).
    Only the affine coupling (the notebook's) is counted this way; another is built by bench's code."""
    if c.get("coupling", "affine") != "affine":
        from bench.common import build_model
        return sum(p.numel() for p in build_model(c).parameters())
    h, d = c["hidden"], 392
    mlp = (d * h + h) + 3 * (h * h + h) + (h * 2 * d + 2 * d)
    return 4 * (mlp + (2 * d if c.get("layer_scale", True) else 0))


def results_lean(m) -> str:
    """The results table of the lean notebook's results/metrics.json (test_bpd, curves, samples_T1, spline, ...)."""
    c, q, real = m["config"], m["samples_T1"], m["real_test_quality"]
    curves = m["curves"]
    coupling, split = c.get("coupling", "affine"), c.get("split", "random")
    halves = f"{split} halves" + (f" (seed {c['split_seed']})" if split == "random" and "split_seed" in c else "")
    rows = [("test log-likelihood", f"**{m['test_nats']:.1f} nats per image = {m['test_bpd']:.4f} bits/dim**"),
            ("validation (best epoch)", f"{m['val_bpd']:.4f} bits/dim (epoch {m['best_epoch']} of "
                                        f"{len(curves['epoch'])})"),
            ("model", f"logit (α = {c['logit_alpha']}) + 4 {coupling} couplings (log-scale bound c = "
                      f"{c['scale_bound']}), 5-Linear MLPs of width {c['hidden']}, {halves}, exp(s_i) per layer; "
                      f"{n_params(c):,} parameters"),
            ("training", f"Adam {c['lr']}, {c['lr_schedule']} schedule (γ = {c['lr_gamma']}), batch {c['batch_size']}, "
                         f"clip {c['grad_clip']}, moving average of the weights: {c.get('ema_decay')}; "
                         f"{len(curves['epoch'])} epochs in {m['train_time_s'] / 60:.1f} min on {m['device']} "
                         f"({m['threads']} threads, torch {m['torch']}); the whole notebook "
                         f"{m['wall_time_s'] / 60:.1f} min"),
            (f"samples, z ~ N(0, I) ({c['n_quality']:,}, classifier-scored)",
             f"{q['confident']:.3f} ± {se(q['confident'], c['n_quality']):.3f} classifier-confident (top class p ≥ "
             f"{c['confident_p']}), class entropy {q['class_entropy']:.3f}; median distance to the nearest training "
             f"image {q['nn_median']:.2f} (real test images {m['real_test_nn_median']:.2f})"),
            ("real test images, same classifier", f"{real['confident']:.3f} classifier-confident, class entropy "
                                                  f"{real['class_entropy']:.3f}")]
    if "phase2" in m:
        p2, cur = m["phase2"], m["phase2"]["samples_T1"]
        rows.insert(1, ("after phase 2 (a copy tuned with the critic)", f"**{p2['test_nats']:.1f} nats per image = "
                        f"{p2['test_bpd']:.4f} bits/dim** ({p2['test_bpd'] - m['test_bpd']:+.4f}), W = "
                        f"{c['adv_weight']}, r1 = {c['critic_r1']}, critic width {c['critic_width']}, {p2['epochs']} "
                        f"epochs in {p2['train_time_s'] / 60:.1f} min"))
        rows.append(("samples after phase 2 (same latents)", f"{cur['confident']:.3f} ± "
                     f"{se(cur['confident'], c['n_quality']):.3f} classifier-confident (p ≥ {c['confident_p']}), "
                     f"{cur['strict']:.3f} at p ≥ {c['strict_p']}; "
                     f"class entropy {cur['class_entropy']:.3f}; nearest training image {cur['nn_median']:.2f}"
                     + (f" (closest 1 %: {cur['nn_p01']:.2f}, real test images {real['nn_p01']:.2f})"
                        if "nn_p01" in cur else "")))
        checks = p2.get("checks", p2.get("guards"))
        if checks:
            failed = [label for label, ok in checks.items() if not ok]
            rows.append(("checks of phase 2", f"{len(checks) - len(failed)} of {len(checks)} passed"
                         + (f"; failed: {'; '.join(failed)}" if failed else "")))
    if "temperatures" in m:
        rows.append(("temperatures (same latents)", "; ".join(f"T = {k.removeprefix('T')}: {t['confident']:.3f} "
                                                               f"(class entropy {t['class_entropy']:.3f})"
                                                               for k, t in m["temperatures"].items())))
    if "spline" in m:
        sp = m["spline"]
        rows.append(("spline couplings (Appendix)", f"K = {c.get('spline_bins', '?')} bins on "
                     f"[−{c.get('spline_bound', '?')}, {c.get('spline_bound', '?')}], {sp['epochs']} epochs "
                     f"({sp['train_time_s'] / 60:.1f} min, best epoch "
                     f"{sp['best_epoch']}): test **{sp['test_bpd']:.4f} bits/dim**; samples "
                     f"{sp['samples_T1']['confident']:.3f} classifier-confident, class entropy "
                     f"{sp['samples_T1']['class_entropy']:.3f}"))
    if "round_trip_max_error" in m:
        rows.append(("checks of the trained models", f"x → z → x on 1,000 test images: largest error "
                     f"{m['round_trip_max_error']:.1e}; inverse of 10,000 latents all finite: "
                     f"{m.get('inverse_finite_10k')}"))
    out = table(["quantity", "value"], rows)
    return out + ("\n\n_A quick-preset run: not a result._" if m.get("quick") else "")


def spline_screen() -> str:
    """The spline-coupling screen (results/screening_spline/): one row per run, each against the paired affine run
    `affine_10ep` (same seed, data order, latents and classifier)."""
    folder = ROOT / "results" / "screening_spline"
    files = sorted(folder.glob("*.json"))
    if not files:
        return "_No results/screening_spline/: run the `bench/train_variant.py` commands above._"
    runs = {f.stem: json.loads(f.read_text()) for f in files}
    pair = runs.get("affine_10ep")
    rows = []
    for name in sorted(runs, key=lambda k: (k != "affine_10ep", k)):
        r = runs[name]
        c, q, d = r["config"], r["quality"]["T1.0"], r.get("quality_denoised", {}).get("T1.0")
        n = c["n_quality"]
        spline = c.get("coupling") == "spline"
        what = (f"spline K = {c['spline_bins']}, B = {c['spline_bound']:g}" if spline else c.get("coupling", "affine"))
        what += f", width {c['hidden']}" + (f", logit-space noise σ = {c['train_noise']:g}" if c.get("train_noise")
                                           else "")
        s_epoch = sorted(r["curves"]["epoch_s"])[len(r["curves"]["epoch_s"]) // 2]
        vs = "–" if pair is None or name == "affine_10ep" else (
            f"{r['test_bpd'] - pair['test_bpd']:+.4f}, {q['confident'] - pair['quality']['T1.0']['confident']:+.3f}")
        rows.append((f"`{name}`", what, c["epochs"], f"{r['test_bpd']:.4f}", f"{q['confident']:.3f} ± "
                     f"{se(q['confident'], n):.3f}", "–" if d is None else f"{d['confident']:.3f}",
                     f"{q['class_entropy']:.3f}", f"{q['nn_median']:.2f} ({r['nn_median_real_test']:.2f})",
                     f"{s_epoch:.0f} ({r.get('threads', '?')})", vs))
    return table(["run", "coupling", "epochs", "test bpd", "classifier-confident at T = 1",
                  "after one Tweedie step", "class entropy", "nearest training image, median (real test images)",
                  "s/epoch (threads)", "against `affine_10ep`: Δ test bpd, Δ confident"], rows)


def spline_speed() -> str:
    """The spline coupling's speed from results/bench.json (`python bench/bench.py --only spline`)."""
    b = load("bench.json")
    if b is None or "spline" not in b:
        return "_No spline entry in results/bench.json: run `python bench/bench.py --only spline`._"
    sp, d = b["spline"], b["spline"]["details"]
    r = sorted(d["ratio_all"]["spline_k4"])
    before = (f" The spline code of revision {sp['command'].split('--before ')[1].split()[0]}, with the same weights "
              f"in the same rounds: {sp['spline_before_step_s']:.3f} s a step, {sp['spline_speedup_vs_before']:.2f}× "
              "the time of the current one." if "spline_speedup_vs_before" in sp else "")
    return (f"One float32 training step at width {d['hidden']}, batch {d['batch']} on {d['threads']} threads "
            f"(`{sp['command']}`; {d['steps_per_model']} paired rounds, median of the per-round ratios): spline K = 4 "
            f"{sp['spline_step_s']:.3f} s against affine {sp['affine_step_s']:.3f} s, `spline_step_ratio` = "
            f"**{sp['spline_step_ratio']:.2f}** (the middle half of the rounds' ratios: {r[len(r) // 4]:.2f} to "
            f"{r[(3 * len(r)) // 4]:.2f}); K = 8: {sp['spline_k8_step_ratio']:.2f}. `model.sample(1000)`: "
            f"affine {sp['sample_1000_s']['affine']:.2f} s, spline {sp['sample_1000_s']['spline']:.2f} s." + before)


def noise_screen() -> str:
    """The noise-augmentation screen (results/screening_noise/): one row per run, one classifier, the same latents."""
    files = sorted((ROOT / "results" / "screening_noise").glob("*.json"))
    if not files:
        return "_No results/screening_noise/: run the commands above._"
    rows = []
    for f in files:
        r = json.loads(f.read_text())
        c = r["config"]
        q, d = r["quality"]["T1.0"], r.get("quality_denoised", {}).get("T1.0")
        n = c["n_quality"]
        se = (q["confident"] * (1 - q["confident"]) / n) ** 0.5
        recipe = [f"σ = {c.get('train_noise') or 0:g}"]
        if c.get("noise_anneal"):
            recipe.append(f"annealed to 0 over the last {c['noise_anneal']} epochs")
        if c.get("split", "random") != "random":
            recipe.append(f"{c['split']} halves")
        if c["logit_alpha"] is None:
            recipe.append("no logit (noise in pixel space)")
        elif c["logit_alpha"] != 1e-4:
            recipe.append(f"logit α = {c['logit_alpha']:g}")
        mala = r.get("quality_mala", {})
        mala_cells = [f"{m['confident']:.3f} ({m['class_entropy']:.3f}, {m['top_class_share']:.2f})"
                      if (m := mala.get(f"beta{b}")) else "–" for b in (1.5, 2.0)]
        rows.append((f"`{f.stem}`", ", ".join(recipe), c["epochs"], f"{r['test_bpd']:.4f}",
                     f"{q['confident']:.3f} ± {se:.3f}", "–" if d is None else f"{d['confident']:.3f}",
                     f"{(d or q)['class_entropy']:.3f}", f"{(d or q)['nn_median']:.2f}",
                     f"{r['nn_median_real_test']:.2f}", *mala_cells))
    return table(["run", "training noise (logit space unless said)", "epochs", "test bpd",
                  "confident, sample() at T = 1", "after one Tweedie step", "class entropy (shown samples)",
                  "nearest training image (median)", "same for real test images",
                  "MALA β = 1.5: confident (class entropy, largest class)", "MALA β = 2"], rows)


def pair() -> str:
    runs = {k: load(f"runs/pair_{k}_20ep.json") for k in ("fp32", "bf16")}
    if None in runs.values():
        return "_No results/runs/pair_*_20ep.json: run the two `bench/train_variant.py` commands above._"
    rows = [(k, r["config"]["epochs"], f"{r['val_bpd']:.4f}", f"{r['test_bpd']:.4f}",
             f"{r['quality']['T1.0']['confident']:.3f}") for k, r in runs.items()]
    lines = studies().precision_pair_lines(runs["fp32"], runs["bf16"])[2:]
    return table(["training precision", "epochs", "best val bpd", "test bpd", "confident at T = 1"], rows) + (
        "\n\n" + "\n".join(f"- {line}" for line in lines))


def bench() -> str:
    b = load("bench.json")
    if b is None:
        return "_No results/bench.json: run `python bench/bench.py`._"
    rows = []
    for key, e in b["entries"].items():
        med, eq = e["step_s_median"], e["speedup_equal_precision"]
        precision = {"ours_fp32": "float32", "ours_bf16": "bf16"}[e["default"]]
        rows.append((key, precision, f"{med['ours_fp32'] * 1e3:.1f}", f"{med['ours_bf16'] * 1e3:.1f}",
                     f"{med['nflows'] * 1e3:.1f}", f"{med['nflows_bf16'] * 1e3:.1f}", f"**{e['speedup_vs_peer']:.2f}**",
                     f"{eq['float32']:.2f}", f"{eq['bf16_autocast']:.2f}",
                     f"{e['roofline_fraction']['ours_fp32']:.2f}"))
    out = table(["width / batch", "default", "ours float32 ms/step", "ours bf16", "nflows float32", "nflows bf16",
                 "speedup vs nflows", "equal precision: float32", "equal precision: bf16",
                 "roofline fraction (float32)"], rows)
    if "epoch" in b:
        ep = b["epoch"]["epoch_s_median"]
        out += (f"\n\nOne epoch of the notebook's real loop, `fit()` ({b['epoch']['n_train']:,} training images, "
                f"data path and validation included): {ep['fp32']:.1f} s in float32 without the moving average, "
                f"{ep['bf16']:.1f} s with bf16 MLPs ({b['epoch']['speedup_bf16_vs_fp32']:.2f}×), {ep['default']:.1f} s "
                "with the notebook's default config.")
        if b["epoch"].get("default_vs_before"):
            rev = b["command"].split("--before ")[1].split()[0]
            out += (f" The same default config trained by the `fit()` of the notebook at `{rev}` when this was "
                    f"measured (`--before {rev}`): {ep['default_before']:.1f} s; today's loop takes "
                    f"{b['epoch']['default_vs_before']:.3f}× its time (all epochs: `epoch_s_all`).")
    for key, e in b["entries"].items():
        if not e.get("speedup_compiled_step"):                     # timed with --compile only
            continue
        med, cs = e["step_s_median"], e["compile_s"]
        whole = med["ours_compiled_step"]
        out += (f"\n\ntorch.compile in float32 at {key}: the likelihood compiled, "
                f"{med['ours_compiled'] * 1e3:.1f} ms/step ({e['speedup_compiled']:.2f}× eager); the whole step "
                f"compiled, {whole * 1e3:.1f} ms/step ({e['speedup_compiled_step']:.2f}× eager, "
                f"{med['nflows'] / whole:.2f}× nflows); their first two calls, compiling included, took "
                f"{cs['ours_compiled']:.0f} s and {cs['ours_compiled_step']:.0f} s (with the compiler's on-disk "
                "cache of earlier runs; a first compile takes longer).")
    if "ttq_speedup_vs_previous_default" in b:
        t = b["ttq_speedup_vs_previous_default"]
        out += (f"\n\nTime to validation ≤ {t['target_val_bpd']} bits/dim, the earlier float32 default against this "
                f"notebook's: {t['epochs_previous']} epochs × {t['s_per_epoch_previous']:.1f} s against "
                f"{t['epochs_default']} epochs × {t['s_per_epoch_default']:.1f} s: "
                f"`ttq_speedup_vs_previous_default` = **{t['value']:.2f}**.")
    return out


def ttq() -> str:
    t = load("time_to_quality.json")
    if t is None:
        return "_No results/time_to_quality.json: run `python bench/time_to_quality.py`._"
    rows = [(f"`{r['source']}`", r["config"]["hidden"], r["config"]["batch_size"], r["config"]["lr"],
             r["config"]["lr_schedule"], f"{r['config'].get('logit_alpha')} / {r['config'].get('scale_bound')} / "
             f"{r['config'].get('ema_decay') or '–'}", r["config"]["cpu_bf16"], r["epochs_run"],
             f"{r['best_val_bpd']:.4f}",
             "never" if r["epoch"] is None else r["epoch"],
             "—" if r["seconds"] is None else f"{r['seconds'] / 60:.1f}", r["device"]) for r in t["runs"]]
    return table(["run", "width", "batch", "lr", "schedule", "logit α / bound c / EMA", "CPU bf16", "epochs",
                  "best val bpd", f"epoch at ≤ {t['target_val_bpd']}", "minutes to it", "device"], rows)


def ablation() -> str:
    a = load("ablations.json")
    if a is None:
        return "_No results/ablations.json: run `python bench/ablate.py`._"
    base = next(r for r in a["variants"] if r["name"] == "base")
    rows = [(r["change"], f"{r['val_bpd']:.4f}", f"{r['test_bpd']:.4f}", f"{r['test_bpd'] - base['test_bpd']:+.4f}",
             f"{r['quality']['T1.0']['confident']:.3f}") for r in a["variants"]]
    return table([f"variant ({a['budget']['train']['epochs']} epochs each)", "val bpd", "test bpd", "Δ test",
                  "confident at T = 1"], rows)


def screening_quality() -> str:
    folder = ROOT / "results" / "screening_quality"
    if not any(folder.glob("*.json")):
        return "_No results/screening_quality/: run the `bench/train_variant.py` commands above._"
    s = studies()                                    # rows and findings: bench/studies.py's functions
    qrows = s.quality_screen_rows(folder)
    rows = []
    for r in qrows:
        raw = "–" if r["raw"] is None else f"{r['test_bpd_raw']:.4f}, {r['raw']['confident']:.3f}"
        rows.append((f"`{r['name']}`", r["hidden"], r["logit_alpha"], r["scale_bound"], r["lr_schedule"],
                     r["ema_decay"] or "–", r["epochs"], f"{r['val_bpd']:.4f}", f"{r['test_bpd']:.4f}",
                     f"{r['confident']:.3f}", f"{r['class_entropy']:.3f}", f"{r['speckle']:.2f}", raw))
    return table(["run", "width", "logit α", "bound c", "schedule", "EMA", "epochs", "best val bpd", "test bpd",
                  "confident at T = 1", "class entropy", "speckle", "raw weights: test bpd, confident"], rows) + (
        "\n\n" + "\n".join(f"- {line}" for line in s.quality_screen_findings(qrows, 1000)))


def sampler_options() -> str:
    """results/sampler_options.json: ways of sampling the notebook's second model, on the same latents."""
    r = load("sampler_options.json")
    if r is None:
        return "_No results/sampler_options.json: run the `bench/sampler_options.py` command above._"
    names = {"T": "z ~ N(0, T² I), T = {}", "mala": "MALA towards p(x)^β, β = {}"}
    rows = []
    for key, q in r["rows"].items():
        start, step = key.rsplit("_denoise", 1)
        how = (names["mala"].format(start.removeprefix("mala_beta")) + f", {r['mala_steps']} steps"
               if start.startswith("mala") else names["T"].format(start.removeprefix("T")))
        rows.append((how, "none" if float(step) == 0 else f"σ = {step}", f"{q['confident']:.3f}",
                     f"{q['class_entropy']:.3f}", f"{q['top_class_share']:.2f}", f"{q['nn_median']:.2f}"))
    return table(["sampler", "Tweedie step", "confident", "class entropy", "largest class", "nearest training "
                  f"image (median; real test images {r['nn_median_real_test']:.2f})"], rows)


def critic_screen() -> str:
    """The critic study (results/screening_critic/, bench/critic_study.py): per start model (phase 1 of the notebook's
    recipe, affine or spline), its epoch 0 once, then per run every second epoch and the last; the likelihood cost
    against the control run (W = 0) from the same start at the same epoch, with the same flow learning rate where
    there is one."""
    folder = ROOT / "results" / "screening_critic"
    runs = {f.stem: json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))}
    if not runs:
        return "_No results/screening_critic/: run the `bench/critic_study.py` commands above._"
    rows, notes = [], []
    for start in sorted({r["start"] for r in runs.values()}, key=lambda p: ("spline" in p, p)):
        group = {k: r for k, r in runs.items() if r["start"] == start}
        first = next(iter(group.values()))
        controls = [r for r in group.values() if r["config"]["adv_weight"] == 0]
        ctrl = {}                             # {flow lr: {epoch: the control's test bits/dim}}
        for lr in {r["config"]["adv_lr"] for r in group.values()}:
            same = next((r for r in controls if r["config"]["adv_lr"] == lr), controls[0] if controls else None)
            ctrl[lr] = {row["epoch"]: row["test_bpd"] for row in same["rows"]} if same else {}
        s0 = first["rows"][0]
        rows.append((f"start: phase 1, {first['config'].get('coupling', 'affine')}, {first['start_epoch']} epochs "
                     f"(`{start}`)", "–", "–", "–", "–", "–", 0,
                     f"{s0['test_bpd']:.4f}", "–", f"{s0['confident']:.3f}", f"{s0['strict']:.3f}",
                     f"{s0['class_entropy']:.3f}", f"{s0['nn_median']:.2f}"))
        weight = {k: r["config"]["adv_weight"] for k, r in group.items()}
        order = sorted(group, key=lambda k: (weight[k] != 0, weight[k], k))
        for name in order:
            r, c = group[name], group[name]["config"]
            last = r["rows"][-1]["epoch"]
            for row in r["rows"][1:]:
                if row["epoch"] % 2 and row["epoch"] != last:
                    continue
                vs = (row["test_bpd"] - ctrl[c["adv_lr"]][row["epoch"]]
                      if row["epoch"] in ctrl[c["adv_lr"]] and c["adv_weight"] else None)
                rows.append((f"`{name}`" + (" (control)" if c["adv_weight"] == 0 else ""), f"{c['adv_weight']:g}",
                             f"{c['adv_lr']:g}", f"{c['critic_lr']:g}", f"{c['critic_r1']:g}", c["critic_width"],
                             row["epoch"], f"{row['test_bpd']:.4f}",
                             "–" if vs is None else f"{vs:+.4f}", f"{row['confident']:.3f}", f"{row['strict']:.3f}",
                             f"{row['class_entropy']:.3f}", f"{row['nn_median']:.2f}"))
        notes.append(first["real_test_nn_median"])
    real = notes[0]
    return table(["run", "W", "flow lr", "critic lr", "r1", "critic width", "epoch", "test bits/dim", "vs control",
                  "p ≥ 0.9", "p ≥ 0.99",
                  "class entropy", "nearest-image median"], rows) + (
        f"\n\nReal test images' nearest-image median: {real:.2f}; the guard asks at least {0.8 * real:.2f}.")


TABLES = {"results": results, "critic_screen": critic_screen, "noise_screen": noise_screen,
          "sampler_options": sampler_options, "pair": pair,
          "bench": bench, "ttq": ttq,
          "ablation": ablation, "screening_quality": screening_quality, "spline_screen": spline_screen,
          "spline_speed": spline_speed}
BLOCK = re.compile(r"(<!-- table:(\w+) -->\n)(.*?)(<!-- /table -->)", re.S)


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + TABLES[m.group(2)]() + "\n" + m.group(4), text)


def main() -> None:
    if "--print" in sys.argv:
        name = sys.argv[sys.argv.index("--print") + 1:][:1]
        if not name or name[0] not in TABLES:
            sys.exit(f"--print NAME: NAME is one of {sorted(TABLES)}")
        print(TABLES[name[0]]())
        return
    stale = []
    for path in FILES:
        text = path.read_text()
        new = render(text)
        if "--check" in sys.argv:
            names = [m.group(2) for m, n in zip(BLOCK.finditer(text), BLOCK.finditer(new), strict=True)
                     if m.group(3) != n.group(3)]
            if names:
                stale.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {names}")
        elif new != text:
            path.write_text(new)
    if stale:
        sys.exit(f"tables out of date: {'; '.join(stale)}; run python tools/readme_tables.py")


if __name__ == "__main__":
    main()
