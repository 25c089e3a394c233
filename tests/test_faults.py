"""Nothing is lost and every fault is named: atomic writes, damaged checkpoints, a strict config and environment,
missing or damaged MNIST files."""
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_run import data, new_model, tiny_cfg

from tools.nbload import NOTEBOOK, code_cells

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- atomic writes
def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(lib, tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    lib.atomic_save({"epoch": 1}, path)

    def disk_full(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lib.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        lib.atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1} and os.listdir(tmp_path) == ["last.pt"]


KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tools.nbload import load_lib
lib = load_lib()
path = Path({path!r})
lib.atomic_save({{"epoch": 1, "weights": list(range(1000))}}, path)
real_save = lib.torch.save
def half_then_killed(obj, f):
    real_save(obj, f)
    data = Path(f).read_bytes()
    Path(f).write_bytes(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
lib.torch.save = half_then_killed
lib.atomic_save({{"epoch": 2, "weights": list(range(1000))}}, path)
"""


def test_sigkill_during_a_write_leaves_the_previous_checkpoint(lib, tmp_path):
    """A process killed half-way through writing its checkpoint (a Colab disconnect): no cleanup code runs, yet the
    checkpoint's path still holds the previous, complete file."""
    path = tmp_path / "last.pt"
    p = subprocess.run([sys.executable, "-c", KILLED_WRITE.format(root=str(ROOT), path=str(path))],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert list(tmp_path.glob("*.tmp")), "the half-written temporary file is there: the kill came mid-write"
    assert torch.load(path, weights_only=False) == {"epoch": 1, "weights": list(range(1000))}


# ---------------------------------------------------------------- damaged checkpoints
@pytest.fixture(scope="module")
def one_epoch(lib, tmp_path_factory):
    """The two checkpoints of a 1-epoch tiny run, as bytes."""
    d = tmp_path_factory.mktemp("one_epoch")
    cfg = {**tiny_cfg(lib), "epochs": 1}
    train_pix, val_pix = data()
    lib.fit(new_model(lib, cfg), train_pix, lib.dequantize(val_pix, 1), cfg, d, quiet=True)
    return {n: (d / n).read_bytes() for n in ("last.pt", "best.pt")}


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "not_a_checkpoint"])
def test_damaged_checkpoint_is_named_with_the_fix(lib, one_epoch, tmp_path, damage):
    for name, good in one_epoch.items():
        (tmp_path / name).write_bytes(good)
    assert lib.load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    bad = {"truncated": one_epoch["last.pt"][: len(one_epoch["last.pt"]) // 2], "random": os.urandom(5000),
           "empty": b""}.get(damage)
    if bad is None:
        torch.save({"weights": 1}, tmp_path / "last.pt")
    else:
        (tmp_path / "last.pt").write_bytes(bad)
    message = "(?s)" + re.escape(str(tmp_path / "last.pt")) + r" cannot be read .*Delete it and run again"
    with pytest.raises(RuntimeError, match=message):
        lib.load_checkpoint(tmp_path / "last.pt")
    cfg = {**tiny_cfg(lib), "epochs": 2}
    train_pix, val_pix = data()
    with pytest.raises(RuntimeError, match=message):               # fit() meets it when it resumes
        lib.fit(new_model(lib, cfg), train_pix, lib.dequantize(val_pix, 1), cfg, tmp_path, quiet=True)
    assert (tmp_path / "best.pt").read_bytes() == one_epoch["best.pt"], "nothing else is touched"


# ---------------------------------------------------------------- a strict config and environment
def test_unknown_key_is_refused_with_the_closest_name(lib, full_cfg):
    with pytest.raises(ValueError, match=r"unknown key\(s\) 'hiden' \(did you mean 'hidden'\?\)"):
        lib.check_config({**full_cfg, "hiden": 32})
    with pytest.raises(ValueError, match=r"'adv_weigt' \(did you mean 'adv_weight'\?\), 'zzz'; "):
        lib.check_config({**full_cfg, "adv_weigt": 8, "zzz": 1})


def test_missing_key_is_named(lib, full_cfg):
    cfg = {k: v for k, v in full_cfg.items() if k not in ("lr", "pairs")}
    with pytest.raises(ValueError, match=r"missing \['lr', 'pairs'\]"):
        lib.check_config(cfg)


def test_the_notebooks_presets_pass_the_check(lib, full_cfg, quick_cfg):
    assert set(full_cfg) == set(lib.CONFIG_KEYS) - {"stop_val_bpd"}
    assert lib.check_config(full_cfg) is full_cfg and lib.check_config(quick_cfg) is quick_cfg
    lib.check_config({**full_cfg, "stop_val_bpd": 1.9})                # the optional key
    assert quick_cfg["epochs"] < full_cfg["epochs"] and quick_cfg["n_train"] < full_cfg["n_train"]


@pytest.mark.parametrize("value, on", [("0", False), ("1", True), ("true", True), ("False", False), ("TRUE", True)])
def test_env_flags_accept_only_on_and_off(lib, monkeypatch, value, on):
    monkeypatch.setenv("NF_QUICK", value)
    assert lib.env_flag("NF_QUICK") is on


def test_unset_env_flag_is_off(lib, monkeypatch):
    monkeypatch.delenv("NF_QUICK", raising=False)
    assert lib.env_flag("NF_QUICK") is False


@pytest.mark.parametrize("value", ["yes", "2", " 1", "", "on"])
def test_env_flags_refuse_anything_else(lib, monkeypatch, value):
    monkeypatch.setenv("NF_QUICK", value)
    with pytest.raises(ValueError, match="NF_QUICK="):
        lib.env_flag("NF_QUICK")


def run_control(lib, full_cfg, tmp_path, monkeypatch, quick):
    """The notebook's run-control cell, run as in the notebook after the config cell, in a scratch folder."""
    (src,) = [s for _, s in code_cells() if 'env_flag("NF_QUICK")' in s]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NF_QUICK", quick)
    for k in ("NF_OUT_DIR", "NF_CKPT_DIR"):
        monkeypatch.delenv(k, raising=False)
    ns = {**lib.__dict__, "CFG": dict(full_cfg), "DEVICE": torch.device("cpu")}
    exec(compile(src, NOTEBOOK.name, "exec"), ns)
    return ns


def test_nf_quick_is_strict_and_the_quick_preset_writes_to_quick_run(lib, full_cfg, tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="NF_QUICK='yes': use 1 or true"):
        run_control(lib, full_cfg, tmp_path, monkeypatch, "yes")
    ns = run_control(lib, full_cfg, tmp_path, monkeypatch, "1")
    assert ns["QUICK"] is True and ns["CFG"]["epochs"] == ns["QUICK_PRESET"]["epochs"]
    assert ns["OUT_DIR"] == Path("quick_run") and ns["CKPT_DIR"] == Path("quick_run/checkpoints")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quick_run"]
    ns = run_control(lib, full_cfg, tmp_path / "quick_run", monkeypatch, "0")
    assert ns["QUICK"] is False and ns["CFG"] == full_cfg and ns["OUT_DIR"] == Path(".")


# ---------------------------------------------------------------- MNIST files
def no_network(monkeypatch):
    import torchvision
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])


