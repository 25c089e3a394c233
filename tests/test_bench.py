"""The scripts in bench/: the peer model's equivalence, their quick modes end to end, and what they may import."""
import json
import math
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
def test_annealed_noise_variant_and_its_sampler_options(tmp_path, mnist_dir):
    """A noise run annealed to 0 has no denoised score (its last epoch saw clean data) but MALA rows with the
    collapse guard; sampler_options.py scores its checkpoint, raw and denoised, on the same latents."""
    script([ROOT / "bench" / "train_variant.py", "n", "--quick", "hidden=16", "train_noise=1.0", "noise_anneal=1",
            "--quality", "--mala", "--out-dir", tmp_path / "runs", "--ckpt-dir", tmp_path / "ck"], tmp_path)
    r = json.loads((tmp_path / "runs" / "n.json").read_text())
    assert "quality_denoised" not in r and set(r["quality_mala"]) == {f"beta{b}" for b in r["config"]["tempered_betas"]}
    for q in (r["quality"]["T1.0"], *r["quality_mala"].values()):
        assert 0.1 <= q["top_class_share"] <= 1 and q["nn_median"] > 0
    script([ROOT / "bench" / "sampler_options.py", tmp_path / "ck" / "n" / "best.pt", tmp_path / "so.json", "--quick",
            "--sigma", "1.0", "--denoise", "0.5", "--temperatures", "0.8", "--betas", "1.5", "--ckpt-dir",
            tmp_path / "ck"], tmp_path)
    so = json.loads((tmp_path / "so.json").read_text())
    assert set(so["rows"]) == {"T1.0_denoise0", "T1.0_denoise0.5", "T1.0_denoise1", "T0.8_denoise1",
                               "mala_beta1.5_denoise1"}
    assert so["rows"]["T1.0_denoise0"]["confident"] == r["quality"]["T1.0"]["confident"]   # the same latents


@pytest.mark.slow
def test_train_variant_quick_end_to_end(tmp_path, mnist_dir):
    script([ROOT / "bench" / "train_variant.py", "v", "--quick", "hidden=16", "cpu_bf16=False", "lr_schedule=cosine",
            "--quality", "--out-dir", tmp_path / "runs", "--ckpt-dir", tmp_path / "ck"], tmp_path)
    r = json.loads((tmp_path / "runs" / "v.json").read_text())
    assert r["quick"] and r["config"]["hidden"] == 16 and r["config"]["cpu_bf16"] is False
    assert r["config"]["lr_schedule"] == "cosine" and len(r["curves"]["val_bpd"]) == r["config"]["epochs"]
    assert 0 < r["test_bpd"] < 50 and 0 <= r["quality"]["T1.0"]["confident"] <= 1
    assert (tmp_path / "ck" / "v" / "best.pt").exists()
    # the same name with other settings, a misspelt key, an argument without "=": refused before any training,
    # with the reason, and the first run's files stay as they were
    before = {p: p.read_bytes() for p in [tmp_path / "runs" / "v.json", *(tmp_path / "ck" / "v").glob("*.pt")]}
    for args, why in ((["hidden=32"], "holds a run with other settings"), (["hiden=32"], "did you mean 'hidden'"),
                      (["epochs"], "is not key=value")):
        p = subprocess.run([sys.executable, str(ROOT / "bench" / "train_variant.py"), "v", "--quick", *args,
                            "--out-dir", str(tmp_path / "runs"), "--ckpt-dir", str(tmp_path / "ck")], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and why in p.stderr, p.stderr[-2000:]
    assert {p: p.read_bytes() for p in before} == before


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
             *sorted((ROOT / "results" / "screening_noise").glob("*.json")),
             *sorted((ROOT / "results" / "runs").glob("pair_*.json"))]
    assert len(files) > 2
    for f in files:
        r = json.loads(f.read_text())
        args = shlex.split(r["command"])
        assert args[:3] == ["python", "bench/train_variant.py", f.stem], r["command"]
        cfg = {**base, **parse_overrides([a for a in args[3:] if "=" in a and not a.startswith("--")], base)}
        stored = {k: r["config"].get(k, lib.LATER_KEYS.get(k)) for k in (*lib.TRAIN_KEYS, "epochs")}
        assert {k: cfg[k] for k in (*lib.TRAIN_KEYS, "epochs")} == stored, f.stem
        assert lib.run_id(cfg) == lib.run_id(r["config"]), f.stem


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
    """The notebook's cpu_bf16 default is on exactly when the committed pair passes both tests of the bar."""
    from bench.common import config
    from bench.studies import precision_pair_lines
    pair = {k: json.loads((ROOT / "results" / "runs" / f"pair_{k}_20ep.json").read_text()) for k in ("fp32", "bf16")}
    verdict = precision_pair_lines(pair["fp32"], pair["bf16"])[-1]
    passes = verdict.count(": True") == 2
    assert config()["cpu_bf16"] is passes, verdict
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
    script([ROOT / "bench" / "bench.py", "--quick", "--compile", "--epoch-repeats", "0", "--out", out], tmp_path)
    r = json.loads(out.read_text())["entries"]["64/128"]
    assert {"ours_compiled", "ours_compiled_step"} <= set(r["step_s_median"])
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
    assert r["finished"] == {"full": True, "resume": True, "step_timing": True}
    full, resume, checks, timing = r["full"], r["resume"], r["checks"], r["step_timing"]
    assert full["epochs"] == r["config"]["epochs"] == 4 and full["curves"]["epoch"] == [1, 2, 3, 4]
    assert full["test_bpd"] > 0 and full["s_per_epoch_median"] > 0 and full["best_epoch"] in (1, 2, 3, 4)
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
    assert r["finished"] == {"full": False, "resume": False, "step_timing": False}
    assert r["full"]["epochs"] == 0 and r["full"]["test_bpd"] is None and r["full"]["stopped_by"] == "OutOfTime"
    assert r["resume"]["resumed_after"] is None and not r["resume"]["stopped"]
    assert r["step_timing"]["eager"]["skipped_for"] == "time"


def test_frontier_points_are_the_committed_results():
    """The README's frontier chart: one point per screen of 20 epochs or more, one per denoised screen, and the
    notebook's run."""
    from bench.studies import frontier_points
    pts = frontier_points(ROOT)
    screens = [f for d in ("screening_quality", "screening_noise") for f in (ROOT / "results" / d).glob("*.json")
               if json.loads(f.read_text())["config"]["epochs"] >= 20]
    assert sum(k == "screen" for *_, k in pts) == len(screens)
    noisy = [f for f in screens if "quality_denoised" in json.loads(f.read_text())]
    assert sum(k == "denoised" for *_, k in pts) == len(noisy) >= 3
    m = json.loads((ROOT / "results" / "metrics.json").read_text())
    assert ("notebook, sample()", m["test_bpd"], m["sample_quality"]["T1.0"]["confident"], "notebook") in pts
