"""The notebook's eager training on a GPU, in one run of at most --budget-s seconds: the full preset, a stop and
resume, checks of what it leaves, and the train step eager against torch.compile.

    python bench/gpu_run.py --out results/bench_gpu.json      # on a CUDA machine: about --budget-s (420 s) in all
    python bench/gpu_run.py --quick --epochs 4 --out /tmp/g.json   # a smoke run of the script itself, on any device

1. full: the full preset (the notebook's CFG) trained with fit() until the training deadline (--budget-s minus
   --compile-budget-s after the start; the epochs that finished are kept): seconds per epoch, the epoch at which
   validation first reaches QUALITY_BPD, the test bits/dim of the best model.
   Then phase 2 (the notebook's fit with a critic, cfg's adv_epochs) from its best model, until the same deadline.
2. resume: that run is stopped on purpose mid-way in its second epoch, then fit() is called again on the same
   checkpoint folder: it must resume after epoch 1 (resumed_after) and go on numbering from epoch 2.
3. checks: json.dumps(hist) works and every value in it is a plain float or int; host memory (RSS) and, on CUDA,
   torch.cuda.memory_allocated() / max_memory_allocated(), sampled at the start of every epoch, and whether their
   growth over the resumed run's epochs (from its first sample after a finished epoch) stays under THRESHOLDS_MIB.
4. step_timing: the eager train step (bench's train_step, the step fit() takes) against torch.compile of it (mode
   default and "reduce-overhead") on one fixed batch: the first call (compile) and the median seconds per step after
   warm-up.
   A compile starts only if the time left to --budget-s is at least the longer of --compile-need-s and the last
   compile's time; a failure is recorded (its type and first line), not raised. --quick times the eager step only
   unless --compile-budget-s is given.
The JSON is written after every part ("finished" says which parts ran to the end), so a run cut off still leaves
numbers; checkpoints go to a temporary folder.
"""
import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    QUALITY_BPD,
    Parser,
    build_model,
    cli,
    config,
    lib,
    load_flow,
    machine,
    mnist,
    train_step,
    write_json,
)
from bench.time_to_quality import first_epoch_at  # noqa: E402

THRESHOLDS_MIB = {"rss_growth": 200, "cuda_allocated_growth": 64}


class OutOfTime(Exception):
    """Raised from fit()'s per-step hook at the training deadline."""


