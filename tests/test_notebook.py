"""The notebook as a product and a report: its shape, its committed outputs, its text, and end-to-end runs."""
import ast
import hashlib
import json
import math
import re
import shutil
import traceback

import nbformat
import numpy as np
import pytest
import torch

from tools.nbload import CONFIG_MARK, NOTEBOOK, code_cells, is_lib
from tools.run_notebook import run

ROOT = NOTEBOOK.parent
FIGURES = ["loglik_curves.png", "samples.png", "samples_second_model.png", "layers_grid.png", "interpolations.png",
           "sample_quality_vs_temperature.png"]
TEMPS = ["T1.0", "T0.9", "T0.8", "T0.7", "T0.6", "T0.5"]


@pytest.fixture(scope="module")
def nb():
    return nbformat.read(str(NOTEBOOK), as_version=4)


def markdown(nb, upto_appendix=False) -> list:
    out = []
    for c in nb.cells:
        if c.cell_type == "markdown":
            if upto_appendix and re.search(r"^# Appendix", c.source, re.M):
                break
            out.append(c.source)
    return out


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def shown_text(cell) -> str:
    """What a reader sees of a cell's output: printed text and rendered Markdown."""
    return stream_text(cell) + "".join(o.get("data", {}).get("text/markdown", "") for o in cell.get("outputs", [])
                                       if o.output_type in ("display_data", "execute_result"))


def folded(src: str) -> bool:
    """A Colab form cell: its first line is a #@title with display-mode "form", so Colab shows only the title."""
    first = src.splitlines()[0] if src else ""
    return first.startswith("#@title ") and 'display-mode: "form"' in first


def test_lib_cells_only_define():
    """`#| lib` cells hold imports, constants, functions and classes, nothing that trains or writes."""
    lib_cells = [s for _, s in code_cells() if is_lib(s)]
    assert len(lib_cells) >= 6
    for src in lib_cells:
        for node in ast.parse(src).body:
            ok = isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))
            names = [n for t in getattr(node, "targets", []) for n in (t.elts if isinstance(t, ast.Tuple) else [t])]
            ok |= isinstance(node, ast.Assign) and all(isinstance(n, ast.Name) and n.id.isupper() for n in names)
            ok |= isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            assert ok, f"not a definition in a #| lib cell: {ast.unparse(node)[:80]}"


def test_one_config_cell_holds_every_hyperparameter():
    cells = [s for _, s in code_cells()]
    cfg = [s for s in cells if s.startswith(CONFIG_MARK)]
    assert len(cfg) == 1 and "NF_QUICK" not in cfg[0], "run control (the quick preset) sits apart from the config"
    assert sum('env_flag("NF_QUICK")' in s for s in cells) == 1, "the preset is chosen in one cell"
    assert sum(bool(re.search(r"^QUICK_PRESET = ", s, re.M)) for s in cells) == 1
    assert sum(bool(re.search(r"^CFG = ", s, re.M)) for s in cells) == 1


def test_tracebacks_name_the_cell(lib):
    """Notebook code is compiled under its cell's name, so an error inside it says where it came from."""
    with pytest.raises(ValueError) as e:
        lib.make_halves("diagonal")
    files = [f.filename for f in traceback.extract_tb(e.value.__traceback__)]
    index = next(i for i, s in code_cells() if "def make_halves" in s)
    assert f"{NOTEBOOK.name}#cell{index}" in files


def test_committed_notebook_is_one_clean_execution(nb):
    cells = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in cells]
    assert counts == list(range(1, len(cells) + 1)), "executed once, top to bottom"
    for c in cells:
        for o in c.outputs:
            assert o.output_type != "error", c.source[:80]
            assert not set(o.get("data", {})) & {"image/svg+xml", "application/pdf"}, "inline PNG figures only"
            if o.output_type == "stream":
                assert "\r" not in o.text, "progress bars must be saved as single lines"
    assert NOTEBOOK.stat().st_size <= 1_500_000
    pngs = sum("image/png" in o.get("data", {}) for c in cells for o in c.outputs)
    assert pngs >= len(FIGURES)
    text = "".join(stream_text(c) for c in cells)
    assert "restored" not in text and "resuming" not in text, "no epochs restored from a checkpoint"
    training = next(c for c in cells if "run = fit(model, train_pix" in c.source)
    assert 3 <= len(stream_text(training).splitlines()) <= 25, "the training cell prints at most 25 lines"


