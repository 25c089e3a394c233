"""The notebook as a product: its shape, its committed outputs, its data errors, and a quick end-to-end run."""
import ast
import hashlib
import json
import math
import os
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbload import NOTEBOOK

ROOT = NOTEBOOK.parent
sys.path.insert(0, str(ROOT / "tools"))
FIGURES = ["loglik_curves.png", "samples.png", "layers_grid.png", "interpolations.png",
           "sample_quality_vs_temperature.png", "ablations.png"]
RESULTS = ["metrics.json", "samples.npz"]
TEMPS = ["T1.0", "T0.9", "T0.8", "T0.7", "T0.6", "T0.5"]


def code_cells(nb):
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.fixture(scope="module")
def nb():
    return nbformat.read(str(NOTEBOOK), as_version=4)


def test_lib_cells_only_define(nb):
    """`#| lib` cells hold imports, constants, functions and classes, nothing that trains or writes."""
    lib_cells = [s for s in code_cells(nb) if s.startswith("#| lib")]
    assert len(lib_cells) >= 4
    for src in lib_cells:
        for node in ast.parse(src).body:
            ok = isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))
            ok |= isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
            ok |= isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            assert ok, f"not a definition in a #| lib cell: {ast.unparse(node)[:80]}"


def test_one_config_cell(nb):
    cfg = [s for s in code_cells(nb) if re.search(r"^CFG = ", s, re.M)]
    assert len(cfg) == 1 and 'os.environ.get("NF_QUICK"' in cfg[0]
    assert sum("NF_QUICK" in s for s in code_cells(nb)) == 1, "the preset is chosen in the config cell alone"


def test_committed_notebook_is_executed_and_clean(nb):
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in cells), "every code cell carries outputs of one run"
    counts = [c.execution_count for c in cells]
    assert counts == list(range(1, len(cells) + 1)), "executed once, top to bottom"
    for c in cells:
        for o in c.outputs:
            assert o.output_type != "error", "".join(c.source)[:80]
            assert not set(o.get("data", {})) & {"image/svg+xml", "application/pdf"}, "inline PNG figures only"
            if o.output_type == "stream":
                assert "\r" not in o.text, "progress bars must be saved as single lines"
    assert NOTEBOOK.stat().st_size < 3_000_000
    pngs = sum("image/png" in o.get("data", {}) for c in cells for o in c.outputs)
    assert pngs >= len(FIGURES)


def test_committed_results_agree_with_notebook(nb):
    metrics = json.loads((ROOT / "results" / "metrics.json").read_text())
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert f"{metrics['test_bpd']:.4f} bits/dim" in out
    for f in FIGURES:
        assert (ROOT / "figures" / f).stat().st_size > 1000


def test_committed_ablation_table_is_the_results_file(nb):
    """The notebook's ablation table is results/ablations.json: >= 8 variants on one budget, every row shown."""
    abl = json.loads((ROOT / "results" / "ablations.json").read_text())
    assert abl["quick"] is False and len(abl["variants"]) >= 8
    assert len({json.dumps(r["model"], sort_keys=True) for r in abl["variants"]}) == len(abl["variants"])
    md = "".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs)
    for r in abl["variants"]:
        assert f"| {r['change']} | {r['val_bpd']:.4f} | {r['test_bpd']:.4f} |" in md, r["name"]


def test_missing_mnist_says_where_and_what_to_set(lib, tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])   # no network
    with pytest.raises(RuntimeError, match="NF_DATA_DIR") as e:
        lib.load_mnist(tmp_path / "nowhere")
    assert str((tmp_path / "nowhere").resolve()) in str(e.value)


