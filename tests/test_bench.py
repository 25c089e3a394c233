"""The scripts in bench/ and tools/: bench's own code (the argument rules, the bench-only training options, the
samplers, the peer model), their quick modes end to end, their errors, and the README tables they feed."""
import ast
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fake_batch, perturb

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    import bench.common
    return bench.common


@pytest.fixture(scope="module")
def cfg(bench):
    return bench.config()


def make_flow(bench, cfg, **changes):
    """bench's Flow (the notebook's NormalizingFlow plus the bench-only options) of cfg's model, some keys changed."""
    return bench.Flow(**{**{k: cfg[k] for k in bench.lib.MODEL_KEYS}, **changes})


# --- bench's own code: the argument rules ------------------------------------------------------------------------

def test_parse_overrides_reads_each_key_strictly(bench, cfg):
    parse = bench.parse_overrides
    assert parse(["hidden=32", "lr=2e-3", "ema_decay=None", "layer_scale=false", "cpu_bf16=1", "coupling=spline",
                  "tempered_betas=1.0,0.8", "pairs=[(1,7),(4,9)]", "train_noise=1.5", "logit_alpha=None"], cfg) == {
        "hidden": 32, "lr": 2e-3, "ema_decay": None, "layer_scale": False, "cpu_bf16": True, "coupling": "spline",
        "tempered_betas": [1.0, 0.8], "pairs": [[1, 7], [4, 9]], "train_noise": 1.5, "logit_alpha": None}
    assert type(parse(["epochs=3"], cfg)["epochs"]) is int and type(parse(["lr=1"], cfg)["lr"]) is float
    for arg, why in [("hiden=3", "did you mean 'hidden'"), ("epochs", "is not key=value"),
                     ("hidden=3.5", "hidden='3.5': must be an integer"), ("hidden=0", "hidden=0: must be an integer"),
                     ("lr=fast", "must be a number"), ("lr=nan", "a number"), ("hidden=None", "must not be None"),
                     ("layer_scale=yes", "True or False"), ("coupling=splin", "one of ['affine', 'additive', "),
                     ("logit_alpha=1e-9", "in [1e-06, 0.499]"),
                     ("adv_weight=-1", "adv_weight=-1.0: must be a number in [0.0, inf]"),
                     ("pairs=[(1,17)]", "digit pairs"), ("train_noise=-1", "train_noise=-1.0: must be a number in"),
                     ("noise_anneal=1.5", "must be an integer"), ("tempered_betas=0", "numbers > 0")]:
        with pytest.raises(ValueError, match=re.escape(why)):
            parse([arg], cfg)


def test_check_config_names_unknown_missing_and_bad_keys(bench, cfg):
    assert bench.check_config(dict(cfg)) == cfg
    bad = {**cfg, "hidenn": 3, "grad_clip": -1.0}
    del bad["data_seed"]
    with pytest.raises(ValueError) as e:
        bench.check_config(bad)
    msg = str(e.value)
    assert "unknown key 'hidenn' (did you mean 'hidden'?)" in msg and "grad_clip=-1.0: must be" in msg
    assert "missing key(s) ['data_seed']" in msg
    assert set(bench.RULES) == set(bench.lib.CONFIG_KEYS) | set(bench.BENCH_DEFAULTS), "a rule for every CLI key"


# --- bench's own code: the bench-only training options ------------------------------------------------------------

def test_flow_is_the_notebook_model_outside_training(bench, cfg):
    """Evaluated, bench's Flow (sigma and bf16 set) computes exactly the notebook's likelihood; in training mode the
    noise is sigma * N(0, 1) added to the logits before the couplings, drawn from the per-step seed."""
    lib = bench.lib
    torch.manual_seed(0)
    ours = perturb(make_flow(bench, cfg, hidden=16).double(), seed=1)
    assert ours.kwargs == {**{k: cfg[k] for k in lib.MODEL_KEYS}, "hidden": 16,
                           **{k: bench.BENCH_DEFAULTS[k] for k in bench.BENCH_MODEL_KEYS}}
    nb = lib.NormalizingFlow(**{k: ours.kwargs[k] for k in lib.MODEL_KEYS}).double()
    nb.load_state_dict(ours.state_dict())
    x = fake_batch(4, seed=2, dtype=torch.float64)
    ours.sigma, ours.noise_seed, ours.bf16 = 1.5, 7, True
    assert torch.equal(ours.eval().calc_likelihood(x), nb.eval().calc_likelihood(x))
    ours.bf16 = False
    noisy = ours.train().calc_likelihood(x)
    h = lib.LogitPreprocess(cfg["logit_alpha"])(x)[0]
    h = h + 1.5 * torch.randn(h.shape, generator=torch.Generator().manual_seed(7), dtype=h.dtype)
    log_det = lib.LogitPreprocess(cfg["logit_alpha"])(x)[1]
    for layer in nb.layers:
        h, ld = layer(h)
        log_det = log_det + ld
    expected = -0.5 * (h ** 2).sum(1) - 0.5 * lib.D * math.log(2 * math.pi) + log_det
    assert torch.allclose(noisy, expected, rtol=1e-12, atol=0)
    assert (noisy - nb.calc_likelihood(x)).abs().min() > 1e-3, "the noise changes the training likelihood"


