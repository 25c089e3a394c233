"""The flow's mathematics: invertibility, log-determinants, likelihood, the spline, structure, sampling, bad input.

The notebook's model (affine couplings, random halves) is built as the notebook builds it, lib.NormalizingFlow; the
variants it no longer holds (additive and spline couplings, the other halves, layer_scale off) are bench's, built
by bench.common.Flow (helpers.variant_flow) from bench/variants.py."""
import math

import pytest
import torch
from helpers import fake_batch, flow, perturb, trained_like, variant_flow
from torch import nn

from bench import variants
from bench.variants import rq_spline

VARIANTS = [  # (coupling, split, logit_alpha)
    ("affine", "checkerboard", 1e-6),
    ("affine", "contiguous", 0.05),
    ("additive", "evenodd", 1e-6),
    ("affine", "random", 1e-4),
    ("spline", "random", 1e-4),
    ("spline", "checkerboard", 1e-6),
]


def build(lib, coupling="affine", split="random", **changes):
    """The notebook's NormalizingFlow for its own coupling and halves (affine, random), else bench's Flow."""
    if coupling == "affine" and split == "random":
        return flow(lib, **changes)
    return variant_flow(coupling=coupling, split=split, **changes)


def make(lib, coupling="affine", split="random", alpha=1e-6, hidden=32, dtype=torch.float32, seed=0,
         trained=False):
    torch.manual_seed(seed)
    model = build(lib, coupling, split, hidden=hidden, logit_alpha=alpha).to(dtype)
    return trained_like(model, seed=seed) if trained else perturb(model, seed=seed)


def edge_batch(n, dtype):
    """fake_batch with whole images at exactly 0 and exactly 1 as well."""
    x = fake_batch(n, dtype=dtype)
    x[0], x[1] = 0.0, 1.0
    return x


# ---------------------------------------------------------------- invertibility
@pytest.mark.parametrize("coupling,split,alpha", VARIANTS)
def test_round_trip_float32(lib, coupling, split, alpha):
    model = make(lib, coupling, split, alpha)
    x = fake_batch(16)
    z, _ = model(x)
    assert (z - model.preprocess(x)[0]).abs().max() > 1e-2, "perturbed model should not be the identity"
    assert (model.inverse(z) - x).abs().max().item() <= 1e-5


@pytest.mark.parametrize("coupling", ["affine", "additive", "spline"])
def test_round_trip_float32_with_trained_like_weights_and_inputs_at_0_and_1(lib, coupling):
    """Log-scales within 0.5% of their bound c, every s_i near +-1, whole images at exactly 0 and 1: x -> z -> x
    still holds in float32 to 1e-4, as the notebook checks on its trained model."""
    model = make(lib, coupling, "random", 1e-4, trained=True)
    if coupling == "affine":
        h = model.preprocess(fake_batch(4))[0][:, model.layers[0].idx_cond]
        ls = model.layers[0].c * torch.tanh(model.layers[0].net(h)[:, :392] / model.layers[0].c)
        assert ls.abs().min() > 0.98 * model.layers[0].c, "the log-scales really sit at their bound"
    x = edge_batch(8, torch.float32)
    z, log_det = model(x)
    assert torch.isfinite(z).all() and torch.isfinite(log_det).all()
    # a spline's flat bins (slope near its floor 1e-3) amplify the rounding of z in any inverse: see the next test
    assert (model.inverse(z) - x).abs().max().item() <= (1e-3 if coupling == "spline" else 1e-4)


@pytest.mark.parametrize("coupling,split,alpha", VARIANTS)
def test_round_trip_float64_both_ways(lib, coupling, split, alpha):
    model = make(lib, coupling, split, alpha, dtype=torch.float64)
    x = fake_batch(16, dtype=torch.float64)
    assert (model.inverse(model(x)[0]) - x).abs().max().item() <= 1e-10
    # and from the prior: inverse(z) may leave [0, 1] by up to alpha / (1 - 2 alpha), which forward() rightly
    # rejects as data, so the layers are applied one by one here
    z = torch.randn(16, 784, dtype=torch.float64)
    h = model.preprocess(model.inverse(z))[0]
    for layer in model.layers:
        h = layer(h)[0]
    assert (h - z).abs().max().item() <= 1e-8


