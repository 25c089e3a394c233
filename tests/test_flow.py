"""The flow's mathematics: invertibility, log-determinants, likelihood, structure, and its API's contracts."""
import copy
import math

import pytest
import torch
from helpers import fake_batch, flow, perturb
from torch import nn

VARIANTS = [  # (coupling, split, logit_alpha)
    ("affine", "checkerboard", 1e-6),
    ("affine", "contiguous", 0.05),
    ("additive", "evenodd", 1e-6),
    ("affine", "random", None),
    ("affine", "random", 1e-4),
]


def make(lib, coupling="affine", split="checkerboard", alpha=1e-6, hidden=32, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = flow(lib, hidden=hidden, coupling=coupling, split=split, logit_alpha=alpha).to(dtype)
    return perturb(model, seed=seed)


# ---------------------------------------------------------------- invertibility
@pytest.mark.parametrize("coupling,split,alpha", VARIANTS)
def test_round_trip_float32(lib, coupling, split, alpha):
    model = make(lib, coupling, split, alpha)
    x = fake_batch(16)
    z, _ = model(x)
    assert (z - model.preprocess(x)[0]).abs().max() > 1e-2, "perturbed model should not be the identity"
    assert (model.inverse(z) - x).abs().max().item() <= 1e-5


@pytest.mark.parametrize("coupling,split,alpha", VARIANTS)
def test_round_trip_float64(lib, coupling, split, alpha):
    model = make(lib, coupling, split, alpha, dtype=torch.float64)
    x = fake_batch(16, dtype=torch.float64)
    assert (model.inverse(model(x)[0]) - x).abs().max().item() <= 1e-10
    # and the other way round, from the prior; inverse(z) may leave [0, 1] by up to alpha / (1 - 2 alpha), which
    # forward() rightly rejects as data, so the layers are applied one by one here
    z = torch.randn(16, 784, dtype=torch.float64)
    h = model.preprocess(model.inverse(z))[0]
    for layer in model.layers:
        h = layer(h)[0]
    assert (h - z).abs().max().item() <= 1e-8


# ---------------------------------------------------------------- log-determinant and likelihood
def jacobian_logdet(model, x):
    """log|det| of the full 784 x 784 autograd Jacobian of forward at one point x [784], by slogdet."""
    jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0][0], x, vectorize=True)   # [784, 784]
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign.item() == 1.0, "every scale is positive, so the determinant must be too"
    return logabsdet.item()


@pytest.mark.parametrize("coupling,split,alpha", VARIANTS)
def test_log_det_matches_brute_force_jacobian(lib, coupling, split, alpha):
    model = make(lib, coupling, split, alpha, dtype=torch.float64)
    x = fake_batch(2, seed=1, dtype=torch.float64)
    _, log_det = model(x)
    for i in range(2):
        brute = jacobian_logdet(model, x[i])
        assert abs(log_det[i].item() - brute) <= 1e-8 * abs(brute), (log_det[i].item(), brute)


def test_calc_likelihood_is_change_of_variables(lib):
    """log p(x) = log N(z; 0, I) + log|det J|, with the prior from torch.distributions and J by autograd."""
    model = make(lib, dtype=torch.float64)
    x = fake_batch(2, seed=2, dtype=torch.float64)
    z, _ = model(x)
    prior = torch.distributions.Normal(torch.zeros(784, dtype=torch.float64), torch.ones(784, dtype=torch.float64))
    ll = model.calc_likelihood(x)
    assert ll.shape == (2,)
    for i in range(2):
        expected = prior.log_prob(z[i]).sum().item() + jacobian_logdet(model, x[i])
        assert abs(ll[i].item() - expected) <= 1e-8 * abs(expected)


