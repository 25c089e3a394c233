"""The notebook as a product and a report: its design, its committed outputs, its helpers, and an end-to-end run."""
import ast
import hashlib
import json
import math
import re
import shutil
import subprocess
import traceback

import nbformat
import pytest
import torch

from tools.nbload import CONFIG_MARK, NOTEBOOK, code_cells, is_lib
from tools.run_notebook import coalesce_in_order, run

ROOT = NOTEBOOK.parent
MAX_CODE_LINES, MAX_BEFORE_RESULT, MAX_OUTPUT_LINES = 700, 200, 60
MAX_VISIBLE_LINES, MAX_WORDS = 250, 700     # before the Appendix: code Colab shows unfolded; words a grader reads


@pytest.fixture(scope="module")
def nb():
    return nbformat.read(str(NOTEBOOK), as_version=4)


def shown_text(cell) -> str:
    """What a reader sees of a cell's output: printed text, rendered Markdown and plain results."""
    out = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            out.append(o.text)
        elif o.output_type in ("display_data", "execute_result"):
            data = o.get("data", {})
            out.append(data.get("text/markdown", "") or ("" if "image/png" in data else data.get("text/plain", "")))
        elif o.output_type == "error":
            out.append("\n".join(o.get("traceback", [])))
    return "".join(out)


def counts(nb) -> dict:
    """Code lines in all; the code lines a reader sees (cells Colab does not fold) before the first output that states
    the test log-likelihood (None if none does); the longest output in lines."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                  and re.search(r"test log-likelihood", shown_text(c), re.I)), None)
    return {"total": sum(len(c.source.splitlines()) for c in code),
            "before_result": None if first is None else sum(len(c.source.splitlines()) for c in nb.cells[:first]
                                                            if c.cell_type == "code" and not folded_in_colab(c)),
            "longest_output": max((len(shown_text(c).splitlines()) for c in code), default=0)}


def folded_in_colab(cell) -> bool:
    return cell.source.lstrip().startswith("#@title") and cell.get("metadata", {}).get("cellView") == "form"


def failed_verdicts(nb) -> list:
    """Every output a reader would read as a failure: an error, a check that FAILS, a bare False printed."""
    bad = []
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        text = shown_text(c)
        if any(o.output_type == "error" for o in c.get("outputs", [])):
            bad.append(("error", c.source[:60]))
        bad += [(line.strip(), c.source[:60]) for line in text.splitlines()
                if re.search(r"\bFAILS?\b|\bFalse\b|Traceback|Error:", line)]
    return bad


def appendix_index(nb) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                and re.search(r"^#+ .*appendix", c.source, re.I | re.M))


def is_form(cell) -> bool:
    """A Colab form cell: a `#@title` first line, which Colab folds to its title only with metadata cellView form."""
    return cell.cell_type == "code" and cell.source.lstrip().startswith("#@title")


def grader_view(nb) -> dict:
    """As a grader reads the notebook in Colab before the Appendix: the code lines of the cells that are not folded,
    and the words of the markdown and of the markdown the code renders."""
    cells = nb.cells[:appendix_index(nb)]
    rendered = " ".join("".join(o.get("data", {}).get("text/markdown", "")) for c in cells if c.cell_type == "code"
                        for o in c.get("outputs", []))
    return {"visible_lines": sum(len(c.source.splitlines()) for c in cells if c.cell_type == "code" and not is_form(c)),
            "words": sum(len(c.source.split()) for c in cells if c.cell_type == "markdown") + len(rendered.split())}


def check_report(nb) -> None:
    """The rules an executed notebook must meet: no failing verdict, and the length limits."""
    assert failed_verdicts(nb) == []
    n = counts(nb)
    if any(c.cell_type == "markdown" and "Appendix" in c.source for c in nb.cells):
        view = grader_view(nb)
        assert view["visible_lines"] <= MAX_VISIBLE_LINES and view["words"] <= MAX_WORDS, view
    assert n["total"] <= MAX_CODE_LINES, n
    assert n["before_result"] is not None, "no output states the test log-likelihood"
    assert n["before_result"] <= MAX_BEFORE_RESULT, n
    assert n["longest_output"] <= MAX_OUTPUT_LINES, n


@pytest.fixture(scope="module")
def executed(nb):
    """The committed notebook, if it has been executed; the report's checks need its outputs."""
    if not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
        pytest.skip("the committed notebook has no outputs yet: these checks run once a full run has been committed")
    return nb