def test_corrupt_mnist_is_a_clear_error(lib, tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"]:
        (raw / name).write_bytes(b"not an idx file")
    with pytest.raises(RuntimeError, match="NF_DATA_DIR"):
        lib.load_mnist(tmp_path)


def test_sample_quality_metrics(lib):
    eye = torch.eye(10)
    sure_all_digits = eye.repeat(10, 1)                              # 100 confident images, 10 of each digit
    q = lib.sample_quality(sure_all_digits)
    assert q["confident"] == 1.0 and q["class_entropy"] == pytest.approx(1.0)
    one_digit_unsure = torch.full((50, 10), 0.02).index_fill_(1, torch.tensor([3]), 0.82)
    q = lib.sample_quality(one_digit_unsure)
    assert q["confident"] == 0.0 and q["class_entropy"] == 0.0
    half = torch.cat([eye[:2].repeat(5, 1), torch.full((10, 10), 0.1)])   # 5 sure 0s, 5 sure 1s, 10 ties -> class 0
    q = lib.sample_quality(half)
    assert q["confident"] == 0.5
    assert q["class_entropy"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(10))


def test_uint8_bins_round_trip(lib):
    k = torch.arange(256, dtype=torch.uint8)[None]
    assert torch.equal(lib.to_uint8(lib.from_uint8(k)), k)
    x = torch.tensor([[0.0, 1.0, 0.999, 1 / 256, 1 / 256 - 1e-6]])
    assert lib.to_uint8(x).tolist() == [[0, 255, 255, 1, 0]]


def test_classifier_shape(lib):
    assert lib.DigitClassifier()(torch.rand(3, 784)).shape == (3, 10)


def test_dequantize(lib):
    pix = torch.tensor([[0, 255, 128]], dtype=torch.uint8).repeat(1000, 1)
    x = lib.dequantize(pix, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32
    k = pix.float()
    assert torch.all(x >= k / 256) and torch.all(x < (k + 1) / 256)
    assert abs((x * 256 - k).mean().item() - 0.5) < 0.02               # u ~ U[0, 1): mean 1/2
    assert torch.equal(lib.fixed_dequantize(pix, 5), lib.fixed_dequantize(pix, 5))


def data_dir():
    """MNIST for the end-to-end run: $NF_DATA_DIR, else the shared copy beside the repository, else data/
    (where the notebook downloads it)."""
    if "NF_DATA_DIR" in os.environ:
        return Path(os.environ["NF_DATA_DIR"])
    shared = ROOT.parent / "shared" / "data"
    return shared if (shared / "MNIST" / "raw").is_dir() else ROOT / "data"


def digest(paths):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def test_quick_preset_end_to_end_and_deterministic(tmp_path, monkeypatch):
    from run_notebook import run
    committed = [NOTEBOOK, *sorted((ROOT / "figures").glob("*")), *sorted((ROOT / "results").glob("*"))]
    before = digest(committed)
    monkeypatch.setenv("NF_QUICK", "1")
    monkeypatch.setenv("NF_OUT_DIR", str(tmp_path))
    monkeypatch.setenv("NF_DATA_DIR", str(data_dir()))
    monkeypatch.delenv("NF_CKPT_DIR", raising=False)
    executed = run(dst=tmp_path / "executed.ipynb", timeout=600)

    for c in executed.cells:
        for o in c.get("outputs", []):
            assert o.output_type != "error"
    for f in FIGURES:
        assert (tmp_path / "figures" / f).stat().st_size > 1000, f
    for f in RESULTS:
        assert (tmp_path / "results" / f).exists(), f
    assert (tmp_path / "checkpoints" / "best.pt").exists()
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert metrics["quick"] is True and metrics["epochs"] == 2
    assert math.isfinite(metrics["test_bpd"]) and math.isfinite(metrics["test_nats"])
    assert metrics["test_bpd"] == pytest.approx(-(metrics["test_nats"] - 784 * math.log(256)) / (784 * math.log(2)))
    assert len(metrics["curves"]["val_bpd"]) == 2
    assert sorted(metrics["sample_quality"]) == sorted(TEMPS)
    assert f"T{metrics['headline_temperature']}" in TEMPS
    assert metrics["inverse_finite_10k"] is True
    with np.load(tmp_path / "results" / "samples.npz") as npz:
        assert sorted(npz.files) == sorted(TEMPS)
        assert all(npz[k].dtype == np.uint8 and npz[k].shape == (200, 784) for k in TEMPS)
    assert digest(committed) == before, "the quick run must not touch the committed notebook, figures or results"

    # same seed, same CPU: a second quick run reproduces every per-epoch number exactly; this one also trains the
    # ablation's variants in the notebook (NF_ABLATE=1) and shows its own table
    monkeypatch.setenv("NF_OUT_DIR", str(tmp_path / "again"))
    monkeypatch.setenv("NF_ABLATE", "1")
    run(timeout=600)
    abl = json.loads((tmp_path / "again" / "results" / "ablations.json").read_text())
    assert len(abl["variants"]) == 9 and abl["budget"]["train"]["epochs"] == 1
    assert all(math.isfinite(r["test_bpd"]) for r in abl["variants"])
    assert (tmp_path / "again" / "figures" / "ablations.png").stat().st_size > 1000
    again = json.loads((tmp_path / "again" / "results" / "metrics.json").read_text())
    for key in ("train_bpd", "val_bpd", "val_nats"):
        assert again["curves"][key] == metrics["curves"][key], key
    assert again["test_nats"] == metrics["test_nats"] and again["sample_quality"] == metrics["sample_quality"]