class Interrupted(Exception):
    """Raised from fit()'s per-step hook at the deliberate stop of part 2."""


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def memory_sample(device, call: int, epoch: int) -> dict:
    """Host RSS (MiB) and, on CUDA, allocated and peak allocated device memory (MiB), now."""
    try:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmRSS:"))
        rss, source = int(line.split()[1]) / 1024, "VmRSS"
    except (OSError, StopIteration):
        rss, source = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "ru_maxrss"   # the peak, in kB
    s = {"call": call, "epoch": epoch, "rss_mib": rss, "rss_source": source}
    if device.type == "cuda":
        s["cuda_allocated_mib"] = torch.cuda.memory_allocated(device) / 2**20
        s["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return s


def train(cfg, data, ckpt, hook) -> tuple:
    """(fit()'s result, None) or (None, the name of the exception by which the hook stopped it)."""
    model = build_model(cfg, data["train_pix"].device)
    try:
        return lib.fit(model, data["train_pix"], data["val_x"], cfg, ckpt, on_step=hook, quiet=True), None
    except (OutOfTime, Interrupted) as e:
        return None, type(e).__name__


def phase2(cfg, data, start, ckpt, deadline) -> dict:
    """The notebook's phase 2 (fit with a critic) from the phase-1 checkpoint `start`, cut off at `deadline`: its
    seconds per epoch, and the test bits/dim and classifier-free sample check of the kept model."""
    if not start.exists() or time.time() >= deadline:
        return {"finished": False, "skipped_for": "no phase-1 model" if not start.exists() else "time"}
    model, _ = load_flow(start, data["train_pix"].device)
    torch.manual_seed(cfg["seed"])
    critic = lib.Critic(cfg["critic_width"]).to(data["train_pix"].device)

    def hook(epoch, step, m):
        if time.time() > deadline:
            raise OutOfTime

    try:
        run = lib.fit(model, data["train_pix"], data["val_x"], cfg, ckpt, critic=critic, on_step=hook, quiet=True)
    except OutOfTime:
        hist = torch.load(ckpt / "last.pt", weights_only=False)["hist"] if (ckpt / "last.pt").exists() else None
        return {"finished": False, "stopped_by": "OutOfTime", "epoch_s": hist and hist["epoch_s"]}
    hist = run["hist"]
    x = model.sample(256, generator=torch.Generator().manual_seed(cfg["sample_seed"]))
    return {"finished": True, "epochs": len(hist["epoch"]), "epoch_s": hist["epoch_s"],
            "s_per_epoch_median": statistics.median(hist["epoch_s"]), "val_bpd": hist["val_bpd"],
            "test_bpd": lib.bits_per_dim(lib.evaluate(model, data["test_x"], cfg["eval_batch"])),
            "samples_finite_in_range": bool(torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1)}


def hist_checks(hist) -> dict:
    if not hist["epoch"]:                              # no epoch finished: nothing of fit()'s to check
        return {"hist_json_ok": None, "hist_plain_numbers": None, "hist_serialisable": None, "hist_error": None}
    try:
        json.dumps(hist)
        json_ok, error = True, None
    except (TypeError, ValueError) as e:
        json_ok, error = False, f"{type(e).__name__}: {e}"
    plain = all(type(v) in (int, float) for values in hist.values() for v in values)
    return {"hist_json_ok": json_ok, "hist_plain_numbers": plain, "hist_serialisable": json_ok and plain,
            "hist_error": error}


def memory_checks(samples) -> dict:
    """Growth from the resumed call's first sample after one of its epochs finished to its last sample."""
    resumed = [s for s in samples if s["call"] == 2][1:]
    out = {"series": samples, "thresholds_mib": THRESHOLDS_MIB,
           "baseline": "the resumed fit() call's sample at the start of its second epoch"}
    for key, limit in (("rss", "rss_growth"), ("cuda_allocated", "cuda_allocated_growth")):
        growth = None
        if len(resumed) >= 2 and f"{key}_mib" in resumed[0]:
            growth = resumed[-1][f"{key}_mib"] - resumed[0][f"{key}_mib"]
        out[f"{key}_growth_mib"] = growth
        out[f"{key}_ok"] = None if growth is None else growth < THRESHOLDS_MIB[limit]
    return out


def plain(hist) -> dict:
    """hist with every value a plain float or int, so that the JSON can be written whatever the check found."""
    return {k: [v if type(v) in (int, float) else float(v) for v in values] for k, values in hist.items()}


def error_line(e) -> dict:
    """The exception's type and first non-empty line; for BackendCompilerFailed, those of the inner exception."""
    inner = e.__cause__ or getattr(e, "inner_exception", None) or e
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip()]
    return {"error_type": type(e).__name__, "inner_type": type(inner).__name__,
            "error": (lines[0] if lines else "")[:300]}


