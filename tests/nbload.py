"""Load the notebook's `#| lib` cells (imports, constants, functions, classes) as a module."""
import contextlib
import io
import json
import os
import re
import tempfile
import types
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parent.parent / "normalizing_flows.ipynb"


def code_sources(path=NOTEBOOK) -> list:
    """The source text of every code cell, in order."""
    cells = json.loads(Path(path).read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def lib_source(path=NOTEBOOK) -> str:
    return "\n\n".join(s for s in code_sources(path) if s.lstrip().startswith("#| lib"))


def load_lib(path=NOTEBOOK) -> types.ModuleType:
    mod = types.ModuleType("nf_lib")
    mod.__file__ = str(path)
    exec(compile(lib_source(path), f"{path}#lib", "exec"), mod.__dict__)
    return mod


def notebook_config(path=NOTEBOOK, quick: bool = False) -> dict:
    """The notebook's CFG (full preset, or the quick one), from its config cell run in a scratch folder."""
    src = next(s for s in code_sources(path) if re.search(r"^CFG = ", s, re.M))
    ns = dict(load_lib(path).__dict__)
    saved = {k: os.environ.get(k) for k in ("NF_QUICK", "NF_OUT_DIR", "NF_CKPT_DIR")}
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
        os.environ.update(NF_QUICK="1" if quick else "0", NF_OUT_DIR=scratch, NF_CKPT_DIR=scratch)
        try:
            exec(compile(src, f"{path}#config", "exec"), ns)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return ns["CFG"]