def test_bf16_flow_trains_under_autocast_with_float32_couplings(bench, cfg):
    torch.manual_seed(0)
    model = perturb(make_flow(bench, cfg, hidden=32), seed=3).train()
    x = fake_batch(8, seed=4)
    fp32 = model.calc_likelihood(x)
    seen = []
    model.layers[0].net[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    model.bf16 = True
    bf16 = model.calc_likelihood(x)
    assert seen == [torch.bfloat16] and bf16.dtype == torch.float32
    assert not torch.equal(bf16, fp32) and torch.allclose(bf16, fp32, rtol=2e-2)


def test_noise_schedule_and_run_folders(bench, cfg):
    """sigma falls linearly to 0 over the last noise_anneal epochs; runs that differ in a bench-only key (or, when
    annealed, in epochs) never share a checkpoint folder, and plain runs keep the notebook's folder."""
    c = {**cfg, "epochs": 20, "train_noise": 1.5, "noise_anneal": 5}
    assert [round(bench.noise_sigma(c, e), 6) for e in (1, 15, 16, 18, 20)] == [1.5, 1.5, 1.2, 0.6, 0.0]
    assert bench.noise_sigma({**c, "noise_anneal": 0}, 20) == 1.5 and bench.noise_sigma(cfg, 1) == 0
    lib = bench.lib
    assert bench.run_dir("r", cfg) == lib.run_dir("r", cfg)
    dirs = {bench.run_dir("r", {**cfg, **d}) for d in ({}, {"train_noise": 1.0}, {"train_noise": 1.5},
                                                        {"cpu_bf16": True}, {"train_noise": 1.5, "noise_anneal": 5},
                                                        {"train_noise": 1.5, "noise_anneal": 5, "epochs": 7})}
    assert len(dirs) == 6
    assert bench.run_dir("r", {**cfg, "train_noise": 1.0, "epochs": 7}) == bench.run_dir("r", {**cfg,
                                                                                               "train_noise": 1.0})
    # the model variants: a folder each, and each other than the notebook's and than the bench-only keys' folders
    variant_dirs = {bench.run_dir("r", {**cfg, **d}) for d in (
        {"coupling": "spline"}, {"coupling": "spline", "spline_bins": 8}, {"coupling": "spline", "spline_bound": 5.0},
        {"coupling": "additive"}, {"split": "checkerboard"}, {"layer_scale": False},
        {"coupling": "spline", "train_noise": 1.0})}
    assert len(variant_dirs) == 7 and not variant_dirs & dirs
    assert bench.run_dir("r", {**cfg, "coupling": "affine"}) == lib.run_dir("r", cfg), "the defaults: the notebook's"
    assert bench.run_dir("r", {**cfg, "coupling": "spline"}, adv=True) not in {
        lib.run_dir("r", cfg, adv=True), bench.run_dir("r", {**cfg, "coupling": "spline"})}


def test_noise_run_resumes_to_the_same_weights(bench, cfg, tmp_path):
    """The noise is drawn from a seed per (epoch, step), so a run stopped early in epoch 2 and resumed ends with the
    weights of a run trained straight through; and the noise (1.0 in epoch 1, annealed to 0 in epoch 2) changes
    what is learned."""
    g = torch.Generator().manual_seed(0)
    data = {"train_pix": torch.randint(0, 256, (96, 784), generator=g, dtype=torch.uint8),
            "val_x": fake_batch(32, seed=5)}
    c = {**cfg, "hidden": 8, "batch_size": 32, "epochs": 2, "train_noise": 1.0, "noise_anneal": 1, "eval_batch": 32}
    bench.train(bench.build_model(c), data, c, tmp_path / "a", quiet=True)

    def stop(epoch, step, model):
        if (epoch, step) == (2, 1):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        bench.train(bench.build_model(c), data, c, tmp_path / "b", on_step=stop, quiet=True)
    run = bench.train(bench.build_model(c), data, c, tmp_path / "b", quiet=True)
    assert run["resumed_after"] == 1
    a, b = (bench.load_flow(p / "last.pt")[0].state_dict() for p in (tmp_path / "a", tmp_path / "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    clean = {**c, "train_noise": 0.0, "noise_anneal": 0}
    bench.train(bench.build_model(clean), data, clean, tmp_path / "c", quiet=True)
    assert not torch.equal(bench.load_flow(tmp_path / "c" / "last.pt")[0].state_dict()["layers.0.s"],
                           a["layers.0.s"]), "the noise changes training"


def test_no_logit_flow_and_layer_scale_off(bench, cfg, tmp_path):
    """logit_alpha=None (the ablation's plain [0, 1]) and layer_scale=False: exact log-dets against the Jacobian, and
    load_flow rebuilds such a model from its checkpoint's own arguments."""
    torch.manual_seed(0)
    on = make_flow(bench, cfg, hidden=16)
    off = make_flow(bench, cfg, hidden=16, layer_scale=False, logit_alpha=None).double()
    assert sum(p.numel() for p in on.parameters()) - sum(p.numel() for p in off.parameters()) == 4 * 784
    perturb(off, seed=3)
    assert all(torch.all(layer.s == 0) for layer in off.layers) and off.kwargs["logit_alpha"] is None
    x = fake_batch(1, seed=4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: off(v[None])[0][0], x[0], vectorize=True)
    assert off(x)[1].item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), rel=1e-9)
    assert torch.allclose(off.inverse(off(x)[0]), x, atol=1e-10)
    bench.lib.atomic_save({"model": off.state_dict(), "model_kw": off.kwargs, "epoch": 1, "cfg": cfg},
                          tmp_path / "best.pt")
    back, _ = bench.load_flow(tmp_path / "best.pt")
    assert torch.allclose(back.double().calc_likelihood(x), off.eval().calc_likelihood(x), rtol=1e-6, atol=0)


@pytest.mark.parametrize("variant", [{"coupling": "spline", "spline_bins": 3, "spline_bound": 6.0},
                                     {"coupling": "additive", "split": "checkerboard", "layer_scale": False}])
def test_variants_build_from_the_config_and_load_from_checkpoints(bench, cfg, tmp_path, variant):
    """build_model({**config(), "coupling": "spline", ...}) builds bench/variants.py's layers; load_flow rebuilds
    that variant from its checkpoint, and from one of an older notebook version (which wrote the variant keys into
    model_kw itself, some of them missing: split_seed, spline_bins, spline_bound, layer_scale at their defaults)."""
    from bench import variants
    c = {**cfg, "hidden": 16, **variant}
    model = perturb(bench.build_model(c), seed=8).eval()
    cls = {"spline": variants.SplineCoupling, "additive": variants.AdditiveCoupling}[variant["coupling"]]
    assert all(type(layer) is cls for layer in model.layers)
    assert model.kwargs == {k: c[k] for k in (*bench.lib.MODEL_KEYS, *bench.BENCH_MODEL_KEYS)}
    a, b = variants.make_halves(c["split"], c["split_seed"])
    assert torch.equal(model.layers[0].idx_cond, a) and torch.equal(model.layers[1].idx_cond, b)
    x = fake_batch(3, seed=9)
    for name, model_kw in (("new", model.kwargs), ("old", {k: v for k, v in model.kwargs.items() if k in (
            "hidden", "coupling", "split", "logit_alpha", "scale_bound")} | (
            {"spline_bins": 3, "spline_bound": 6.0} if variant["coupling"] == "spline" else {"layer_scale": False}))):
        bench.lib.atomic_save({"model": model.state_dict(), "model_kw": model_kw, "epoch": 1, "cfg": c},
                              tmp_path / f"{name}.pt")
        back, _ = bench.load_flow(tmp_path / f"{name}.pt")
        assert back.kwargs == model.kwargs and all(type(layer) is cls for layer in back.layers), name
        assert torch.equal(back.calc_likelihood(x), model.calc_likelihood(x)), name
    with pytest.raises(RuntimeError, match="size mismatch|Missing key|Unexpected key"):
        bad = {**model.kwargs, "coupling": "affine"}                    # the same weights as another variant: refused
        bench.lib.atomic_save({"model": model.state_dict(), "model_kw": bad, "epoch": 1, "cfg": c}, tmp_path / "x.pt")
        bench.load_flow(tmp_path / "x.pt")


# --- bench's own code: the samplers and sample scores -------------------------------------------------------------

def test_tempered_density_is_p_to_the_beta_in_z_space(bench, cfg):
    """log pi(z) = beta log p(x) + log|det dx/dz| with x = f^-1(z), up to beta's constant."""
    from bench.samplers import tempered_log_density
    lib = bench.lib
    torch.manual_seed(0)
    model = perturb(make_flow(bench, cfg, hidden=16).double(), seed=6).eval()
    z = 0.3 * torch.randn(3, lib.D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = model.inverse(z)
    assert (x > 0).all() and (x < 1).all()
    for beta in (1.0, 2.0):
        fwd_log_det = model(x)[1]
        expected = beta * (model.calc_likelihood(x) + 0.5 * lib.D * lib.LOG_2PI) - fwd_log_det
        assert torch.allclose(tempered_log_density(model, z, beta), expected, rtol=1e-9)


def test_tweedie_step_on_the_untrained_flow(bench, cfg):
    """The untrained flow is the logit alone, so log p(y) = log N(y; 0, I) in logit space and the Tweedie step is
    y (1 - sigma^2)."""
    from bench.samplers import denoise, sample_latents
    model = make_flow(bench, cfg, hidden=8).double().eval()
    z = torch.randn(5, bench.lib.D, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = sample_latents(model, z)
    assert torch.equal(y, z)
    x = denoise(model, y, 0.5)
    assert torch.allclose(x, model.preprocess.inverse(0.75 * y)[0].clamp(0, 1), atol=1e-12)


def test_speckle_and_score_samples(bench):
    from bench.samplers import speckle
    img = torch.zeros(2, 28, 28)
    img[0, 3, 3] = img[0, 10, 20] = 1.0              # two isolated bright pixels
    img[0, 20:22, 5:7] = 1.0                         # a 2 x 2 blob: not isolated
    img[1, 0, 0] = 0.6                               # one, in a corner
    assert speckle(img.reshape(2, 784)) == pytest.approx((2 + 1) / 2)

    class Stub(torch.nn.Module):                      # reads the mean intensity as the class, confidently
        def forward(self, x):
            return 20 * torch.nn.functional.one_hot((x.mean(1) * 40).long().clamp(0, 9), 10).float()
    k = torch.zeros(10, 784, dtype=torch.uint8)
    k[:6, :100] = 255                                # 6 images of one class, 4 of another
    r = bench.score_samples(k, Stub(), bench.lib.from_uint8(k[[0, 9]]), {"confident_p": 0.9, "strict_p": 0.99})
    assert r["top_class_share"] == 0.6 and sorted(r["digit_counts"])[-2:] == [4, 6] and r["confident"] == 1.0
    assert r["nn_median"] == r["nn_p01"] == 0.0 and r["class_entropy"] == pytest.approx(
        -(0.6 * math.log(0.6) + 0.4 * math.log(0.4)) / math.log(10))


# --- the peer model and the scripts' own rules --------------------------------------------------------------------

def test_nflows_peer_computes_the_same_likelihood(bench, cfg):
    """The benchmark's peer, built from nflows transforms (its logit too: nflows' PointwiseAffineTransform and
    Logit, no notebook code), is the same function as the notebook's flow."""
    pytest.importorskip("nflows")
    from bench.bench import peer_flow
    lib = bench.lib
    torch.manual_seed(0)
    ours = perturb(lib.NormalizingFlow(**{**{k: cfg[k] for k in lib.MODEL_KEYS}, "hidden": 24}).double(), seed=5)
    peer = peer_flow(lib, ours).double()
    assert [type(t).__module__.split(".")[0] for t in peer._transform._transforms[:2]] == ["nflows", "nflows"]
    x = fake_batch(8, seed=6, dtype=torch.float64)
    ll = ours.calc_likelihood(x)
    assert torch.allclose(peer.log_prob(x), ll, rtol=1e-12, atol=0)
    other = peer_flow(lib, perturb(lib.NormalizingFlow(**ours.kwargs).double(), seed=7)).double()
    assert (other.log_prob(x) - ll).abs().min() > 1e-3, "not trivially equal: another model differs"


def test_nothing_outside_tests_imports_from_tests():
    for path in [*ROOT.glob("bench/*.py"), *ROOT.glob("tools/*.py")]:
        src = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+(tests|nbload|helpers|conftest)\b", src, re.M), path
        assert '"tests"' not in src and "'tests'" not in src, path


def test_scripts_take_the_config_from_the_notebook():
    """No script keeps its own copy of a hyperparameter, the data folder, the split or the quality bar."""
    for path in ROOT.glob("bench/*.py"):
        src = path.read_text()
        for pattern in (r"hidden\W+\s*(256|512|1024)\b", r"manual_seed\(1234\)", r"shared", r"NF_DATA_DIR",
                        r"1\.85\b(?!.*QUALITY_BPD)", r"seed\"\]\s*\+\s*\d"):
            if path.name == "common.py" and pattern.startswith("1"):
                continue
            assert not re.search(pattern, src), (path.name, pattern)


def test_bench_copies_no_notebook_definition(lib):
    """bench/ defines no function or class the notebook defines, except thin wrappers that call the notebook's."""
    for path in ROOT.glob("bench/*.py"):
        src = path.read_text()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in vars(lib) \
                    and not node.name.startswith("__"):
                body = ast.get_source_segment(src, node)
                assert f"lib.{node.name}(" in body, f"{path.name}: {node.name} copies the notebook's"


def run_script(args, cwd, timeout=600, env=None):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def script(args, cwd, timeout=600):
    p = run_script(args, cwd, timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_scripts_print_errors_as_one_line(tmp_path):
    """A bad argument, a damaged checkpoint, damaged MNIST files: one line on stderr, exit status 2, no traceback."""
    bad_ck = tmp_path / "bad.pt"
    bad_ck.write_bytes(b"not a checkpoint")
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"short")
    cases = [([ROOT / "bench" / "train_variant.py", "v", "hiden=3"], None, "did you mean 'hidden'"),
             ([ROOT / "bench" / "train_variant.py", "v", "epochs=many"], None, "epochs='many': must be an integer"),
             ([ROOT / "bench" / "sampler_options.py", bad_ck, tmp_path / "o.json"], None, f"{bad_ck} cannot be read"),
             ([ROOT / "bench" / "ablate.py", "--only", "nope", "--quick"], {"NF_DATA_DIR": str(tmp_path / "mnist")},
              "damaged MNIST file(s)"),
             ([ROOT / "bench" / "bench.py", "--widths", "5x"], None, "invalid literal")]
    for args, env, why in cases:
        p = run_script(args, tmp_path, 300, env)
        assert p.returncode == 2 and why in p.stderr, p.stderr[-2000:]
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr[-2000:]


# --- end to end, on the quick preset ------------------------------------------------------------------------------

@pytest.mark.slow
def test_critic_study_judges_every_epoch_and_resumes(tmp_path, mnist_dir):
    """bench/critic_study.py from a quick phase-1 checkpoint: a row per epoch (0 = the start) with every measure, the
    first 64 samples of each epoch; run again with more epochs it resumes, and the rows and samples of the epochs done
    are kept, not scored again from the checkpoint's last epoch; other settings under the same NAME are refused."""
    script([ROOT / "bench" / "train_variant.py", "s", "--quick", "hidden=16", "--out-dir", tmp_path / "runs",
            "--ckpt-dir", tmp_path / "ck"], tmp_path)
    (start,) = (tmp_path / "ck" / "s").glob("*/best.pt")
    args = [ROOT / "bench" / "critic_study.py", "w", "--quick", "--start", start, "adv_weight=2.0", "--out-dir",
            tmp_path / "out", "--ckpt-dir", tmp_path / "ck2"]
    script([*args, "--epochs", "2"], tmp_path)
    first = json.loads((tmp_path / "out" / "w.json").read_text())
    first_grids = dict(np.load(tmp_path / "out" / "w_samples.npz"))
    assert first["rows"][1]["test_bpd"] != first["rows"][2]["test_bpd"], "epochs 1 and 2 scored different models"
    script([*args, "--epochs", "3"], tmp_path)                   # resumes after epoch 2: epochs 1 and 2 are kept
    r = json.loads((tmp_path / "out" / "w.json").read_text())
    assert [row["epoch"] for row in r["rows"]] == [0, 1, 2, 3] and r["rows"][:3] == first["rows"]
    assert r["config"]["adv_weight"] == 2.0 and r["config"]["hidden"] == 16
    for row in r["rows"]:
        assert 0 <= row["strict"] <= row["confident"] <= 1 and math.isfinite(row["test_bpd"]) and row["nn_median"] > 0
    grids = np.load(tmp_path / "out" / "w_samples.npz")
    assert sorted(grids.files) == ["epoch0", "epoch1", "epoch2", "epoch3"] and grids["epoch3"].shape == (64, 784)
    assert all((grids[k] == v).all() for k, v in first_grids.items())
    for extra, why in ((["--epochs", "1", "lr=0.1"], "the study varies only"), (["--epochs", "2"], "has run 3 epochs"),
                       (["--epochs", "1", "adv_weight=1.0"], "holds a study with other settings")):
        p = run_script([*args, *extra], tmp_path)
        assert p.returncode == 2 and why in p.stderr, p.stderr[-2000:]


@pytest.mark.slow
def test_annealed_noise_variant_and_its_sampler_options(tmp_path, mnist_dir):
    """A noise run annealed to 0 has no denoised score (its last epoch saw clean data) but MALA rows with the
    collapse guard; sampler_options.py scores its checkpoint, raw and denoised, on the same latents."""
    script([ROOT / "bench" / "train_variant.py", "n", "--quick", "hidden=16", "train_noise=1.0", "noise_anneal=1",
            "mala_steps=4", "--quality", "--mala", "--out-dir", tmp_path / "runs", "--ckpt-dir", tmp_path / "ck"],
           tmp_path)
    r = json.loads((tmp_path / "runs" / "n.json").read_text())
    assert "quality_denoised" not in r and set(r["quality_mala"]) == {f"beta{b}" for b in r["config"]["tempered_betas"]}
    for q in (r["quality"]["T1.0"], *r["quality_mala"].values()):
        assert sum(q["digit_counts"]) == r["config"]["n_quality"]
        assert q["top_class_share"] == max(q["digit_counts"]) / r["config"]["n_quality"] and q["nn_median"] > 0
    ckpt = Path(r["checkpoint_dir"])
    assert ckpt.parent == tmp_path / "ck" / "n" and ckpt.name.count("_") == 2, "a folder of its own: bench keys"
    script([ROOT / "bench" / "sampler_options.py", ckpt / "best.pt", tmp_path / "so.json", "--quick",
            "--sigma", "1.0", "--denoise", "0.5", "--temperatures", "0.8", "--betas", "1.5", "--ckpt-dir",
            tmp_path / "ck"], tmp_path)
    so = json.loads((tmp_path / "so.json").read_text())
    assert set(so["rows"]) == {"T1.0_denoise0", "T1.0_denoise0.5", "T1.0_denoise1", "T0.8_denoise1",
                               "mala_beta1.5_denoise1"}
    assert so["rows"]["T1.0_denoise0"]["digit_counts"] == r["quality"]["T1.0"]["digit_counts"]   # the same latents


@pytest.mark.slow
def test_train_variant_quick_end_to_end(tmp_path, mnist_dir):
    script([ROOT / "bench" / "train_variant.py", "v", "--quick", "hidden=16", "cpu_bf16=False", "lr_schedule=cosine",
            "--quality", "--out-dir", tmp_path / "runs", "--ckpt-dir", tmp_path / "ck"], tmp_path)
    r = json.loads((tmp_path / "runs" / "v.json").read_text())
    assert r["quick"] and r["config"]["hidden"] == 16 and r["config"]["cpu_bf16"] is False
    assert r["config"]["lr_schedule"] == "cosine" and len(r["curves"]["val_bpd"]) == r["config"]["epochs"]
    val = r["curves"]["val_bpd"]
    assert val[-1] < val[0] - 0.5, "it learned"
    assert r["best_epoch"] == 1 + val.index(min(val)) and r["val_bpd"] == min(val)
    assert abs(r["test_bpd"] - r["val_bpd"]) < 0.5
    assert sum(r["quality"]["T1.0"]["digit_counts"]) == r["config"]["n_quality"]
    assert (Path(r["checkpoint_dir"]) / "best.pt").exists()
    # the same name with other settings, a misspelt key, an argument without "=": refused before any training,
    # with the reason, and the first run's files stay as they were
    before = {p: p.read_bytes() for p in [tmp_path / "runs" / "v.json", *(tmp_path / "ck").rglob("*.pt")]}
    for args, why in ((["hidden=32"], "holds a run with other settings"), (["hiden=32"], "did you mean 'hidden'"),
                      (["epochs"], "is not key=value")):
        p = run_script([ROOT / "bench" / "train_variant.py", "v", "--quick", *args, "--out-dir", tmp_path / "runs",
                        "--ckpt-dir", tmp_path / "ck"], tmp_path, 300)
        assert p.returncode == 2 and why in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.slow
def test_ablate_quick_end_to_end(tmp_path, mnist_dir):
    out = tmp_path / "ablations.json"
    names = ["base", "coupling_additive", "no_logit", "no_layer_scale", "width_16"]
    script([ROOT / "bench" / "ablate.py", "--quick", "--epochs", "1", "--only", ",".join(names), "--out", out,
            "--ckpt", tmp_path / "ck"], tmp_path)
    res = json.loads(out.read_text())
    rows = {r["name"]: r for r in res["variants"]}
    assert list(rows) == names and res["quick"] is True
    base = rows["base"]
    assert rows["no_layer_scale"]["n_params"] == base["n_params"] - 4 * 784
    assert rows["coupling_additive"]["n_params"] < base["n_params"]
    assert rows["width_16"]["model"]["hidden"] == base["model"]["hidden"] // 2 == 16
    assert rows["no_logit"]["model"]["logit_alpha"] is None and rows["no_logit"]["test_bpd"] != base["test_bpd"]
    assert len({r["test_bpd"] for r in rows.values()}) == len(rows), "each variant trains its own model"
    for r in rows.values():
        assert math.isfinite(r["test_bpd"]) and abs(r["test_bpd"] - r["val_bpd"]) < 1.0 and r["train_time_s"] > 0


@pytest.mark.slow
def test_bench_quick_end_to_end(tmp_path, mnist_dir):
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"ttq_speedup_vs_previous_default": {"value": 5.0}, "other": 1}))
    script([ROOT / "bench" / "bench.py", "--quick", "--out", out], tmp_path)
    res = json.loads(out.read_text())
    r = res["entries"]["64/128"]
    # FLOPs from the layer shapes: 6 B sum(in * out) over 4 MLPs of 392 -> 64 -> 64 -> 64 -> 64 -> 784
    assert r["flops_per_step"] == 6 * 128 * 4 * (392 * 64 + 3 * 64 * 64 + 64 * 784)
    assert r["loglik_max_abs_diff_vs_peer_float64"] < 1e-8
    assert set(r["step_s_median"]) == {"ours_fp32", "ours_bf16", "nflows", "nflows_bf16"}
    assert r["speedup_vs_peer"] == pytest.approx(r["step_s_median"]["nflows"] / r["step_s_median"][r["default"]])
    assert 0 < r["roofline_fraction"]["ours_fp32"]
    assert set(res["epoch"]["epoch_s_median"]) == {"fp32", "bf16", "default"}
    sp = res["spline"]
    assert res["spline_step_ratio"] == sp["spline_step_ratio"] == pytest.approx(
        sorted(sp["details"]["ratio_all"]["spline_k4"])[1])              # the median of 3 paired rounds
    # the script runs in its own process, with its own thread count (the tests' one-thread setting does not reach it)
    assert set(sp["sample_1000_s"]) == {"affine", "spline"} and sp["details"]["threads"] >= 1
    assert res["ttq_speedup_vs_previous_default"] == {"value": 5.0} and "other" not in res
    # --only spline merges its keys into the file and keeps the others
    script([ROOT / "bench" / "bench.py", "--quick", "--only", "spline", "--out", out], tmp_path)
    again = json.loads(out.read_text())
    assert again["entries"] == res["entries"] and again["spline"]["command"].endswith("--only spline --out " + str(out))