def test_missing_mnist_says_where_and_what_to_set(lib, tmp_path, monkeypatch):
    no_network(monkeypatch)
    with pytest.raises(RuntimeError, match="NF_DATA_DIR") as e:
        lib.load_mnist(tmp_path / "nowhere")
    assert str((tmp_path / "nowhere" / "MNIST" / "raw").resolve()) in str(e.value)


@pytest.mark.parametrize("damage", ["truncated", "empty", "longer"])
def test_damaged_idx_file_is_named_with_the_fix(lib, tmp_path, mnist_dir, monkeypatch, damage):
    """A file of the wrong size: the error names that file, and only that one, and says to delete it."""
    no_network(monkeypatch)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in lib.MNIST_BYTES:
        (raw / name).symlink_to((mnist_dir / "MNIST" / "raw" / name).resolve())
    bad = raw / "t10k-images-idx3-ubyte"
    good = bad.read_bytes()
    bad.unlink()
    bad.write_bytes({"truncated": good[:-784], "empty": b"", "longer": good + b"\0"}[damage])
    with pytest.raises(RuntimeError, match="damaged MNIST") as e:
        lib.load_mnist(tmp_path)
    msg = str(e.value)
    assert "t10k-images-idx3-ubyte" in msg and "train-images" not in msg and "Delete them" in msg
