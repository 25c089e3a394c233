"""Nothing is lost and every fault is named: checkpoints, the config, the device, and what a user passes in."""
import json
import math
import os
import re

import numpy as np
import pytest
import torch
from helpers import fake_batch, flow, perturb
from tiny_run import data, tiny_cfg


@pytest.fixture()
def tiny(lib):
    """(cfg, train_pix, val_x, fit(ckpt_dir, **changes) -> run) for 1-epoch runs of a width-16 flow."""
    cfg = {**tiny_cfg(lib), "epochs": 1}
    train_pix, val_pix = data()
    val_x = lib.fixed_dequantize(val_pix, seed=1)

    def fit(ckpt_dir, quiet=True, **changes):
        c = {**cfg, **changes}
        torch.manual_seed(0)
        model = lib.NormalizingFlow(**lib.model_kwargs(c))
        return lib.fit(model, train_pix, val_x, c, ckpt_dir, quiet=quiet)
    return cfg, fit


# --- training state: plain history, no autograd graph, devices --------------------------------------------------

def test_history_is_plain_numbers_and_a_tensor_lr_is_refused(lib, tiny, tmp_path):
    cfg, fit = tiny
    hist = fit(tmp_path)["hist"]
    json.dumps(hist)
    assert all(type(v) in (int, float) for vals in hist.values() for v in vals), hist
    with pytest.raises(ValueError, match="lr="):
        fit(tmp_path / "t", lr=torch.tensor(1e-3))


def test_moving_average_builds_no_graph_in_fit(lib, tiny, tmp_path):
    _, fit = tiny
    fit(tmp_path, ema_decay=0.9, epochs=2)
    ema = torch.load(tmp_path / "last.pt", weights_only=False)["ema"]
    assert all(a.grad_fn is None and not a.requires_grad for a in ema)


def test_checkpoint_saved_on_another_device_resumes_with_a_message(lib, tiny, tmp_path, capsys):
    """As a GPU run saves it: the shuffling generator's CPU state, and a CUDA generator's 16-byte state that no CPU
    generator can take. Resumed on a CPU, it continues after its epoch and says the draws were reseeded."""
    _, fit = tiny
    fit(tmp_path)
    ck = torch.load(tmp_path / "last.pt", weights_only=False)
    ck["gens"]["noise"] = torch.zeros(16, dtype=torch.uint8)
    ck["gen_devices"] = {"order": "cpu", "noise": "cuda"}
    torch.save(ck, tmp_path / "last.pt")
    capsys.readouterr()
    run = fit(tmp_path, epochs=2, quiet=False)
    assert run["resumed_after"] == 1 and run["epochs_trained"] == [2]
    assert "reseeded" in capsys.readouterr().out


# --- nothing is lost ----------------------------------------------------------------------------------------------

def test_checkpoints_of_other_settings_are_moved_aside(lib, tiny, tmp_path, capsys):
    _, fit = tiny
    fit(tmp_path)
    first = {n: (tmp_path / n).read_bytes() for n in ("last.pt", "best.pt")}
    run = fit(tmp_path, hidden=32, quiet=False)
    assert run["restarted"] and run["resumed_after"] is None
    (aside,) = (tmp_path / "other_runs").iterdir()
    assert {n: (aside / n).read_bytes() for n in first} == first, "the first run's files, byte for byte"
    out = capsys.readouterr().out
    assert str(aside) in out and "hidden" in out
    assert lib.load_flow(tmp_path / "best.pt")[1]["model_kw"]["hidden"] == 32


def test_cosine_schedule_is_not_stretched_on_resume(lib, tiny, tmp_path):
    """A cosine run planned for 1 epoch ends at lr 0: more epochs are a new run, not a resume that jumps back up."""
    _, fit = tiny
    fit(tmp_path, lr_schedule="cosine")
    run = fit(tmp_path, lr_schedule="cosine", epochs=2)
    assert run["restarted"] and run["epochs_trained"] == [1, 2]
    assert run["hist"]["lr"] == pytest.approx([1e-3, 5e-4])
    assert len(list((tmp_path / "other_runs").iterdir())) == 1
    step = fit(tmp_path / "step")                      # the step schedule depends on the epoch alone: resumed
    assert fit(tmp_path / "step", epochs=2)["resumed_after"] == 1 and step["hist"]["lr"] == [1e-3]