# ---------------------------------------------------------------- the checks' own teeth
def test_the_report_checks_catch_what_they_must():
    def cell(text, kind="stream"):
        out = (nbformat.v4.new_output("stream", name="stdout", text=text) if kind == "stream" else
               nbformat.v4.new_output("display_data", data={"text/markdown": text}))
        c = nbformat.v4.new_code_cell("x = 1\n" * 3)
        c.outputs = [out]
        return c

    good = nbformat.v4.new_notebook(cells=[cell("float64 flow: largest error 1e-12, passes (tolerance 1e-09)"),
                                           cell("**Test log-likelihood: 3417.1 nats**", "markdown")])
    check_report(good)
    assert counts(good) == {"total": 6, "before_result": 3, "longest_output": 1}
    for text in ("check: largest error 2e-3, FAILS (tolerance 1e-04)", "values in [0, 1): False", "False\n"):
        assert failed_verdicts(nbformat.v4.new_notebook(cells=[cell(text)])), text
    err = nbformat.v4.new_code_cell("1/0")
    err.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="", traceback=["boom"])]
    assert failed_verdicts(nbformat.v4.new_notebook(cells=[err]))
    long = nbformat.v4.new_notebook(cells=[cell("\n".join(["a"] * 61) + "\ntest log-likelihood")])
    with pytest.raises(AssertionError):
        check_report(long)
    late = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1\n" * 201), good.cells[1]])
    with pytest.raises(AssertionError):
        check_report(late)
    plumbing = nbformat.v4.new_code_cell('#@title Plumbing { display-mode: "form" }\n' + "x = 1\n" * 300)
    plumbing.metadata["cellView"] = "form"
    assert counts(nbformat.v4.new_notebook(cells=[plumbing, good.cells[1]]))["before_result"] == 0
    del plumbing.metadata["cellView"]                      # without the metadata Colab shows its code
    assert counts(nbformat.v4.new_notebook(cells=[plumbing, good.cells[1]]))["before_result"] == 301
    appendix = nbformat.v4.new_markdown_cell("# Appendix")
    wordy = nbformat.v4.new_notebook(cells=[*good.cells, nbformat.v4.new_markdown_cell("word " * 700), appendix])
    with pytest.raises(AssertionError):
        check_report(wordy)
    rendered = cell("word " * 690, "markdown")
    assert grader_view(nbformat.v4.new_notebook(cells=[*good.cells, rendered, appendix]))["words"] == 694
    shown = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1\n" * 251), appendix])
    with pytest.raises(AssertionError):
        check_report(shown)
    folded = nbformat.v4.new_code_cell('#@title Plumbing { display-mode: "form" }\n' + "x = 1\n" * 400)
    assert grader_view(nbformat.v4.new_notebook(cells=[folded, appendix]))["visible_lines"] == 0


# ---------------------------------------------------------------- design
def test_lib_cells_only_define():
    """`#| lib` cells hold imports, constants, functions and classes: nothing that trains, reads or writes."""
    lib_cells = [s for _, s in code_cells() if is_lib(s)]
    assert len(lib_cells) >= 6
    for src in lib_cells:
        for node in ast.parse(src).body:
            ok = isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))
            names = [n for t in getattr(node, "targets", []) for n in (t.elts if isinstance(t, ast.Tuple) else [t])]
            ok |= isinstance(node, ast.Assign) and all(isinstance(n, ast.Name) and n.id.isupper() for n in names)
            ok |= isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            assert ok, f"not a definition in a #| lib cell: {ast.unparse(node)[:80]}"