def time_step(name, cfg, x, warmup, steps, repeats) -> dict:
    """First call (compile) and median seconds per step of the notebook's step, eager or under torch.compile."""
    device = x.device
    model = build_model(cfg, device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], fused=device.type in ("cpu", "cuda"))   # as in fit()
    eager = train_step(model, opt, cfg["grad_clip"])
    if name == "eager":
        fn = eager
    else:
        torch._dynamo.reset()
        compiled = torch.compile(eager, mode=None if name == "compiled" else "reduce-overhead")

        def fn(v):
            torch.compiler.cudagraph_mark_step_begin()
            loss, grad_norm = compiled(v)
            return loss.clone(), grad_norm.clone()      # a graph's outputs are overwritten by its next replay
    sync(device)
    t0 = time.perf_counter()
    fn(x)
    sync(device)
    first_s = time.perf_counter() - t0
    for _ in range(warmup):
        fn(x)
    per_step = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss, _ = fn(x)
        sync(device)
        per_step.append((time.perf_counter() - t0) / steps)
    return {"first_call_s": first_s, "step_s_median": statistics.median(per_step), "step_s_all": per_step,
            "loss_finite": bool(torch.isfinite(loss))}


def main(argv=None) -> None:
    t_start = time.time()
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/bench_gpu.json")
    ap.add_argument("--quick", action="store_true", help="the quick preset: tests the script, measures nothing")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the training run (default: the preset's)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="seconds after the start by which it all ends")
    ap.add_argument("--compile-budget-s", type=float, default=None, help="of those, the seconds kept for part 4's "
                    "compiles (default 150; 0 with --quick)")
    ap.add_argument("--compile-need-s", type=float, default=60.0, help="least time left at which a compile starts")
    args = ap.parse_args(argv)
    compile_budget = args.compile_budget_s if args.compile_budget_s is not None else (0.0 if args.quick else 150.0)
    end = t_start + args.budget_s
    train_deadline = end - compile_budget
    cfg = config(quick=args.quick)
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    device = lib.pick_device()
    data = mnist(cfg, device)
    n_batches = -(-len(data["train_pix"]) // cfg["batch_size"])
    stop_at = (2, n_batches // 2)                      # the deliberate stop: mid-way in the second epoch
    out = {"command": "python bench/gpu_run.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "quick": args.quick, **machine(device), "config": cfg, "target_val_bpd": QUALITY_BPD,
           "budget_s": args.budget_s, "compile_budget_s": compile_budget,
           "finished": {"full": False, "resume": False, "phase2": False, "step_timing": False}}
    write_json(args.out, out)

    # parts 1-3: the full preset, stopped on purpose and resumed, its memory sampled at the start of every epoch
    samples, state = [], {"call": 1, "first_epoch": None}

    def hook(epoch, step, model):
        if state["first_epoch"] is None:
            state["first_epoch"] = epoch
        if step == 0:
            samples.append(memory_sample(device, state["call"], epoch))
        if time.time() > train_deadline:
            raise OutOfTime
        if state["call"] == 1 and (epoch, step) == stop_at:
            raise Interrupted

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "full"
        t0 = time.time()
        run, stopped = train(cfg, data, ckpt, hook)
        resume = {"stopped_at": {"epoch": stop_at[0], "step": stop_at[1]}, "stopped": stopped == "Interrupted",
                  "resumed_after": None, "first_epoch_after_resume": None, "epochs_trained": None}
        if stopped == "Interrupted":
            state.update(call=2, first_epoch=None)
            run, stopped = train(cfg, data, ckpt, hook)
            resume["first_epoch_after_resume"] = state["first_epoch"]
            if run is not None:
                resume["resumed_after"] = run["resumed_after"]
                resume["epochs_trained"] = [e for e in run["hist"]["epoch"] if e > (run["resumed_after"] or 0)]
        sync(device)
        wall = time.time() - t0
        if run is not None:
            hist = run["hist"]
        else:                                          # cut off: what the finished epochs left in the checkpoints
            last = ckpt / "last.pt"
            hist = torch.load(last, weights_only=False)["hist"] if last.exists() else {"epoch": [], "epoch_s": [],
                                                                                         "val_bpd": []}
        best = load_flow(ckpt / "best.pt", device) if (ckpt / "best.pt").exists() else None
        # part 3b: the notebook's phase 2 (a critic beside the likelihood) from the best model, within the deadline
        out["phase2"] = phase2(cfg, data, ckpt / "best.pt", Path(tmp) / "adv", train_deadline)
        out["finished"]["phase2"] = out["phase2"]["finished"]
        print(f"phase 2: {out['phase2']}", flush=True)
    checks = hist_checks(hist)
    hist = plain(hist)
    epoch, seconds = first_epoch_at(hist, QUALITY_BPD)
    out["full"] = {"finished": run is not None, "stopped_by": stopped, "epochs": len(hist["epoch"]),
                   "of_epochs": cfg["epochs"], "epoch_s": hist["epoch_s"],
                   "s_per_epoch_median": statistics.median(hist["epoch_s"]) if hist["epoch_s"] else None,
                   "train_s": sum(hist["epoch_s"]), "wall_s": wall, "epoch_at_target": epoch,
                   "seconds_to_target": seconds, "best_val_bpd": min(hist["val_bpd"], default=None),
                   "best_epoch": None if best is None else best[1]["epoch"],
                   "test_bpd": None if best is None else lib.bits_per_dim(lib.evaluate(best[0], data["test_x"],
                                                                                          cfg["eval_batch"])),
                   "curves": hist}
    resume["numbering_continues"] = (resume["first_epoch_after_resume"] == stop_at[0]
                                     and hist["epoch"] == list(range(1, len(hist["epoch"]) + 1)))
    out["resume"] = resume
    out["checks"] = {**checks, "memory": memory_checks(samples)}
    out["finished"]["full"] = run is not None
    out["finished"]["resume"] = resume["resumed_after"] == stop_at[0] - 1 and resume["numbering_continues"]
    f = out["full"]
    print(f"full preset: {f['epochs']} of {cfg['epochs']} epochs (finished: {f['finished']}), "
          f"{f['s_per_epoch_median']} s/epoch, validation <= {QUALITY_BPD} at epoch {epoch} ({seconds} s), test bpd "
          f"{f['test_bpd']}; resumed after {resume['resumed_after']}; hist serialisable: "
          f"{checks['hist_serialisable']}", flush=True)
    write_json(args.out, out)

    # part 4: the train step, eager against torch.compile, on one fixed batch of the configured size
    x = lib.dequantize(data["train_pix"][: cfg["batch_size"]].cpu(), cfg["seed"]).to(device)
    warmup, steps, repeats = (3, 5, 3) if args.quick else (20, 30, 7)
    timing = out["step_timing"] = {"batch_size": len(x), "warmup": warmup, "steps": steps, "repeats": repeats}
    need = args.compile_need_s
    for name in ("eager", "compiled", "compiled_reduce_overhead"):
        left = end - time.time()
        if name != "eager" and compile_budget <= 0:
            timing[name] = {"skipped_for": "option", "note": "--compile-budget-s 0"}
        elif left <= 0 or (name != "eager" and left < need):
            timing[name] = {"skipped_for": "time", "note": f"{left:.0f} s left" + ("" if name == "eager" else
                                                                                     f", a compile needs ~{need:.0f}")}
        else:
            try:
                timing[name] = time_step(name, cfg, x, warmup, steps, repeats)
                if name != "eager":
                    timing[name]["compile_s"] = timing[name]["first_call_s"]
                    need = max(need, timing[name]["compile_s"])
            except Exception as e:  # a compile or capture failure: recorded, the script goes on
                timing[name] = error_line(e)
        if "step_s_median" in timing[name] and "step_s_median" in timing.get("eager", {}):
            timing[name]["speedup_vs_eager"] = timing["eager"]["step_s_median"] / timing[name]["step_s_median"]
        print(f"step {name}: {timing[name]}"[:400], flush=True)
        out["finished"]["step_timing"] = name == "compiled_reduce_overhead" and all(
            v.get("skipped_for") != "time" for v in timing.values() if isinstance(v, dict))
        out["elapsed_s"] = time.time() - t_start
        write_json(args.out, out)


if __name__ == "__main__":
    cli(main)