def test_committed_results_come_from_the_notebooks_run(nb):
    metrics = json.loads((ROOT / "results" / "metrics.json").read_text())
    assert metrics["quick"] is False and metrics["resumed_after"] is None
    out = "".join(shown_text(c) for c in nb.cells if c.cell_type == "code")
    assert f"{metrics['test_nats']:.1f} nats per image = {metrics['test_bpd']:.4f} bits/dim" in out
    assert f"{metrics['samples_T1']['confident']:.1%} of {metrics['config']['n_quality']} samples" in out
    for f in FIGURES:
        assert (ROOT / "figures" / f).stat().st_size > 1000


def test_report_order_and_length(nb):
    """Setup, model, training and test likelihood, the three assignments, a summary, then the Appendix; the main
    body has at most 1,500 words of markdown; each assignment's figure has its answer right beneath it, rendered
    by the code from the run's numbers; and a grader reaches the learning curves after at most about 350 lines of
    code that Colab shows (form cells fold to their title)."""
    heads = [h for s in markdown(nb) for h in re.findall(r"^#{1,2} (.+)$", s, re.M)]
    order = ["Test log-likelihood", "Assignment 1", "Assignment 2", "Assignment 3", "Summary", "Appendix"]
    pos = [next(i for i, h in enumerate(heads) if key in h) for key in order]
    assert pos == sorted(pos), heads
    words = sum(len(s.split()) for s in markdown(nb, upto_appendix=True))
    assert words <= 1500, f"{words} words of markdown before the Appendix"
    cells = nb.cells
    for key in ("Test log-likelihood", "Assignment 1", "Assignment 2", "Assignment 3"):
        start = next(i for i, c in enumerate(cells) if c.cell_type == "markdown"
                     and re.search(rf"^#+ .*{key}", c.source, re.M))
        answer = next(c for c in cells[start:] if c.cell_type == "code" and "display(Markdown(" in c.source)
        outputs = [o for o in answer.outputs if o.output_type == "display_data"]
        kinds = [k for o in outputs for k in o.data if k in ("image/png", "text/markdown")]
        if key != "Test log-likelihood":
            assert kinds.index("image/png") < kinds.index("text/markdown"), f"{key}: the answer under its figure"
        assert re.search(r"\d\.\d", "".join(o.data.get("text/markdown", "") for o in outputs)), key
    visible = 0
    for c in cells:
        if c.cell_type == "code":
            if "loglik_curves.png" in c.source:
                break
            visible += 0 if folded(c.source) else len(c.source.splitlines())
    assert visible <= 350, f"{visible} lines of shown code before the learning curves"


def test_plumbing_is_folded_and_the_model_is_shown():
    cells = [s for _, s in code_cells()]
    for name in ("class LogitPreprocess", "class CouplingLayer", "class NormalizingFlow", "def make_train_step"):
        (src,) = [s for s in cells if name in s]
        assert not folded(src), name
    for name in ("def check_config", "def load_mnist", "def _check_batch", "def resume", "def fit(",
                 "class DigitClassifier"):
        (src,) = [s for s in cells if name in s]
        assert folded(src) and is_lib(src), name


def test_notebook_reads_no_file_it_did_not_write():
    """The report shows only what its own run computed: no results/ file of the repository is read."""
    for _, src in code_cells():
        for line in src.splitlines():
            if re.search(r"read_text|read_bytes|np\.load|json\.load|torch\.load", line):
                assert not re.search(r"RES_DIR|FIG_DIR|results", line), line


