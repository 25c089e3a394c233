import os
import sys
from pathlib import Path

import pytest
import torch

# One thread: the tests' tensors are small, and on a CPU shared with other jobs PyTorch's thread pool can stall a
# training step 50-fold (measured here: a 3-epoch fit took 1.3 s on one thread, 66-94 s on two under load).
torch.set_num_threads(1)

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
def mnist_dir():
    """The MNIST folder, from $NF_DATA_DIR as the notebook's mnist_splits reads it (default: data); without it a test
    that needs MNIST is skipped on a developer's machine and fails in CI (CI=true), where the data must be there."""
    d = Path(os.environ.get("NF_DATA_DIR", "data"))
    if not (d / "MNIST" / "raw").is_dir():
        msg = f"no MNIST in {d.resolve()}/MNIST/raw: set NF_DATA_DIR"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture(scope="session")
def mnist(lib, mnist_dir):
    """MNIST as the notebook loads it: uint8 'train_x' [60000, 784], 'train_y', 'test_x', 'test_y'."""
    return lib.load_mnist(mnist_dir)