def test_time_to_quality_counts_epochs_and_seconds():
    from bench.time_to_quality import first_epoch_at
    curves = {"epoch": [1, 2, 3, 4], "val_bpd": [2.0, 1.86, 1.85, 1.80], "epoch_s": [10.0, 11.0, 12.0, 13.0]}
    assert first_epoch_at(curves, 1.85) == (3, 33.0)
    assert first_epoch_at(curves, 1.5) == (None, None)


@pytest.mark.slow
@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_profile_step_groups_the_step(tmp_path, coupling):
    out = script([ROOT / "bench" / "profile_step.py", "--hidden", "16", "--batch", "8", "--coupling", coupling],
                 tmp_path, timeout=300)
    assert out.startswith(f"{coupling} couplings"), out
    shares = [float(m) for m in re.findall(r"\(\s*([\d.]+)%\)", out)]
    assert len(shares) == 4 and abs(sum(shares) - 100) < 0.5 and shares[0] > 0, out


# --- the README's tables and the committed results ----------------------------------------------------------------

def test_screening_commands_reproduce_their_configs():
    """Every screening run and the precision pair name a command that still parses with today's scripts and, with
    today's defaults, trains the config the run stored. Results written by older notebook versions are read as
    follows: keys they lack (split_seed, data_seed, val_noise_seed, train_noise, noise_anneal, spline_bins,
    spline_bound) must have the value their version used implicitly (`later` below; spline keys only matter for
    spline runs); keys only they have (check_every, sampler_epochs,
    sampler_noise, temperatures of the removed study, ...) no longer configure a training run and are skipped;
    the bench-only keys train_noise, noise_anneal and cpu_bf16 keep their meaning and are compared, and so are the
    model variant keys (coupling, split, spline_bins, spline_bound, layer_scale), now bench's too."""
    from bench.common import BENCH_MODEL_KEYS, BENCH_TRAIN_KEYS, config, lib, parse_overrides, run_dir
    later = {"split_seed": 0, "data_seed": 1234, "val_noise_seed": 1, "test_noise_seed": 2,    # SPLIT_SEED, ...
             "train_noise": 0.0, "noise_anneal": 0}                # the old notebook's LATER_KEYS
    spline_only = ("spline_bins", "spline_bound")                 # irrelevant to the affine runs that lack them
    base = config()
    files = [*sorted((ROOT / "results" / "screening_quality").glob("*.json")),
             *sorted((ROOT / "results" / "screening_noise").glob("*.json")),
             *sorted((ROOT / "results" / "screening_spline").glob("*.json")),
             *sorted((ROOT / "results" / "runs").glob("pair_*.json"))]
    assert len(files) > 20
    for f in files:
        r = json.loads(f.read_text())
        args = shlex.split(r["command"])
        assert args[:3] == ["python", "bench/train_variant.py", f.stem], r["command"]
        cfg = {**base, **parse_overrides([a for a in args[3:] if "=" in a and not a.startswith("--")], base)}
        stored = r["config"]
        for k in (*lib.TRAIN_KEYS, *BENCH_MODEL_KEYS, *BENCH_TRAIN_KEYS, "epochs"):
            if k in stored:
                assert cfg[k] == stored[k], (f.stem, k)
            elif k in later:
                assert cfg[k] == later[k], (f.stem, k)
            else:
                assert k in spline_only and cfg["coupling"] != "spline", (f.stem, k)
        assert run_dir("", cfg) == run_dir("", {**cfg, **stored}), f.stem


