"""Train-step throughput of the notebook's flow against nflows and against this machine's matmul peak.

    pip install -r bench/requirements.txt && python bench/bench.py --compile   # ~11 min: results/bench.json
    python bench/bench.py --quick --out /tmp/bench.json                        # a seconds-long smoke run

1. Peer: the same architecture built from nflows 0.14 (a CompositeTransform of a logit transform, 4 nflows
   AffineCouplingTransforms with the same halves and the same 5-Linear MLP, each followed by a learned per-feature
   exp(s_i) transform; a StandardNormal base). Before timing, the notebook's weights are copied into it and both
   log-likelihoods must agree (float64), so both time the same function.
2. Train step = loss (mean bits/dim) -> backward -> clip_grad_norm_(1.0) -> fused Adam step, on one fixed batch of
   dequantized MNIST (batch 128, the notebook's and the issue's reference, then 256 and 512; --batches), same
   dtype (float32), same threads, same process; warm-up, then repeats interleaved between the models; the median.
3. Roofline: the step's matmul FLOPs are counted from the layer shapes,
       FLOPs/step = 3 x 2 B sum_l in_l out_l   (forward Y = X W^T; backward dX = dY W and dW = dY^T X)
   over the 5 Linears of the 4 coupling MLPs (biases and elementwise ops not counted). torch.matmul is timed on
   exactly those GEMM shapes, as one more entry of the interleaved repeats; peak = FLOPs / (their time), and
       roofline_fraction = achieved FLOP/s / peak = (GEMM time) / (train-step time), the median over repeats.
   This machine's speed drifts by tens of percent between minutes, which is why everything is interleaved.
4. Time to quality: wall time until validation first reaches 1.85 bits/dim, read from the per-epoch times of the
   full-preset run recorded in results/metrics.json (the notebook's committed run) and any results/ttq_*.json.
"""
import argparse
import itertools
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
from nbload import load_lib  # noqa: E402

from bench.ablate import data_dir  # noqa: E402

QUALITY_BPD = 1.85


def peer_flow(lib, ours):
    """The notebook's model rebuilt from nflows transforms, with `ours`'s weights copied in."""
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.base import CompositeTransform, Transform
    from nflows.transforms.coupling import AffineCouplingTransform

    class Logit(Transform):
        """x -> logit(a + (1 - 2a) x), as an nflows Transform."""

        def __init__(self, alpha):
            super().__init__()
            self.alpha = alpha

        def forward(self, x, context=None):
            p = self.alpha + (1 - 2 * self.alpha) * x
            log_p, log_1mp = torch.log(p), torch.log1p(-p)
            return log_p - log_1mp, (math.log(1 - 2 * self.alpha) - log_p - log_1mp).sum(dim=1)

    class BoundedAffineCoupling(AffineCouplingTransform):
        """nflows' affine coupling with the notebook's scale: exp(c tanh(raw / c)), raw = first output half."""

        def __init__(self, mask, net_fn, bound):
            self.bound = bound
            super().__init__(mask, net_fn)

        def _scale_and_shift(self, params):
            raw, shift = params[:, : self.num_transform_features], params[:, self.num_transform_features:]
            return torch.exp(self.bound * torch.tanh(raw / self.bound)), shift

    class LayerScale(Transform):
        """h -> h * exp(s), s a learned per-feature vector."""

        def __init__(self, s):
            super().__init__()
            self.s = nn.Parameter(s.detach().clone())

        def forward(self, h, context=None):
            return h * torch.exp(self.s), self.s.sum().expand(h.shape[0])

    class Net(nn.Module):
        """nflows calls transform_net(inputs, context)."""

        def __init__(self, seq):
            super().__init__()
            self.seq = seq

        def forward(self, x, context=None):
            return self.seq(x)

    transforms = [Logit(ours.preprocess.alpha)]
    for layer in ours.layers:
        mask = torch.zeros(lib.D)
        mask[layer.idx_trans] = 1                                   # nflows: mask > 0 = transformed
        net = Net(lib.mlp(len(layer.idx_cond), layer.net[0].out_features, 2 * len(layer.idx_trans)))
        net.to(layer.s.dtype)                                       # copy the weights without rounding
        net.seq.load_state_dict(layer.net.state_dict())
        # nflows passes the identity features in increasing index order; ours in idx_cond order
        assert torch.equal(layer.idx_cond, torch.sort(layer.idx_cond).values), "halves must be sorted"
        transforms += [BoundedAffineCoupling(mask, lambda i, o, net=net: net, layer.scale_bound), LayerScale(layer.s)]
    return Flow(CompositeTransform(transforms), StandardNormal([lib.D]))