def test_coupling_inverse_returns_minus_the_forward_log_det(lib):
    for coupling in ("affine", "additive", "spline"):
        model = make(lib, coupling, "random", 1e-4, dtype=torch.float64, trained=True)
        h = 4 * torch.randn(4, 784, dtype=torch.float64)
        for layer in model.layers:
            out, ld = layer(h)
            back, ld_back = layer.inverse(out)
            assert torch.allclose(back, h, atol=1e-10) and torch.allclose(ld_back, -ld, atol=1e-9), coupling


# ---------------------------------------------------------------- log-determinant and likelihood
def jacobian_logdet(fn, x):
    """log|det| of the full autograd Jacobian of fn at one point x [n], by slogdet; its sign must be +1."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0][0], x, vectorize=True)   # [n, n]
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign.item() == 1.0, "every map is increasing, so the determinant must be positive"
    return logabsdet.item()


@pytest.mark.parametrize("coupling,split,alpha", VARIANTS)
def test_log_det_matches_brute_force_jacobian(lib, coupling, split, alpha):
    model = make(lib, coupling, split, alpha, dtype=torch.float64)
    x = fake_batch(2 if coupling != "spline" else 1, seed=1, dtype=torch.float64)     # the spline's Jacobian is slow
    _, log_det = model(x)
    for i in range(len(x)):
        brute = jacobian_logdet(model, x[i])
        assert abs(log_det[i].item() - brute) <= 1e-8 * abs(brute), (log_det[i].item(), brute)


@pytest.mark.parametrize("coupling", ["affine", "additive", "spline"])
def test_log_det_with_trained_like_weights_at_0_and_1(lib, coupling):
    """Log-scales at their bound, s_i near +-1, uneven spline bins; an image with pixels at exactly 0 and 1."""
    model = make(lib, coupling, "random", 1e-4, dtype=torch.float64, trained=True)
    x = fake_batch(1, seed=3, dtype=torch.float64)[0]
    x[:100], x[100:200] = 0.0, 1.0
    brute = jacobian_logdet(model, x)
    assert abs(model(x[None])[1].item() - brute) <= 1e-8 * abs(brute)


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


@pytest.mark.parametrize("coupling", ["affine", "additive", "spline"])
def test_untrained_flow_is_the_logit_alone(lib, coupling):
    """At initialisation every coupling is the identity (the spline too: zero outputs give equal bins and slope 1),
    so z is the logit of x and p(x) is a Gaussian pushed through the logit, written out here by hand."""
    a = 0.05
    model = build(lib, coupling, hidden=16, logit_alpha=a).double()
    x = fake_batch(4, dtype=torch.float64)
    p = a + (1 - 2 * a) * x
    y = torch.log(p / (1 - p))
    z, log_det = model(x)
    assert torch.allclose(z, y, rtol=0, atol=1e-12)
    expected = (-0.5 * y**2 - 0.5 * math.log(2 * math.pi) + torch.log((1 - 2 * a) / (p * (1 - p)))).sum(1)
    assert torch.allclose(model.calc_likelihood(x), expected, rtol=0, atol=1e-9)
    assert torch.allclose(log_det, torch.log((1 - 2 * a) / (p * (1 - p))).sum(1), rtol=0, atol=1e-9)


def test_bits_per_dim_by_hand(lib):
    # the uniform density on [0,1]^784 (log p = 0) spends exactly 8 bits on every pixel
    assert lib.bits_per_dim(0.0) == pytest.approx(8.0, abs=1e-12)
    # twice the density per pixel (log p = 784 ln 2) saves exactly one bit per pixel
    assert lib.bits_per_dim(784 * math.log(2)) == pytest.approx(7.0, abs=1e-12)
    t = lib.bits_per_dim(torch.tensor([0.0, -784 * math.log(2)], dtype=torch.float64))
    assert torch.allclose(t, torch.tensor([8.0, 9.0], dtype=torch.float64))


# ---------------------------------------------------------------- the logit
def test_logit_is_exact_and_its_inverse_undoes_it(lib):
    a = 1e-4
    pre = lib.LogitPreprocess(a)
    x = fake_batch(3, dtype=torch.float64)
    y, ld = pre(x)
    p = a + (1 - 2 * a) * x
    assert torch.allclose(y, torch.log(p) - torch.log(1 - p), rtol=0, atol=1e-12)
    (dydx,) = torch.autograd.grad(pre(x.requires_grad_())[0].sum(), x)       # elementwise: the gradient is dy/dx
    x = x.detach()
    assert torch.allclose(ld, dydx.log().sum(1), rtol=1e-12)
    back, ld_back = pre.inverse(y)
    assert torch.allclose(back, x, atol=1e-12) and torch.allclose(ld_back, -ld, rtol=1e-10)


@pytest.mark.parametrize("alpha", [1e-7, 1e-12, 0.0, -1e-3, 0.5, 0.7])
def test_logit_alpha_outside_its_range_is_refused(lib, alpha):
    with pytest.raises(ValueError, match=r"logit_alpha must be in \[1e-6, 0.5\)"):
        lib.LogitPreprocess(alpha)
    with pytest.raises(ValueError, match="logit_alpha"):
        flow(lib, hidden=8, logit_alpha=alpha)


def test_smallest_logit_alpha_keeps_0_and_1_finite_in_float32(lib):
    """At alpha = 1e-6 in float32, x = 0 and x = 1 give finite logits, log-dets and likelihoods."""
    pre = lib.LogitPreprocess(1e-6)
    x = torch.tensor([[0.0, 1.0] * 392])
    y, ld = pre(x)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    assert y[0, 0] < -13 and y[0, 1] > 13                         # logit(1e-6) = -13.8: really at the edges
    assert torch.isfinite(pre.inverse(y)[1]).all()
    model = flow(lib, hidden=8, logit_alpha=1e-6)
    assert torch.isfinite(model.calc_likelihood(torch.cat([x, torch.zeros(1, 784), torch.ones(1, 784)]))).all()


# ---------------------------------------------------------------- the rational-quadratic spline (bench/variants.py)
K, B = 4, 10.0
SHIFT = math.log(math.expm1(1 - 1e-3))          # bench's offset: a zero derivative output gives slope 1


def spline_params(n=3, width=50, seed=0, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 3 * K - 1, width, generator=g, dtype=torch.float64)


def spline_knots(params):
    """Knots (xk, yk) [N, K+1, n] and knot slopes d [N, K+1, n], written out from the spline's definition."""
    w = 2 * B * (1e-3 + (1 - 1e-3 * K) * torch.softmax(params[:, :K], 1))
    h = 2 * B * (1e-3 + (1 - 1e-3 * K) * torch.softmax(params[:, K:2 * K], 1))
    zero = torch.zeros_like(w[:, :1])
    xk = torch.cat([zero, w.cumsum(1)], 1) - B
    yk = torch.cat([zero, h.cumsum(1)], 1) - B
    one = torch.ones_like(zero)
    d = torch.cat([one, 1e-3 + nn.functional.softplus(params[:, 2 * K:] + SHIFT), one], 1)
    return xk, yk, d


