"""Load the notebook's code for scripts and tests: its `#| lib` cells as a module, and its config cell's CFG.

    from tools.nbload import is_lib, load_lib, notebook_config
    lib = load_lib()                      # imports, constants, functions and classes of the notebook
    cfg = notebook_config(quick=False)    # the notebook's CFG, full or quick preset

Each cell is compiled under its own name (`normalizing_flows.ipynb#cell7`, the index among all cells, as Jupyter
counts them), so a traceback from notebook code names the cell it came from.
"""
import ast
import contextlib
import io
import json
import os
import tempfile
import types
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parent.parent / "normalizing_flows.ipynb"
LIB_MARK, CONFIG_MARK = "#| lib", "#| config"


def code_cells(path=NOTEBOOK) -> list:
    """[(cell index among all cells, source)] of every code cell, in order."""
    cells = json.loads(Path(path).read_text())["cells"]
    return [(i, "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "code"]


def is_lib(src: str) -> bool:
    """Whether a code cell is a `#| lib` cell: its first line is `#| lib`, or its first line is a Colab form title
    (`#@title ... { display-mode: "form" }`, which folds the code) and its second line is `#| lib`."""
    lines = src.lstrip().splitlines()
    if lines and lines[0].startswith("#@title"):
        lines = lines[1:]
    return bool(lines) and lines[0].rstrip() == LIB_MARK


def _exec_cell(index: int, src: str, namespace: dict, path) -> None:
    exec(compile(src, f"{Path(path).name}#cell{index}", "exec"), namespace)


def load_lib(path=NOTEBOOK) -> types.ModuleType:
    """A module holding what the notebook's `#| lib` cells define."""
    mod = types.ModuleType("nf_lib")
    mod.__file__ = str(path)
    for i, src in code_cells(path):
        if is_lib(src):
            _exec_cell(i, src, mod.__dict__, path)
    return mod


def notebook_config(path=NOTEBOOK, quick: bool = False, lib=None) -> dict:
    """The notebook's CFG from its `#| config` cell run in a scratch folder; with quick=True, updated by the
    QUICK_PRESET that the run-control cell defines. The environment is left as it was, and nothing is written
    outside the scratch folder."""
    i, src = next((i, s) for i, s in code_cells(path) if s.lstrip().startswith(CONFIG_MARK))
    ns = dict((lib or load_lib(path)).__dict__)
    keys = ("NF_QUICK", "NF_OUT_DIR", "NF_CKPT_DIR")
    saved = {k: os.environ.get(k) for k in keys}
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
        os.environ.update(NF_QUICK="1" if quick else "0", NF_OUT_DIR=scratch, NF_CKPT_DIR=scratch)
        try:
            _exec_cell(i, src, ns, path)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    cfg = ns["CFG"]
    if quick:                            # the run-control cell's QUICK_PRESET, evaluated alone (the cell has effects)
        for _, src in code_cells(path):
            for node in ast.parse(src).body:
                if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["QUICK_PRESET"]:
                    cfg = {**cfg, **eval(compile(ast.Expression(node.value), "QUICK_PRESET", "eval"), ns)}
    return cfg