def test_precision_pair_lines_apply_the_bar():
    """The bf16 pair's sentences: the differences, their standard error, and the two tests of the bar."""
    from bench.studies import precision_pair_lines
    def run(bpd, confident):
        return {"test_bpd": bpd, "val_bpd": bpd + 0.01, "best_epoch": 20, "config": {"n_quality": 1000},
                "quality": {"T1.0": {"confident": confident}}}
    lines = precision_pair_lines(run(1.700, 0.60), run(1.705, 0.59))
    assert len(lines) == 4 and lines[0].startswith("float32: test 1.7000") and lines[1].startswith("bf16: test 1.7050")
    se = math.sqrt((0.6 * 0.4 + 0.59 * 0.41) / 1000)
    assert lines[2] == f"bf16 - float32: +0.0050 test bits/dim, -0.010 confident ({-0.01 / se:+.1f} s.e.)"
    assert lines[3] == "bf16 within 0.01 bits/dim: True; no loss of confident samples beyond two standard errors: True"
    assert "beyond two standard errors: False" in precision_pair_lines(run(1.700, 0.60), run(1.705, 0.50))[3]
    assert "within 0.01 bits/dim: False" in precision_pair_lines(run(1.700, 0.60), run(1.720, 0.60))[3]


def test_cpu_bf16_default_follows_the_committed_pair():
    """bench's cpu_bf16 default is on exactly when the committed pair passes both tests of the bar."""
    from bench.common import BENCH_DEFAULTS
    from bench.studies import precision_pair_lines
    pair = {k: json.loads((ROOT / "results" / "runs" / f"pair_{k}_20ep.json").read_text()) for k in ("fp32", "bf16")}
    verdict = precision_pair_lines(pair["fp32"], pair["bf16"])[-1]
    passes = verdict.count(": True") == 2
    assert BENCH_DEFAULTS["cpu_bf16"] is passes, verdict
    assert pair["fp32"]["config"]["cpu_bf16"] is False and pair["bf16"]["config"]["cpu_bf16"] is True
    same = {k: v for k, v in pair["fp32"]["config"].items() if k != "cpu_bf16"}
    assert same == {k: v for k, v in pair["bf16"]["config"].items() if k != "cpu_bf16"}, "the pair differs in more"


