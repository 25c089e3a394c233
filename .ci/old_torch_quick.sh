#!/usr/bin/env bash
# CI: the notebook's quick preset under an older PyTorch (torch 2.5.1 / torchvision 0.20.1, as on an older Colab),
# in a venv of its own beside .venv. Fails unless the notebook runs to the end and its kernel reports torch 2.5.1.
# Prints one closing line: "old-torch-quick: 1 passed, 0 failed" (or "0 passed, 1 failed", exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."
export NF_DATA_DIR="${NF_DATA_DIR:-$(cd .. && pwd)/shared/data}"

TORCH=2.5.1
TORCHVISION=0.20.1
VENV=.venv-torch25
PKGS=(torch==$TORCH torchvision==$TORCHVISION numpy==2.4.6 matplotlib==3.11.2 tqdm==4.70.1
      nbclient==0.11.0 nbformat==5.11.1 ipykernel==7.4.0)

ok=0
work=$(mktemp -d)
finish() {
    if [[ $ok == 1 ]]; then
        rm -rf "$work"
        echo "old-torch-quick: 1 passed, 0 failed"
    else
        echo "old-torch: failed (scratch folder kept: $work)" >&2
        echo "old-torch-quick: 0 passed, 1 failed"
        exit 1
    fi
}
trap finish EXIT

t0=$(date +%s)
python3 -m venv "$VENV"
if ! "$VENV/bin/pip" install -q "${PKGS[@]}" >"$work/pip.log" 2>&1; then
    tail -30 "$work/pip.log" >&2
    exit 1
fi
# a kernelspec whose argv is this venv's own interpreter, found first through JUPYTER_PATH, so that the kernel
# cannot be another environment's Python
"$VENV/bin/python" -m ipykernel install --prefix "$VENV" --name python3 >/dev/null
echo "old-torch: venv $VENV installed in $(( $(date +%s) - t0 )) s"

t1=$(date +%s)
nb="$work/quick.ipynb"
JUPYTER_PATH="$PWD/$VENV/share/jupyter" NF_QUICK=1 NF_ABLATE=0 NF_OUT_DIR="$work/out" NF_CKPT_DIR="$work/out/checkpoints" \
    timeout 1800 "$VENV/bin/python" tools/run_notebook.py -o "$nb"

# the run-control cell prints "torch <version> | <device> | ..."
line=$("$VENV/bin/python" - "$nb" <<'PY'
import sys, nbformat
nb = nbformat.read(sys.argv[1], as_version=4)
lines = [ln for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "stream"
         for ln in o.get("text", "").splitlines() if ln.startswith("torch ") and " | " in ln]
print(lines[0] if lines else "")
PY
)
echo "old-torch: kernel says: ${line:-<no torch line>}"
version=$(awk '{print $2}' <<<"$line")
if [[ $version != "$TORCH" && $version != "$TORCH+"* ]]; then
    echo "old-torch: the kernel ran torch '${version}', not $TORCH" >&2
    exit 1
fi
echo "old-torch: quick preset ran in $(( $(date +%s) - t1 )) s"
ok=1
