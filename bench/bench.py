"""Train-step and epoch speed of the notebook's flow, against nflows, against this machine's matmul peak, and of
the spline coupling against the affine one.

    pip install -r bench/requirements.txt && python bench/bench.py     # a few minutes: results/bench.json
    python bench/bench.py --widths 512,1024 --batches 128,256,512 --compile   # more entries
    python bench/bench.py --only spline                                 # the spline part alone, merged into the file
    python bench/bench.py --quick --out /tmp/bench.json                 # a seconds-long smoke run

1. Peer: the same architecture built from nflows 0.14 (nflows' PointwiseAffineTransform and Logit for the
   preprocessing, 4 nflows AffineCouplingTransforms with the same halves and the same 5-Linear MLP, each followed
   by a learned per-feature exp(s_i) transform; a StandardNormal base). Only the MLP's constructor and the weights
   come from the notebook; before timing both log-likelihoods must agree (float64), so both time the same function.
2. Train step = loss (mean bits/dim) -> backward -> clip_grad_norm_ -> fused Adam step, as fit() takes it (bench's
   train_step), on one fixed batch of dequantized MNIST. Entries, all in one process, warmed up, then interleaved
   over repeats (the median):
   - ours_fp32, ours_bf16: the notebook's flow (bench's Flow), float32 and with cpu_bf16 (bf16 autocast MLPs);
   - nflows: float32 eager, the way its documentation uses it; nflows_bf16: under the same bf16 autocast;
   - optional: ours_before (the notebook at git revision --before); with --compile, float32 under torch.compile:
     ours_compiled (calc_likelihood compiled) and ours_compiled_step (the whole step compiled), with compile times.
   speedup_vs_peer = nflows / ours with the default cpu_bf16 (off); speedup_equal_precision = nflows / ours_fp32
   and nflows_bf16 / ours_bf16.
3. Roofline: FLOPs/step = 3 x 2 B sum_l in_l out_l over the 20 Linears; torch.matmul is timed on exactly those GEMM
   shapes in float32 as one more interleaved entry; roofline_fraction = (GEMM time) / (step time) per repeat.
4. Epoch: one epoch of the notebook's real training loop, fit() (shuffling, dequantization, the steps, validation,
   checkpoints) over the full 50,000 training images, interleaved (--epoch-repeats): float32 and bf16 without the
   weights' moving average, and the notebook's default config.
5. Spline (spline_step_ratio): one train step of bench's Flow with coupling="spline" (bench/variants.py's
   SplineCoupling, K = 4 and K = 8 bins) against the same step of the affine flow, width and batch of the notebook's
   config, float32; interleaved one step each (affine, spline K = 4, spline K = 8) over --spline-steps rounds, the
   ratio the median of the per-round ratios (paired, so a load that comes and goes hits both alike); and
   model.sample(1000) of the affine and the K = 4 spline flow, interleaved over --sample-repeats. With --before REV,
   the K = 4 spline flow of the notebook at REV (a revision that still held the spline), with the same weights,
   steps in the same rounds: spline_speedup_vs_before.
"""
import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    ROOT,
    Flow,
    Parser,
    cli,
    config,
    lib,
    machine,
    mnist,
    model_kwargs,
    train,
    train_step,
    write_json,
)
from tools.nbload import load_lib, notebook_config  # noqa: E402


def peer_flow(lib, ours):
    """The notebook's model rebuilt from nflows transforms, with `ours`'s weights copied in."""
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.base import CompositeTransform, Transform
    from nflows.transforms.coupling import AffineCouplingTransform
    from nflows.transforms.nonlinearities import Logit
    from nflows.transforms.standard import PointwiseAffineTransform

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

    # the logit from nflows' own transforms, not from the notebook's code: p = a + (1 - 2a) x, then nflows' Logit
    # (the inverse of its Sigmoid); eps=0, so that its clamp never changes p, which lies in [a, 1 - a]
    a = ours.preprocess.alpha
    # (shift and scale held in float64, then cast with the model, so that float64 checks see them unrounded)
    transforms = [PointwiseAffineTransform(shift=torch.tensor(a, dtype=torch.float64),
                                           scale=torch.tensor(1 - 2 * a, dtype=torch.float64)), Logit(eps=0.0)]
    for layer in ours.layers:
        mask = torch.zeros(lib.D)
        mask[layer.idx_trans] = 1                                   # nflows: mask > 0 = transformed
        net = Net(lib.mlp(len(layer.idx_cond), layer.net[0].out_features, 2 * len(layer.idx_trans)))
        net.to(layer.s.dtype)                                       # copy the weights without rounding
        net.seq.load_state_dict(layer.net.state_dict())
        # nflows passes the identity features in increasing index order; ours in idx_cond order
        assert torch.equal(layer.idx_cond, torch.sort(layer.idx_cond).values), "halves must be sorted"
        transforms += [BoundedAffineCoupling(mask, lambda i, o, net=net: net, layer.c), LayerScale(layer.s)]
    return Flow(CompositeTransform(transforms), StandardNormal([lib.D]))


