"""The repository a newcomer opens: README.md short, with the notebook's results in one generated table; the studies
on bench/README.md; no link or path in either leaving the repository, every link arriving somewhere; figures/ holding
exactly what the notebook writes; and the tables of both files generated from results/ by tools/readme_tables.py,
whatever format of results/metrics.json the notebook wrote."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README, BENCH_README = ROOT / "README.md", ROOT / "bench" / "README.md"
DOCS = (README, BENCH_README)
MAX_WORDS = 1500

# [text](target) and ![alt](target), with an optional title; [label]: target; src="..." and href="..." in HTML
LINKS = (re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"),
         re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M),
         re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']"""))
EXTERNAL = re.compile(r"^(https?|mailto):", re.I)
# A path outside the repository in the text (outside link targets): one that climbs out (../), one from the home
# folder (~/), or an absolute filesystem path (/work/..., /tmp/...; not the "/" inside bits/dim or <root>/MNIST/raw/)
OUTSIDE = (re.compile(r"(?<![\w.])\.\./"), re.compile(r"(?<![\w.])~/"),
           re.compile(r"(?<![\w.:/>})\]\-])/[A-Za-z_][\w.-]*/"), re.compile(r"\b[A-Za-z]:\\"))


def link_targets(text: str) -> list:
    return [m.group(1) for pattern in LINKS for m in pattern.finditer(text)]


def without_link_targets(text: str) -> str:
    for pattern in LINKS:
        text = pattern.sub(lambda m: m.group(0).replace(m.group(1), ""), text)
    return text


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (hyphens, underscores kept), spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)   # a '#' in a code block is no heading
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def link_problems(path: Path) -> list:
    """What is wrong with the links and paths of one Markdown file: a target or path outside the repository (a link
    resolved from the file's folder, a path in the text from the repository root), a relative target that does not
    exist, an anchor with no heading."""
    text = path.read_text()
    problems = []
    for target in link_targets(text):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        if file_part.startswith(("/", "~", "\\")) or re.match(r"[A-Za-z]:", file_part) or "://" in file_part:
            problems.append(f"{target}: not a path inside the repository")
            continue
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: leaves the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    rest = without_link_targets(text)
    for pattern in OUTSIDE:
        problems += [f"path outside the repository: {rest[m.start():m.start() + 40]!r}" for m in pattern.finditer(rest)]
    return problems