def test_a_second_training_into_the_same_folder_is_refused(lib, tiny, tmp_path):
    _, fit = tiny
    with lib.locked(lib.writable_dir(tmp_path, "test")):     # another training holds the folder
        with pytest.raises(RuntimeError, match="another process is training into"):
            fit(tmp_path)
    assert fit(tmp_path)["epochs_trained"] == [1]              # free again once it ends


def test_leftover_temporary_files_are_removed(lib, tiny, tmp_path):
    _, fit = tiny
    (tmp_path / "last.pt.12345.tmp").write_bytes(b"\x80half a pickle")     # a save killed before its rename
    fit(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))


def test_failed_write_names_the_file_and_keeps_the_old_one(lib, tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    lib.atomic_save({"epoch": 1}, path)

    def disk_full(obj, f):
        open(f, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lib.torch, "save", disk_full)
    with pytest.raises(OSError, match="could not write .*last.pt .*No space left on device.*kept"):
        lib.atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1} and not list(tmp_path.glob("*.tmp"))


def test_unwritable_checkpoint_folder_is_found_before_training(lib, tiny, tmp_path):
    cfg, _ = tiny
    (tmp_path / "a_file").write_text("")
    steps = []
    train_pix, val_pix = data()
    model = lib.NormalizingFlow(**lib.model_kwargs(cfg))
    with pytest.raises(OSError, match="cannot write to .*a_file/ckpt.*NF_CKPT_DIR"):
        lib.fit(model, train_pix, lib.fixed_dequantize(val_pix, 1), cfg, tmp_path / "a_file" / "ckpt",
                quiet=True, on_step=lambda *a: steps.append(a))
    assert steps == []


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "not_a_checkpoint"])
def test_damaged_checkpoint_is_named_with_the_fix(lib, tiny, tmp_path, damage):
    _, fit = tiny
    fit(tmp_path)
    for name in ("last.pt", "best.pt"):
        good = (tmp_path / name).read_bytes()
        bad = {"truncated": good[: len(good) // 2], "random": os.urandom(5000), "empty": b""}.get(damage)
        if bad is None:
            torch.save({"weights": 1}, tmp_path / name)
        else:
            (tmp_path / name).write_bytes(bad)
        with pytest.raises(RuntimeError, match=re.escape(str(tmp_path / name)) + " cannot be read .*Delete it"):
            lib.load_flow(tmp_path / name)
    with pytest.raises(RuntimeError, match=re.escape(str(tmp_path / "last.pt")) + " cannot be read .*Delete it"):
        fit(tmp_path, epochs=2)


def test_nan_in_the_first_epoch_says_no_checkpoint_exists(lib, tiny, tmp_path):
    cfg, _ = tiny
    train_pix, val_pix = data()
    model = lib.NormalizingFlow(**lib.model_kwargs(cfg))
    with pytest.raises(FloatingPointError, match="epoch 1, step 0; no checkpoint was written yet"):
        lib.fit(model, train_pix, lib.fixed_dequantize(val_pix, 1), {**cfg, "lr": 1e6}, tmp_path, quiet=True,
                on_step=lambda e, s, m: torch.nn.init.constant_(m.layers[0].s, float("nan")))


# --- a strict config ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"hiden": 32}, "unknown key 'hiden' (did you mean 'hidden'?)"),
    ({"cpu_bf16": "ture"}, "cpu_bf16='ture': must be True or False"),
    ({"lr_schedule": "Cosine"}, "lr_schedule='Cosine': must be one of ['step', 'cosine']"),
    ({"n_train": 100_000}, "n_train=100000: must be in [1, 50000]"),
    ({"batch_size": -5}, "batch_size=-5: must be in [1, inf]"),
    ({"epochs": 0}, "epochs=0"), ({"eval_batch": 0}, "eval_batch=0"), ({"n_train": 0}, "n_train=0"),
    ({"logit_alpha": 0.5}, "logit_alpha=0.5"), ({"hidden": "abc"}, "hidden='abc': must be an integer"),
    ({"hidden": 32.0}, "hidden=32.0: must be an integer"), ({"lr": "abc"}, "lr='abc': must be a number"),
    ({"lr": float("nan")}, "lr=nan"), ({"grad_clip": None}, "grad_clip must not be None"),
])
def test_bad_config_is_refused_with_what_it_must_be(lib, full_cfg, change, message):
    with pytest.raises(ValueError, match="bad config") as e:
        lib.check_config({**full_cfg, **change})
    assert message in str(e.value)


def test_the_notebooks_presets_pass_the_check(lib, full_cfg, quick_cfg):
    assert lib.config_errors(full_cfg) == [] and lib.config_errors(quick_cfg) == []
    assert lib.config_errors({**full_cfg, "logit_alpha": None, "ema_decay": None, "stop_val_bpd": 1.9}) == []