def config_keys_read(src: str) -> set:
    """Keys read from a config: cfg["k"], CFG["k"], spline_cfg["k"], cfg.get("k")."""
    keys = set()
    for node in ast.walk(ast.parse(src)):
        target = None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            target = node.value
            key = node.slice.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant)):
            target, key = node.func.value, node.args[0].value
        if isinstance(target, ast.Name) and target.id.lower().endswith("cfg"):
            keys.add(key)
    return keys


def test_one_config_cell_holds_every_hyperparameter(lib, full_cfg):
    cells = [s for _, s in code_cells()]
    cfg_cells = [s for s in cells if s.lstrip().startswith(CONFIG_MARK)]
    assert len(cfg_cells) == 1 and "NF_QUICK" not in cfg_cells[0], "run control sits apart from the config"
    assert sum(bool(re.search(r"^CFG = ", s, re.M)) for s in cells) == 1
    assert sum(bool(re.search(r"^QUICK_PRESET = ", s, re.M)) for s in cells) == 1
    read = set().union(*map(config_keys_read, cells))
    assert read <= set(lib.CONFIG_KEYS), f"keys read but not in CONFIG_KEYS: {read - set(lib.CONFIG_KEYS)}"
    assert set(full_cfg) == set(lib.CONFIG_KEYS) - {"stop_val_bpd"}
    unused = set(lib.CONFIG_KEYS) - set(lib.TRAIN_KEYS) - read
    assert not unused, f"config keys nothing reads: {unused}"
    # every seed the notebook sets comes from the config, never from a literal in the code
    for src in cells:
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "manual_seed":
                assert not isinstance(node.args[0], ast.Constant), ast.unparse(node)


def test_config_checker_sees_the_keys_the_code_reads():
    assert config_keys_read('a = cfg["lr"] + CFG["seed"] + spline_cfg["epochs"] + cfg.get("stop_val_bpd", 1)') == {
        "lr", "seed", "epochs", "stop_val_bpd"}
    assert config_keys_read('d = data["val_x"]; q = CFG') == set()


def test_tracebacks_name_the_cell(lib):
    """Notebook code is compiled under its cell's name, so an error inside it says where it came from."""
    with pytest.raises(ValueError) as e:
        lib.LogitPreprocess(0.7)
    files = [f.filename for f in traceback.extract_tb(e.value.__traceback__)]
    index = next(i for i, s in code_cells() if "class LogitPreprocess" in s)
    assert f"{NOTEBOOK.name}#cell{index}" in files


def test_model_code_is_shown_and_plumbing_folded():
    cells = [s for _, s in code_cells()]

    def folded(src):
        first = src.splitlines()[0] if src else ""
        return first.startswith("#@title ") and 'display-mode: "form"' in first

    for name in ("def dequantize", "class LogitPreprocess", "class CouplingLayer", "class NormalizingFlow", "def fit(",
                 "class Critic", "def critic_step", "def hybrid_loss"):
        (src,) = [s for s in cells if name in s]
        assert not folded(src), name
    for name in ("def check_config", "def load_mnist", "def check_batch", "def atomic_save", "def resume",
                 "class DigitClassifier", "def plot_curves", "QUICK_PRESET = "):
        (src,) = [s for s in cells if name in s]
        assert folded(src), name
    for name in ("make_halves", "rq_spline", "additive", "spline", "layer_scale", "checkerboard"):
        assert not any(name in s for s in cells), f"{name}: a variant of the studies, which live in bench/"


def test_every_form_cell_is_folded_in_colab(nb):
    """Colab hides a form cell's code behind its title only when the cell's metadata says cellView: form."""
    forms = [c for c in nb.cells if is_form(c)]
    assert len(forms) >= 8
    for c in forms:
        assert c.metadata.get("cellView") == "form", c.source.splitlines()[0]


def test_a_grader_sees_at_most_250_code_lines_and_700_words(nb):
    """Before the Appendix: the code Colab shows unfolded, and the markdown words (with the rendered text when the
    notebook has been executed)."""
    view = grader_view(nb)
    assert view["visible_lines"] <= MAX_VISIBLE_LINES, view
    assert view["words"] <= MAX_WORDS, view