def spline_inputs(n=3, width=50, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = 7 * torch.randn(n, width, generator=g, dtype=torch.float64)          # about a tenth beyond +-B
    assert (x.abs() > B).any() and (x.abs() < B).any()
    return x


def test_spline_is_the_identity_at_init():
    assert (variants.MIN_BIN, variants.MIN_SLOPE) == (1e-3, 1e-3), "the minima these tests write out"
    x = torch.cat([spline_inputs(), torch.tensor([[-B, B, 0.0] + [3.0] * 47], dtype=torch.float64)])
    y, ld = rq_spline(x, torch.zeros(4, 3 * K - 1, 50, dtype=torch.float64), B)
    assert torch.allclose(y, x, rtol=0, atol=1e-12) and torch.allclose(ld, torch.zeros(4, dtype=torch.float64),
                                                                       atol=1e-12)


def test_spline_log_det_against_its_brute_force_jacobian_both_ways():
    params, x = spline_params(), spline_inputs()
    y, ld = rq_spline(x, params, B)
    x_back, ld_inv = rq_spline(y, params, B, inverse=True)
    for i in range(len(x)):
        fwd = torch.autograd.functional.jacobian(lambda v, i=i: rq_spline(v[None], params[i:i + 1], B)[0][0],
                                                 x[i])
        inv = torch.autograd.functional.jacobian(
            lambda v, i=i: rq_spline(v[None], params[i:i + 1], B, inverse=True)[0][0], y[i])
        assert torch.count_nonzero(fwd - torch.diag(fwd.diagonal())) == 0, "elementwise: a diagonal Jacobian"
        assert fwd.diagonal().min() > 0
        assert ld[i].item() == pytest.approx(torch.linalg.slogdet(fwd)[1].item(), rel=1e-10, abs=1e-10)
        assert ld_inv[i].item() == pytest.approx(torch.linalg.slogdet(inv)[1].item(), rel=1e-10, abs=1e-10)


def test_spline_inverse_after_forward_and_forward_after_inverse():
    params, x = spline_params(seed=2), spline_inputs(seed=3)
    y, ld = rq_spline(x, params, B)
    assert (y - x).abs().max() > 0.5, "a spline far from the identity"
    back, ld_back = rq_spline(y, params, B, inverse=True)
    assert torch.allclose(back, x, rtol=0, atol=1e-10) and torch.allclose(ld_back, -ld, rtol=0, atol=1e-10)
    y2 = spline_inputs(seed=4)                                         # outputs first
    x2, ld2 = rq_spline(y2, params, B, inverse=True)
    again, ld_again = rq_spline(x2, params, B)
    assert torch.allclose(again, y2, rtol=0, atol=1e-10) and torch.allclose(ld_again, -ld2, rtol=0, atol=1e-10)


def test_spline_on_its_knots_at_and_beyond_its_bound():
    params = spline_params(n=2, width=K + 1, seed=5)
    xk, yk, d = spline_knots(params)
    # every knot, the two ends -B and B among them, exactly: y = y_k and the log-slope is log d_k
    x = xk[:, :, 0].clone()                           # [2, K+1]: pixel j sits on knot j
    p = params[:, :, :1].expand(-1, -1, K + 1).contiguous()
    xk, yk, d = spline_knots(p)
    x = torch.stack([xk[i].diagonal() for i in range(2)])
    y, _ = rq_spline(x, p, B)
    knots_y = torch.stack([yk[i].diagonal() for i in range(2)])
    assert torch.allclose(y, knots_y, rtol=0, atol=1e-12)
    assert y[:, 0].tolist() == [-B, -B] and y[:, -1].tolist() == [B, B]
    for j in range(K + 1):                             # the slope at knot j, pixel by pixel, by autograd
        v = x[:, j:j + 1].clone().requires_grad_()
        one = rq_spline(v, p[:, :, j:j + 1], B)[0]
        (g,) = torch.autograd.grad(one.sum(), v)
        assert torch.allclose(g[:, 0], d[:, j, j], rtol=1e-9), j
        # and from both sides the spline is continuous there
        for side in (-1e-9, 1e-9):
            near = rq_spline(x[:, j:j + 1] + side, p[:, :, j:j + 1], B)[0]
            assert torch.allclose(near, knots_y[:, j:j + 1], rtol=0, atol=1e-8)
    # beyond +-B: exactly the identity, log-det exactly 0
    far = torch.tensor([[-1e6, -B - 1e-9, -10.5, B + 1e-9, 12.0]], dtype=torch.float64)
    y_far, ld_far = rq_spline(far, params[:1, :, :1].expand(-1, -1, 5).contiguous(), B)
    assert torch.equal(y_far, far) and ld_far.item() == 0.0
    x_far, ld_far = rq_spline(far, params[:1, :, :1].expand(-1, -1, 5).contiguous(), B, inverse=True)
    assert torch.equal(x_far, far) and ld_far.item() == 0.0


def test_spline_float32_inverse_is_as_good_as_its_conditioning_allows():
    """In float32 the inverse of a steep-and-flat spline loses what the rounding of y costs and no more: its error
    stays within twice that of the exact (float64) inverse of the same rounded y, and under 1e-4 for mild bins."""
    g = torch.Generator().manual_seed(8)
    for scale in (0.5, 2.0):
        params = (scale * torch.randn(32, 3 * K - 1, 392, generator=g)).float()
        x = 7 * torch.randn(32, 392, generator=g)
        y, _ = rq_spline(x, params, B)
        back, _ = rq_spline(y, params, B, inverse=True)
        exact, _ = rq_spline(y.double(), params.double(), B, inverse=True)
        assert (back - x).abs().max() <= 2 * (exact - x.double()).abs().max() + 1e-5, scale
        if scale == 0.5:
            assert (back - x).abs().max() <= 1e-4


def test_spline_agrees_with_nflows():
    """nflows' own rational-quadratic spline (Durkan et al.'s code), with bench's bins, bound and minima."""
    rq = pytest.importorskip("nflows.transforms.splines.rational_quadratic")
    params, x = spline_params(n=4, width=60, seed=6), spline_inputs(n=4, width=60, seed=7)
    t = params.transpose(1, 2)                                          # [N, n, 3K-1]
    kw = dict(tails="linear", tail_bound=B, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3)
    for inverse in (False, True):
        ref, ref_ld = rq.unconstrained_rational_quadratic_spline(
            x, t[..., :K], t[..., K:2 * K], t[..., 2 * K:] + SHIFT, inverse=inverse, **kw)
        out, ld = rq_spline(x, params, B, inverse=inverse)
        assert torch.allclose(out, ref, rtol=0, atol=1e-9), inverse
        assert torch.allclose(ld, ref_ld.sum(1), rtol=0, atol=1e-8), inverse


@pytest.mark.parametrize("bins", [1, 2, 3, 8])
def test_spline_values_and_parameter_gradients_agree_with_nflows_for_any_bin_count(bins):
    """The bin k is chosen without gradient; the widths, heights and slopes that reach the output must carry it: the
    gradient of sum(y) + sum(log-det) with respect to the MLP's outputs matches nflows', both ways, for K bins."""
    rq = pytest.importorskip("nflows.transforms.splines.rational_quadratic")
    g = torch.Generator().manual_seed(10 + bins)
    params = 1.5 * torch.randn(4, 3 * bins - 1, 60, generator=g, dtype=torch.float64)
    x = 7 * torch.randn(4, 60, generator=g, dtype=torch.float64)
    kw = dict(tails="linear", tail_bound=B, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3)
    for inverse in (False, True):
        p_ours, p_ref = params.clone().requires_grad_(), params.clone().requires_grad_()
        out, ld = rq_spline(x, p_ours, B, inverse=inverse)
        t = p_ref.transpose(1, 2)                                       # [N, n, 3K-1]
        ref, ref_ld = rq.unconstrained_rational_quadratic_spline(
            x, t[..., :bins], t[..., bins:2 * bins], t[..., 2 * bins:] + SHIFT, inverse=inverse, **kw)
        assert torch.allclose(out, ref, rtol=0, atol=1e-9) and torch.allclose(ld, ref_ld.sum(1), rtol=0, atol=1e-8)
        (g_ours,) = torch.autograd.grad(out.sum() + ld.sum(), p_ours)
        (g_ref,) = torch.autograd.grad(ref.sum() + ref_ld.sum(), p_ref)
        assert bins == 1 or g_ours.abs().max() > 0.1, "the outputs do reach the parameters (one bin: the identity)"
        assert torch.allclose(g_ours, g_ref, rtol=1e-7, atol=1e-8), (bins, inverse)


# ---------------------------------------------------------------- structure
@pytest.mark.parametrize("coupling, per_pixel", [("affine", 2), ("additive", 1), ("spline", 3 * 4 - 1)])
def test_structure(lib, full_cfg, coupling, per_pixel):
    if coupling == "affine":                                           # the notebook's model
        model = lib.NormalizingFlow(**{k: full_cfg[k] for k in lib.MODEL_KEYS})
        assert all(type(layer) is lib.CouplingLayer for layer in model.layers)
    else:                                                              # bench's, a subclass of the notebook's layer
        model = variant_flow(coupling=coupling)
        cls = {"additive": variants.AdditiveCoupling, "spline": variants.SplineCoupling}[coupling]
        assert all(type(layer) is cls for layer in model.layers) and issubclass(cls, variants.lib.CouplingLayer)
        assert model.kwargs["coupling"] == coupling and model.kwargs["hidden"] == full_cfg["hidden"]
    assert len(model.layers) == 4
    for layer in model.layers:
        assert getattr(layer, "coupling", "affine") == coupling and layer.outputs_per_pixel == per_pixel
        linears = [m for m in layer.net if isinstance(m, nn.Linear)]
        assert [type(m) for m in layer.net] == [nn.Linear, nn.ReLU] * 4 + [nn.Linear]
        assert linears[0].in_features == 392 and linears[0].out_features == full_cfg["hidden"]
        assert linears[-1].out_features == per_pixel * 392
        assert isinstance(layer.s, nn.Parameter) and layer.s.shape == (784,)
        assert torch.all(linears[-1].weight == 0) and torch.all(linears[-1].bias == 0)
    assert [n for n, p in model.named_parameters() if n.endswith(".s")] == [f"layers.{i}.s" for i in range(4)]


def test_model_is_built_from_the_config_alone(lib, full_cfg):
    """NormalizingFlow has no hidden defaults for the model's settings: the config cell is their one source."""
    with pytest.raises(TypeError):
        lib.NormalizingFlow()
    kw = {k: full_cfg[k] for k in lib.MODEL_KEYS}
    model = lib.NormalizingFlow(**kw)
    assert model.kwargs == kw
    assert lib.NormalizingFlow(**model.kwargs).state_dict().keys() == model.state_dict().keys()
    a, b = lib.random_halves(full_cfg["split_seed"])
    assert torch.equal(model.layers[0].idx_cond, a) and torch.equal(model.layers[0].idx_trans, b)


def test_layer_scale_off_has_no_s_parameters():
    on, off = variant_flow(hidden=16), variant_flow(hidden=16, layer_scale=False)
    assert sum(p.numel() for p in on.parameters()) - sum(p.numel() for p in off.parameters()) == 4 * 784
    assert not any(n.endswith(".s") for n, _ in off.named_parameters()) and off.kwargs["layer_scale"] is False
    # s stays in the state dict (a zero buffer), as older notebook versions kept it: their checkpoints load
    assert off.state_dict().keys() == on.state_dict().keys()
    perturb(off, seed=3)
    assert all(torch.all(layer.s == 0) for layer in off.layers)


@pytest.mark.parametrize("split", ["contiguous", "checkerboard", "evenodd", "random"])
def test_halves_and_alternating_roles(lib, full_cfg, split):
    a, b = variants.make_halves(split, full_cfg["split_seed"])
    assert len(a) == len(b) == 392
    assert torch.equal(torch.sort(torch.cat([a, b])).values, torch.arange(784))
    assert torch.equal(a, torch.sort(a).values) and torch.equal(b, torch.sort(b).values), "sorted, as nflows needs"
    row, col = a // 28, a % 28
    if split == "contiguous":                                          # the top 14 rows
        assert torch.equal(a, torch.arange(392))
    elif split == "checkerboard":
        assert torch.all((row + col) % 2 == 0)
    elif split == "evenodd":                                           # the even columns
        assert torch.all(col % 2 == 0)
    model = make(lib, split=split)
    for i, layer in enumerate(model.layers):
        cond, trans = (a, b) if i % 2 == 0 else (b, a)
        assert torch.equal(layer.idx_cond, cond) and torch.equal(layer.idx_trans, trans)
    if split == "random":                                              # the notebook's own halves
        for seed in (0, 1):
            assert all(map(torch.equal, variants.make_halves(split, seed), lib.random_halves(seed)))
        assert not torch.equal(variants.make_halves(split, 0)[0], variants.make_halves(split, 1)[0]), \
            "split_seed is used"


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_copied_half_is_only_scaled(lib, coupling):
    model = make(lib, coupling=coupling, dtype=torch.float64)
    h = 3 * torch.randn(5, 784, dtype=torch.float64)
    for layer in model.layers:
        out, _ = layer(h)
        c, t = layer.idx_cond, layer.idx_trans
        assert torch.allclose(out[:, c], h[:, c] * torch.exp(layer.s[c]), rtol=0, atol=1e-12)
        assert not torch.allclose(out[:, t], h[:, t] * torch.exp(layer.s[t]))   # the other half is transformed
        h2 = h.clone()
        h2[:, t] += 1.0                    # the transformed half does not feed its own parameters
        assert torch.equal(layer(h2)[0][:, c], out[:, c])


def test_bad_split_or_coupling():
    with pytest.raises(ValueError, match=r"split must be one of \['random', 'checkerboard', 'contiguous', 'evenodd'\]"):
        variant_flow(hidden=8, split="diagonal")
    with pytest.raises(ValueError, match=r"coupling must be one of \['affine', 'additive', 'spline'\]"):
        variant_flow(hidden=8, coupling="quadratic")


def test_additive_coupling_is_a_shift_with_log_det_zero():
    """NICE's coupling: h_B + t both ways, log-det 0; the flow's log-det is then the logit's and the s_i's alone."""
    layer = variants.AdditiveCoupling(*variants.make_halves("evenodd"), hidden=8).double()
    h, out = torch.randn(3, 392, dtype=torch.float64), torch.randn(3, 1, 392, dtype=torch.float64)
    for inverse, sign in ((False, 1), (True, -1)):
        new, log_det = layer.transform(h, out, inverse)
        assert torch.equal(new, h + sign * out[:, 0]) and torch.equal(log_det, torch.zeros(3, dtype=torch.float64))


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T", [0.7, 1.3])
def test_sample_is_the_inverse_of_a_latent_scaled_by_T(lib, dtype, T):
    """sample(n, T, generator) = inverse(T * randn from that generator in the model's dtype), clamped to [0, 1]:
    reproduced here with the latent scaled by hand, so T applied twice, or not at all, fails."""
    model = make(lib, dtype=dtype)
    got = model.sample(6, T, generator=torch.Generator().manual_seed(3))
    assert got.dtype == dtype and got.shape == (6, 784)
    z = torch.randn(6, 784, generator=torch.Generator().manual_seed(3), dtype=dtype) * T
    assert torch.equal(got, model.inverse(z).clamp(0, 1))
    unscaled = model.inverse(z / T).clamp(0, 1)
    assert (got - unscaled).abs().max() > 1e-3, "the temperature changes the samples"
    assert torch.equal(model.sample(3, 0.0), model.inverse(torch.zeros(3, 784, dtype=dtype)).clamp(0, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inverse_and_evaluate_in_the_models_dtype(lib, dtype):
    model = make(lib, dtype=dtype)
    z = torch.randn(3, 784, dtype=dtype)
    assert model.inverse(z).dtype == dtype
    x = fake_batch(5, dtype=dtype)
    expected = model.calc_likelihood(x).double().mean().item()
    assert lib.evaluate(model, x, batch=2) == pytest.approx(expected, rel=1e-6)


def test_inverse_finite_for_perturbed_model(lib):
    model = perturb(flow(lib, hidden=64), std=0.2)
    with torch.no_grad():
        assert torch.isfinite(model.inverse(torch.randn(2000, 784))).all()


# ---------------------------------------------------------------- bad input
GOOD = torch.rand(2, 784, generator=torch.Generator().manual_seed(0))
BAD_DATA = {
    "integer pixels": (GOOD * 255).long(),
    "float64 for a float32 model": GOOD.double(),
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
def test_bad_data_raises_a_value_error_that_says_what_to_pass(lib, method, case):
    model = flow(lib, hidden=8)
    fn = model if method == "forward" else model.calc_likelihood
    with pytest.raises(ValueError, match=r"x must be a torch.float32 tensor \[B, 784\]|x must be finite"):
        fn(BAD_DATA[case])


@pytest.mark.parametrize("case", ["integer pixels", "float64 for a float32 model", "unflattened [B, 28, 28]",
                                  "783 columns", "NaN", "inf"])
def test_bad_latent_raises_a_value_error(lib, case):
    model = flow(lib, hidden=8)
    with pytest.raises(ValueError, match=r"z must be"):
        model.inverse(BAD_DATA[case])


def test_wrong_device_is_named(lib):
    with pytest.raises(ValueError, match=r"on cpu like the model, got torch.float32 \[2, 784\] on meta"):
        flow(lib, hidden=8)(torch.empty(2, 784, device="meta"))


def test_inverse_accepts_latents_outside_unit_interval(lib):
    model = flow(lib, hidden=8)
    assert model.inverse(torch.randn(2, 784) * 5).shape == (2, 784)


@pytest.mark.parametrize("n,t", [(0, 1.0), (-3, 1.0), (2.5, 1.0), (4, -0.1), (4, float("nan")), (4, float("inf"))])
def test_bad_sample_args(lib, n, t):
    with pytest.raises(ValueError, match="need an integer n >= 1 and a finite temperature >= 0"):
        flow(lib, hidden=8).sample(n, temperature=t)


def test_validate_false_skips_only_the_check(lib):
    """The training loop's unchecked path computes the same likelihood; the public API still checks its input."""
    model = make(lib)
    x = fake_batch(4)
    assert torch.equal(model.calc_likelihood(x, validate=False), model.calc_likelihood(x))
    with pytest.raises(ValueError):
        model.calc_likelihood(x * 2)
