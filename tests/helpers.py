"""Shared test helpers: flows of the notebook's configuration, parameter perturbation, MNIST-like fake batches."""
import functools

import torch

from tools.nbload import load_lib, notebook_config


@functools.cache
def _model_kw() -> dict:
    lib = load_lib()
    return lib.model_kwargs(notebook_config(lib=lib))


def flow(lib, **changes):
    """NormalizingFlow of the notebook's configuration (its CFG), with some arguments changed."""
    return lib.NormalizingFlow(**{**_model_kw(), **changes})


def perturb(model, std=0.05, seed=0):
    """Add noise to every parameter (weights, biases, the zero-initialised last layers and every s_i)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


def fake_batch(n=6, seed=0, dtype=torch.float32):
    """Dequantized MNIST-like pixels in [0, 1): about half exact background (k = 0), the rest random levels."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 256, (n, 784), generator=g)
    k[torch.rand(n, 784, generator=g) < 0.5] = 0
    k[:, :3] = torch.tensor([0, 255, 128])              # both extremes of the range always present
    return ((k.double() + torch.rand(n, 784, generator=g, dtype=torch.float64)) / 256).to(dtype)
