"""Training robustness: resume after SIGKILL, atomic checkpoints, the NaN guard, determinism."""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


def tiny_run(ckpt_dir, out, kill=None):
    cmd = [sys.executable, str(HERE / "tiny_run.py"), str(ckpt_dir), str(out), *map(str, kill or ())]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("plain")
    p = tiny_run(d / "ckpt", d / "out.json")
    assert p.returncode == 0, p.stderr
    return json.loads((d / "out.json").read_text()), d


def test_two_runs_are_identical(uninterrupted, tmp_path):
    first, _ = uninterrupted
    p = tiny_run(tmp_path / "ckpt", tmp_path / "out.json")
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "out.json").read_text()) == first


def test_resume_after_sigkill_matches_uninterrupted_run(uninterrupted, tmp_path):
    first, _ = uninterrupted
    killed = tiny_run(tmp_path / "ckpt", tmp_path / "out.json", kill=(2, 1))      # mid-way through epoch 2
    assert killed.returncode == -9 and not (tmp_path / "out.json").exists()
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)["epoch"] == 1
    again = tiny_run(tmp_path / "ckpt", tmp_path / "out.json")
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stdout and "after epoch 1" in again.stdout   # only epoch 2 is repeated
    trained = re.findall(r"epoch +(\d+): +\d+%\|", again.stdout)       # tqdm bars of the epochs trained now
    assert sorted(set(trained)) == ["2", "3"]
    assert json.loads((tmp_path / "out.json").read_text()) == first


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
    assert "after epoch 1" in p.stdout


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
    sys.path.insert(0, str(HERE))
    from tiny_run import CFG, data

    torch.manual_seed(0)
    model = lib.NormalizingFlow(hidden=CFG["hidden"])
    train_pix, val_pix = data()
    val_x = lib.fixed_dequantize(val_pix, seed=1)

    def inject(epoch, step, model):
        if (epoch, step) == (2, 1):
            with torch.no_grad():
                model.layers[1].net[0].weight[0, 0] = float("nan")

    with pytest.raises(FloatingPointError, match=r"epoch 2, step 1"):
        lib.fit(model, train_pix, val_x, CFG, tmp_path, on_step=inject)
    for name in ("last.pt", "best.pt"):
        ck = torch.load(tmp_path / name, weights_only=False)
        assert ck["epoch"] == 1
        assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_inverse_finite_for_perturbed_model(lib):
    from helpers import perturb

    torch.manual_seed(0)
    model = perturb(lib.NormalizingFlow(hidden=64), std=0.2)
    with torch.no_grad():
        x = model.inverse(torch.randn(10_000, 784))
        assert torch.isfinite(x).all()
        s = model.sample(2000)
    assert torch.isfinite(s).all() and not math.isnan(s.mean().item())


def test_resume_only_when_training_keys_match(lib, tmp_path, capsys):
    sys.path.insert(0, str(HERE))
    from tiny_run import CFG, data

    train_pix, val_pix = data()
    val_x = lib.fixed_dequantize(val_pix, seed=1)

    def fit(**changes):
        torch.manual_seed(0)
        model = lib.NormalizingFlow(hidden=CFG["hidden"])
        return lib.fit(model, train_pix, val_x, {**CFG, **changes}, tmp_path)

    fit(epochs=1, clf_epochs=2)
    capsys.readouterr()
    hist, _ = fit(epochs=2, clf_epochs=6)           # a report setting changed, and one more epoch asked for
    out = capsys.readouterr().out
    assert "after epoch 1" in out and "(restored)" in out and hist["epoch"] == [1, 2]
    hist, _ = fit(epochs=2, lr=5e-4)                # a training setting changed: start over
    out = capsys.readouterr().out
    assert "another config" in out and "epoch   1:" in out and hist["epoch"] == [1, 2]