def test_code_fits_the_length_limit():
    total = sum(len(s.splitlines()) for _, s in code_cells())
    assert total <= MAX_CODE_LINES, f"{total} code lines"


def test_notebook_reads_no_file_it_did_not_write():
    """The report shows only what its own run computed: no results/ file of the repository is read."""
    for _, src in code_cells():
        for line in src.splitlines():
            if re.search(r"read_text|read_bytes|np\.load|json\.load|torch\.load", line):
                assert not re.search(r"RES_DIR|FIG_DIR|results", line), line


HEX = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")


def test_product_speaks_to_its_reader(nb):
    """No word of issues or sessions, no commit hash, in the markdown, the code's comments or any output."""
    texts = [c.source for c in nb.cells] + [shown_text(c) for c in nb.cells if c.cell_type == "code"]
    for t in texts:
        assert not re.search(r"\bissues?\b|\bsessions?\b", t, re.I), t[:80]

        assert not HEX.search(t), HEX.search(t).group()
    for c in nb.cells:
        if c.cell_type == "code":
            path = re.search(r"(?<![\w.])/(work|home|tmp|root|Users)/", shown_text(c))
            assert not path, f"an absolute path in an output: {path.group()}"
    assert HEX.search("fixed in 84a91c6") and not HEX.search("test 1.7120 bits/dim, 3417.1 nats, affine_9c1e2b7a")


def test_report_order(nb):
    heads = [h for c in nb.cells if c.cell_type == "markdown" for h in re.findall(r"^#{1,3} (.+)$", c.source, re.M)]
    order = ["Training, phase 1", "Assignment 1", "Assignment 2", "Assignment 3", "Appendix",
             "fine-tuning with a critic", "Checks"]     # the exercise's model answers all three, then the extension
    pos = [next(i for i, h in enumerate(heads) if key in h) for key in order]
    assert pos == sorted(pos), heads


def test_a_result_printed_after_a_progress_bar_stays_below_it():
    """nbclient's own coalescing moves stdout ahead of stderr; the runner keeps the order and collapses the bar."""
    def stream(name, text):
        return nbformat.v4.new_output("stream", name=name, text=text)
    outs = [stream("stderr", "\r  0%|   | 0/2"), stream("stderr", "\r 50%|#  | 1/2"),
            stream("stderr", "\r100%|## | 2/2\n"), stream("stdout", "test: 1.72 bits/dim\n"),
            nbformat.v4.new_output("display_data", data={"text/plain": "x"}),
            stream("stdout", "done\n")]
    got = coalesce_in_order(outs)
    assert [(o.output_type, o.get("name"), o.get("text")) for o in got] == [
        ("stream", "stderr", "100%|## | 2/2\n"), ("stream", "stdout", "test: 1.72 bits/dim\n"),
        ("display_data", None, None), ("stream", "stdout", "done\n")]


# ---------------------------------------------------------------- the committed, executed notebook
def test_committed_notebook_has_no_failing_verdict_and_fits_the_limits(executed):
    check_report(executed)


def test_committed_notebook_is_one_clean_execution(executed):
    cells = [c for c in executed.cells if c.cell_type == "code"]
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), "executed once, top to bottom"
    for c in cells:
        for o in c.outputs:
            assert not set(o.get("data", {})) & {"image/svg+xml", "application/pdf"}, "inline PNG figures only"
            if o.output_type == "stream":
                assert "\r" not in o.text, "progress bars must be saved as single lines"
    text = "".join(shown_text(c) for c in cells)
    assert "QUICK" not in text and "resumed after" not in text, "a full run, trained from scratch"


