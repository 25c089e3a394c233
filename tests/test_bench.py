"""The scripts in bench/: the peer model's equivalence, their quick modes end to end, and what they may import."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import fake_batch, flow, perturb

ROOT = Path(__file__).resolve().parent.parent


def test_layer_scale_off_is_a_buffer_and_log_det_is_exact(lib):
    """The ablation's exp(s_i)-off variant: no s parameters, and the log-det still matches the Jacobian."""
    torch.manual_seed(0)
    on = flow(lib, hidden=16)
    off = flow(lib, hidden=16, layer_scale=False).double()
    assert sum(p.numel() for p in on.parameters()) - sum(p.numel() for p in off.parameters()) == 4 * 784
    assert not any(n.endswith(".s") for n, _ in off.named_parameters())
    perturb(off, seed=3)
    assert all(torch.all(layer.s == 0) for layer in off.layers)
    x = fake_batch(1, seed=4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: off(v[None])[0][0], x[0], vectorize=True)
    assert off(x)[1].item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), rel=1e-9)


def test_nflows_peer_computes_the_same_likelihood(lib):
    """The benchmark's peer, built from nflows transforms, is the same function as the notebook's flow."""
    from bench.bench import peer_flow
    torch.manual_seed(0)
    ours = perturb(flow(lib, hidden=24).double(), seed=5)
    peer = peer_flow(lib, ours).double()
    x = fake_batch(8, seed=6, dtype=torch.float64)
    ll = ours.calc_likelihood(x)
    assert torch.allclose(peer.log_prob(x), ll, rtol=1e-10, atol=0)
    other = peer_flow(lib, perturb(flow(lib, hidden=24).double(), seed=7)).double()
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
                        r"1\.85\b(?!.*QUALITY_BPD)"):
            if path.name == "common.py" and pattern.startswith("1"):
                continue
            assert not re.search(pattern, src), (path.name, pattern)


def script(args, tmp_path, timeout=600):
    p = subprocess.run([sys.executable, *map(str, args)], cwd=tmp_path, env=os.environ.copy(), capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


@pytest.mark.slow
def test_train_variant_quick_end_to_end(tmp_path, mnist_dir):
    script([ROOT / "bench" / "train_variant.py", "v", "--quick", "hidden=16", "cpu_bf16=False", "lr_schedule=cosine",
            "--quality", "--out-dir", tmp_path / "runs", "--ckpt-dir", tmp_path / "ck"], tmp_path)
    r = json.loads((tmp_path / "runs" / "v.json").read_text())
    assert r["quick"] and r["config"]["hidden"] == 16 and r["config"]["cpu_bf16"] is False
    assert r["config"]["lr_schedule"] == "cosine" and len(r["curves"]["val_bpd"]) == r["config"]["epochs"]
    assert 0 < r["test_bpd"] < 50 and 0 <= r["quality"]["T1.0"]["confident"] <= 1
    assert (tmp_path / "ck" / "v" / "best.pt").exists()


@pytest.mark.slow
def test_ablate_quick_end_to_end(tmp_path, mnist_dir):
    out = tmp_path / "ablations.json"
    names = ["base", "coupling_additive", "no_layer_scale", "width_16"]
    script([ROOT / "bench" / "ablate.py", "--quick", "--epochs", "1", "--only", ",".join(names), "--out", out,
            "--ckpt", tmp_path / "ck"], tmp_path)
    res = json.loads(out.read_text())
    rows = {r["name"]: r for r in res["variants"]}
    assert list(rows) == names and res["quick"] is True
    base = rows["base"]
    assert rows["no_layer_scale"]["n_params"] == base["n_params"] - 4 * 784
    assert rows["coupling_additive"]["n_params"] < base["n_params"]
    assert rows["width_16"]["model"]["hidden"] == base["model"]["hidden"] // 2 == 16
    for r in rows.values():
        assert 0 < r["val_bpd"] < 50 and 0 < r["test_bpd"] < 50 and r["train_time_s"] > 0
        q = r["quality"]["T1.0"]
        assert 0 <= q["confident"] <= 1 and 0 <= q["class_entropy"] <= 1


@pytest.mark.slow
def test_bench_quick_end_to_end(tmp_path, mnist_dir):
    out = tmp_path / "bench.json"
    script([ROOT / "bench" / "bench.py", "--quick", "--out", out], tmp_path)
    r = json.loads(out.read_text())["entries"]["64/128"]
    # FLOPs from the layer shapes: 6 B sum(in * out) over 4 MLPs of 392 -> 64 -> 64 -> 64 -> 64 -> 784
    assert r["flops_per_step"] == 6 * 128 * 4 * (392 * 64 + 3 * 64 * 64 + 64 * 784)
    assert r["loglik_max_abs_diff_vs_peer_float64"] < 1e-6
    assert set(r["step_s_median"]) == {"ours_fp32", "ours_bf16", "nflows", "nflows_bf16"}
    assert r["speedup_vs_peer"] == pytest.approx(r["step_s_median"]["nflows"] / r["step_s_median"][r["default"]])
    assert 0 < r["roofline_fraction"]["ours_fp32"]
    ep = json.loads(out.read_text())["epoch"]                 # one epoch of fit() in each configuration
    med = ep["epoch_s_median"]
    assert set(med) == {"fp32", "bf16", "default"} and all(v > 0 for v in med.values())


def test_time_to_quality_counts_epochs_and_seconds():
    from bench.time_to_quality import first_epoch_at
    curves = {"epoch": [1, 2, 3, 4], "val_bpd": [2.0, 1.86, 1.85, 1.80], "epoch_s": [10.0, 11.0, 12.0, 13.0]}
    assert first_epoch_at(curves, 1.85) == (3, 33.0)
    assert first_epoch_at(curves, 1.5) == (None, None)


@pytest.mark.slow
def test_profile_step_groups_the_step(tmp_path):
    out = script([ROOT / "bench" / "profile_step.py", "--hidden", "16", "--batch", "8"], tmp_path, timeout=300)
    shares = [float(m) for m in re.findall(r"\(\s*([\d.]+)%\)", out)]
    assert len(shares) == 4 and abs(sum(shares) - 100) < 0.5 and shares[0] > 0, out


def test_readme_tables_are_the_results_files():
    """The README's result tables are generated from results/*.json by tools/readme_tables.py; none is stale."""
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "readme_tables.py"), "--check"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_screening_commands_reproduce_their_configs():
    """Every screening run and the precision pair name a command that, with today's defaults, trains the config
    the run stored."""
    from bench.common import config, lib, parse_overrides
    base = config()
    files = [*sorted((ROOT / "results" / "screening_quality").glob("*.json")),
             *sorted((ROOT / "results" / "runs").glob("pair_*.json"))]
    assert len(files) > 2
    for f in files:
        r = json.loads(f.read_text())
        args = shlex.split(r["command"])
        assert args[:3] == ["python", "bench/train_variant.py", f.stem], r["command"]
        cfg = {**base, **parse_overrides([a for a in args[3:] if "=" in a and not a.startswith("--")], base)}
        assert {k: cfg[k] for k in (*lib.TRAIN_KEYS, "epochs")} == {k: r["config"].get(k) for k in
                                                                   (*lib.TRAIN_KEYS, "epochs")}, f.stem