def test_markdown_holds_no_number_of_the_run(nb):
    """Numbers measured by the run are printed by code; the markdown would go stale after another "Run all"."""
    m = json.loads((ROOT / "results" / "metrics.json").read_text())
    q = m["sample_quality"]["T1.0"]
    numbers = {f"{m['test_bpd']:.4f}", f"{m['test_bpd']:.3f}", f"{m['val_bpd']:.4f}", f"{m['test_nats']:.1f}",
               f"{q['confident']:.3f}", f"{100 * q['confident']:.1f}%", f"{m['train_time_s'] / 60:.1f} min",
               f"{m['classifier_test_acc']:.4f}", f"{100 * m['classifier_test_acc']:.2f}%"}
    for text in markdown(nb):
        for n in numbers:
            assert n not in text, f"markdown quotes the run's {n}: {text[:80]}"


def test_product_speaks_to_its_reader(nb):
    texts = [c.source for c in nb.cells] + [p.read_text() for p in (ROOT / "bench").glob("*.py")]
    for t in texts:
        assert not re.search(r"\bissues?\b", t, re.I), t[:80]
        assert not re.search(r"default[^\n]*\b[0-9a-f]{7,40}\b", t), t[:80]
        assert "OWNER" not in t


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
    with pytest.raises(RuntimeError, match="damaged MNIST") as e:
        lib.load_mnist(tmp_path)
    assert str(raw / "train-images-idx3-ubyte") in str(e.value) and "Delete them" in str(e.value)