def test_committed_results_come_from_the_notebooks_run(executed):
    metrics = json.loads((ROOT / "results" / "metrics.json").read_text())
    assert metrics["quick"] is False
    out = "".join(shown_text(c) for c in executed.cells if c.cell_type == "code")
    assert f"{metrics['test_nats']:.1f} nats per image = {metrics['test_bpd']:.4f} bits/dim" in out
    assert metrics["best_epoch"] == max(range(len(metrics["curves"]["val_nats"])),
                                        key=metrics["curves"]["val_nats"].__getitem__) + 1
    for name in re.findall(r'FIG_DIR / "([\w.]+)"', "".join(s for _, s in code_cells())):
        assert (ROOT / "figures" / name).stat().st_size > 1000, name


def test_markdown_holds_no_number_of_the_run(executed):
    """Numbers measured by the run are rendered by code; markdown would go stale after another "Run all"."""
    m = json.loads((ROOT / "results" / "metrics.json").read_text())
    numbers = {f"{m['test_bpd']:.4f}", f"{m['test_bpd']:.3f}", f"{m['val_bpd']:.4f}", f"{m['test_nats']:.1f}",
               f"{m['samples_T1']['confident']:.3f}", f"{m['samples_T1']['confident']:.1%}",
               f"{m['phase2']['test_bpd']:.4f}", f"{m['phase2']['test_nats']:.1f}",
               f"{m['phase2']['samples_T1']['confident']:.1%}", f"{m['phase2']['samples_T1']['strict']:.1%}"}
    for c in executed.cells:
        if c.cell_type == "markdown":
            for n in numbers:
                assert n not in c.source, f"markdown quotes the run's {n}: {c.source[:80]}"


# ---------------------------------------------------------------- the report's helpers
def test_sample_quality_metrics(lib):
    eye = torch.eye(10)
    q = lib.sample_quality(eye.repeat(10, 1), 0.9)                          # 100 confident images, 10 of each digit
    assert q["confident"] == 1.0 and q["class_entropy"] == pytest.approx(1.0) and q["digit_counts"] == [10] * 10
    q = lib.sample_quality(torch.full((50, 10), 0.02).index_fill_(1, torch.tensor([3]), 0.82), 0.9)
    assert q["confident"] == 0.0 and q["class_entropy"] == 0.0
    half = torch.cat([eye[:2].repeat(5, 1), torch.full((10, 10), 0.1)])   # 5 sure 0s, 5 sure 1s, 10 ties -> class 0
    q = lib.sample_quality(half, 0.9)
    assert q["confident"] == 0.5
    assert q["class_entropy"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(10))


def test_nearest_distance_against_brute_force(lib):
    g = torch.Generator().manual_seed(0)
    ref, x = torch.rand(50, 784, generator=g), torch.rand(700, 784, generator=g)     # 700: two batches of 500
    x[3] = ref[11]                                                                   # a copy: distance 0
    brute = torch.stack([(ref - v).norm(dim=1).min() for v in x])
    got = lib.nearest_distance(x, ref)
    assert torch.allclose(got, brute, atol=1e-4) and got[3] < 1e-3


def test_no_copies_check_sees_a_few_copies_that_the_median_hides(lib):
    """The check reads the closest 1 % of samples too: 2 % exact copies of training images fail it."""
    real = {"nn_median": 4.4, "nn_p01": 1.2}
    ok = {"class_entropy": 0.99, "digit_counts": [100] * 10, "nn_median": 4.5, "nn_p01": 1.4}
    copies = {**ok, "nn_p01": 0.0}
    (_, (_, passed, _)), = [(w, v) for w, v in lib.sample_checks(ok, real, False).items() if "copies" in w]
    assert passed
    (_, (_, passed, verdict)), = [(w, v) for w, v in lib.sample_checks(copies, real, False).items() if "copies" in w]
    assert not passed and "FAILS" in verdict
    g = torch.Generator().manual_seed(0)
    ref, x = torch.rand(100, 784, generator=g), torch.rand(200, 784, generator=g)
    x[:4] = ref[:4]                                                   # 2 % copies
    clf = lib.DigitClassifier().eval()
    cfg = {"confident_p": 0.9, "strict_p": 0.99}
    q = lib.measure(x, clf, lib.from_uint8(lib.to_uint8(ref)), cfg)
    assert q["nn_p01"] < 0.05 and q["nn_median"] > 5                 # cdist rounds a distance of 0 up a little