def test_studies_read_the_committed_results():
    """bench/studies.py's screening rows, the ablation's findings and the sample-quality screening's rows and
    findings come from results/, row for row."""
    from bench import studies
    rows = studies.screening_rows(ROOT / "results" / "screening")
    files = sorted((ROOT / "results" / "screening").glob("*.json"))
    assert len(rows) == len(files) >= 10
    for r, f in zip(rows, files, strict=True):
        val = json.loads(f.read_text())["val"]
        assert r["best"] == min(val) and r["last"] == val[-1] and r["epochs"] == len(val)
    abl = json.loads((ROOT / "results" / "ablations.json").read_text())
    lines = studies.ablation_findings(abl["variants"], abl["budget"]["train"]["n_quality"])
    assert len(lines) == len(abl["variants"]), "one line per variant besides the base, and the standard error"
    worst = max(abl["variants"], key=lambda r: r["test_bpd"])
    assert lines[1].startswith(worst["change"] + ":")
    folder = ROOT / "results" / "screening_quality"
    qrows, qfiles = studies.quality_screen_rows(folder), sorted(folder.glob("*.json"))
    assert [r["name"] for r in qrows] == [f.stem for f in qfiles]
    for r, f in zip(qrows, qfiles, strict=True):
        d = json.loads(f.read_text())
        assert r["test_bpd"] == d["test_bpd"] and r["confident"] == d["quality"]["T1.0"]["confident"]
    findings = studies.quality_screen_findings(qrows, 1000)
    assert len(findings) == sum(r["raw"] is not None for r in qrows) + 1
    assert min(qrows, key=lambda r: r["test_bpd"])["name"] in findings[-1]


