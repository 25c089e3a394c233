"""Training robustness: resume after SIGKILL, atomic checkpoints, the NaN guard, determinism, the train step."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import fake_batch, flow, perturb
from tiny_run import data, tiny_cfg

HERE = Path(__file__).resolve().parent


def tiny_run(ckpt_dir, out, kill=None):
    cmd = [sys.executable, str(HERE / "tiny_run.py"), str(ckpt_dir), str(out), *map(str, kill or ())]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, timeout=300)


def without_run(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "run"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("plain")
    p = tiny_run(d / "ckpt", d / "out.json")
    assert p.returncode == 0, p.stderr
    return json.loads((d / "out.json").read_text()), d


@pytest.mark.slow
def test_two_runs_are_identical(uninterrupted, tmp_path):
    first, _ = uninterrupted
    assert first["run"] == {"epochs_trained": [1, 2, 3], "resumed_after": None, "restarted": False}
    p = tiny_run(tmp_path / "ckpt", tmp_path / "out.json")
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "out.json").read_text()) == first


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(uninterrupted, tmp_path):
    first, _ = uninterrupted
    killed = tiny_run(tmp_path / "ckpt", tmp_path / "out.json", kill=(2, 1))      # mid-way through epoch 2
    assert killed.returncode == -9 and not (tmp_path / "out.json").exists()
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)["epoch"] == 1
    again = tiny_run(tmp_path / "ckpt", tmp_path / "out.json")
    assert again.returncode == 0, again.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["run"] == {"epochs_trained": [2, 3], "resumed_after": 1, "restarted": False}
    assert without_run(result) == without_run(first)


@pytest.mark.slow
def test_half_written_checkpoint_is_never_loaded(uninterrupted, tmp_path):
    first, d = uninterrupted
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    state = torch.load(d / "ckpt" / "last.pt", weights_only=False)
    state["epoch"], state["hist"] = 1, {k: v[:1] for k, v in state["hist"].items()}
    torch.save(state, ckpt / "last.pt")
    (ckpt / "last.pt.tmp").write_bytes(b"\x80half a pickle")      # a save killed before its rename
    p = tiny_run(ckpt, tmp_path / "out.json")
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "out.json").read_text())["run"]["resumed_after"] == 1


def test_atomic_save_keeps_old_file_when_write_fails(lib, tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    lib.atomic_save({"epoch": 1}, path)

    def broken_save(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(lib.torch, "save", broken_save)
    with pytest.raises(OSError):
        lib.atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}


def test_nan_stops_training_and_keeps_last_good_checkpoint(lib, tmp_path):
    cfg = tiny_cfg(lib)
    torch.manual_seed(0)
    model = lib.NormalizingFlow(**lib.model_kwargs(cfg))
    train_pix, val_pix = data()
    val_x = lib.fixed_dequantize(val_pix, seed=1)

    def inject(epoch, step, model):
        if (epoch, step) == (2, 1):
            with torch.no_grad():
                model.layers[1].net[0].weight[0, 0] = float("nan")

    # the flag is read only at the end of the epoch (check_every > steps per epoch), yet names the step it came from
    assert cfg["check_every"] > math.ceil(len(train_pix) / cfg["batch_size"])
    with pytest.raises(FloatingPointError, match=r"epoch 2, step 1"):
        lib.fit(model, train_pix, val_x, cfg, tmp_path, quiet=True, on_step=inject)
    for name in ("last.pt", "best.pt"):
        ck = torch.load(tmp_path / name, weights_only=False)
        assert ck["epoch"] == 1
        assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_inverse_finite_for_perturbed_model(lib):
    torch.manual_seed(0)
    model = perturb(flow(lib, hidden=64), std=0.2)
    with torch.no_grad():
        x = model.inverse(torch.randn(10_000, 784))
        assert torch.isfinite(x).all()
        s = model.sample(2000)
    assert torch.isfinite(s).all() and not math.isnan(s.mean().item())


def test_resume_only_when_training_keys_match(lib, tmp_path):
    base = tiny_cfg(lib)
    train_pix, val_pix = data()
    val_x = lib.fixed_dequantize(val_pix, seed=1)

    def fit(**changes):
        torch.manual_seed(0)
        model = lib.NormalizingFlow(**lib.model_kwargs(base))
        return lib.fit(model, train_pix, val_x, {**base, **changes}, tmp_path, quiet=True)

    run = fit(epochs=1, clf_epochs=2)
    assert run["epochs_trained"] == [1] and run["resumed_after"] is None
    run = fit(epochs=2, clf_epochs=6)            # a report setting changed, and one more epoch asked for
    assert run["resumed_after"] == 1 and run["epochs_trained"] == [2] and run["hist"]["epoch"] == [1, 2]
    run = fit(epochs=2, lr=5e-4)                 # a training setting changed: start over
    assert run["restarted"] and run["resumed_after"] is None and run["epochs_trained"] == [1, 2]
    run = fit(epochs=2, lr=5e-4, cpu_bf16=not base["cpu_bf16"])   # the precision is part of the run too
    assert run["restarted"] and run["epochs_trained"] == [1, 2]
    run = fit(epochs=2, lr=5e-4, cpu_bf16=not base["cpu_bf16"], ema_decay=0.5)   # and the weights evaluated
    assert run["restarted"] and run["epochs_trained"] == [1, 2]


def test_moving_average_arithmetic_and_warm_up(lib):
    params = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    ema = lib.MovingAverage(params, decay=0.9, t=1000)               # past the warm-up: d = decay
    expected = 0.0
    for x in (1.0, 2.0, 4.0):
        with torch.no_grad():
            for p in params:
                p.fill_(x)
        ema.update()
        expected = 0.9 * expected + 0.1 * x
    assert all(torch.allclose(a, torch.full_like(a, expected)) for a in ema.avg)
    assert all(torch.equal(p.detach(), torch.full_like(p, 4.0)) for p in params)     # the raw weights are untouched
    # the average is a plain tensor: no autograd graph grows behind it, however many steps
    assert all(a.grad_fn is None and not a.requires_grad for a in ema.avg)
    fresh = lib.MovingAverage([torch.zeros(3)], decay=0.999)
    fresh.params[0].fill_(5.0)
    fresh.update()                                                   # step 0: d = 1/10, mostly the new weights
    assert torch.allclose(fresh.avg[0], torch.full((3,), 0.9 * 5.0))


def test_fit_validates_keeps_and_returns_the_moving_average(lib, tmp_path):
    cfg = {**tiny_cfg(lib), "epochs": 2, "ema_decay": 0.9}
    train_pix, val_pix = data()
    val_x = lib.fixed_dequantize(val_pix, seed=1)
    torch.manual_seed(0)
    model = lib.NormalizingFlow(**lib.model_kwargs(cfg))
    run = lib.fit(model, train_pix, val_x, cfg, tmp_path, quiet=True)
    hist, best = run["hist"], run["best"]
    assert hist["val_bpd"] != hist["val_bpd_raw"]                   # two sets of weights, two validations
    # the model left loaded is the average that was validated, not the raw weights of the last epoch
    assert lib.evaluate(model, val_x, 100) == pytest.approx(best["val_nats"], rel=1e-6)
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    raw, _ = lib.load_flow(tmp_path / "last.pt")
    assert lib.bits_per_dim(lib.evaluate(raw, val_x, 100)) == pytest.approx(hist["val_bpd_raw"][-1], rel=1e-6)
    assert len(last["ema"]) == len(list(model.parameters()))
    off = lib.fit(lib.NormalizingFlow(**lib.model_kwargs(cfg)), train_pix, val_x, {**cfg, "ema_decay": None},
                  tmp_path / "off", quiet=True)
    assert off["hist"]["val_bpd"] == off["hist"]["val_bpd_raw"]


def test_train_step_lowers_the_loss_in_both_precisions(lib, quick_cfg):
    x = fake_batch(64)
    for bf16 in (False, True):
        torch.manual_seed(0)
        model = flow(lib, hidden=32)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = lib.make_train_step(model, opt, {**quick_cfg, "cpu_bf16": bf16}, torch.device("cpu"))
        losses = [step(x)[0].item() for _ in range(5)]
        assert losses[-1] < losses[0] - 0.1, (bf16, losses)
