"""Load the notebook's `#| lib` cells (imports, constants, functions, classes) as a module."""
import json
import types
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parent.parent / "normalizing_flows.ipynb"


def lib_source(path=NOTEBOOK) -> str:
    cells = json.loads(Path(path).read_text())["cells"]
    srcs = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return "\n\n".join(s for s in srcs if s.lstrip().startswith("#| lib"))


def load_lib(path=NOTEBOOK) -> types.ModuleType:
    mod = types.ModuleType("nf_lib")
    mod.__file__ = str(path)
    exec(compile(lib_source(path), f"{path}#lib", "exec"), mod.__dict__)
    return mod
