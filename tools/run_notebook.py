"""Execute normalizing_flows.ipynb top to bottom with nbclient (the same engine the tests use).

    python tools/run_notebook.py                      # full preset, outputs saved into the notebook in place
    NF_QUICK=1 python tools/run_notebook.py -o /tmp/quick.ipynb   # a smoke run: its outputs go to quick_run/

Environment variables (NF_QUICK, NF_DATA_DIR, NF_OUT_DIR, NF_CKPT_DIR) pass through to the kernel.
tqdm's carriage-return updates are collapsed, so each progress bar is saved as one line, and a cell's printed
lines and its progress bars keep the order in which they came.
"""
import argparse
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "normalizing_flows.ipynb"


def coalesce_in_order(outputs: list) -> list:
    """Merge consecutive stream outputs of one name and keep, on each line, only the text after its last carriage
    return (tqdm's updates). Unlike nbclient's coalesce_streams, stdout is not moved ahead of an earlier stderr, so
    a result printed after a progress bar stays below it."""
    merged = []
    for out in outputs:
        last = merged[-1] if merged else None
        if out["output_type"] == "stream" and last and last["output_type"] == "stream" and last["name"] == out["name"]:
            last["text"] += out["text"]
        else:
            merged.append(out)
    for out in merged:
        if out["output_type"] == "stream":
            out["text"] = re.sub(r".*\r(?=[^\n])", "", out["text"])
    return merged


def run(src=NOTEBOOK, dst=None, cwd=ROOT, timeout=None) -> nbformat.NotebookNode:
    """Execute src in folder cwd and return the executed notebook; write it to dst if given."""
    nb = nbformat.read(str(src), as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = coalesce_in_order(cell.outputs)
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
