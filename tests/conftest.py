import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]
from tools.nbload import load_lib, notebook_config  # noqa: E402


@pytest.fixture(scope="session")
def lib():
    """The notebook's `#| lib` cells as a module: exactly the code that runs in Colab."""
    return load_lib()


@pytest.fixture(scope="session")
def full_cfg(lib):
    return notebook_config(lib=lib)


@pytest.fixture(scope="session")
def quick_cfg(lib):
    return notebook_config(quick=True, lib=lib)


@pytest.fixture(scope="session")
def mnist_dir(lib):
    """The MNIST folder, from $NF_DATA_DIR as the notebook reads it; without it a test that needs MNIST is skipped
    on a developer's machine and fails in CI (CI=true), where the data must be there."""
    d = lib.data_dir()
    if not (d / "MNIST" / "raw").is_dir():
        msg = f"no MNIST in {d.resolve()}/MNIST/raw: set NF_DATA_DIR"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return d