@pytest.mark.slow
def test_bench_compiled_step_quick(tmp_path, mnist_dir):
    """--compile times torch.compile of the likelihood and of the whole train step, with their compile times."""
    out = tmp_path / "bench.json"
    script([ROOT / "bench" / "bench.py", "--quick", "--compile", "--epoch-repeats", "0", "--spline-steps", "0",
            "--out", out], tmp_path)
    res = json.loads(out.read_text())
    r = res["entries"]["64/128"]
    assert {"ours_compiled", "ours_compiled_step"} <= set(r["step_s_median"]) and "spline" not in res
    assert r["speedup_compiled_step"] == pytest.approx(r["step_s_median"]["ours_fp32"]
                                                       / r["step_s_median"]["ours_compiled_step"])
    assert set(r["compile_s"]) == {"ours_compiled", "ours_compiled_step"} and min(r["compile_s"].values()) > 0


@pytest.mark.slow
def test_gpu_run_quick_and_its_deadline(tmp_path, mnist_dir):
    """bench/gpu_run.py on the quick preset (here on the CPU, without the compiles): every part in the file, the run
    stopped mid-way in epoch 2 and resumed after epoch 1, its curves plain JSON; and with a spent budget the file is
    still written and says that nothing finished."""
    out = tmp_path / "g.json"
    script([ROOT / "bench" / "gpu_run.py", "--quick", "--epochs", "4", "--out", out], tmp_path)
    r = json.loads(out.read_text())
    assert r["finished"] == {"full": True, "resume": True, "phase2": True, "step_timing": True}
    full, resume, checks, timing = r["full"], r["resume"], r["checks"], r["step_timing"]
    p2 = r["phase2"]
    assert p2["epochs"] == r["config"]["adv_epochs"] and p2["s_per_epoch_median"] > 0 and p2["samples_finite_in_range"]
    assert abs(p2["test_bpd"] - full["test_bpd"]) < 1.0
    assert full["epochs"] == r["config"]["epochs"] == 4 and full["curves"]["epoch"] == [1, 2, 3, 4]
    assert full["best_epoch"] == 1 + full["curves"]["val_bpd"].index(min(full["curves"]["val_bpd"]))
    assert abs(full["test_bpd"] - full["best_val_bpd"]) < 0.5 and full["s_per_epoch_median"] > 0
    assert resume["stopped"] and resume["resumed_after"] == 1 and resume["first_epoch_after_resume"] == 2
    assert resume["epochs_trained"] == [2, 3, 4] and resume["numbering_continues"]
    assert checks["hist_serialisable"] is True and checks["hist_error"] is None
    mem = checks["memory"]
    assert [(s["call"], s["epoch"]) for s in mem["series"]] == [(1, 1), (1, 2), (2, 2), (2, 3), (2, 4)]
    assert mem["rss_ok"] is True and mem["thresholds_mib"]["rss_growth"] > 0 and mem["cuda_allocated_ok"] is None
    assert timing["eager"]["step_s_median"] > 0 and timing["eager"]["loss_finite"]
    assert timing["compiled"]["skipped_for"] == timing["compiled_reduce_overhead"]["skipped_for"] == "option"
    script([ROOT / "bench" / "gpu_run.py", "--quick", "--budget-s", "0", "--out", out], tmp_path)
    r = json.loads(out.read_text())
    assert r["finished"] == {"full": False, "resume": False, "phase2": False, "step_timing": False}
    assert r["phase2"]["skipped_for"] == "no phase-1 model"
    assert r["full"]["epochs"] == 0 and r["full"]["test_bpd"] is None and r["full"]["stopped_by"] == "OutOfTime"
    assert r["resume"]["resumed_after"] is None and not r["resume"]["stopped"]
    assert r["step_timing"]["eager"]["skipped_for"] == "time"


