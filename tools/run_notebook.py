"""Execute normalizing_flows.ipynb top to bottom with nbclient (the same engine the tests use).

    python tools/run_notebook.py                      # full preset, outputs saved into the notebook in place
    NF_QUICK=1 python tools/run_notebook.py -o /tmp/quick.ipynb   # a smoke run: its outputs go to quick_run/

Environment variables (NF_QUICK, NF_DATA_DIR, NF_OUT_DIR, NF_CKPT_DIR) pass through to the kernel.
tqdm's carriage-return updates are collapsed, so each progress bar is saved as one line.
"""
import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "normalizing_flows.ipynb"


def run(src=NOTEBOOK, dst=None, cwd=ROOT, timeout=None) -> nbformat.NotebookNode:
    """Execute src in folder cwd and return the executed notebook; write it to dst if given."""
    nb = nbformat.read(str(src), as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", coalesce_streams=True,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    if dst is not None:
        nbformat.write(nb, str(dst))
    return nb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default=str(NOTEBOOK), help="where to save the executed notebook "
                    "(default: in place)")
    args = ap.parse_args()
    t0 = time.time()
    run(dst=args.output)
    print(f"executed {NOTEBOOK.name} -> {args.output} in {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