def timed_steps(step, n) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def make_step(lib, model, log_lik, x):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)

    def step():
        loss = lib.bits_per_dim(log_lik(x)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step


def gemm_shapes(model, batch):
    """(m, k, n) of every matmul in one train step: forward, grad-input, grad-weight of each Linear."""
    shapes = []
    for layer in model.layers:
        for lin in (m for m in layer.net if isinstance(m, nn.Linear)):
            i, o = lin.in_features, lin.out_features
            shapes += [(batch, i, o), (batch, o, i), (o, batch, i)]
    return shapes


def gemm_pass(shapes):
    """A function that runs torch.matmul([m, k] @ [k, n]) once for every shape of the step, in float32."""
    operands = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]

    def run():
        for a, b in operands:
            a @ b
    return run


def bench_width(lib, x, hidden, repeats, steps, warmup, lib_before=None, compiled=False):
    """Median train-step seconds of ours / nflows (/ before / compiled) and of the step's GEMMs alone."""
    torch.manual_seed(0)
    ours = lib.NormalizingFlow(hidden=hidden)
    with torch.no_grad():                                          # a trained-looking, non-identity flow
        for p in ours.parameters():
            p.add_(0.02 * torch.randn_like(p))
    peer = peer_flow(lib, ours)
    x64 = x[:16].double()
    ll_ours = ours.double().calc_likelihood(x64)
    ll_peer = peer.double().log_prob(x64)
    max_diff = (ll_ours - ll_peer).abs().max().item()
    assert max_diff < 1e-6 * ll_ours.abs().max().item(), f"peer and notebook disagree: {max_diff}"
    ours.float(); peer.float()
    steps_fn = {"ours": make_step(lib, ours, ours.calc_likelihood, x),
                "nflows": make_step(lib, peer, peer.log_prob, x)}
    if lib_before is not None:                                     # the notebook before this changes
        before = lib_before.NormalizingFlow(hidden=hidden)
        before.load_state_dict(ours.state_dict())
        steps_fn["ours_before"] = make_step(lib_before, before, before.calc_likelihood, x)
    if compiled:                                                   # torch.compile of the same model (a copy)
        comp = lib.NormalizingFlow(hidden=hidden)
        comp.load_state_dict(ours.state_dict())
        steps_fn["ours_compiled"] = make_step(lib, comp, torch.compile(comp.calc_likelihood), x)
    shapes = gemm_shapes(ours, len(x))
    flops = sum(2 * m * k * n for m, k, n in shapes)               # = 6 B sum_l in_l out_l
    steps_fn["matmul_only"] = gemm_pass(shapes)                    # the step's GEMMs alone: the hardware limit
    for fn in steps_fn.values():
        timed_steps(fn, warmup)
    times = {k: [] for k in steps_fn}
    for _ in range(repeats):             # interleaved, so a drift in the machine's speed hits every entry alike
        for k, fn in steps_fn.items():
            times[k].append(timed_steps(fn, steps))
    t_gemm = times.pop("matmul_only")
    med = {k: statistics.median(v) for k, v in times.items()}
    # per repeat: (GEMM time) / (step time), measured seconds apart; the median over repeats
    fraction = {k: statistics.median(g / t for g, t in zip(t_gemm, v, strict=True)) for k, v in times.items()}
    return {
        "hidden": hidden, "batch": len(x), "n_params": sum(p.numel() for p in ours.parameters()),
        "loglik_max_abs_diff_vs_peer_float64": max_diff,
        "step_s_median": med, "step_s_all": times,
        "images_per_s": {k: len(x) / v for k, v in med.items()},
        "speedup_vs_peer": med["nflows"] / med["ours"],
        "speedup_vs_before": med["ours_before"] / med["ours"] if lib_before is not None else None,
        "speedup_compiled": med["ours"] / med["ours_compiled"] if compiled else None,
        "flops_per_step": flops, "matmul_time_on_step_shapes_s": statistics.median(t_gemm),
        "matmul_time_all": t_gemm, "matmul_peak_flops": flops / statistics.median(t_gemm),
        "achieved_flops": {k: flops / v for k, v in med.items()},
        "roofline_fraction": fraction,
    }


def time_to_quality(defaults):
    """First epoch with validation <= 1.85 bits/dim, and the cumulative training seconds to the end of it.

    defaults: the notebook's TRAIN_DEFAULTS, the value of a training key that a run's config leaves out."""
    out = []
    sources = [ROOT / "results" / "metrics.json"] + sorted((ROOT / "results").glob("ttq_*.json"))
    for path in sources:
        if not path.exists():
            continue
        m = json.loads(path.read_text())
        curves, cfg = m["curves"], m["config"]
        hit = next((i for i, v in enumerate(curves["val_bpd"]) if v <= QUALITY_BPD), None)
        out.append({
            "source": str(path.relative_to(ROOT)), "device": m.get("device_name"), "threads": m.get("threads"),
            "config": {k: cfg.get(k, defaults.get(k))
                       for k in ("hidden", "batch_size", "lr", "lr_gamma", "lr_schedule", "epochs")},
            "epoch": None if hit is None else curves["epoch"][hit],
            "seconds": None if hit is None else sum(curves["epoch_s"][: hit + 1]),
            "val_bpd_at_that_epoch": None if hit is None else curves["val_bpd"][hit],
        })
    return out


