"""The studies behind the README's tables: the screening runs, the ablation and the precision (bf16) pair.

Their rows and the sentences read from them are defined once here, and used by bench/ablate.py (which trains the
ablation), tools/readme_tables.py (which writes the README's tables) and the tests. What they need of the model,
its training and its measures comes from the notebook's `#| lib` cells, through bench.common (its Flow, which adds
the bench-only options, such as the ablation's no-logit variant) and bench/samplers.py.
"""
import json
import math
from pathlib import Path

import numpy as np

from bench.common import Flow, build_model, lib, model_kwargs, run_dir, train
from bench.samplers import measure_quality


def n_params(cfg) -> int:
    """The parameter count of the flow of config cfg (built, not trained): the notebook's, or the variant that cfg's
    bench keys name."""
    return sum(p.numel() for p in Flow(**model_kwargs(cfg)).parameters())


def screening_rows(folder) -> list:
    """Rows of the screening table from results/screening/*.json: what changed, epochs, last and best val bpd."""
    rows = []
    for path in sorted(Path(folder).glob("*.json")):
        r = json.loads(path.read_text())
        val = r["val"]
        spikes = [i + 1 for i in range(1, len(val)) if val[i] > val[i - 1] + 0.05]
        rows.append({"name": r["name"], "model": r["kw"], "train": r["tr"], "epochs": len(val), "last": val[-1],
                     "best": min(val), "spike_epochs": spikes, "s_per_epoch": float(np.median(r["t"]))})
    return rows


def quality_screen_rows(folder) -> list:
    """Rows of the sample-quality screening, one per results/screening_quality/*.json (bench/train_variant.py):
    its settings, bits/dim and, at T = 1, the evaluated weights' samples and the last epoch's raw weights' samples."""
    rows = []
    for path in sorted(Path(folder).glob("*.json")):
        r = json.loads(path.read_text())
        c = r["config"]
        rows.append({"name": path.stem, "command": r["command"], **{k: c.get(k) for k in (
                     "hidden", "logit_alpha", "scale_bound", "lr_schedule", "ema_decay", "epochs")},
                     "val_bpd": r["val_bpd"], "test_bpd": r["test_bpd"], **r["quality"]["T1.0"],
                     "raw": r.get("quality_raw_last", {}).get("T1.0"), "test_bpd_raw": r.get("test_bpd_raw_last")})
    return rows


def quality_screen_findings(rows: list, n_quality: int) -> list:
    """Sentences computed from the screening rows: what the moving average buys within each run, and the best runs."""
    out = []
    for r in rows:
        if r["raw"] is not None:
            out.append(f"{r['name']}: averaged against raw weights of the last epoch: "
                       f"{r['test_bpd'] - r['test_bpd_raw']:+.4f} test bits/dim, "
                       f"{r['confident'] - r['raw']['confident']:+.3f} confident")
    best_bpd, best_q = min(rows, key=lambda r: r["test_bpd"]), max(rows, key=lambda r: r["confident"])
    q = best_q["confident"]
    out.append(f"lowest test bits/dim: {best_bpd['name']} ({best_bpd['test_bpd']:.4f}, {best_bpd['confident']:.3f} "
               f"confident); most confident samples: {best_q['name']} ({q:.3f}, {best_q['test_bpd']:.4f} bits/dim); "
               f"one standard error of a confident fraction there: {math.sqrt(q * (1 - q) / n_quality):.3f}")
    return out