def notebook_figures() -> set:
    """The files the notebook's code cells write into figures/: every `FIG_DIR / "NAME"`."""
    nb = json.loads((ROOT / "normalizing_flows.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return set(re.findall(r"""FIG_DIR\s*/\s*["']([^"']+)["']""", code))


# --- README.md and bench/README.md -------------------------------------------------------------------------------

def test_readme_is_short():
    words = len(README.read_text().split())                      # as `wc -w` counts
    assert words <= MAX_WORDS, f"README.md has {words} words, at most {MAX_WORDS}: move detail to bench/README.md"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_paths_stay_in_the_repository_and_exist(path):
    assert not (problems := link_problems(path)), "\n".join(problems)


def test_link_checker_finds_what_is_wrong(tmp_path, monkeypatch):
    """The checker above fails on each kind of fault, and passes the links both files use."""
    tmp_path = tmp_path.resolve()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "README.md").write_text("# Sub page\n\n## Counting digits by eye\n")
    doc = tmp_path / "README.md"
    good = ("[the studies](sub/README.md), [the count](sub/README.md#counting-digits-by-eye), ![a](figures/a.png), "
            "[Colab](https://colab.research.google.com/x), 1.72 bits/dim in `$NF_DATA_DIR/MNIST/raw/`")
    doc.write_text(good)
    assert link_problems(doc) == []
    for bad in ("[x](../shared/eye_count.md)", "see `../shared/eye_count.md`", "[x](/work/shared/eye_count.md)",
                "in /work/shared/data", "[x](figures/b.png)", "[x](sub/README.md#no-such-heading)",
                "[x](#nothing-here)", "![x](~/a.png)"):
        doc.write_text(good + "\n" + bad)
        assert link_problems(doc), bad


def test_readme_holds_the_results_and_bench_readme_the_studies():
    """README.md has one generated table, the notebook's results; the studies' tables are on bench/README.md, which
    has the blind-count procedure as its own section, and README.md links there."""
    from tools import readme_tables as rt
    blocks = {p: [m.group(2) for m in rt.BLOCK.finditer(p.read_text())] for p in DOCS}
    assert blocks[README] == ["results"]
    assert {"critic_screen", "screening_quality", "noise_screen", "ablation", "bench"} <= set(blocks[BENCH_README])
    assert set(rt.FILES) == set(DOCS)
    assert "counting-digits-by-eye" in anchors(BENCH_README)
    assert "bench/README.md#counting-digits-by-eye" in link_targets(README.read_text())


# --- figures/ ----------------------------------------------------------------------------------------------------

def test_figures_folder_holds_only_what_the_notebook_writes():
    written = notebook_figures()
    assert written, "no FIG_DIR / \"NAME\" found in the notebook's code cells"
    present = {p.name for p in (ROOT / "figures").iterdir() if not p.name.startswith(".")}
    assert present <= written, f"figures/ holds files the notebook does not write: {sorted(present - written)}"


def test_figures_of_the_committed_run_are_there():
    nb = json.loads((ROOT / "normalizing_flows.ipynb").read_text())
    if not any(c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"):
        pytest.skip("the notebook carries no outputs: it has not been run since its last edit")
    missing = sorted(n for n in notebook_figures() if not (ROOT / "figures" / n).is_file())
    assert not missing, f"the notebook writes these, but figures/ lacks them: {missing}"


# --- the generated tables ----------------------------------------------------------------------------------------

def test_readme_tables_are_the_results_files():
    """The tables of README.md and bench/README.md are generated from results/ by tools/readme_tables.py; none is
    stale."""
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "readme_tables.py"), "--check"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


def test_readme_tables_check_names_a_stale_block_in_either_file(tmp_path, monkeypatch):
    from tools import readme_tables as rt
    copies = []
    for path, name in zip(DOCS, ("top.md", "studies.md"), strict=True):
        copy = tmp_path / name
        copy.write_text(path.read_text().replace("<!-- /table -->", "stale\n<!-- /table -->", 1))
        copies.append(copy)
    monkeypatch.setattr(rt, "FILES", tuple(copies))
    monkeypatch.setattr(sys, "argv", ["readme_tables.py", "--check"])
    with pytest.raises(SystemExit) as e:
        rt.main()
    assert all(c.name in str(e.value) for c in copies), e.value


def lean_metrics(config: dict, **extra) -> dict:
    """A lean notebook's results/metrics.json, every number distinct, with config `config`."""
    quality = {"confident": 0.633, "strict": 0.401, "class_entropy": 0.959, "nn_median": 5.41,
               "digit_counts": [100] * 10}
    return {"test_bpd": 1.71234, "test_nats": 3417.12, "val_bpd": 1.72346, "best_epoch": 99,
            "curves": {"epoch": list(range(1, 101))}, "train_time_s": 2470.0, "wall_time_s": 3400.0,
            "device": "cpu", "torch": "2.x", "threads": 2,
            "real_test_quality": {"confident": 0.971, "strict": 0.93, "class_entropy": 0.999, "nn_median": 4.43,
                                  "digit_counts": [1000] * 10},
            "real_test_nn_median": 4.43, "samples_T1": quality, "round_trip_max_error": 3e-6,
            "inverse_finite_10k": True, "quick": False, "config": config, **extra}


@pytest.fixture()
def new_config(full_cfg):
    """The notebook's config as it is now: no coupling, split, spline or layer_scale keys; width 512 for the count."""
    gone = ("coupling", "split", "spline_bins", "spline_bound", "layer_scale")
    return {**{k: v for k, v in full_cfg.items() if k not in gone}, "hidden": 512, "split_seed": 0}


def test_readme_tables_read_the_lean_notebooks_results(new_config):
    """An earlier lean notebook's results/metrics.json (config with coupling and split, temperatures, a spline
    model) gives the results table, with every number from the file."""
    from tools import readme_tables as rt
    old_config = {**new_config, "coupling": "affine", "split": "random", "spline_bins": 4, "spline_bound": 10.0,
                  "layer_scale": True}
    m = lean_metrics(old_config,
                     temperatures={"T1.0": {"confident": 0.633, "class_entropy": 0.959},
                                   "T0.6": {"confident": 0.551, "class_entropy": 0.9}},
                     spline={"test_bpd": 1.2861, "epochs": 16, "best_epoch": 16, "train_time_s": 1200.0,
                             "samples_T1": {"confident": 0.58, "class_entropy": 0.93}})
    text = rt.results_lean(m)
    for s in ("3417.1 nats per image = 1.7123 bits/dim", "1.7235 bits/dim (epoch 99 of 100)", "5,568,640 parameters",
              "0.633 ± 0.015 classifier-confident", "T = 0.6: 0.551", "test **1.2861 bits/dim**", "K = 4 bins",
              "41.2 min", "random halves (seed 0)"):
        assert s in text, s
    assert "second model" not in text and "speckle" not in text and "phase 2" not in text


def test_readme_tables_read_the_current_notebooks_results(new_config):
    """The current notebook's results/metrics.json (no coupling, split or spline keys in its config; phase 2 with
    its checks) gives the results table, with every number from the file and a failed check named."""
    from tools import readme_tables as rt
    phase2 = {"test_bpd": 1.75671, "test_nats": 3392.81, "epochs": 12, "train_time_s": 942.0,
              "curves": {"epoch": list(range(1, 13))},
              "samples_T1": {"confident": 0.803, "strict": 0.626, "class_entropy": 0.994, "nn_median": 4.73,
                             "digit_counts": [100] * 10},
              "checks": {"class entropy at least 0.95": True, "test bits/dim at most 0.05 above phase 1": False,
                         "nearest-image distance at least 0.8 of real test images'": True}}
    m = lean_metrics(new_config, phase2=phase2, interpolation_readings={"0->1": "0 0 · 1 1"},
                     layer_grid_confident=0.7)
    text = rt.results_lean(m)
    for s in ("3417.1 nats per image = 1.7123 bits/dim", "**3392.8 nats per image = 1.7567 bits/dim** (+0.0444)",
              "12 epochs in 15.7 min", "4 affine couplings", "random halves (seed 0)", "5,568,640 parameters",
              "0.803 ± 0.013 classifier-confident", "0.626 at p ≥ 0.99", "2 of 3 passed; failed: test bits/dim at "
              "most 0.05 above phase 1", "inverse of 10,000 latents all finite: True"):
        assert s in text, s
    assert "spline" not in text and "temperatures" not in text and "?" not in text
    assert "quick-preset" in rt.results_lean({**m, "quick": True})


def test_parameter_count_is_the_notebooks_model(lib, full_cfg):
    """results_lean counts the affine flow's parameters from the config alone; the notebook's model agrees."""
    from tools import readme_tables as rt
    for hidden in (8, 24):
        cfg = {**full_cfg, "hidden": hidden}
        model = lib.NormalizingFlow(**{k: cfg[k] for k in lib.MODEL_KEYS})
        assert rt.n_params(cfg) == sum(p.numel() for p in model.parameters())


def test_spline_screen_table_is_the_results_files():
    """The spline screen's table has one row per results file, each against the affine pair."""
    from tools import readme_tables as rt
    rows = rt.spline_screen().splitlines()[2:]
    files = sorted((ROOT / "results" / "screening_spline").glob("*.json"))
    assert len(rows) == len(files) and rows[0].startswith("| `affine_10ep` |")
    for f in files:
        r = json.loads(f.read_text())
        row = next(x for x in rows if x.startswith(f"| `{f.stem}` |"))
        assert f"| {r['test_bpd']:.4f} |" in row and f"{r['quality']['T1.0']['confident']:.3f} ±" in row


def test_no_committed_output_holds_an_absolute_path():
    """Results files, the README pages and the notebook's outputs name paths relative to the repository."""
    absolute = re.compile(r"(?<![\w.~])/(work|home|tmp|root|Users|content)/")
    files = [*sorted((ROOT / "results").rglob("*.json")), ROOT / "README.md", ROOT / "bench" / "README.md",
             ROOT / "normalizing_flows.ipynb"]
    for f in files:
        text = f.read_text()
        if f.suffix == ".ipynb":        # the Drive folder in the run-control cell's code is Colab's, not this machine's
            text = json.dumps([c.get("outputs", []) for c in json.loads(text)["cells"]])
        hit = absolute.search(text)
        assert not hit, f"{f.relative_to(ROOT)}: {text[max(0, hit.start() - 60):hit.end() + 40]}"
    assert absolute.search('"--out-dir /work/main/results"') and not absolute.search("results/screening_critic")


def test_critic_screen_charges_each_run_against_the_control_with_its_flow_learning_rate(tmp_path, monkeypatch):
    """Two controls (W = 0) from one start, at two flow learning rates: a run's likelihood cost is read against the
    control with its own learning rate, so a change of learning rate is not counted as the critic's cost."""
    from tools import readme_tables as rt
    folder = tmp_path / "results" / "screening_critic"
    folder.mkdir(parents=True)

    def study(name, w, lr, bpd):
        rows = [{"epoch": e, "test_bpd": b, "confident": 0.6, "strict": 0.4, "class_entropy": 0.97, "nn_median": 5.0}
                for e, b in enumerate([1.70, bpd])]
        cfg = {"adv_weight": w, "adv_lr": lr, "critic_lr": 2e-4, "critic_r1": 1.0, "critic_width": 32}
        (folder / f"{name}.json").write_text(json.dumps({"start": "s.pt", "start_epoch": 60, "config": cfg,
                                                         "rows": rows, "real_test_nn_median": 4.4}))
    study("a_control_slow", 0.0, 1e-4, 1.69)
    study("b_control_fast", 0.0, 2e-4, 1.68)
    study("slow", 2.0, 1e-4, 1.74)
    study("fast", 2.0, 2e-4, 1.73)
    monkeypatch.setattr(rt, "ROOT", tmp_path)
    text = rt.critic_screen()
    assert "| `slow` | 2 | 0.0001 | 0.0002 | 1 | 32 | 1 | 1.7400 | +0.0500 |" in text, text
    assert "| `fast` | 2 | 0.0002 | 0.0002 | 1 | 32 | 1 | 1.7300 | +0.0500 |" in text, text