def test_likelihood_of_untrained_flow_is_analytic(lib):
    """At initialisation the couplings are the identity: p(x) is a Gaussian pushed through the logit alone."""
    x = fake_batch(4, dtype=torch.float64)
    plain = flow(lib, hidden=16, logit_alpha=None).double()
    assert torch.allclose(plain.calc_likelihood(x), (-0.5 * x**2 - 0.5 * math.log(2 * math.pi)).sum(1), atol=1e-9)
    a = 0.05
    logit = flow(lib, hidden=16, logit_alpha=a).double()
    p = a + (1 - 2 * a) * x
    y = torch.log(p / (1 - p))
    dy_dx = (1 - 2 * a) / (p * (1 - p))
    expected = (-0.5 * y**2 - 0.5 * math.log(2 * math.pi) + torch.log(dy_dx)).sum(1)
    assert torch.allclose(logit.calc_likelihood(x), expected, atol=1e-9)


def test_bits_per_dim_by_hand(lib):
    # the uniform density on [0,1]^784 (log p = 0) spends exactly 8 bits on every pixel
    assert lib.bits_per_dim(0.0) == pytest.approx(8.0, abs=1e-12)
    # twice the density per pixel (log p = 784 ln 2) saves exactly one bit per pixel
    assert lib.bits_per_dim(784 * math.log(2)) == pytest.approx(7.0, abs=1e-12)
    t = lib.bits_per_dim(torch.tensor([0.0, -784 * math.log(2)], dtype=torch.float64))
    assert torch.allclose(t, torch.tensor([8.0, 9.0], dtype=torch.float64))


# ---------------------------------------------------------------- structure
def test_structure(lib, full_cfg):
    model = lib.NormalizingFlow(**lib.model_kwargs(full_cfg))
    assert len(model.layers) == 4
    for layer in model.layers:
        linears = [m for m in layer.net if isinstance(m, nn.Linear)]
        assert len(linears) == 5
        assert [type(m) for m in layer.net] == [nn.Linear, nn.ReLU] * 4 + [nn.Linear]
        assert linears[0].in_features == 392 and linears[0].out_features == full_cfg["hidden"]
        assert isinstance(layer.s, nn.Parameter) and layer.s.shape == (784,)
        assert torch.all(linears[-1].weight == 0) and torch.all(linears[-1].bias == 0)
    assert [n for n, p in model.named_parameters() if p.shape == (784,) and n.endswith(".s")] == [
        f"layers.{i}.s" for i in range(4)]


def test_model_is_built_from_the_config_alone(lib, full_cfg):
    """NormalizingFlow has no hidden defaults for the model's hyperparameters: the config cell is their one source."""
    with pytest.raises(TypeError):
        lib.NormalizingFlow()
    kw = lib.model_kwargs(full_cfg)
    assert set(kw) == set(lib.MODEL_KEYS)
    model = lib.NormalizingFlow(**kw)
    assert {k: model.kwargs[k] for k in lib.MODEL_KEYS} == kw
    a, b = lib.make_halves(full_cfg["split"])
    assert torch.equal(model.layers[0].idx_cond, a) and torch.equal(model.layers[0].idx_trans, b)


def test_checkpoint_rebuilds_the_exact_model(lib, tmp_path):
    """load_flow() rebuilds a model from a checkpoint's own arguments, not from the current config."""
    model = perturb(flow(lib, hidden=24, split="checkerboard", coupling="additive", logit_alpha=0.01), seed=4)
    lib.atomic_save({"model": model.state_dict(), "model_kw": model.kwargs, "epoch": 1}, tmp_path / "best.pt")
    again, ck = lib.load_flow(tmp_path / "best.pt")
    x = fake_batch(4)
    assert ck["epoch"] == 1 and again.kwargs == model.kwargs
    assert torch.equal(again.calc_likelihood(x), model.eval().calc_likelihood(x))


@pytest.mark.parametrize("split", ["contiguous", "checkerboard", "evenodd", "random"])
def test_halves_and_alternating_roles(lib, split):
    a, b = lib.make_halves(split)
    assert len(a) == len(b) == 392
    assert torch.equal(torch.sort(torch.cat([a, b])).values, torch.arange(784))
    model = make(lib, split=split)
    for i, layer in enumerate(model.layers):
        cond, trans = (a, b) if i % 2 == 0 else (b, a)
        assert torch.equal(layer.idx_cond, cond) and torch.equal(layer.idx_trans, trans)