def test_frontier_points_are_the_committed_results():
    """The README's frontier chart: one point per affine screen of 20 epochs or more, one per denoised screen, one
    per spline screen, and the notebook's run."""
    from bench.studies import frontier_points
    pts = frontier_points(ROOT)
    runs = {f: json.loads(f.read_text()) for d in ("screening_quality", "screening_noise", "screening_spline")
            for f in (ROOT / "results" / d).glob("*.json")}
    spline = [f for f, r in runs.items() if r["config"].get("coupling") == "spline"]
    screens = [f for f, r in runs.items() if r["config"]["epochs"] >= 20 and f not in spline]
    assert sum(k == "screen" for *_, k in pts) == len(screens)
    assert sum(k == "spline" for *_, k in pts) == len(spline)
    noisy = [f for f in [*screens, *spline] if "quality_denoised" in runs[f]]
    assert sum(k == "denoised" for *_, k in pts) == len(noisy) >= 3
    m = json.loads((ROOT / "results" / "metrics.json").read_text())
    q = m["sample_quality"]["T1.0"] if "sample_quality" in m else m["samples_T1"]
    assert ("notebook, sample()", m["test_bpd"], q["confident"], "notebook") in pts
    if "phase2" in m:
        p2 = m["phase2"]
        assert ("notebook, phase 2 (critic)", p2["test_bpd"], p2["samples_T1"]["confident"], "notebook_critic") in pts
    critic = [json.loads(f.read_text()) for f in (ROOT / "results" / "screening_critic").glob("*.json")]
    assert sum(k == "critic" for *_, k in pts) == sum(r["config"]["adv_weight"] > 0 for r in critic)


def test_critic_rescore_names_a_study_without_a_checkpoint(tmp_path):
    """bench/critic_rescore.py refuses a study it cannot find before it reads any data, and writes nothing."""
    from bench import critic_rescore
    with pytest.raises(ValueError, match=r"study 'no_such_study': expected one checkpoints/screening_critic/"):
        critic_rescore.main([str(tmp_path / "out.json"), "no_such_study"])
    assert not (tmp_path / "out.json").exists()
