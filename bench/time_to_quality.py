"""Time to quality: the first epoch at which each training run's validation reached QUALITY_BPD, and the minutes.

    python bench/time_to_quality.py       # seconds; writes results/time_to_quality.json and one key of bench.json

Reads the curves of the notebook's run (results/metrics.json) and of every results/runs/*.json (written by
bench/train_variant.py, plus the earlier float32 default's run, previous_default_fp32.json). Minutes are the
runs' own per-epoch seconds, which come from different days and loads; the comparison of the default against the
previous one therefore uses epochs counted from the curves and seconds per epoch measured in one process by
bench/bench.py (its "epoch" entry: one epoch of fit() with the earlier default's loop, float32 without the
weights' moving average, against one with the notebook's default config, interleaved):

    ttq_speedup_vs_previous_default = (epochs_previous x s/epoch previous) / (epochs_default x s/epoch default)

written into results/bench.json beside the step benchmark.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import QUALITY_BPD, ROOT, cli, write_json  # noqa: E402

PREVIOUS = "results/runs/previous_default_fp32.json"


def first_epoch_at(curves: dict, bpd: float):
    """(epoch, cumulative training seconds) of the first epoch whose validation bits/dim <= bpd, or (None, None)."""
    hit = next((i for i, v in enumerate(curves["val_bpd"]) if v <= bpd), None)
    return (None, None) if hit is None else (curves["epoch"][hit], sum(curves["epoch_s"][: hit + 1]))


def main() -> None:
    sources = [ROOT / "results" / "metrics.json", *sorted((ROOT / "results" / "runs").glob("*.json"))]
    runs = []
    for path in sources:
        if not path.exists():
            continue
        m = json.loads(path.read_text())
        if m.get("quick"):
            continue
        epoch, seconds = first_epoch_at(m["curves"], QUALITY_BPD)
        cfg = m["config"]
        runs.append({"source": str(path.relative_to(ROOT)), "device": m.get("device_name") or m.get("device"),
                     "config": {**{k: cfg.get(k) for k in ("hidden", "batch_size", "lr", "lr_schedule", "epochs",
                                                           "logit_alpha", "scale_bound", "ema_decay")},
                                "cpu_bf16": cfg.get("cpu_bf16", False)},   # runs from before the switch: float32
                     "epochs_run": len(m["curves"]["epoch"]), "best_val_bpd": min(m["curves"]["val_bpd"]),
                     "epoch": epoch, "seconds": seconds})
        print(f"{runs[-1]['source']}: " + ("never" if epoch is None else f"epoch {epoch}, {seconds / 60:.1f} min"))
    out = {"target_val_bpd": QUALITY_BPD, "runs": runs}
    by_source = {r["source"]: r for r in runs}
    bench_path = ROOT / "results" / "bench.json"
    bench = json.loads(bench_path.read_text()) if bench_path.exists() else {}
    new, old = by_source.get("results/metrics.json"), by_source.get(PREVIOUS)
    if new and old and new["epoch"] and old["epoch"] and "epoch" in bench:
        s = bench["epoch"]["epoch_s_median"]
        ratio = (old["epoch"] * s["fp32"]) / (new["epoch"] * s["default"])
        out["ttq_speedup_vs_previous_default"] = {
            "value": ratio, "target_val_bpd": QUALITY_BPD, "epochs_previous": old["epoch"],
            "epochs_default": new["epoch"], "s_per_epoch_previous": s["fp32"], "s_per_epoch_default": s["default"],
            "formula": "(epochs_previous x s_per_epoch_previous) / (epochs_default x s_per_epoch_default); "
                       "seconds per epoch from bench.py's interleaved epochs of fit(): the earlier default's loop "
                       "(float32, no moving average) against the notebook's default config"}
        bench["ttq_speedup_vs_previous_default"] = out["ttq_speedup_vs_previous_default"]
        write_json(bench_path, bench)
        print(f"ttq_speedup_vs_previous_default: {ratio:.2f}")
    write_json(ROOT / "results" / "time_to_quality.json", out)


if __name__ == "__main__":
    cli(main)