def test_copied_half_is_only_scaled(lib):
    model = make(lib, dtype=torch.float64)
    h = torch.randn(5, 784, dtype=torch.float64)
    for layer in model.layers:
        out, _ = layer(h)
        c, t = layer.idx_cond, layer.idx_trans
        assert torch.allclose(out[:, c], h[:, c] * torch.exp(layer.s[c]), rtol=0, atol=1e-12)
        assert not torch.allclose(out[:, t], h[:, t] * torch.exp(layer.s[t]))   # the other half is transformed
        h2 = h.clone()
        h2[:, t] += 1.0                    # the transformed half does not feed its own parameters
        assert torch.allclose(layer(h2)[0][:, c], out[:, c], rtol=0, atol=0)


def test_untrained_flow_is_the_preprocessing(lib):
    model = flow(lib, hidden=16)
    x = fake_batch(3)
    z, log_det = model(x)
    y, ld_pre = model.preprocess(x)
    assert torch.equal(z, y) and torch.allclose(log_det, ld_pre)


def test_bad_split_or_coupling(lib):
    with pytest.raises(ValueError, match="split"):
        flow(lib, hidden=8, split="diagonal")
    with pytest.raises(ValueError, match="coupling"):
        flow(lib, hidden=8, coupling="spline")


# ---------------------------------------------------------------- intermediates and sampling
def test_intermediates(lib):
    model = make(lib)
    x = fake_batch(4)
    z, log_det, fwd = model(x, return_intermediates=True)
    assert len(fwd) == 5 and torch.equal(fwd[0], x) and torch.equal(fwd[-1], z)
    x_rec, inv = model.inverse(z, return_intermediates=True)
    assert len(inv) == 5 and torch.equal(inv[0], z)
    assert torch.equal(inv[-1], x_rec) and torch.equal(inv[-1], model.inverse(z))
    # stage k of the inverse is stage 4-k of the forward, for the inner (flow-space) stages
    for k in (1, 2, 3):
        assert torch.allclose(inv[k], fwd[4 - k], atol=1e-4)


def test_sample(lib):
    model = make(lib)
    s = model.sample(50)
    assert s.shape == (50, 784) and s.dtype == torch.float32
    assert torch.isfinite(s).all() and s.min() >= 0 and s.max() <= 1
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(model.sample(5, 0.7, generator=g1), model.sample(5, 0.7, generator=g2))
    t0 = model.sample(3, temperature=0.0)
    assert torch.equal(t0, model.inverse(torch.zeros(3, 784)).clamp(0, 1))