def precision_pair_lines(fp32: dict, bf16: dict) -> list:
    """Sentences from two bench/train_variant.py results that differ only in cpu_bf16: each run; bf16's difference
    in test bits/dim and in confident samples at T = 1, with that difference's standard error; the two tests of
    the bar that bf16 must pass to become the CPU default."""
    q = {k: r["quality"]["T1.0"]["confident"] for k, r in (("float32", fp32), ("bf16", bf16))}
    out = [f"{k}: test {r['test_bpd']:.4f} bits/dim, best validation {r['val_bpd']:.4f} (epoch {r['best_epoch']}), "
           f"confident at T = 1 {q[k]:.3f}"
           for k, r in (("float32", fp32), ("bf16", bf16))]
    se = math.sqrt(sum(p * (1 - p) for p in q.values()) / fp32["config"]["n_quality"])   # s.e. of a difference
    dq = q["bf16"] - q["float32"]
    d_bpd = bf16["test_bpd"] - fp32["test_bpd"]
    out.append(f"bf16 - float32: {d_bpd:+.4f} test bits/dim, {dq:+.3f} confident ({dq / se:+.1f} s.e.)")
    # the bar for a bf16 default: the same likelihood within 0.01 bits/dim, and no loss of samples beyond 2 s.e.
    out.append(f"bf16 within 0.01 bits/dim: {abs(d_bpd) <= 0.01}; no loss of confident samples beyond two standard "
               f"errors: {dq / se >= -2}")
    return out


def ablation_variants(base: dict) -> list:
    """[{name, group, change, model}]: the model `base` (bench.common.model_kwargs of a config: the notebook's model
    keys and bench's variant keys), then one change at a time (the variants: bench/variants.py)."""
    w = base["hidden"] // 2
    changes = [
        ("base", "reported", "reported configuration", {}),
        ("halves_contiguous", "halves", "halves: contiguous (top / bottom)", {"split": "contiguous"}),
        ("halves_checkerboard", "halves", "halves: checkerboard", {"split": "checkerboard"}),
        ("halves_evenodd", "halves", "halves: even / odd columns", {"split": "evenodd"}),
        ("coupling_additive", "coupling", "coupling: additive (NICE)", {"coupling": "additive"}),
        ("logit_0.05", "preprocessing", "logit alpha = 0.05", {"logit_alpha": 0.05}),
        ("no_logit", "preprocessing", "no logit (plain [0, 1])", {"logit_alpha": None}),
        ("no_layer_scale", "exp(s_i)", "per-layer exp(s_i) off", {"layer_scale": False}),
        (f"width_{w}", "width", f"hidden width {w}", {"hidden": w}),
    ]
    return [{"name": n, "group": g, "change": c, "model": {**base, **over}} for n, g, c, over in changes]


def ablation_row(variant: dict, cfg: dict, data: dict, clf, ckpt_dir) -> dict:
    """Train one variant (from ablation_variants) with fit() on cfg's budget; its bits/dim, samples, size, time."""
    run_cfg = {**cfg, **variant["model"]}
    model = build_model(run_cfg, data["train_pix"].device)
    run = train(model, data, run_cfg, run_dir(Path(ckpt_dir) / variant["name"], run_cfg), quiet=True)
    model.eval()
    test_nats = lib.evaluate(model, data["test_x"], cfg["eval_batch"])
    hist, best = run["hist"], run["best"]
    return {**variant, "n_params": sum(p.numel() for p in model.parameters()), "best_epoch": best["epoch"],
            "val_bpd": lib.bits_per_dim(best["val_nats"]), "test_bpd": lib.bits_per_dim(test_nats),
            "test_nats": test_nats,
            "quality": {"T1.0": measure_quality(model, clf, 1.0, cfg["n_quality"], cfg["sample_seed"],
                                                    threshold=cfg["confident_p"])[1]},
            "train_time_s": sum(hist["epoch_s"]), "curves": {k: hist[k] for k in ("train_bpd", "val_bpd", "epoch_s")}}


def ablation_findings(rows: list, n_quality: int) -> list:
    """Sentences computed from the ablation's rows: each change's cost in bits/dim and in confident samples."""
    base = next(r for r in rows if r["name"] == "base")
    q0 = base["quality"]["T1.0"]["confident"]
    se = math.sqrt(2 * q0 * (1 - q0) / n_quality) or math.nan   # standard error of a difference of two fractions
    out = [f"one standard error of a difference in confident fractions: about {se:.3f}"]
    for r in sorted(rows, key=lambda r: -r["test_bpd"]):
        if r is base:
            continue
        dq = r["quality"]["T1.0"]["confident"] - q0
        v = r["curves"]["val_bpd"]
        spikes = [i + 1 for i in range(1, len(v)) if v[i] > v[i - 1]]     # epochs whose validation got worse
        out.append(f"{r['change']}: {r['test_bpd'] - base['test_bpd']:+.4f} bits/dim, {dq:+.3f} confident "
                   f"({dq / se:+.1f} s.e.)" + (f"; validation got worse in epoch(s) {spikes}" if spikes else ""))
    return out


