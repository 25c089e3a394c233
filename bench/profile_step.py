"""Where one train step's time goes: torch profiler over 10 of the notebook's own train steps, grouped by kind of op.

    python bench/profile_step.py [--hidden WIDTH] [--batch B] [--fp32] [--coupling spline]
                                                                # about a minute; prints, writes nothing

The step is bench's train_step (the step fit() takes: loss, backward, clip, fused Adam) of the notebook's flow (or,
with --coupling, of bench's Flow with that coupling of bench/variants.py), in float32 (the default) or, with --bf16,
with bench's cpu_bf16 (bf16 autocast MLPs). Groups (self CPU time per step): GEMMs (aten::mm, aten::addmm), Adam
(the fused kernel and its Python step), gradient clipping (the norms and the rescaling mul_, one per parameter
tensor), everything else; then the 15 costliest ops.
"""
import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import BENCH_DEFAULTS, COUPLINGS, Parser, build_model, cli, config, lib, train_step  # noqa: E402

GROUPS = {"GEMMs": ("aten::mm", "aten::addmm"), "Adam": ("aten::_fused_adam_", "Optimizer.step#Adam.step"),
          "clipping": ("aten::linalg_vector_norm", "aten::mul_")}


def main() -> None:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=None, help="default: the notebook's width")
    ap.add_argument("--batch", type=int, default=None, help="default: the notebook's batch size")
    ap.add_argument("--fp32", action="store_true", help="float32 (the default; kept for the README's command)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast MLPs (bench's cpu_bf16)")
    ap.add_argument("--coupling", choices=COUPLINGS, default=BENCH_DEFAULTS["coupling"],
                    help="the notebook's (affine, the default) or a variant of bench/variants.py")
    args = ap.parse_args()
    cfg = config()
    cfg.update(hidden=args.hidden or cfg["hidden"], batch_size=args.batch or cfg["batch_size"])
    cfg["cpu_bf16"] = args.bf16 and not args.fp32
    cfg.update(coupling=args.coupling, seed=0)
    model = build_model(cfg).train()
    model.bf16 = cfg["cpu_bf16"]
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    step = train_step(model, opt, cfg["grad_clip"])
    x = torch.rand(cfg["batch_size"], lib.D, generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        step(x)
    n = 10
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / n / 1e3
    print(f"{cfg['coupling']} couplings, width {cfg['hidden']}, batch {cfg['batch_size']}, "
          f"bf16 MLPs {cfg['cpu_bf16']}, {torch.get_num_threads()} threads: {total:.1f} ms of self CPU time per step")
    grouped = 0.0
    for name, ops in GROUPS.items():
        ms = sum(e.self_cpu_time_total for e in events if e.key in ops) / n / 1e3
        grouped += ms
        print(f"  {name:9s} {ms:6.1f} ms  ({ms / total:5.1%})  {', '.join(ops)}")
    print(f"  {'the rest':9s} {total - grouped:6.1f} ms  ({(total - grouped) / total:5.1%})")
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    cli(main)
