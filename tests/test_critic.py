"""Phase 2 (fine-tuning beside a critic): at W = 0 it is training by likelihood alone; the adversarial term reaches
the flow through `inverse`; a killed run resumes bit-identically, the critic included; bad settings are refused."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_run import CHANGES, data, new_model, tiny_cfg

HERE = Path(__file__).resolve().parent


def phase2(lib, cfg, ckpt_dir, **changes):
    """(flow, critic, fit's result) after phase 2 of the tiny run's settings, from the untrained flow."""
    cfg = {**cfg, **changes}
    model = new_model(lib, cfg)
    torch.manual_seed(cfg["seed"])
    critic = lib.Critic(cfg["critic_width"])
    train_pix, val_pix = data()
    run = lib.fit(model, train_pix, lib.dequantize(val_pix, 1), cfg, ckpt_dir, critic=critic, quiet=True)
    return model, critic, run


def flat(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


@pytest.fixture(scope="module")
def cfg(lib):
    return tiny_cfg(lib)


def test_at_w0_phase2_is_likelihood_alone_with_its_optimizer(lib, cfg, tmp_path):
    """W = 0: the raw weights after phase 2 equal those of a loop written here from the definition: Adam (adv_lr,
    betas 0.5, 0.999) on the mean bits/dim of freshly dequantized batches in the order of a generator seeded with
    the seed, gradients clipped. The critic and its latents take no part."""
    _, critic, _ = phase2(lib, cfg, tmp_path / "w0", adv_weight=0.0, adv_epochs=2)
    raw = lib.load_checkpoint(tmp_path / "w0" / "last.pt")["model"]
    model = new_model(lib, cfg)
    train_pix, _ = data()
    opt = torch.optim.Adam(model.parameters(), lr=cfg["adv_lr"], betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(cfg["seed"])
    for _ in range(2):
        for idx in torch.randperm(len(train_pix), generator=gen).split(cfg["batch_size"]):
            loss = lib.bits_per_dim(model.calc_likelihood(lib.dequantize(train_pix[idx], gen))).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            opt.step()
    for k, v in model.state_dict().items():
        assert torch.allclose(raw[k], v, atol=1e-6, rtol=1e-5), k
    torch.manual_seed(cfg["seed"])
    assert torch.equal(flat(critic), flat(lib.Critic(cfg["critic_width"]))), "at W = 0 the critic is not trained"


def test_the_adversarial_term_moves_the_flow_and_the_critic_learns(lib, cfg, tmp_path):
    """W = 1 against W = 0 from the same start: other flow weights, and a trained critic; and the term's gradient
    reaches every coupling's MLP through the differentiable inverse."""
    m0, _, _ = phase2(lib, cfg, tmp_path / "w0", adv_weight=0.0, adv_epochs=1)
    m1, critic, run = phase2(lib, cfg, tmp_path / "w1", adv_weight=1.0, adv_epochs=1)
    assert not torch.allclose(flat(m0), flat(m1), atol=1e-6)
    torch.manual_seed(cfg["seed"])
    assert not torch.equal(flat(critic), flat(lib.Critic(cfg["critic_width"])))
    model = new_model(lib, cfg)
    with torch.no_grad():
        for layer in model.layers:                      # away from the zero last layer the flow starts with
            layer.net[-1].weight.normal_(0, 0.01)
    term = torch.nn.functional.softplus(-critic(model.inverse(torch.randn(8, lib.D)))).mean()
    term.backward()
    for i, layer in enumerate(model.layers):
        assert layer.net[0].weight.grad.abs().sum() > 0, f"no gradient reaches coupling {i + 1}"


def test_phase2_keeps_its_last_epoch_and_the_critic_in_its_checkpoint(lib, cfg, tmp_path):
    model, critic, run = phase2(lib, cfg, tmp_path / "p2", adv_epochs=2)
    assert run["best"]["epoch"] == 2 == run["hist"]["epoch"][-1], "phase 2 keeps the last epoch, not the best one"
    last = lib.load_checkpoint(tmp_path / "p2" / "last.pt")
    assert {"critic", "opt_d", "gens"} <= set(last) and len(last["gens"]) == 2
    again = lib.Critic(cfg["critic_width"])
    again.load_state_dict(last["critic"])
    assert torch.equal(flat(again), flat(critic))
    assert last["opt_d"]["state"], "the critic's optimizer state is saved"


def test_phase2_has_its_own_run_folder(lib, cfg):
    """Phase 2's folder differs from phase 1's, hashes its start (phase 1's settings and epochs) and its own settings,
    but not its epochs: more epochs resume it."""
    p1, p2 = lib.run_dir("r", cfg), lib.run_dir("r", cfg, adv=True)
    assert p1 != p2 and p2.name.startswith("flow_adv_")
    assert lib.run_dir("r", {**cfg, "adv_epochs": 9}, adv=True) == p2
    for k, v in (("adv_weight", 2.0), ("critic_r1", 0.0), ("critic_width", 8), ("epochs", 99), ("lr", 1e-4)):
        assert lib.run_dir("r", {**cfg, k: v}, adv=True) != p2, k
    assert lib.run_dir("r", {**cfg, "adv_weight": 2.0}) == p1, "phase 1's folder does not depend on phase 2"


@pytest.mark.slow
def test_phase2_killed_mid_epoch_resumes_bit_identically(lib, tmp_path):
    def tiny(ckpt, out, *extra):
        cmd = [sys.executable, str(HERE / "tiny_run.py"), str(ckpt), str(out), *extra, "--critic"]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, timeout=300)

    plain = tiny(tmp_path / "a", tmp_path / "a.json")
    assert plain.returncode == 0, plain.stderr
    killed = tiny(tmp_path / "b", tmp_path / "b.json", "2", "1")
    assert killed.returncode == -9 and lib.load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    again = tiny(tmp_path / "b", tmp_path / "b.json")
    assert again.returncode == 0, again.stderr
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert b["resumed_after"] == 1 and a["hist"]["epoch"] == [1, 2, 3] == list(range(1, CHANGES["adv_epochs"] + 1))
    assert {k: v for k, v in a.items() if k != "resumed_after"} == {k: v for k, v in b.items() if k != "resumed_after"}


