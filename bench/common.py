"""What the scripts in bench/ share: the notebook's code and config, its data, and its digit classifier.

Nothing here redefines the notebook: the model, the data split, the training loop and the sample-quality measure
all come from its `#| lib` cells (tools/nbload.py), and the configuration from its config cell.
"""
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tools.nbload import load_lib, notebook_config  # noqa: E402

lib = load_lib()
QUALITY_BPD = 1.85          # the time-to-quality bar: validation bits/dim reached first at which epoch and minute


def config(quick: bool = False, **overrides) -> dict:
    """The notebook's CFG (full or quick preset), with overrides."""
    return {**notebook_config(quick=quick, lib=lib), **overrides}


def parse_overrides(args, cfg) -> dict:
    """['key=value', ...] -> {key: value}, each value read as its key's type in the notebook's CONFIG_RULES ('None'
    where a key allows it; booleans as true/false/1/0); then the whole config is checked, so that a misspelt key, a
    value of the wrong type or out of range is a ValueError that says what it must be, before any training."""
    out = {}
    for arg in args:
        if "=" not in arg:
            raise ValueError(f"{arg!r} is not key=value (for example hidden=32)")
        key, text = arg.split("=", 1)
        rule = lib.CONFIG_RULES.get(key)
        value = text                                   # a string unless it reads as the key's type
        if text == "None":
            value = None
        elif isinstance(rule, tuple) and rule[0] is bool:
            value = {"true": True, "1": True, "false": False, "0": False}.get(text.lower(), text)
        elif isinstance(rule, tuple) and rule[0] in (int, float):
            try:
                value = int(text) if rule[0] is int else float(text)
            except ValueError:
                pass
        out[key] = value
    lib.check_config({**cfg, **out})
    return out


def machine(device) -> dict:
    return {"device": str(device), "device_name": lib.describe_device(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def classifier(cfg, data, path, device):
    """The notebook's sample-quality classifier (same data, epochs and seed), trained once and cached at path."""
    clf = lib.DigitClassifier().to(device)
    path = Path(path)
    if path.exists():
        clf.load_state_dict(torch.load(path, map_location=device))
        return clf.eval()
    clf = lib.train_classifier(data["clf_pix"], data["clf_y"], cfg["clf_epochs"],
                               torch.Generator().manual_seed(cfg["seed"] + 10))
    path.parent.mkdir(parents=True, exist_ok=True)
    lib.atomic_save(clf.state_dict(), path)
    return clf


def score_samples(k, clf, train_ref, threshold) -> dict:
    """The notebook's sample metrics of uint8 samples k [n, 784] (confident, class entropy, speckle), the largest
    predicted class's share (a collapse guard) and the median distance to the nearest image of train_ref."""
    dev = train_ref.device
    x = lib.from_uint8(k).to(dev)
    probs = lib.predict_probs(clf, x)
    return {**lib.sample_quality(probs, threshold), "speckle": lib.speckle(x),
            "top_class_share": torch.bincount(probs.argmax(dim=1), minlength=10).max().item() / len(k),
            "nn_median": lib.nearest_distance(x, train_ref).median().item()}


def draw(model, z, sigma, beta=None, cfg=None) -> tuple:
    """(uint8 samples, MALA acceptance or None) from latents z: first cfg['mala_steps'] MALA steps towards p(x)^beta
    when beta is given (seed, step size and target acceptance from cfg, as the notebook's Appendix), then decoded,
    with one Tweedie step of size sigma when sigma > 0 (a model trained with that noise)."""
    rate = None
    if beta is not None:
        z, rate = lib.mala(model, z, beta, cfg["mala_steps"], torch.Generator().manual_seed(cfg["seed"] + 600),
                           cfg["mala_step_size"], cfg["mala_accept"])
    with torch.no_grad():
        y = lib.sample_latents(model, z)
        x = lib.denoise(model, y, sigma) if sigma else model.preprocess.inverse(y).clamp(0, 1)
    return lib.to_uint8(x), rate


def write_json(path, obj) -> None:
    """Write JSON through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