@pytest.mark.parametrize("damage", ["truncated", "empty", "random_pixels"])
def test_damaged_idx_file_is_named_with_the_fix(lib, tmp_path, mnist_dir, damage):
    """A truncated, zero-byte, or same-size file with other pixel bytes: the error names that file, nothing else."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in lib.MNIST_FILES:
        (raw / name).symlink_to((mnist_dir / "MNIST" / "raw" / name).resolve())
    bad = raw / "t10k-images-idx3-ubyte"
    good = bad.read_bytes()
    bad.unlink()
    if damage == "truncated":
        bad.write_bytes(good[:-784])
    elif damage == "empty":
        bad.write_bytes(b"")
    else:                                              # the header intact, the pixels random
        bad.write_bytes(good[:16] + torch.randint(0, 256, (len(good) - 16,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(RuntimeError, match="damaged MNIST") as e:
        lib.load_mnist(tmp_path)
    msg = str(e.value)
    assert str(bad) in msg and str(raw) in msg and "train-images" not in msg
    assert lib.load_mnist(mnist_dir)["test_x"].shape == (10_000, 784)      # the originals pass the check


def test_data_folder_comes_from_the_environment(lib, monkeypatch):
    monkeypatch.delenv("NF_DATA_DIR", raising=False)
    assert str(lib.data_dir()) == "data"
    monkeypatch.setenv("NF_DATA_DIR", "/somewhere/else")
    assert str(lib.data_dir()) == "/somewhere/else"


def test_mnist_splits(lib, quick_cfg, mnist_dir):
    d = lib.mnist_splits(quick_cfg, mnist_dir)
    assert d["train_pix"].dtype == torch.uint8 and d["train_pix"].shape == (quick_cfg["n_train"], 784)
    assert d["val_x"].shape == (quick_cfg["n_val"], 784) and d["test_x"].shape == (quick_cfg["n_test"], 784)
    assert 0 <= d["val_x"].min() and d["val_x"].max() < 1
    again = lib.mnist_splits(quick_cfg, mnist_dir)
    assert all(torch.equal(d[k], again[k]) for k in d), "the split and the fixed noise are reproducible"
    # validation images come from MNIST's training set and are not among the training images
    train_rows = {bytes(r.numpy()) for r in d["train_pix"]}
    assert not any(bytes(r.numpy()) in train_rows for r in lib.to_uint8(d["val_x"]))


def test_sample_quality_metrics(lib):
    eye = torch.eye(10)
    q = lib.sample_quality(eye.repeat(10, 1), 0.9)                          # 100 confident images, 10 of each digit
    assert q["confident"] == 1.0 and q["class_entropy"] == pytest.approx(1.0)
    q = lib.sample_quality(torch.full((50, 10), 0.02).index_fill_(1, torch.tensor([3]), 0.82), 0.9)
    assert q["confident"] == 0.0 and q["class_entropy"] == 0.0
    half = torch.cat([eye[:2].repeat(5, 1), torch.full((10, 10), 0.1)])   # 5 sure 0s, 5 sure 1s, 10 ties -> class 0
    q = lib.sample_quality(half, 0.9)
    assert q["confident"] == 0.5
    assert q["class_entropy"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(10))


def test_speckle_counts_isolated_bright_pixels(lib):
    x = torch.zeros(3, 28, 28)
    x[0, 5, 5] = 1.0                                   # one isolated pixel
    x[0, 20, 20] = 0.6                                 # and another, dimmer but still bright
    x[1, 10:14, 10:12] = 1.0                           # a stroke: no pixel of it is isolated
    x[1, 0, 0] = 0.4                                   # below the threshold
    x[2, 3, 3], x[2, 4, 4] = 1.0, 1.0                  # diagonal neighbours: not isolated
    x[2, 27, 27] = 0.9                                 # in a corner: isolated
    assert lib.speckle(x.reshape(3, 784)) == pytest.approx((2 + 0 + 1) / 3)


def test_classifier_weights_come_from_its_generator(lib):
    pix, y = torch.randint(0, 256, (8, 784), dtype=torch.uint8), torch.arange(8)

    def weights(seed, global_seed):
        torch.manual_seed(global_seed)                 # the global RNG must not matter
        clf = lib.train_classifier(pix, y, 1, torch.Generator().manual_seed(seed), batch_size=4)
        return torch.cat([p.detach().flatten() for p in clf.parameters()])

    assert torch.equal(weights(0, 1), weights(0, 2))
    assert not torch.equal(weights(0, 1), weights(1, 1))


def test_measure_quality_uses_the_same_latents_for_every_call(lib):
    from helpers import flow, perturb
    model = perturb(flow(lib, hidden=16), seed=1)
    clf = lib.DigitClassifier().eval()
    k1, q1 = lib.measure_quality(model, clf, 1.0, 20, seed=7, threshold=0.9)
    k2, q2 = lib.measure_quality(model, clf, 1.0, 20, seed=7, threshold=0.9)
    assert k1.dtype == torch.uint8 and k1.shape == (20, 784) and torch.equal(k1, k2) and q1 == q2
    assert not torch.equal(k1, lib.measure_quality(model, clf, 1.0, 20, seed=8, threshold=0.9)[0])


def test_uint8_bins_round_trip(lib):
    k = torch.arange(256, dtype=torch.uint8)[None]
    assert torch.equal(lib.to_uint8(lib.from_uint8(k)), k)
    x = torch.tensor([[0.0, 1.0, 0.999, 1 / 256, 1 / 256 - 1e-6]])
    assert lib.to_uint8(x).tolist() == [[0, 255, 255, 1, 0]]


def test_dequantize(lib):
    pix = torch.tensor([[0, 255, 128]], dtype=torch.uint8).repeat(1000, 1)
    x = lib.dequantize(pix, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32
    k = pix.float()
    assert torch.all(x >= k / 256) and torch.all(x < (k + 1) / 256)
    assert abs((x * 256 - k).mean().item() - 0.5) < 0.02               # u ~ U[0, 1): mean 1/2
    assert torch.equal(lib.fixed_dequantize(pix, 5), lib.fixed_dequantize(pix, 5))


def digest(paths):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


@pytest.mark.slow
def test_quick_preset_end_to_end_and_deterministic(tmp_path, monkeypatch, mnist_dir):
    committed = [NOTEBOOK, *sorted((ROOT / "figures").glob("*")), *sorted((ROOT / "results").rglob("*"))]
    before = digest(committed)
    monkeypatch.setenv("NF_QUICK", "1")
    monkeypatch.setenv("NF_OUT_DIR", str(tmp_path))
    monkeypatch.delenv("NF_CKPT_DIR", raising=False)
    executed = run(dst=tmp_path / "executed.ipynb", timeout=600)
    for c in executed.cells:
        assert all(o.output_type != "error" for o in c.get("outputs", []))
    for f in FIGURES:
        assert (tmp_path / "figures" / f).stat().st_size > 1000, f
    assert (tmp_path / "checkpoints" / "best.pt").exists()
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert metrics["quick"] is True and metrics["epochs"] == 2 and metrics["resumed_after"] is None
    assert math.isfinite(metrics["test_bpd"]) and math.isfinite(metrics["test_nats"])
    assert metrics["test_bpd"] == pytest.approx(-(metrics["test_nats"] - 784 * math.log(256)) / (784 * math.log(2)))
    assert len(metrics["curves"]["val_bpd"]) == 2
    assert sorted(metrics["sample_quality"]) == sorted(TEMPS)
    assert metrics["inverse_finite_10k"] is True
    with np.load(tmp_path / "results" / "samples.npz") as npz:
        assert sorted(npz) == sorted(metrics["samples_npz_keys"]) == sorted(
            [t for t in TEMPS if t != "T1.0"] + ["T1", "beta1.5", "beta2.0", "second_model_denoised",
                                                 "second_model_raw"])
        # every sampler shown keeps its samples, and each is the one its metrics were measured on
        assert metrics["sample_quality"]["T1.0"]["confident"] == metrics["samples_T1"]["confident"]
        assert all(npz[k].dtype == np.uint8 and npz[k].shape == (200, 784) for k in npz)
    assert sorted(metrics["tempered"]) == ["beta1.5", "beta2.0"] and metrics["second_model"]["epochs"] == 1
    assert digest(committed) == before, "the quick run must not touch the committed notebook, figures or results"
    shown = "".join(shown_text(c) for c in executed.cells if c.cell_type == "code")
    assert f"{metrics['test_nats']:.1f} nats per image = {metrics['test_bpd']:.4f} bits/dim" in shown

    # same seed, same CPU: a second quick run reproduces every number exactly
    monkeypatch.setenv("NF_OUT_DIR", str(tmp_path / "again"))
    run(timeout=600)
    again = json.loads((tmp_path / "again" / "results" / "metrics.json").read_text())
    for key in ("train_bpd", "val_bpd", "val_nats"):
        assert again["curves"][key] == metrics["curves"][key], key
    assert again["test_nats"] == metrics["test_nats"] and again["sample_quality"] == metrics["sample_quality"]


@pytest.mark.slow
def test_notebook_alone_in_an_empty_folder(tmp_path, monkeypatch, mnist_dir):
    """Only the .ipynb in an empty folder, "Run all" with the quick preset and no output variables: no error, no
    message about a missing file, and the outputs go to quick_run/ alone."""
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    for k in ("NF_OUT_DIR", "NF_CKPT_DIR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NF_QUICK", "1")
    monkeypatch.setenv("NF_DATA_DIR", str(mnist_dir.resolve()))
    executed = run(src=tmp_path / NOTEBOOK.name, cwd=tmp_path, timeout=600)
    for c in executed.cells:
        assert all(o.output_type != "error" for o in c.get("outputs", [])), c.source[:80]
    out = "".join(shown_text(c) for c in executed.cells if c.cell_type == "code")
    assert not re.search(r"no results/|not found|missing", out), "every section shows this run's own numbers"
    # a quick run writes into quick_run/ alone: never into the figures/, results/ or checkpoints/ of a full run
    assert sorted(p.name for p in tmp_path.iterdir()) == [NOTEBOOK.name, "quick_run"]
    quick = tmp_path / "quick_run"
    assert (quick / "results" / "metrics.json").exists() and (quick / "figures" / "samples.png").exists()
    assert (quick / "checkpoints" / "best.pt").exists()


def test_is_lib_reads_colab_form_titles():
    """A `#| lib` cell is marked on its first line, or on its second under a Colab form title that folds its code."""
    assert is_lib("#| lib\nimport math\n") and is_lib("\n#| lib\nX = 1")
    assert is_lib('#@title Model { display-mode: "form" }\n#| lib\nX = 1')
    assert not is_lib('#@title Model { display-mode: "form" }\nX = 1\n#| lib')
    assert not is_lib("X = 1\n#| lib") and not is_lib("#| config\nCFG = {}") and not is_lib("")