@pytest.mark.parametrize("value, on", [("0", False), ("1", True), ("true", True), ("False", False)])
def test_env_flags_accept_only_on_and_off(lib, monkeypatch, value, on):
    monkeypatch.setenv("NF_QUICK", value)
    assert lib.env_flag("NF_QUICK") is on


@pytest.mark.parametrize("value", ["yes", "2", " 1", ""])
def test_env_flags_refuse_anything_else(lib, monkeypatch, value):
    monkeypatch.setenv("NF_QUICK", value)
    with pytest.raises(ValueError, match="NF_QUICK="):
        lib.env_flag("NF_QUICK")


@pytest.mark.parametrize("arg, message", [
    ("hiden=32", "did you mean 'hidden'"), ("hidden=abc", "hidden='abc': must be an integer"),
    ("lr=abc", "lr='abc': must be a number"), ("cpu_bf16=ture", "cpu_bf16='ture': must be True or False"),
    ("lr_schedule=Cosine", "must be one of"), ("epochs", "not key=value"), ("n_train=100000", "[1, 50000]"),
])
def test_script_overrides_are_parsed_strictly(full_cfg, arg, message):
    from bench.common import parse_overrides
    with pytest.raises(ValueError) as e:
        parse_overrides([arg], full_cfg)
    assert message in str(e.value)


def test_script_overrides_parse_every_type(full_cfg):
    from bench.common import parse_overrides
    got = parse_overrides(["hidden=32", "lr=2e-3", "cpu_bf16=true", "ema_decay=None", "lr_schedule=cosine",
                           "logit_alpha=1e-5"], full_cfg)
    assert got == {"hidden": 32, "lr": 2e-3, "cpu_bf16": True, "ema_decay": None, "lr_schedule": "cosine",
                   "logit_alpha": 1e-5}


# --- what a user passes to the model ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, fix", [(torch.float64, "x.float()"), (torch.float16, "x.float()"),
                                        (torch.bfloat16, "x.float()")])
def test_wrong_dtype_says_what_to_pass(lib, dtype, fix):
    model = flow(lib, hidden=16)
    with pytest.raises(ValueError, match=rf"dtype {dtype} but the model is torch.float32: pass {fix}"):
        model.calc_likelihood(fake_batch(2).to(dtype))
    with pytest.raises(ValueError, match=r"pass z.float\(\)"):
        model.inverse(torch.randn(2, 784, dtype=dtype))


def test_wrong_device_says_what_to_pass(lib):
    model = flow(lib, hidden=16)
    with pytest.raises(ValueError, match=r"x is on meta but the model is on cpu: pass x.to\('cpu'\)"):
        model(torch.empty(2, 784, device="meta"))


def test_sample_takes_numpy_and_tensor_numbers_and_draws_in_batches(lib, monkeypatch):
    torch.manual_seed(0)
    model = perturb(flow(lib, hidden=16))
    one = model.sample(np.int64(3), temperature=np.float32(0.7), generator=torch.Generator().manual_seed(1))
    two = model.sample(torch.tensor(3), temperature=torch.tensor(0.7), generator=torch.Generator().manual_seed(1))
    assert one.shape == (3, 784) and torch.equal(one, two)
    sizes = []
    inverse = model.inverse
    monkeypatch.setattr(model, "inverse", lambda z: sizes.append(len(z)) or inverse(z))
    batched = model.sample(25, batch=10, generator=torch.Generator().manual_seed(2))
    assert sizes == [10, 10, 5]
    assert torch.equal(batched, model.sample(25, batch=10, generator=torch.Generator().manual_seed(2)))
    small = model.sample(5, generator=torch.Generator().manual_seed(3))      # one batch: as one draw of n latents
    assert torch.equal(small, model.inverse(torch.randn(5, 784, generator=torch.Generator().manual_seed(3))))
    for bad in (0, -1, 2.5, True, "3", torch.tensor([1, 2])):
        with pytest.raises(ValueError, match="n must be"):
            model.sample(bad)
    for bad in (-0.1, math.inf, "hot", None):
        with pytest.raises(ValueError, match="temperature must be"):
            model.sample(2, temperature=bad)


def test_evaluate_on_an_empty_set_is_a_clear_error(lib):
    with pytest.raises(ValueError, match="at least one image"):
        lib.evaluate(flow(lib, hidden=16), torch.empty(0, 784))
