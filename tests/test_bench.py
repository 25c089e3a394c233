"""The ablation runner and the benchmark: their quick modes end to end, and the peer model's equivalence."""
import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import fake_batch, perturb
from nbload import code_sources, notebook_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def test_layer_scale_off_is_a_buffer_and_log_det_is_exact(lib):
    """The ablation's exp(s_i)-off variant: no s parameters, and the log-det still matches the Jacobian."""
    torch.manual_seed(0)
    on = lib.NormalizingFlow(hidden=16)
    off = lib.NormalizingFlow(hidden=16, layer_scale=False).double()
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
    ours = perturb(lib.NormalizingFlow(hidden=24).double(), seed=5)
    peer = peer_flow(lib, ours).double()
    x = fake_batch(8, seed=6, dtype=torch.float64)
    ll = ours.calc_likelihood(x)
    assert torch.allclose(peer.log_prob(x), ll, rtol=1e-10, atol=0)
    # and it is not trivially equal: a different model gives a different likelihood
    other = peer_flow(lib, perturb(lib.NormalizingFlow(hidden=24).double(), seed=7)).double()
    assert (other.log_prob(x) - ll).abs().min() > 1e-3


def run(args, tmp_path):
    env = {**os.environ, "NF_DATA_DIR": os.environ.get("NF_DATA_DIR", str(ROOT.parent / "shared" / "data"))}
    subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)


def test_ablate_quick_end_to_end(tmp_path):
    out = tmp_path / "ablations.json"
    names = ["base", "coupling_additive", "no_layer_scale", "width_16"]
    run([str(ROOT / "bench" / "ablate.py"), "--quick", "--epochs", "1", "--only", ",".join(names),
         "--out", str(out), "--ckpt", str(tmp_path / "ck")], tmp_path)
    res = json.loads(out.read_text())
    rows = {r["name"]: r for r in res["variants"]}
    assert list(rows) == names and res["quick"] is True
    base = rows["base"]
    assert rows["no_layer_scale"]["n_params"] == base["n_params"] - 4 * 784
    assert rows["coupling_additive"]["n_params"] < base["n_params"]
    assert rows["width_16"]["model"]["hidden"] == base["model"]["hidden"] // 2 == 16
    for r in rows.values():
        assert 0 < r["val_bpd"] < 50 and 0 < r["test_bpd"] < 50 and r["train_time_s"] > 0
        assert set(r["quality"]) == {f"T{t}" for t in res["temperatures"]}
        assert all(0 <= q["confident"] <= 1 and 0 <= q["class_entropy"] <= 1 for q in r["quality"].values())


def test_bench_quick_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    run([str(ROOT / "bench" / "bench.py"), "--quick", "--out", str(out)], tmp_path)
    res = json.loads(out.read_text())
    r = res["entries"]["64/128"]
    # FLOPs from the layer shapes: 6 B sum(in * out) over 4 MLPs of 392 -> 64 -> 64 -> 64 -> 64 -> 784
    assert r["flops_per_step"] == 6 * 128 * 4 * (392 * 64 + 3 * 64 * 64 + 64 * 784)
    assert r["loglik_max_abs_diff_vs_peer_float64"] < 1e-6
    assert r["speedup_vs_peer"] > 0 and 0 < r["roofline_fraction"]["ours"]
    ttq = res.pop("time_to_quality")
    assert ttq["target_val_bpd"] == 1.85
    assert all(t["config"]["lr_schedule"] in ("step", "cosine") for t in ttq["runs"]), "defaults fill a missing key"
    out.write_text(json.dumps(res))
    run([str(ROOT / "bench" / "bench.py"), "--ttq-only", "--out", str(out)], tmp_path)
    assert json.loads(out.read_text()) == {**res, "time_to_quality": ttq}, "--ttq-only only refreshes that table"


def test_ttq_runs_the_notebooks_own_full_preset(tmp_path, monkeypatch):
    """bench/ttq.py reads CFG from the config cell (no copy to drift), in a scratch folder, leaving the env alone."""
    from bench.ttq import MODEL_KEYS
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NF_OUT_DIR", "keep-me")
    env = dict(os.environ)
    full, quick = notebook_config(), notebook_config(quick=True)
    assert dict(os.environ) == env
    assert list(tmp_path.iterdir()) == [], "the config cell's folders go to a scratch directory"
    assert full["epochs"] > quick["epochs"] and full["n_train"] == 50_000 > quick["n_train"]
    cell = next(s for s in code_sources() if "MODEL_KW = " in s)
    keys = re.search(r"MODEL_KW = \{k: CFG\[k\] for k in (\([^)]*\))", cell).group(1)
    assert ast.literal_eval(keys) == MODEL_KEYS


def test_profile_step_groups_the_step(tmp_path):
    """bench/profile_step.py: a tiny model's step, split into GEMMs, Adam, clipping and the rest."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "profile_step.py"), "--hidden", "16", "--batch", "8"],
                         cwd=tmp_path, check=True, capture_output=True, text=True, timeout=300).stdout
    shares = [float(m) for m in re.findall(r"\(\s*([\d.]+)%\)", out)]
    assert len(shares) == 4 and abs(sum(shares) - 100) < 0.5 and shares[0] > 0, out