def test_bad_phase2_settings_are_refused(lib, cfg, tmp_path):
    with pytest.raises(ValueError, match=r"adv_weight \(W\) must be >= 0, got -1.0"):
        phase2(lib, cfg, tmp_path / "neg", adv_weight=-1.0)
    with pytest.raises(ValueError, match="did you mean 'adv_weight'"):
        lib.check_config({**cfg, "adv_weigth": 1.0})


@pytest.mark.parametrize("coupling", ["additive", "spline"])
def test_the_critic_fine_tunes_the_studies_couplings(lib, cfg, coupling, tmp_path):
    """The studies' variants (bench/) go through the notebook's own phase 2."""
    from bench.common import Flow
    torch.manual_seed(cfg["seed"])
    model = Flow(**{k: cfg[k] for k in lib.MODEL_KEYS}, coupling=coupling)
    torch.manual_seed(cfg["seed"])
    critic = lib.Critic(cfg["critic_width"])
    train_pix, val_pix = data()
    run = lib.fit(model, train_pix, lib.dequantize(val_pix, 1), {**cfg, "adv_epochs": 1}, tmp_path, critic=critic,
                  quiet=True)
    assert math.isfinite(run["hist"]["val_bpd"][0]) and model.kwargs["coupling"] == coupling


# ---------------------------------------------------------------- phase 2's loss, computed independently
def hand_written_phase2(lib, cfg, weight, epochs=1):
    """Phase 2 written out here from the notebook's equation, step by step: for each batch of the data order of a
    generator seeded with the seed, a critic step (Adam, critic_lr, betas 0.5, 0.999) on
    softplus(-D(x)) + softplus(D(x~)) + r1/2 |grad_x D(x)|^2 with x~ = f^-1(z) held fixed, then one flow step (Adam,
    adv_lr, betas 0.5, 0.999, gradients clipped) on  mean bpd(x) + W mean log(1 + exp(-D(f^-1(z)))), z from a
    generator seeded with seed + 1. Returns (flow, critic)."""
    model = new_model(lib, cfg)
    torch.manual_seed(cfg["seed"])
    critic = lib.Critic(cfg["critic_width"])
    train_pix, _ = data()
    opt = torch.optim.Adam(model.parameters(), lr=cfg["adv_lr"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg["critic_lr"], betas=(0.5, 0.999))
    gen, zgen = torch.Generator().manual_seed(cfg["seed"]), torch.Generator().manual_seed(cfg["seed"] + 1)
    for _ in range(epochs):
        for idx in torch.randperm(len(train_pix), generator=gen).split(cfg["batch_size"]):
            x = lib.dequantize(train_pix[idx], gen)
            z = torch.randn(len(x), lib.D, generator=zgen)
            # change of variables, written out: log p(x) = log N(f(x); 0, I) + log|det|
            fx, log_det = model(x)
            log_px = -0.5 * (fx ** 2).sum(1) - 0.5 * lib.D * math.log(2 * math.pi) + log_det
            bpd = (lib.D * math.log(256) - log_px) / (lib.D * math.log(2))
            fake = model.inverse(z)
            real = x.clone().requires_grad_(True)
            d_real = critic(real)
            grad, = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            d_loss = (torch.log1p(torch.exp(-d_real)) + torch.log1p(torch.exp(critic(fake.detach())))).mean() \
                + cfg["critic_r1"] / 2 * (grad ** 2).sum(1).mean()
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            loss = bpd.mean() + weight * torch.log1p(torch.exp(-critic(fake))).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            opt.step()
    return model, critic


@pytest.mark.parametrize("weight", [0.5, 3.0])
def test_phase2_steps_equal_the_equation_written_out(lib, cfg, tmp_path, weight):
    """fit's phase 2 for a known batch order, critic and W against the hand-written loop above: a wrong weight, a
    wrong sign, a detached adversarial term or a critic that trains on the flow's graph all change the weights."""
    _, critic, _ = phase2(lib, cfg, tmp_path / "fit", adv_weight=weight, adv_epochs=1)
    raw = lib.load_checkpoint(tmp_path / "fit" / "last.pt")["model"]
    model, hand_critic = hand_written_phase2(lib, cfg, weight)
    for k, v in model.state_dict().items():
        assert torch.allclose(raw[k], v, atol=1e-6, rtol=1e-5), k
    assert torch.allclose(flat(critic), flat(hand_critic), atol=1e-6, rtol=1e-5)
    # the comparison has teeth: the same loop with another W, or with the term's sign flipped, ends elsewhere
    other, _ = hand_written_phase2(lib, cfg, weight * 1.5)
    flipped, _ = hand_written_phase2(lib, cfg, -weight)
    for m in (other, flipped):
        assert not all(torch.allclose(raw[k], v, atol=1e-6, rtol=1e-5) for k, v in m.state_dict().items())


def test_hybrid_loss_is_bpd_plus_w_times_the_non_saturating_term(lib):
    """Its value, and its gradient, which reaches the samples (the flow) and not only the critic."""
    torch.manual_seed(0)
    critic = lib.Critic(4)
    fake = (torch.rand(6, lib.D) * 0.5 + 0.25).requires_grad_(True)
    bpd = torch.tensor(1.7, requires_grad=True)
    loss = lib.hybrid_loss(bpd, critic, fake, 2.5)
    d = critic(fake).detach()
    assert loss.item() == pytest.approx(1.7 + 2.5 * torch.log1p(torch.exp(-d)).mean().item(), rel=1e-6)
    loss.backward()
    assert bpd.grad.item() == pytest.approx(1.0)
    fake2 = fake.detach().clone().requires_grad_(True)
    (2.5 * torch.log1p(torch.exp(-critic(fake2))).mean()).backward()
    assert fake.grad.abs().sum() > 0 and torch.allclose(fake.grad, fake2.grad, atol=1e-7)


def test_the_critic_step_in_fit_moves_the_critic_and_not_the_flow(lib, cfg, tmp_path, monkeypatch):
    """Around every critic step of fit's phase 2: the critic's weights change; the flow's weights and gradients
    do not (its samples reach the critic detached)."""
    seen, real_step = [], lib.critic_step
    model_box = {}

    def spy(critic, opt, real, fake, r1):
        model = model_box["model"]
        before = ([p.detach().clone() for p in model.parameters()],
                  [None if p.grad is None else p.grad.clone() for p in model.parameters()], flat(critic))
        out = real_step(critic, opt, real, fake, r1)
        assert not fake.requires_grad
        for p, v, g in zip(model.parameters(), before[0], before[1], strict=True):
            assert torch.equal(p.detach(), v)
            assert (p.grad is None) == (g is None) and (g is None or torch.equal(p.grad, g))
        seen.append(not torch.equal(flat(critic), before[2]))
        return out

    monkeypatch.setattr(lib, "critic_step", spy)
    cfg = {**cfg, "adv_weight": 1.0, "adv_epochs": 1}
    model_box["model"] = model = new_model(lib, cfg)
    torch.manual_seed(cfg["seed"])
    train_pix, val_pix = data()
    lib.fit(model, train_pix, lib.dequantize(val_pix, 1), cfg, tmp_path, critic=lib.Critic(cfg["critic_width"]),
            quiet=True)
    assert len(seen) == 3 and all(seen), seen


def test_critic_step_lowers_its_loss_and_r1_is_its_gradient_penalty(lib):
    torch.manual_seed(0)
    critic = lib.Critic(4)
    real, fake = torch.rand(16, lib.D) * 0.2, torch.rand(16, lib.D) * 0.2 + 0.8
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2, betas=(0.5, 0.999))
    losses = [lib.critic_step(critic, opt, real, fake, 1.0) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    x = real.clone().requires_grad_(True)
    d = critic(x)
    grad, = torch.autograd.grad(d.sum(), x)
    plain = (torch.nn.functional.softplus(-d) + torch.nn.functional.softplus(critic(fake))).mean().item()
    penalised = plain + 5.0 * grad.pow(2).sum(1).mean().item()
    opt_zero = torch.optim.SGD(critic.parameters(), lr=0.0)
    assert lib.critic_step(critic, opt_zero, real, fake, 10.0) == pytest.approx(penalised, rel=1e-5)
    assert lib.critic_step(critic, opt_zero, real, fake, 0.0) == pytest.approx(plain, rel=1e-5)
