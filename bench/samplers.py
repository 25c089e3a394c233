"""Bench's own samplers and sample measures, beyond the notebook's sample(): the flow's inverse up to its
logit space, one Tweedie denoising step (for a model trained with logit-space noise), the tempered model p(x)^beta
and MALA towards it, and measure_quality / draw, which the screens and sampler_options.py score.

They use only the notebook model's public parts (its coupling layers' forward and inverse, its preprocess's
forward and inverse, sample()), so they work for the notebook's NormalizingFlow and for bench's Flow alike.
"""
import math

import torch

from bench.common import lib, speckle  # noqa: F401  (speckle lives in common.py; imported here by older callers)


@torch.no_grad()
def sample_latents(model, z):
    """The flow's inverse up to its logit space: y = (coupling layers)^-1 (z), before the preprocessing's inverse."""
    h = z
    for layer in reversed(model.layers):
        h, _ = layer.inverse(h)
    return h


def denoise(model, y, sigma):
    """One Tweedie step for a model trained on logit-space data plus N(0, sigma^2): E[y_clean | y] ~ y + sigma^2
    grad_y log p(y), with log p(y) = log N(f(y); 0, I) + log|det df/dy| of the couplings; -> x in [0, 1]."""
    y = y.detach().requires_grad_()
    with torch.enable_grad():
        h, log_det = y, 0.0
        for layer in model.layers:
            h, ld = layer(h)
            log_det = log_det + ld
        (grad,) = torch.autograd.grad((log_det - 0.5 * (h ** 2).sum(dim=1)).sum(), y)
    return model.preprocess.inverse(y.detach() + sigma ** 2 * grad)[0].clamp(0.0, 1.0)


def tempered_log_density(model, z, beta):
    """log of the tempered model p(x)^beta in z-space, up to a constant: beta log N(z; 0, I) + (1 - beta)
    log|det dx/dz| with x = f^-1(z), since a change of variables brings in the Jacobian once, not beta times."""
    h, log_det = z, z.new_zeros(len(z))
    for layer in reversed(model.layers):
        h, ld = layer.inverse(h)
        log_det = log_det + ld
    log_det = log_det + model.preprocess.inverse(h)[1]          # the logit's inverse (0 without a logit)
    return -0.5 * beta * (z ** 2).sum(dim=1) + (1 - beta) * log_det


def mala(model, z, beta, steps, generator, step_size=0.01, target_accept=0.6) -> tuple:
    """(z after `steps` Metropolis-adjusted Langevin steps towards the tempered model p(x)^beta, acceptance rate).
    z' = z + eps grad log pi(z) + sqrt(2 eps) xi, accepted with the Metropolis-Hastings ratio; eps starts at
    step_size, adapts towards the acceptance rate target_accept in the first half of the steps, then stays fixed."""
    def log_pi_and_grad(v):
        v = v.detach().requires_grad_()
        with torch.enable_grad():
            lp = tempered_log_density(model, v, beta)
            (g,) = torch.autograd.grad(lp.sum(), v)
        return lp.detach(), g

    lp, g = log_pi_and_grad(z)
    rates = []
    for i in range(steps):
        noise = torch.randn(z.shape, generator=generator).to(z.device)
        prop = z + step_size * g + math.sqrt(2 * step_size) * noise
        lp2, g2 = log_pi_and_grad(prop)
        # log q(z | prop) - log q(prop | z), for the Gaussian proposals of both directions
        fwd, bwd = prop - z - step_size * g, z - prop - step_size * g2
        log_q = ((fwd ** 2).sum(1) - (bwd ** 2).sum(1)) / (4 * step_size)
        u = torch.rand(len(z), generator=generator).to(z.device)
        accept = torch.log(u) < lp2 - lp + log_q
        z, lp, g = (torch.where(accept[:, None], prop, z), torch.where(accept, lp2, lp),
                    torch.where(accept[:, None], g2, g))
        rates.append(accept.float().mean().item())
        if i < steps // 2:
            step_size *= 1.1 if rates[-1] > target_accept else 0.9
    return z.detach(), sum(rates[steps // 2:]) / max(1, steps - steps // 2)


def latents(cfg, device="cpu", temperature=1.0, seed=None):
    """The screens' latents: cfg['n_quality'] draws of N(0, T^2 I) from a CPU generator seeded with
    cfg['sample_seed'] (or seed), the same for every model, as the notebook's samples."""
    gen = torch.Generator().manual_seed(cfg["sample_seed"] if seed is None else seed)
    return (torch.randn(cfg["n_quality"], lib.D, generator=gen) * temperature).to(device)


def draw(model, z, sigma, beta=None, cfg=None) -> tuple:
    """(uint8 samples, MALA acceptance or None) from latents z: first cfg['mala_steps'] MALA steps towards p(x)^beta
    when beta is given (seed cfg['mala_seed'], step size and target acceptance from cfg), then decoded, with one
    Tweedie step of size sigma when sigma > 0 (a model trained with that noise)."""
    rate = None
    if beta is not None:
        z, rate = mala(model, z, beta, cfg["mala_steps"], torch.Generator().manual_seed(cfg["mala_seed"]),
                       cfg["mala_step_size"], cfg["mala_accept"])
    with torch.no_grad():
        y = torch.cat([sample_latents(model, zb) for zb in z.split(1000)])
    if sigma:
        x = torch.cat([denoise(model, yb, sigma) for yb in y.split(1000)])
    else:
        with torch.no_grad():
            x = model.preprocess.inverse(y)[0].clamp(0, 1)
    return lib.to_uint8(x), rate


def measure_quality(model, clf, temperature, n, seed, *, threshold, denoise_sigma=None) -> tuple:
    """(uint8 samples [n, 784] on the CPU, their sample_quality and speckle): n samples at a temperature from the
    latents of a CPU generator seeded with `seed` (the same for every model), each followed by one Tweedie step of
    denoise_sigma if given, scored on their stored uint8 bins."""
    gen = torch.Generator().manual_seed(seed)
    if denoise_sigma:
        z = torch.randn(n, lib.D, generator=gen).to(model.layers[0].s.device) * temperature
        k = torch.cat([lib.to_uint8(denoise(model, sample_latents(model, zb), denoise_sigma)) for zb in z.split(1000)])
    else:
        k = lib.to_uint8(model.sample(n, temperature=temperature, generator=gen))
    x = lib.from_uint8(k)
    return k.cpu(), {**lib.sample_quality(lib.predict_probs(clf, x), threshold), "speckle": speckle(x)}