def report_time_to_quality(lib) -> dict:
    ttq = {"target_val_bpd": QUALITY_BPD, "runs": time_to_quality(lib.TRAIN_DEFAULTS)}
    for t in ttq["runs"]:
        minutes = "never" if t["seconds"] is None else f"{t['seconds'] / 60:.1f} min"
        print(f"time to val <= {QUALITY_BPD}: {t['source']}: epoch {t['epoch']}, {minutes}")
    return ttq


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="512,1024", help="hidden widths to time (default 512,1024)")
    ap.add_argument("--batches", default="128,256,512",
                    help="batch sizes to time (default 128,256,512; 128 is the notebook's and the issue's reference)")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--steps", type=int, default=5, help="train steps per timed repeat")
    ap.add_argument("--before", default="da25554", help="git revision of the notebook to time as 'ours_before' "
                    "(default: da25554, the last commit before the speed work; '' to skip)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(calc_likelihood)")
    ap.add_argument("--quick", action="store_true", help="width 64, 2 repeats: a smoke run, not a result")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench.json"))
    ap.add_argument("--ttq-only", action="store_true",
                    help="only refresh the time-to-quality table of an existing --out from results/ (seconds)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.ttq_only:                                # keep the timings, refresh the time-to-quality table
        res = json.loads(out.read_text())
        res["time_to_quality"] = report_time_to_quality(load_lib())
        out.write_text(json.dumps(res, indent=1))
        return
    widths = [64] if args.quick else [int(w) for w in args.widths.split(",")]
    batches = [128] if args.quick else [int(b) for b in args.batches.split(",")]
    repeats, steps, warmup = (2, 2, 1) if args.quick else (args.repeats, args.steps, 3)

    lib = load_lib()
    lib_before = None
    if args.before and not args.quick:
        src = subprocess.run(["git", "show", f"{args.before}:normalizing_flows.ipynb"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        with tempfile.NamedTemporaryFile("w", suffix=".ipynb", delete=False) as f:
            f.write(src)
        lib_before = load_lib(Path(f.name))
    # one fixed batch of real dequantized MNIST if present (the data does not change the FLOPs), else uniform noise
    try:
        pix = lib.load_mnist(data_dir())["train_x"][: max(batches)]
        x = lib.fixed_dequantize(pix, seed=0)
    except RuntimeError:
        x = torch.rand(max(batches), lib.D, generator=torch.Generator().manual_seed(0))
    import nflows
    res = {
        "command": "python bench/bench.py" + (
            " --quick" if args.quick else f" --widths {args.widths} --batches {args.batches} --before {args.before}")
        + (" --compile" if args.compile else ""),
        "quick": args.quick,
        "machine": {"cpu": lib.describe_device(torch.device("cpu")), "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "nflows": getattr(nflows, "__version__", "0.14"), "device": "cpu", "dtype": "float32"},
        "method": {"step": "mean-bpd loss, backward, clip_grad_norm_(1.0), fused Adam step; one fixed batch",
                   "repeats": repeats, "steps_per_repeat": steps, "warmup_steps": warmup,
                   "flops_formula": "6 * B * sum over the 20 Linears of in_features * out_features",
                   "roofline_fraction": "sum of torch.matmul times on the step's GEMM shapes / train-step time"},
        "entries": {},                                              # key "WIDTH/BATCH"
    }
    for w, b in itertools.product(widths, batches):
        r = bench_width(lib, x[:b], w, repeats, steps, warmup, lib_before, args.compile)
        res["entries"][f"{w}/{b}"] = r
        print(f"width {w}, batch {b}: ours {r['step_s_median']['ours'] * 1e3:.1f} ms/step "
              f"({r['images_per_s']['ours']:.0f} img/s), nflows {r['step_s_median']['nflows'] * 1e3:.1f} ms/step "
              f"({r['images_per_s']['nflows']:.0f} img/s) -> speedup {r['speedup_vs_peer']:.3f} | "
              f"{r['flops_per_step'] / 1e9:.2f} GFLOP/step, matmul peak {r['matmul_peak_flops'] / 1e9:.1f} GFLOP/s, "
              f"ours {r['achieved_flops']['ours'] / 1e9:.1f} GFLOP/s = roofline fraction "
              f"{r['roofline_fraction']['ours']:.3f}"
              + (f" | before {r['step_s_median']['ours_before'] * 1e3:.1f} ms/step, speedup "
                 f"{r['speedup_vs_before']:.3f}" if lib_before else "")
              + (f" | compiled {r['step_s_median']['ours_compiled'] * 1e3:.1f} ms/step" if args.compile else ""),
              flush=True)
    res["time_to_quality"] = report_time_to_quality(lib)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
