"""Shared test helpers: flows of the notebook's configuration (the notebook's model, and bench's variants of it),
parameter perturbation, MNIST-like batches."""
import functools

import torch

from tools.nbload import load_lib, notebook_config


@functools.cache
def _lib():
    return load_lib()


@functools.cache
def _model_kw() -> dict:
    lib = _lib()
    cfg = notebook_config(lib=lib)
    return {k: cfg[k] for k in lib.MODEL_KEYS}


def flow(lib, **changes):
    """NormalizingFlow of the notebook's configuration (its CFG, as the notebook builds it), some arguments changed."""
    return lib.NormalizingFlow(**{**_model_kw(), **changes})


def variant_flow(**changes):
    """bench's Flow of the notebook's configuration, some arguments changed: the notebook's model keys, and bench's
    variant keys (coupling, split, spline_bins, spline_bound, layer_scale; at their defaults the notebook's model)."""
    import bench.common
    return bench.common.Flow(**{**_model_kw(), **changes})


def perturb(model, std=0.05, seed=0):
    """Add noise to every parameter (weights, biases, the zero-initialised last layers and every s_i)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


def trained_like(model, seed=0):
    """Weights at the edges a trained model reaches: every affine log-scale within 0.5% of +-c (the last layer's bias
    far into tanh's saturation) and every s_i within 0.1 of +-1, with signs that undo each other between the first
    two and the last two layers, as a trained flow keeps its latents near unit scale; spline bins made uneven
    (output noise 0.5); the rest perturbed as `perturb` does."""
    g = torch.Generator().manual_seed(seed)
    perturb(model, std=0.05, seed=seed)
    tau = torch.where(torch.rand(784, generator=g) < 0.5, -1.0, 1.0)
    sigma = torch.where(torch.rand(392, generator=g) < 0.5, -1.0, 1.0)
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            if isinstance(layer.s, torch.nn.Parameter):
                layer.s.copy_(tau * (-1) ** i * (0.9 + 0.1 * torch.rand(784, generator=g)))
            bias = layer.net[-1].bias
            coupling = getattr(layer, "coupling", "affine")     # the notebook's CouplingLayer names none: affine
            if coupling == "affine":                   # raw = +-3c: log-scale = c tanh(3) = 0.995 c
                bias[:392] = (sigma * (1 if i < 2 else -1) * 3 * layer.c).to(bias.dtype)
            elif coupling == "spline":
                noise = torch.randn(bias.shape, generator=g, dtype=torch.float64)
                bias.add_(0.5 * noise.to(bias.dtype))
    return model


def fake_batch(n=6, seed=0, dtype=torch.float32):
    """MNIST-like dequantized pixels in [0, 1): about half exact background (k = 0), the rest random levels, the
    extremes 0 and 255 always present. float32 batches come from the notebook's own `dequantize`, as in training."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 256, (n, 784), generator=g)
    k[torch.rand(n, 784, generator=g) < 0.5] = 0
    k[:, :3] = torch.tensor([0, 255, 128])
    if dtype == torch.float32:
        return _lib().dequantize(k.to(torch.uint8), g)
    return ((k.double() + torch.rand(n, 784, generator=g, dtype=torch.float64)) / 256).to(dtype)