def timed(fn, n) -> float:
    """Seconds per call of fn, over n calls."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def peer_step(model, log_lik, x, bf16: bool, grad_clip: float, compile_step: bool = False):
    """A train step of a model whose log-likelihood is log_lik, in float32 or under CPU bf16 autocast. With
    compile_step, the whole step (loss, backward, clip, Adam) runs under one torch.compile, with the default
    foreach Adam, which the compiler fuses itself; its lr is constant here, so nothing recompiles (in fit() the
    StepLR changes it every epoch)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, **({"foreach": True} if compile_step else {"fused": True}))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = lib.bits_per_dim(log_lik(x)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
    return torch.compile(step) if compile_step else step


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


def bench_entry(x, cfg, repeats, steps, warmup, lib_before=None, compiled=False) -> dict:
    """Median train-step seconds of every entry at cfg's width and x's batch, and of the step's GEMMs alone."""
    kw = model_kwargs(cfg)
    torch.manual_seed(0)
    ours = Flow(**kw)
    with torch.no_grad():                                          # a trained-looking, non-identity flow
        for p in ours.parameters():
            p.add_(0.02 * torch.randn_like(p))

    def copy_of_ours(bf16=False):
        m = Flow(**kw)
        m.load_state_dict(ours.state_dict())
        m.bf16 = bf16
        return m.train()

    def step_of(model):
        return lambda: train_step(model, torch.optim.Adam(model.parameters(), lr=1e-4, fused=True),
                                  cfg["grad_clip"])(x)

    peer = peer_flow(lib, ours)
    x64 = x[:16].double()
    ll_ours, ll_peer = ours.double().calc_likelihood(x64), peer.double().log_prob(x64)
    max_diff = (ll_ours - ll_peer).abs().max().item()
    assert max_diff < 1e-6 * ll_ours.abs().max().item(), f"peer and notebook disagree: {max_diff}"
    ours.float(); peer.float()
    peer_bf16 = peer_flow(lib, ours)
    fns = {"ours_fp32": step_of(copy_of_ours()), "ours_bf16": step_of(copy_of_ours(bf16=True)),
           "nflows": peer_step(peer, peer.log_prob, x, False, cfg["grad_clip"]),
           "nflows_bf16": peer_step(peer_bf16, peer_bf16.log_prob, x, True, cfg["grad_clip"])}
    if lib_before is not None:                                     # the notebook at an earlier revision, float32
        before = lib_before.NormalizingFlow(**{k: cfg[k] for k in lib_before.MODEL_KEYS if k in cfg})
        before.load_state_dict(ours.state_dict())
        fns["ours_before"] = peer_step(before, before.calc_likelihood, x, False, cfg["grad_clip"])
    compile_s = {}
    if compiled:                                                   # torch.compile, float32: the likelihood alone,
        comp = copy_of_ours()                                      # then the whole step
        fns["ours_compiled"] = peer_step(comp, torch.compile(comp.calc_likelihood), x, False, cfg["grad_clip"])
        whole = copy_of_ours()
        fns["ours_compiled_step"] = peer_step(whole, lambda v: whole.calc_likelihood(v, validate=False), x, False,
                                              cfg["grad_clip"], compile_step=True)
        for k in ("ours_compiled", "ours_compiled_step"):
            t0 = time.perf_counter()
            timed(fns[k], 2)                                       # the first two calls compile
            compile_s[k] = time.perf_counter() - t0
    shapes = gemm_shapes(ours, len(x))
    flops = sum(2 * m * k * n for m, k, n in shapes)               # = 6 B sum_l in_l out_l
    fns["matmul_only"] = gemm_pass(shapes)                         # the step's GEMMs alone, float32
    for fn in fns.values():
        timed(fn, warmup)
    times = {k: [] for k in fns}
    for _ in range(repeats):             # interleaved, so a drift in the machine's speed hits every entry alike
        for k, fn in fns.items():
            times[k].append(timed(fn, steps))
    t_gemm = times.pop("matmul_only")
    med = {k: statistics.median(v) for k, v in times.items()}
    default = "ours_bf16" if cfg["cpu_bf16"] else "ours_fp32"
    return {
        "hidden": cfg["hidden"], "batch": len(x), "n_params": sum(p.numel() for p in ours.parameters()),
        "loglik_max_abs_diff_vs_peer_float64": max_diff, "step_s_median": med, "step_s_all": times,
        "images_per_s": {k: len(x) / v for k, v in med.items()},
        "default": default, "speedup_vs_peer": med["nflows"] / med[default],
        "speedup_equal_precision": {"float32": med["nflows"] / med["ours_fp32"],
                                    "bf16_autocast": med["nflows_bf16"] / med["ours_bf16"]},
        "speedup_bf16_vs_fp32": med["ours_fp32"] / med["ours_bf16"],
        "speedup_vs_before": med["ours_before"] / med["ours_fp32"] if lib_before is not None else None,
        "speedup_compiled": med["ours_fp32"] / med["ours_compiled"] if compiled else None,
        "speedup_compiled_step": med["ours_fp32"] / med["ours_compiled_step"] if compiled else None,
        "compile_s": compile_s or None,
        "flops_per_step": flops, "matmul_time_on_step_shapes_s": statistics.median(t_gemm),
        "matmul_time_all": t_gemm, "matmul_peak_flops": flops / statistics.median(t_gemm),
        "achieved_flops": {k: flops / v for k, v in med.items()},
        "roofline_fraction": {k: statistics.median(g / t for g, t in zip(t_gemm, v, strict=True))
                              for k, v in times.items()},
    }


def bench_epochs(cfg, data, repeats, lib_before=None, cfg_before=None) -> dict:
    """Wall seconds of one epoch of the notebook's real loop, interleaved: fit() for one epoch (shuffling,
    dequantization, the steps, validation, checkpoints) in three configurations: fp32 and bf16 without the moving
    average (the loop of the earlier float32 default, and with bf16 MLPs), and 'default', the notebook's config as
    it is; with lib_before, also 'default_before': the config of the notebook at that earlier revision
    (cfg_before), trained by that revision's fit()."""
    device = data["train_pix"].device
    plain = {**cfg, "epochs": 1, "ema_decay": None}
    variants = {"fp32": {**plain, "cpu_bf16": False}, "bf16": {**plain, "cpu_bf16": True},
                "default": {**cfg, "epochs": 1}}
    seconds = {k: [] for k in (*variants, *(["default_before"] if lib_before is not None else []))}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for name, c in variants.items():
                torch.manual_seed(c["seed"])
                model = Flow(**model_kwargs(c)).to(device)
                run = train(model, data, c, Path(tmp) / f"{name}_{r}", quiet=True)
                seconds[name].append(run["hist"]["epoch_s"][0])
            if lib_before is not None:
                c = {**cfg_before, "epochs": 1, "hidden": cfg["hidden"]}
                torch.manual_seed(c["seed"])
                model = lib_before.NormalizingFlow(**{k: c[k] for k in lib_before.MODEL_KEYS}).to(device)
                run = lib_before.fit(model, data["train_pix"], data["val_x"], c, Path(tmp) / f"before_{r}",
                                     quiet=True)
                seconds["default_before"].append(run["hist"]["epoch_s"][0])
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {"n_train": len(data["train_pix"]), "n_val": len(data["val_x"]), "batch_size": cfg["batch_size"],
            "hidden": cfg["hidden"], "epoch_s_all": seconds, "epoch_s_median": med,
            "speedup_bf16_vs_fp32": med["fp32"] / med["bf16"], "default_cpu_bf16": cfg["cpu_bf16"],
            "default_ema_decay": cfg.get("ema_decay"),
            "default_vs_before": med["default"] / med["default_before"] if lib_before is not None else None}


def bench_spline(x, cfg, steps, warmup, sample_repeats, bins=(4, 8), lib_before=None) -> dict:
    """spline_step_ratio: one float32 train step of the spline flow (K bins) against the affine flow's, paired and
    interleaved one step each over `steps` rounds (the median of the per-round ratios), and model.sample(1000).
    With lib_before (the notebook at an earlier revision that still held the spline coupling; a later one is left
    out), its spline flow with K = bins[0] and the same weights steps in the same rounds: spline_speedup_vs_before =
    median over rounds of (its step / ours)."""
    if lib_before is not None and "coupling" not in lib_before.MODEL_KEYS:
        lib_before = None
    kw = model_kwargs(cfg)
    models = {"affine": {**kw, "coupling": "affine"}, **{f"spline_k{k}": {**kw, "coupling": "spline",
                                                                          "spline_bins": k} for k in bins}}
    fns, flows = {}, {}
    for name, mkw in models.items():
        torch.manual_seed(0)
        m = Flow(**mkw)
        with torch.no_grad():                                      # away from the identity both start as
            for p in m.parameters():
                p.add_(0.02 * torch.randn_like(p))
        flows[name] = m
    if lib_before is not None:
        m = lib_before.NormalizingFlow(**{k: v for k, v in models[f"spline_k{bins[0]}"].items()
                                          if k in lib_before.MODEL_KEYS})
        m.load_state_dict(flows[f"spline_k{bins[0]}"].state_dict())
        flows["spline_before"] = m
    for name, m in flows.items():
        fns[name] = train_step(m.train(), torch.optim.Adam(m.parameters(), lr=1e-4, fused=True), cfg["grad_clip"])
    for fn in fns.values():
        for _ in range(warmup):
            fn(x)
    per_step = {k: [] for k in fns}
    for _ in range(steps):                # one step of each, in turn: a load that comes and goes hits all alike
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(x)
            per_step[name].append(time.perf_counter() - t0)
    ratios = {k: [s / a for s, a in zip(per_step[k], per_step["affine"], strict=True)] for k in fns if k != "affine"}
    sample_s = {k: [] for k in ("affine", f"spline_k{bins[0]}")}
    for m in flows.values():
        m.eval()
    with torch.no_grad():
        for k in sample_s:
            flows[k].sample(100)                                   # warm-up
        for r in range(sample_repeats):
            for k in sample_s:
                t0 = time.perf_counter()
                flows[k].sample(1000, generator=torch.Generator().manual_seed(r))
                sample_s[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in per_step.items()}
    k0 = f"spline_k{bins[0]}"
    return {
        "spline_step_ratio": statistics.median(ratios[k0]),
        "spline_step_s": med[k0], "affine_step_s": med["affine"],
        **{f"spline_k{k}_step_ratio": statistics.median(ratios[f"spline_k{k}"]) for k in bins},
        **{f"spline_k{k}_step_s": med[f"spline_k{k}"] for k in bins},
        **({"spline_speedup_vs_before": statistics.median(b / s for b, s in zip(
            per_step["spline_before"], per_step[k0], strict=True)), "spline_before_step_s": med["spline_before"]}
           if lib_before is not None else {}),
        "sample_1000_s": {"affine": statistics.median(sample_s["affine"]),
                          "spline": statistics.median(sample_s[k0])},
        "details": {"hidden": cfg["hidden"], "batch": len(x), "bins": list(bins), "spline_bound": cfg["spline_bound"],
                    "dtype": "float32", "steps_per_model": steps, "warmup_steps": warmup,
                    "sample_repeats": sample_repeats, "threads": torch.get_num_threads(),
                    "method": "one train step (loss, backward, clip_grad_norm_, fused Adam) of each model in turn, "
                              "per round; ratio = median over rounds of (spline step / affine step of that round)",
                    "step_s_all": per_step, "ratio_all": ratios, "sample_1000_s_all": sample_s},
    }


def main(argv=None) -> None:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="512", help="hidden widths to time (default: the notebook's)")
    ap.add_argument("--batches", default="128", help="batch sizes to time (default: the notebook's 128)")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--steps", type=int, default=5, help="train steps per timed repeat")
    ap.add_argument("--epoch-repeats", type=int, default=2, help="interleaved epochs per precision (0: skip)")
    ap.add_argument("--spline-steps", type=int, default=60, help="paired rounds of the spline part (0: skip)")
    ap.add_argument("--sample-repeats", type=int, default=5, help="interleaved sample(1000) calls per model")
    ap.add_argument("--only", choices=["spline"], default=None, help="run this part alone and merge its keys into "
                    "--out, keeping the file's other keys")
    ap.add_argument("--before", default="", help="a git revision of the notebook to time as ours_before "
                    "(and as spline_before)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of calc_likelihood "
                    "and of the whole train step")
    ap.add_argument("--quick", action="store_true", help="width 64, 2 repeats, no epochs: a smoke run, not a result")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench.json"))
    args = ap.parse_args(argv)
    cmd = "python bench/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    cfg = config()
    widths = [64] if args.quick else [int(w) for w in args.widths.split(",")]
    batches = [128] if args.quick else [int(b) for b in args.batches.split(",")]
    repeats, steps, warmup = (2, 2, 1) if args.quick else (args.repeats, args.steps, 3)
    data = mnist(cfg, "cpu")
    x = data["val_x"][: max(batches)]                              # one fixed batch of real dequantized MNIST
    old = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    lib_before = cfg_before = None
    if args.before and not args.quick:
        src = subprocess.run(["git", "show", f"{args.before}:normalizing_flows.ipynb"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        with tempfile.NamedTemporaryFile("w", suffix=".ipynb", delete=False) as f:
            f.write(src)
        lib_before = load_lib(Path(f.name))
        cfg_before = notebook_config(Path(f.name), lib=lib_before)
    spline_part = None
    if args.spline_steps:
        n_steps, n_samples = (3, 1) if args.quick else (args.spline_steps, args.sample_repeats)
        spline_part = bench_spline(x[: cfg["batch_size"]], {**cfg, "hidden": widths[0]}, n_steps,
                                   1 if args.quick else 3, n_samples, lib_before=lib_before)
        spline_part["command"] = cmd
        print(f"spline K=4 / affine step: {spline_part['spline_step_ratio']:.2f} ({spline_part['spline_step_s']:.3f} s "
              f"against {spline_part['affine_step_s']:.3f} s); K=8: {spline_part['spline_k8_step_ratio']:.2f}; "
              f"sample(1000): {spline_part['sample_1000_s']}"
              + (f"; spline step {spline_part['spline_speedup_vs_before']:.2f}x faster than at {args.before}"
                 if "spline_speedup_vs_before" in spline_part else ""), flush=True)
    if args.only == "spline":
        if spline_part is None:
            raise ValueError("--only spline needs --spline-steps > 0")
        write_json(args.out, {**old, "spline": spline_part, "spline_step_ratio": spline_part["spline_step_ratio"]})
        return
    import nflows
    res = {
        "command": cmd, "quick": args.quick,
        "machine": {**machine(torch.device("cpu")), "nflows": getattr(nflows, "__version__", "0.14")},
        "config": {k: cfg[k] for k in ("cpu_bf16", "grad_clip", "batch_size", "hidden")},
        "method": {"repeats": repeats, "steps_per_repeat": steps, "warmup_steps": warmup,
                   "flops_formula": "6 * B * sum over the 20 Linears of in_features * out_features",
                   "roofline_fraction": "sum of float32 torch.matmul times on the step's GEMM shapes / step time"},
        "entries": {},                                              # key "WIDTH/BATCH"
    }
    for w, b in itertools.product(widths, batches):
        r = bench_entry(x[:b], {**cfg, "hidden": w}, repeats, steps, warmup, lib_before, args.compile)
        res["entries"][f"{w}/{b}"] = r
        med, eq = r["step_s_median"], r["speedup_equal_precision"]
        print(f"width {w}, batch {b}: " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in med.items())
              + f" ms/step | speedup vs nflows {r['speedup_vs_peer']:.2f} (float32 {eq['float32']:.2f}, bf16 "
              f"{eq['bf16_autocast']:.2f}) | roofline {r['roofline_fraction']['ours_fp32']:.2f} (float32), "
              f"{r['roofline_fraction']['ours_bf16']:.2f} (bf16)", flush=True)
    if args.epoch_repeats:
        small = {"n_train": 2048, "n_val": 512} if args.quick else {}     # quick: a smoke run of the same code
        ep_data = {"train_pix": data["train_pix"][: small.get("n_train")],
                   "val_x": data["val_x"][: small.get("n_val")]}
        res["epoch"] = bench_epochs({**cfg, "hidden": widths[0], **small}, ep_data,
                                    1 if args.quick else args.epoch_repeats, lib_before, cfg_before)
        print("one epoch of the real loop: " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                          res["epoch"]["epoch_s_median"].items()), flush=True)
    if spline_part is not None:
        res["spline"], res["spline_step_ratio"] = spline_part, spline_part["spline_step_ratio"]
    if "ttq_speedup_vs_previous_default" in old:                   # bench/time_to_quality.py's key stays
        res["ttq_speedup_vs_previous_default"] = old["ttq_speedup_vs_previous_default"]
    write_json(args.out, res)


if __name__ == "__main__":
    cli(main)