def test_one_step_lowers_nll(lib):
    torch.manual_seed(0)
    model = flow(lib, hidden=32)
    x = fake_batch(32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = -model.calc_likelihood(x).mean()
    opt.zero_grad()
    before.backward()
    opt.step()
    after = -model.calc_likelihood(x).mean()
    assert after.item() < before.item() - 1.0


# ---------------------------------------------------------------- bad input
GOOD = fake_batch(2)
BAD_DATA = {
    "integer pixels": (GOOD * 255).long(),
    "unflattened [B, 28, 28]": GOOD.reshape(2, 28, 28),
    "783 columns": GOOD[:, :783],
    "1-d vector": GOOD[0],
    "empty batch": GOOD[:0],
    "NaN": GOOD.clone().index_fill_(1, torch.tensor([5]), float("nan")),
    "inf": GOOD.clone().index_fill_(1, torch.tensor([5]), float("inf")),
    "above 1": GOOD * 2,
    "below 0": GOOD - 0.5,
    "numpy array": GOOD.numpy(),
    "list": GOOD.tolist(),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
@pytest.mark.parametrize("method", ["forward", "calc_likelihood"])
def test_bad_data_raises_value_error(lib, method, case):
    model = flow(lib, hidden=8)
    fn = model if method == "forward" else model.calc_likelihood
    with pytest.raises(ValueError, match=r"\[B, 784\]|floating|NaN|\[0, 1\]"):
        fn(BAD_DATA[case])


@pytest.mark.parametrize("case", ["integer pixels", "unflattened [B, 28, 28]", "783 columns", "NaN", "inf"])
def test_bad_latent_raises_value_error(lib, case):
    model = flow(lib, hidden=8)
    with pytest.raises(ValueError, match=r"z "):
        model.inverse(BAD_DATA[case])


def test_inverse_accepts_latents_outside_unit_interval(lib):
    model = flow(lib, hidden=8)
    assert model.inverse(torch.randn(2, 784) * 5).shape == (2, 784)


@pytest.mark.parametrize("n,t", [(0, 1.0), (-3, 1.0), (2.5, 1.0), (True, 1.0), (4, -0.1), (4, float("nan")),
                                 (4, "1")])
def test_bad_sample_args(lib, n, t):
    model = flow(lib, hidden=8)
    with pytest.raises(ValueError, match="n must|temperature must"):
        model.sample(n, temperature=t)


def test_validate_false_skips_only_the_check(lib):
    """The train step's unchecked path computes the same likelihood; the public API still checks its input."""
    model = make(lib)
    x = fake_batch(4)
    assert torch.equal(model.calc_likelihood(x, validate=False), model.calc_likelihood(x))
    with pytest.raises(ValueError):
        model.calc_likelihood(x * 2)


class BF16(nn.Module):
    """A bfloat16 copy of a module, fed bfloat16 inputs."""

    def __init__(self, net):
        super().__init__()
        self.net = net.to(torch.bfloat16)

    def forward(self, h):
        return self.net(h.bfloat16())


def test_bf16_autocast_touches_only_the_mlps(lib):
    """Under CPU bfloat16 autocast the MLP outputs are rounded, but the coupling arithmetic, the log-det and the
    likelihood stay float32 and close to the float32 values; float64 models are not touched at all."""
    model = make(lib, hidden=64)
    x = fake_batch(8)
    ref = model.calc_likelihood(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ll = model.calc_likelihood(x)
        z, log_det = model(x)
    assert ll.dtype == z.dtype == log_det.dtype == torch.float32
    assert not torch.equal(ll, ref), "the MLPs did run in bfloat16"
    # the same as a float32 flow whose MLPs alone are bfloat16 copies: nothing else was rounded
    emulated = copy.deepcopy(model)
    for layer in emulated.layers:
        layer.net = BF16(layer.net)
    assert torch.allclose(ll, emulated.calc_likelihood(x), rtol=1e-6, atol=0)
    assert torch.allclose(ll, ref, rtol=3e-3)
    m64 = make(lib, dtype=torch.float64)
    x64 = fake_batch(2, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(m64.calc_likelihood(x64), make(lib, dtype=torch.float64).calc_likelihood(x64))


def test_denoise_is_tweedies_formula_for_a_gaussian(lib):
    """The untrained flow is the logit alone, so log p(y) = log N(y; 0, I) and one Tweedie step maps y to
    y + sigma^2 * (-y) = (1 - sigma^2) y: the function must give exactly that."""
    model = flow(lib, hidden=16).double()
    y = torch.randn(5, 784, dtype=torch.float64)
    for sigma in (0.3, 0.8):
        expected = model.preprocess.inverse((1 - sigma ** 2) * y).clamp(0, 1)
        assert torch.allclose(lib.denoise(model, y, sigma), expected, atol=1e-12)
    trained = perturb(flow(lib, hidden=16).double(), seed=2)
    assert not torch.allclose(lib.denoise(trained, y, 0.5), lib.denoise(model, y, 0.5)), "it reads the model"
    z = torch.randn(3, 784, dtype=torch.float64)
    assert torch.allclose(trained.preprocess.inverse(lib.sample_latents(trained, z)), trained.inverse(z))


def test_nearest_distance_against_brute_force(lib):
    g = torch.Generator().manual_seed(0)
    ref, x = torch.rand(50, 784, generator=g), torch.rand(7, 784, generator=g)
    x[3] = ref[11]                                                   # a copy: distance 0
    brute = torch.stack([(ref - v).norm(dim=1).min() for v in x])
    assert torch.allclose(lib.nearest_distance(x, ref, batch=3), brute, atol=1e-4) and lib.nearest_distance(
        x, ref)[3] < 1e-3


def test_training_noise_is_drawn_only_when_asked(lib, quick_cfg):
    """train_noise = 0 draws nothing (the default run is unchanged); sigma > 0 trains on noisy logits."""
    x = fake_batch(16)
    states = {}
    for sigma in (0.0, 1.0):
        torch.manual_seed(0)
        model = flow(lib, hidden=16)
        g = torch.Generator().manual_seed(5)
        step = lib.make_train_step(model, torch.optim.Adam(model.parameters()), {**quick_cfg, "train_noise": sigma},
                                   torch.device("cpu"), g)
        states[sigma] = (step(x)[0].item(), torch.equal(g.get_state(), torch.Generator().manual_seed(5).get_state()))
    assert states[0.0][1] and not states[1.0][1]
    assert states[0.0][0] != states[1.0][0]


def test_annealed_noise_falls_to_zero_and_is_part_of_the_run(lib, quick_cfg):
    """noise_anneal = k: sigma constant, then falling linearly over the last k epochs to 0 in the last one; the
    step's sigma argument is what it trains with; an annealed run depends on its number of epochs."""
    cfg = {**quick_cfg, "epochs": 10, "train_noise": 2.0, "noise_anneal": 4}
    assert [lib.noise_sigma(cfg, e) for e in range(1, 11)] == [2.0] * 6 + [1.5, 1.0, 0.5, 0.0]
    assert {lib.noise_sigma({**cfg, "noise_anneal": 0}, e) for e in range(1, 11)} == {2.0}
    assert lib.run_id(cfg) != lib.run_id({**cfg, "epochs": 12})
    assert lib.run_id({**cfg, "noise_anneal": 0}) == lib.run_id({**cfg, "noise_anneal": 0, "epochs": 12})
    assert lib.run_id({k: v for k, v in cfg.items() if k != "noise_anneal"}) == lib.run_id({**cfg, "noise_anneal": 0})
    x = fake_batch(16)
    losses = []
    for sigma in (0.0, 2.0):
        torch.manual_seed(0)
        model = flow(lib, hidden=16)
        step = lib.make_train_step(model, torch.optim.Adam(model.parameters()), cfg, torch.device("cpu"),
                                   torch.Generator().manual_seed(5))
        losses.append(step(x, sigma)[0].item())
    torch.manual_seed(0)
    model = flow(lib, hidden=16)
    plain = lib.make_train_step(model, torch.optim.Adam(model.parameters()), {**cfg, "train_noise": 0.0},
                                torch.device("cpu"))
    assert losses[0] == plain(x)[0].item() and losses[1] != losses[0]


def test_coupling_inverse_returns_minus_the_forward_log_det(lib):
    torch.manual_seed(0)
    model = perturb(flow(lib, hidden=16).double(), std=0.1)
    h = torch.randn(4, 784, dtype=torch.float64)
    for layer in model.layers:
        out, ld = layer(h)
        back, ld_back = layer.inverse(out)
        assert torch.allclose(back, h, atol=1e-10) and torch.allclose(ld_back, -ld, atol=1e-10)


def test_tempered_log_density_is_the_change_of_variables(lib):
    """beta log N(z) + (1 - beta) log|det dx/dz|, with log|det dx/dz| = -(the forward log-det at x = f^-1(z))."""
    model = perturb(flow(lib, hidden=16).double(), std=0.05, seed=3)
    z = torch.randn(5, 784, dtype=torch.float64) * 0.5
    x = model.inverse(z)
    z_again, fwd_ld = model(x, validate=False)
    assert torch.allclose(z_again, z, atol=1e-8)
    for beta in (0.0, 1.0, 2.0):
        expected = -0.5 * beta * (z ** 2).sum(1) - (1 - beta) * fwd_ld
        assert torch.allclose(lib.tempered_log_density(model, z, beta), expected, atol=1e-6), beta


def test_mala_samples_the_tempered_gaussian(lib):
    """Without the logit the untrained flow is the identity, so p(x)^beta is N(0, I / beta): MALA started from
    N(0, I) must shrink the variance to 1 / beta."""
    model = flow(lib, hidden=8, logit_alpha=None)
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(400, 784, generator=g)
    z, rate = lib.mala(model, z0, 4.0, 60, g)
    assert 0.3 < rate < 0.95
    assert 0.22 < z.var().item() < 0.28
