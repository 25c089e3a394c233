"""Training: fit() learns on real MNIST, keeps the best epoch, stops when asked, resumes bit-identically after a
SIGKILL; what its checkpoints hold; the NaN stop; evaluate(); the data it trains on."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_run import data, new_model, tiny_cfg

HERE = Path(__file__).resolve().parent


def tiny_run(ckpt_dir, out, kill=None):
    cmd = [sys.executable, str(HERE / "tiny_run.py"), str(ckpt_dir), str(out), *map(str, kill or ())]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, timeout=300)


def without_resume(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "resumed_after"}


# ---------------------------------------------------------------- resume after a disconnect
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("plain")
    p = tiny_run(d / "ckpt", d / "out.json")
    assert p.returncode == 0, p.stderr
    return json.loads((d / "out.json").read_text())


@pytest.mark.slow
def test_two_runs_are_identical(uninterrupted, tmp_path):
    assert uninterrupted["resumed_after"] is None and uninterrupted["hist"]["epoch"] == [1, 2, 3]
    p = tiny_run(tmp_path / "ckpt", tmp_path / "out.json")
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "out.json").read_text()) == uninterrupted


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(lib, uninterrupted, tmp_path):
    """SIGKILL mid-way through epoch 2, as a Colab disconnect: the rerun resumes after epoch 1, and its curves and
    every final parameter equal those of the run that was never interrupted, bit for bit."""
    killed = tiny_run(tmp_path / "ckpt", tmp_path / "out.json", kill=(2, 1))
    assert killed.returncode == -9 and not (tmp_path / "out.json").exists()
    assert lib.load_checkpoint(tmp_path / "ckpt" / "last.pt")["epoch"] == 1
    again = tiny_run(tmp_path / "ckpt", tmp_path / "out.json")
    assert again.returncode == 0, again.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["resumed_after"] == 1
    assert without_resume(result) == without_resume(uninterrupted)


# ---------------------------------------------------------------- fit() on real MNIST
MNIST_FIT = {"hidden": 32, "n_train": 1000, "epochs": 3, "batch_size": 50, "eval_batch": 128}


@pytest.fixture(scope="module")
def mnist_fit(lib, quick_cfg, mnist, tmp_path_factory):
    """Three epochs on 1,000 MNIST training images, validated on 500 held-out ones (500 = 3 x 128 + 116: the last
    validation batch is uneven)."""
    cfg = {**quick_cfg, **MNIST_FIT}
    train_pix, val_x = mnist["train_x"][:1000], lib.dequantize(mnist["train_x"][50_000:50_500], 1)
    untrained = lib.evaluate(new_model(lib, cfg), val_x)
    model = new_model(lib, cfg)
    run = lib.fit(model, train_pix, val_x, cfg, tmp_path_factory.mktemp("mnist_fit"), quiet=True)
    return {"cfg": cfg, "train_pix": train_pix, "val_x": val_x, "model": model, "run": run, "untrained": untrained}


def test_fit_on_mnist_improves_validation_every_epoch(lib, mnist_fit):
    hist = mnist_fit["run"]["hist"]
    assert hist["epoch"] == [1, 2, 3] and mnist_fit["run"]["resumed_after"] is None
    first_gain = lib.bits_per_dim(mnist_fit["untrained"]) - hist["val_bpd"][0]
    assert first_gain > 0.5, f"one epoch should learn a lot: untrained {lib.bits_per_dim(mnist_fit['untrained'])}"
    gains = [a - b for a, b in zip(hist["val_bpd"][:-1], hist["val_bpd"][1:], strict=True)]
    assert min(gains) > 0.05, f"validation must improve every epoch by a margin: {hist['val_bpd']}"
    assert hist["loss_bpd"][-1] < hist["loss_bpd"][0] - 0.5, "the training loss falls"
    assert hist["train_bpd"][-1] < hist["train_bpd"][0] - 0.5
    assert hist["lr"] == pytest.approx([1e-3, 1e-3 * 0.99, 1e-3 * 0.99 ** 2], rel=1e-12)


def test_best_is_the_epoch_of_the_best_validation(lib, mnist_fit):
    run, hist = mnist_fit["run"], mnist_fit["run"]["hist"]
    best_i = max(range(len(hist["val_nats"])), key=hist["val_nats"].__getitem__)
    assert run["best"]["epoch"] == hist["epoch"][best_i] and run["best"]["val_nats"] == hist["val_nats"][best_i]
    # the model fit() leaves loaded is that epoch's averaged weights
    assert lib.evaluate(mnist_fit["model"], mnist_fit["val_x"], 128) == pytest.approx(hist["val_nats"][best_i],
                                                                                      rel=1e-9)


def test_best_is_not_the_last_epoch_when_the_last_is_worse(lib, tmp_path):
    """Weights wrecked before the last step of epoch 3 (raw weights validated): best.pt must stay an earlier epoch."""
    cfg = {**tiny_cfg(lib), "ema_decay": None}
    train_pix, val_pix = data()
    val_x = lib.dequantize(val_pix, 1)

    def wreck(epoch, step, model):
        if (epoch, step) == (3, 2):                     # every s_i + 1: z grows by e^4, the likelihood falls
            with torch.no_grad():
                for layer in model.layers:
                    layer.s.add_(1.0)

    model = new_model(lib, cfg)
    run = lib.fit(model, train_pix, val_x, cfg, tmp_path, on_step=wreck, quiet=True)
    vals = run["hist"]["val_nats"]
    assert vals[2] < min(vals[:2]) - 100, vals
    best_i = max(range(3), key=vals.__getitem__)
    assert run["best"]["epoch"] == best_i + 1 != 3
    assert lib.evaluate(model, val_x) == pytest.approx(vals[best_i], rel=1e-9)
    assert lib.load_checkpoint(tmp_path / "best.pt")["epoch"] == best_i + 1


def test_stop_val_bpd_stops_training(lib, mnist_fit, tmp_path):
    hist = mnist_fit["run"]["hist"]
    assert mnist_fit["run"]["stopped_early"] is False
    cfg = {**mnist_fit["cfg"], "stop_val_bpd": (hist["val_bpd"][0] + hist["val_bpd"][1]) / 2}   # reached at epoch 2
    run = lib.fit(new_model(lib, cfg), mnist_fit["train_pix"], mnist_fit["val_x"], cfg, tmp_path, quiet=True)
    assert run["stopped_early"] is True and run["hist"]["epoch"] == [1, 2]
    assert run["hist"]["val_bpd"] == pytest.approx(hist["val_bpd"][:2], rel=1e-6), "the same run, stopped"
    assert lib.load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


def test_evaluate_over_an_uneven_last_batch_is_the_mean_over_images(lib, mnist_fit):
    model, x = mnist_fit["model"], mnist_fit["val_x"][:100]
    with torch.no_grad():
        per_image = torch.cat([model.calc_likelihood(x[i:i + 1]) for i in range(len(x))]).double()
    for batch in (32, 7, 100, 1000):                                   # 100 = 3 x 32 + 4 = 14 x 7 + 2
        assert lib.evaluate(model, x, batch) == pytest.approx(per_image.mean().item(), rel=1e-6), batch
    assert lib.evaluate(model, x[:1], 128) == pytest.approx(per_image[0].item(), rel=1e-6)


# ---------------------------------------------------------------- resume rules, checkpoints, the NaN stop
def tiny_fit(lib, ckpt_dir, on_step=None, **changes):
    cfg = {**tiny_cfg(lib), **changes}
    train_pix, val_pix = data()
    return lib.fit(new_model(lib, cfg), train_pix, lib.dequantize(val_pix, 1), cfg, ckpt_dir, on_step=on_step,
                   quiet=True)


def test_more_epochs_resume_and_other_settings_are_refused(lib, tmp_path):
    run = tiny_fit(lib, tmp_path, epochs=1)
    assert run["resumed_after"] is None and run["hist"]["epoch"] == [1]
    run = tiny_fit(lib, tmp_path, epochs=2, clf_epochs=2)     # a report setting changed, one more epoch asked for
    assert run["resumed_after"] == 1 and run["hist"]["epoch"] == [1, 2]
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError, match="holds a run with other settings: train into run_dir"):
        tiny_fit(lib, tmp_path, epochs=2, lr=5e-4)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files, "the other run's files are untouched"


def test_run_dir_names_a_folder_per_training_setting(lib):
    cfg = tiny_cfg(lib)
    name = lib.run_dir("root", cfg)
    assert name.parent == Path("root") and name.name.startswith("flow_")
    for key in lib.TRAIN_KEYS:                     # every training setting gives its own folder
        other = {**cfg, key: "changed"}
        assert lib.run_dir("root", other) != name, key
    for key in ("epochs", "clf_epochs", "n_quality", "eval_batch"):       # settings that do not change the weights
        assert lib.run_dir("root", {**cfg, key: 7}) == name, key
    cos = {**cfg, "lr_schedule": "cosine"}             # a cosine schedule depends on the planned epochs
    assert lib.run_dir("root", cos) != lib.run_dir("root", {**cos, "epochs": cfg["epochs"] + 1})


def test_cosine_schedule_follows_its_planned_epochs(lib, tmp_path):
    run = tiny_fit(lib, tmp_path, epochs=2, lr_schedule="cosine")
    assert run["hist"]["lr"] == pytest.approx([1e-3, 5e-4])


def test_checkpoints_hold_plain_numbers_and_no_autograd_state(lib, tmp_path):
    run = tiny_fit(lib, tmp_path, epochs=2, ema_decay=0.9)
    json.dumps(run["hist"])
    assert all(type(v) in (int, float) for vals in run["hist"].values() for v in vals), run["hist"]

    def tensors(obj):
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from tensors(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                yield from tensors(v)

    for name in ("last.pt", "best.pt"):
        ck = lib.load_checkpoint(tmp_path / name)
        ts = list(tensors(ck))
        assert len(ts) > 20 and all(t.grad_fn is None and not t.requires_grad for t in ts), name
        rebuilt = lib.NormalizingFlow(**ck["model_kw"])
        rebuilt.load_state_dict(ck["model"])              # strict: the checkpoint rebuilds the exact model


def test_fit_validates_and_keeps_the_moving_average(lib, tmp_path):
    cfg = {**tiny_cfg(lib), "epochs": 2, "ema_decay": 0.9}
    train_pix, val_pix = data()
    val_x = lib.dequantize(val_pix, 1)
    model = new_model(lib, cfg)
    run = lib.fit(model, train_pix, val_x, cfg, tmp_path, quiet=True)
    hist, best = run["hist"], run["best"]
    # the model left loaded is the average that was validated, not the raw weights of the last epoch
    assert lib.evaluate(model, val_x) == pytest.approx(best["val_nats"], rel=1e-9)
    last = lib.load_checkpoint(tmp_path / "last.pt")
    raw = lib.NormalizingFlow(**last["model_kw"])
    raw.load_state_dict(last["model"])
    assert abs(lib.evaluate(raw, val_x) - hist["val_nats"][-1]) > 1e-3, "the raw weights are not what was validated"
    avg = lib.NormalizingFlow(**last["model_kw"])
    avg.load_state_dict({k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")})
    assert lib.evaluate(avg, val_x) == pytest.approx(hist["val_nats"][-1], rel=1e-9)


def test_both_curves_are_measured_alike_on_fixed_images(lib, tmp_path):
    """The training curve is the averaged weights' mean log-likelihood of the first len(val_x) training images,
    dequantized once with the validation noise seed: the same measurement as validation, on training images."""
    cfg = {**tiny_cfg(lib), "epochs": 2, "ema_decay": 0.9}
    train_pix, val_pix = data()
    val_x = lib.dequantize(val_pix, 1)
    model = new_model(lib, cfg)
    run = lib.fit(model, train_pix, val_x, cfg, tmp_path, quiet=True)
    hist = run["hist"]
    fixed = lib.dequantize(train_pix[:len(val_x)], cfg["val_noise_seed"])
    last = lib.load_checkpoint(tmp_path / "last.pt")
    avg = lib.NormalizingFlow(**last["model_kw"])
    avg.load_state_dict({k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")})
    assert lib.evaluate(avg, fixed) == pytest.approx(hist["train_nats"][-1], rel=1e-9)
    assert hist["train_bpd"][-1] == pytest.approx(lib.bits_per_dim(hist["train_nats"][-1]), rel=1e-12)
    assert abs(hist["train_bpd"][-1] - hist["loss_bpd"][-1]) > 1e-4, "not the mean of the training loss"


def test_nan_mid_epoch_names_the_step_and_keeps_the_last_good_checkpoint(lib, tmp_path):
    def inject(epoch, step, model):
        if (epoch, step) == (2, 1):
            with torch.no_grad():
                model.layers[1].net[0].weight[0, 0] = float("nan")

    with pytest.raises(FloatingPointError, match=r"epoch 2, step 1; .*last.pt holds epoch 1"):
        tiny_fit(lib, tmp_path, on_step=inject)
    for name in ("last.pt", "best.pt"):
        ck = lib.load_checkpoint(tmp_path / name)
        assert ck["epoch"] == 1
        assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_nan_in_the_first_epoch_leaves_no_checkpoint(lib, tmp_path):
    with pytest.raises(FloatingPointError, match="epoch 1, step 0; no checkpoint was written"):
        tiny_fit(lib, tmp_path, on_step=lambda e, s, m: torch.nn.init.constant_(m.layers[0].s, float("nan")))
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------- the data
def test_dequantize_bins_noise_and_seeds(lib):
    pix = torch.tensor([[0, 255, 128]], dtype=torch.uint8).repeat(2000, 1)
    x = lib.dequantize(pix, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32
    assert torch.equal(lib.to_uint8(x), pix) and torch.equal((x * 256).floor(), pix.float())
    u = x.double() * 256 - pix.double()
    assert abs(u.mean().item() - 0.5) < 0.02 and abs(u.var().item() - 1 / 12) < 0.005      # u ~ U[0, 1)
    assert torch.equal(lib.dequantize(pix, 5), lib.dequantize(pix, torch.Generator().manual_seed(5)))
    assert not torch.equal(lib.dequantize(pix, 5), lib.dequantize(pix, 6))


def test_dequantize_stays_below_1_at_the_largest_u(lib, monkeypatch):
    """u = the largest float32 below 1: (255 + u) / 256 rounds to 1.0 in float32 unless the code prevents it. Every
    value must stay in [0, 1) and map back to its pixel: floor(256 x) = k."""
    top = 1 - 2 ** -24
    assert torch.tensor(top, dtype=torch.float32).item() == top and torch.tensor(top) < 1
    monkeypatch.setattr(lib.torch, "rand", lambda shape, generator=None, **kw: torch.full(shape, top))
    pix = torch.arange(256, dtype=torch.uint8)[None]
    x = lib.dequantize(pix, 0)
    assert x.max() < 1 and x.min() >= 0
    assert torch.equal((x.double() * 256).floor(), pix.double()), "each value still falls in its own bin"


def test_mnist_splits_are_in_range_disjoint_and_reproducible(lib, full_cfg, mnist_dir, mnist, monkeypatch):
    """The full configuration's validation and test sets, all 20,000 images: every value in [0, 1) and in its
    pixel's bin, validation images taken from the training file but not among the training images."""
    monkeypatch.setenv("NF_DATA_DIR", str(mnist_dir))
    d = lib.mnist_splits(full_cfg)
    assert d["train_pix"].dtype == torch.uint8 and d["train_pix"].shape == (full_cfg["n_train"], 784)
    assert d["val_x"].shape == (full_cfg["n_val"], 784) and d["test_x"].shape == (full_cfg["n_test"], 784)
    for k in ("val_x", "test_x"):
        assert d[k].dtype == torch.float32 and d[k].min() >= 0 and d[k].max() < 1, k
    assert torch.equal(lib.to_uint8(d["test_x"]), mnist["test_x"][:full_cfg["n_test"]])
    perm = torch.randperm(60_000, generator=torch.Generator().manual_seed(full_cfg["data_seed"]))
    assert torch.equal(lib.to_uint8(d["val_x"]), mnist["train_x"][perm[50_000:50_000 + full_cfg["n_val"]]])
    assert torch.equal(d["train_pix"], mnist["train_x"][perm[:full_cfg["n_train"]]])
    again = lib.mnist_splits(full_cfg)
    assert all(torch.equal(d[k], again[k]) for k in d), "the split and the fixed noise are reproducible"


def test_uint8_bins_round_trip(lib):
    k = torch.arange(256, dtype=torch.uint8)[None]
    assert torch.equal(lib.to_uint8(lib.from_uint8(k)), k)
    x = torch.tensor([[0.0, 1.0, 0.999, 1 / 256, 1 / 256 - 1e-6]])
    assert lib.to_uint8(x).tolist() == [[0, 255, 255, 1, 0]]
    assert math.isclose(lib.from_uint8(torch.tensor([255], dtype=torch.uint8)).item(), 255.5 / 256)
