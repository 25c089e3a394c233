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
    assert {"critic", "opt_d", "zgen"} <= set(last)
    again = lib.Critic(cfg["critic_width"])
    again.load_state_dict(last["critic"])
    assert torch.equal(flat(again), flat(critic))
    assert last["opt_d"]["state"], "the critic's optimizer state is saved"


def test_phase2_has_its_own_run_folder(lib, cfg):
    """Phase 2's folder differs from phase 1's, hashes its start (phase 1's settings and epochs) and its own settings,
    but not its epochs: more epochs resume it."""
    p1, p2 = lib.run_dir("r", cfg), lib.run_dir("r", cfg, adv=True)
    assert p1 != p2 and p2.name.startswith(f"{cfg['coupling']}_adv_")
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
def test_the_critic_fine_tunes_every_coupling(lib, cfg, coupling, tmp_path):
    model, _, run = phase2(lib, cfg, tmp_path / coupling, coupling=coupling, adv_epochs=1)
    assert math.isfinite(run["hist"]["val_bpd"][0]) and model.kwargs["coupling"] == coupling


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
