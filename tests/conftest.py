import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbload import load_lib  # noqa: E402


@pytest.fixture(scope="session")
def lib():
    """The notebook's `#| lib` cells as a module: exactly the code that runs in Colab."""
    return load_lib()