def test_classifier_weights_come_from_its_generator(lib):
    pix, y = torch.randint(0, 256, (8, 784), dtype=torch.uint8), torch.arange(8)

    def weights(seed, global_seed):
        torch.manual_seed(global_seed)                 # the global RNG must not matter
        clf = lib.train_classifier(pix, y, 1, torch.Generator().manual_seed(seed), batch_size=4)
        return torch.cat([p.detach().flatten() for p in clf.parameters()])

    assert torch.equal(weights(0, 1), weights(0, 2))
    assert not torch.equal(weights(0, 1), weights(1, 1))


def test_is_lib_reads_colab_form_titles():
    """A `#| lib` cell is marked on its first line, or on its second under a Colab form title that folds its code."""
    assert is_lib("#| lib\nimport math\n") and is_lib("\n#| lib\nX = 1")
    assert is_lib('#@title Model { display-mode: "form" }\n#| lib\nX = 1')
    assert not is_lib('#@title Model { display-mode: "form" }\nX = 1\n#| lib')
    assert not is_lib("X = 1\n#| lib") and not is_lib("#| config\nCFG = {}") and not is_lib("")


# ---------------------------------------------------------------- end to end
def repo_state():
    """git status and the bytes of everything under figures/ and results/, and of the notebook."""
    status = subprocess.run(["git", "status", "--porcelain", "--", "figures", "results", NOTEBOOK.name],
                            capture_output=True, text=True, cwd=ROOT).stdout
    files = [NOTEBOOK, *sorted((ROOT / "figures").rglob("*")), *sorted((ROOT / "results").rglob("*"))]
    return status, {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


@pytest.mark.slow
def test_quick_preset_alone_in_an_empty_folder(tmp_path, monkeypatch, mnist_dir):
    """Only the .ipynb in an empty folder, "Run all" with NF_QUICK=1 and no output variables: no error and no failing
    verdict, every figure and results file in quick_run/ (and nothing in the repository's figures/ or results/),
    and a model that learned: validation after the last epoch below the first epoch's."""
    before = repo_state()
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    for k in ("NF_OUT_DIR", "NF_CKPT_DIR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NF_QUICK", "1")
    monkeypatch.setenv("NF_DATA_DIR", str(mnist_dir.resolve()))
    executed = run(src=tmp_path / NOTEBOOK.name, cwd=tmp_path, timeout=900)
    assert failed_verdicts(executed) == []
    n = counts(executed)
    assert n["before_result"] is not None and n["before_result"] <= MAX_BEFORE_RESULT, n
    assert n["longest_output"] <= MAX_OUTPUT_LINES, n
    assert grader_view(executed)["visible_lines"] <= MAX_VISIBLE_LINES   # words differ: quick verdicts
    assert sorted(p.name for p in tmp_path.iterdir()) == [NOTEBOOK.name, "quick_run"]
    quick = tmp_path / "quick_run"
    for name in re.findall(r'FIG_DIR / "([\w.]+)"', "".join(s for _, s in code_cells())):
        assert (quick / "figures" / name).stat().st_size > 1000, name
    assert (quick / "results" / "samples.npz").stat().st_size > 1000
    metrics = json.loads((quick / "results" / "metrics.json").read_text())
    val = metrics["curves"]["val_bpd"]
    assert metrics["quick"] is True and len(val) >= 2 and val[-1] < val[0], val
    assert metrics["test_bpd"] < val[0] + 0.5 and metrics["phase2"]["epochs"] == 1
    shown = "".join(shown_text(c) for c in executed.cells if c.cell_type == "code")
    assert f"{metrics['test_nats']:.1f} nats per image = {metrics['test_bpd']:.4f} bits/dim" in shown
    assert repo_state() == before, "the quick run must not touch the repository's notebook, figures or results"