def frontier_points(root) -> list:
    """(label, test bits/dim, confident fraction, kind) of every screened recipe and of the notebook's full run:
    kind 'screen' for sample() of a screening run of 20 epochs or more, 'denoised' for the same run's samples after
    one Tweedie step, 'spline' for every spline-coupling screen (results/screening_spline/, its affine pair
    included as 'screen' when it has 20 epochs or more), 'critic' for the last epoch of every critic run
    (results/screening_critic/), 'notebook' and 'notebook_critic' (phase 2), or in results of earlier versions
    'notebook_spline' and 'notebook_second_model', for the committed run."""
    root = Path(root)
    pts = []
    for folder in ("screening_quality", "screening_noise", "screening_spline"):
        for path in sorted((root / "results" / folder).glob("*.json")):
            r = json.loads(path.read_text())
            spline = r["config"].get("coupling") == "spline"
            if r["config"]["epochs"] < 20 and not spline:     # the 10-epoch affine runs are too short to compare
                continue
            pts.append((path.stem, r["test_bpd"], r["quality"]["T1.0"]["confident"], "spline" if spline else "screen"))
            if "quality_denoised" in r:
                pts.append((path.stem + " + Tweedie", r["test_bpd"], r["quality_denoised"]["T1.0"]["confident"],
                            "denoised"))
    m = root / "results" / "metrics.json"
    if m.exists():
        m = json.loads(m.read_text())
        q = m["sample_quality"]["T1.0"] if "sample_quality" in m else m["samples_T1"]     # earlier format first
        pts.append(("notebook, sample()", m["test_bpd"], q["confident"], "notebook"))
        if "second_model" in m:
            sm = m["second_model"]
            pts.append(("notebook, second model + Tweedie", sm["test_bpd"], sm["samples"]["denoised"]["confident"],
                        "notebook_second_model"))
        if "spline" in m:
            pts.append(("notebook, spline", m["spline"]["test_bpd"], m["spline"]["samples_T1"]["confident"],
                        "notebook_spline"))
        if "phase2" in m:
            pts.append(("notebook, phase 2 (critic)", m["phase2"]["test_bpd"], m["phase2"]["samples_T1"]["confident"],
                        "notebook_critic"))
    for path in sorted((root / "results" / "screening_critic").glob("*.json")):
        r = json.loads(path.read_text())
        if r["config"]["adv_weight"] > 0:             # the last epoch of every critic run of the study
            pts.append((f"critic {path.stem}", r["rows"][-1]["test_bpd"], r["rows"][-1]["confident"], "critic"))
    return pts


def plot_frontier(root, out) -> None:
    """results/frontier.png: test bits/dim against the confident fraction of every point of frontier_points()."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    style = {"screen": ("o", "tab:blue"), "denoised": ("^", "tab:green"), "spline": ("s", "tab:orange"),
             "notebook": ("*", "tab:red"), "notebook_second_model": ("*", "tab:purple"),
             "notebook_spline": ("*", "tab:orange"), "critic": ("D", "tab:brown"),
             "notebook_critic": ("*", "tab:brown")}
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for label, bpd, conf, kind in frontier_points(root):
        marker, color = style[kind]
        ax.scatter(bpd, conf, marker=marker, color=color, s=160 if marker == "*" else 40)
        ax.annotate(label, (bpd, conf), fontsize=8, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("test NLL [bits/dim] on the exercise's data, lower is better")
    ax.set_ylabel("confident samples at T = 1 (1,000, one classifier)")
    ax.set_title("Likelihood against recognisable samples: screening runs (blue; 20 epochs unless named),\n"
                 "after a denoising step (green), spline couplings (orange), phase 2 with a critic (brown),\n"
                 "the notebook's run (stars)", fontsize=11)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    plot_frontier(Path(__file__).resolve().parent.parent, Path(__file__).resolve().parent.parent / "results"
                  / "frontier.png")
    print("wrote results/frontier.png")
