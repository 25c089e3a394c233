"""Where one train step's time goes: torch profiler over 10 steps of bench.py's step, grouped by kind of op.

    python bench/profile_step.py [--hidden 512] [--batch 128]     # about a minute; prints, writes nothing

Groups (self CPU time per step): GEMMs (aten::mm, aten::addmm), Adam (the fused kernel and its Python step),
gradient clipping (the norms and the rescaling mul_), everything else; then the 15 most expensive ops.
"""
import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
from nbload import load_lib  # noqa: E402

from bench.bench import make_step  # noqa: E402

GROUPS = {"GEMMs": ("aten::mm", "aten::addmm"), "Adam": ("aten::_fused_adam_", "Optimizer.step#Adam.step"),
          "clipping": ("aten::linalg_vector_norm", "aten::mul_")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    lib = load_lib()
    torch.manual_seed(0)
    model = lib.NormalizingFlow(hidden=args.hidden)
    x = torch.rand(args.batch, lib.D, generator=torch.Generator().manual_seed(0))
    step = make_step(lib, model, model.calc_likelihood, x)
    for _ in range(5):
        step()
    n = 10
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / n / 1e3
    print(f"width {args.hidden}, batch {args.batch}, {torch.get_num_threads()} threads: {total:.1f} ms of self CPU "
          "time per step")
    grouped = 0.0
    for name, ops in GROUPS.items():
        ms = sum(e.self_cpu_time_total for e in events if e.key in ops) / n / 1e3
        grouped += ms
        print(f"  {name:9s} {ms:6.1f} ms  ({ms / total:5.1%})  {', '.join(ops)}")
    print(f"  {'the rest':9s} {total - grouped:6.1f} ms  ({(total - grouped) / total:5.1%})")
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
