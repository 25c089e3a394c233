"""What the scripts in bench/ share: the notebook's code and config, the bench-only options, the script arguments'
checks, the data, the digit classifier and the sample scores (speckle too).

The model, the data split, the training loop and the classifier come from the notebook's `#| lib` cells
(tools/nbload.py) and its config cell; nothing here copies them. What the notebook no longer holds lives here as
bench's own code:
- the range and type rules of every config key a script takes (`RULES`, `check_config`, `parse_overrides`);
- the model variants (`BENCH_MODEL_KEYS`): `coupling` ("affine", the notebook's; "additive"; "spline" with
  `spline_bins` and `spline_bound`), `split` ("random", the notebook's; "checkerboard", "contiguous", "evenodd")
  and `layer_scale=False` (no per-layer exp(s_i)), whose halves and couplings live in bench/variants.py, and
  `logit_alpha=None` (no logit);
- the bench-only training options `train_noise`, `noise_anneal` (Gaussian noise in logit space, annealed to 0 over
  the last epochs) and `cpu_bf16` (bfloat16 autocast of the MLPs on a CPU);
- `Flow`, a subclass of the notebook's NormalizingFlow that takes all of these, built by `build_model(cfg)` and
  trained by the notebook's own `fit()` through `train()`;
- the MALA settings of the samplers in bench/samplers.py (`tempered_betas`, `mala_*`);
- `load_flow` (checkpoints of older notebook versions too), `run_dir` (a checkpoint folder per run, the variant and
  bench-only training keys included), the cached classifier.
"""
import argparse
import ast
import difflib
import hashlib
import json
import math
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

# bench-only config keys, with the values that mean "as the notebook does"
BENCH_DEFAULTS = {"coupling": "affine", "split": "random", "spline_bins": 4, "spline_bound": 10.0, "layer_scale": True,
                  "train_noise": 0.0, "noise_anneal": 0, "cpu_bf16": False, "tempered_betas": [1.5, 2.0],
                  "mala_steps": 40, "mala_step_size": 0.01, "mala_accept": 0.6, "mala_seed": 600}
BENCH_MODEL_KEYS = ("coupling", "split", "spline_bins", "spline_bound", "layer_scale")   # the model variants
COUPLINGS = ("affine", "additive", "spline")           # "affine": the notebook's CouplingLayer; bench/variants.py's
SPLITS = ("random", "checkerboard", "contiguous", "evenodd")       # "random": the notebook's random_halves
BENCH_TRAIN_KEYS = ("train_noise", "noise_anneal", "cpu_bf16")      # bench-only keys that change a training run
from bench import variants  # noqa: E402  (here: bench/variants.py builds on `lib` and SPLITS above)

# what every config key may hold: (int or float, lo, hi) with a closed range (None: unbounded), (bool,), a list of
# choices, or ("list", kind); None only for the keys in NULLABLE
RULES = {
    "hidden": (int, 1, None), "split_seed": (int, 0, None), "logit_alpha": (float, 1e-6, 0.499),
    "scale_bound": (float, 1e-3, None),
    "seed": (int, 0, None), "n_train": (int, 1, 50_000), "n_val": (int, 1, 10_000), "data_seed": (int, 0, None),
    "val_noise_seed": (int, 0, None), "batch_size": (int, 1, None), "lr": (float, 1e-12, None),
    "lr_schedule": ["step", "cosine"], "lr_gamma": (float, 1e-6, 1.0), "grad_clip": (float, 1e-12, None),
    "ema_decay": (float, 0.0, 0.999999), "n_test": (int, 1, 10_000), "test_noise_seed": (int, 0, None),
    "epochs": (int, 1, None), "eval_batch": (int, 1, None),
    "clf_n_train": (int, 1, 60_000), "clf_epochs": (int, 1, None), "clf_seed": (int, 0, None),
    "confident_p": (float, 0.1, 1.0), "strict_p": (float, 0.1, 1.0), "n_quality": (int, 1, None),
    "sample_seed": (int, 0, None), "grid_seed": (int, 0, None), "check_seed": (int, 0, None),
    "pairs": ("list", "digit pairs"), "pair_seed": (int, 0, None),
    "stop_val_bpd": (float, None, None),
    "adv_weight": (float, 0.0, None), "adv_epochs": (int, 1, None), "adv_lr": (float, 1e-12, None),
    "critic_lr": (float, 1e-12, None), "critic_r1": (float, 0.0, None), "critic_width": (int, 1, None),
    # bench-only
    "coupling": list(COUPLINGS), "split": list(SPLITS),
    "spline_bins": (int, 1, 64), "spline_bound": (float, 1e-3, None), "layer_scale": (bool,),
    "train_noise": (float, 0.0, None), "noise_anneal": (int, 0, None), "cpu_bf16": (bool,),
    "tempered_betas": ("list", "numbers > 0"), "mala_steps": (int, 1, None), "mala_step_size": (float, 1e-12, None),
    "mala_accept": (float, 0.01, 0.99), "mala_seed": (int, 0, None),
}
NULLABLE = ("logit_alpha", "ema_decay", "stop_val_bpd")     # logit_alpha=None: no logit (bench's Flow only)


class UsageError(ValueError):
    """A bad command-line argument."""


class Parser(argparse.ArgumentParser):
    """argparse, whose errors are raised (and printed by `cli` as one line) instead of printed with the usage."""

    def error(self, message):
        raise UsageError(message)


def cli(main) -> None:
    """Run a script's main(): a bad argument, a damaged checkpoint, missing MNIST or any other expected error is
    one line on stderr and exit status 2, without a traceback (NF_DEBUG=1 shows the traceback)."""
    try:
        main()
    except (ValueError, RuntimeError, OSError, FloatingPointError, KeyError) as e:
        if os.environ.get("NF_DEBUG") == "1":
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"{Path(sys.argv[0]).name}: error: {msg}", file=sys.stderr)
        sys.exit(2)


def config(quick: bool = False, **overrides) -> dict:
    """The notebook's CFG (full or quick preset) with the bench-only keys at their defaults, and overrides."""
    return {**notebook_config(quick=quick, lib=lib), **BENCH_DEFAULTS, **overrides}


def _rule_error(key, v):
    """What value `v` of `key` must be, or None when it is fine."""
    rule = RULES[key]
    if v is None:
        return None if key in NULLABLE else "not None"
    if isinstance(rule, list):
        return None if v in rule else f"one of {rule}"
    if rule[0] is bool:
        return None if isinstance(v, bool) else "True or False (true/false/1/0)"
    if rule[0] == "list":
        if rule[1] == "digit pairs":
            ok = isinstance(v, list) and v and all(
                isinstance(p, (list, tuple)) and len(p) == 2 and all(type(d) is int and 0 <= d <= 9 for d in p)
                for p in v)
            return None if ok else "a non-empty list of digit pairs, for example [(1,7),(4,9)]"
        lo_ok = (lambda t: t > 0) if rule[1] == "numbers > 0" else (lambda t: t >= 0)
        ok = isinstance(v, list) and v and all(isinstance(t, (int, float)) and not isinstance(t, bool)
                                               and math.isfinite(t) and lo_ok(t) for t in v)
        return None if ok else f"a non-empty list of {rule[1]}, for example 1.0,0.8"
    kind, lo, hi = rule
    if isinstance(v, bool) or not isinstance(v, int if kind is int else (int, float)):
        return "an integer" if kind is int else "a number"
    if not (math.isfinite(v) and (lo is None or v >= lo) and (hi is None or v <= hi)):
        return f"{'an integer' if kind is int else 'a number'} in [{'-inf' if lo is None else lo}, " \
               f"{'inf' if hi is None else hi}]"
    return None


def check_config(cfg: dict) -> dict:
    """cfg itself, or a ValueError naming every unknown key (with the closest name), every missing key and every
    value of a wrong type or out of range, with what it must be; then the notebook's own check_config."""
    errors = []
    for key, v in cfg.items():
        if key not in RULES:
            near = difflib.get_close_matches(key, RULES, n=1)
            errors.append(f"unknown key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        elif (kind := _rule_error(key, v)) is not None:
            errors.append(f"{key} must not be None" if v is None else f"{key}={v!r}: must be {kind}")
    if missing := [k for k in (*lib.CONFIG_KEYS[:-1], *BENCH_DEFAULTS) if k not in cfg]:
        errors.append(f"missing key(s) {missing}")
    if errors:
        raise ValueError("bad config: " + "; ".join(errors))
    lib.check_config({k: v for k, v in cfg.items() if k in lib.CONFIG_KEYS})
    return cfg


def _parse_value(key, text):
    """The value of key=text, read strictly as the key's type; a ValueError says what it must be."""
    rule = RULES[key]
    if text == "None":
        if key in NULLABLE:
            return None
        raise ValueError(f"{key}=None: {key} must not be None (it must be {_rule_error(key, object())})")
    try:
        if isinstance(rule, list):
            return text
        if rule[0] is bool:
            return {"true": True, "1": True, "false": False, "0": False}[text.lower()]
        if rule[0] == "list":
            value = ast.literal_eval(text if text.lstrip().startswith("[") else f"[{text}]")
            return [list(p) if isinstance(p, tuple) else p for p in value]
        if rule[0] is int:
            return int(text)
        value = float(text)
        if not math.isfinite(value):
            raise ValueError
        return value
    except (ValueError, KeyError, SyntaxError):
        raise ValueError(f"{key}={text!r}: must be {_rule_error(key, object()) or 'valid'}"
                         + (" or None" if key in NULLABLE else "")) from None


def parse_overrides(args, cfg) -> dict:
    """['key=value', ...] -> {key: value}, each value read strictly as its key's type in RULES ('None' where a key
    allows it; booleans as true/false/1/0; lists as 1.0,0.8 or [(1,7),(4,9)]); then the whole config is checked, so
    that a misspelt key, a value of the wrong type or out of range is a ValueError that says what it must be,
    before any data is read or any training starts."""
    out = {}
    for arg in args:
        if "=" not in arg:
            raise UsageError(f"{arg!r} is not key=value (for example hidden=32)")
        key, text = arg.split("=", 1)
        if key not in RULES:
            near = difflib.get_close_matches(key, RULES, n=1)
            raise UsageError(f"unknown key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        out[key] = _parse_value(key, text)
    check_config({**cfg, **out})
    return out


def machine(device) -> dict:
    """The device, its name (the GPU's, or the CPU model from /proc/cpuinfo), the threads and torch's version."""
    device = torch.device(device)
    name = device.type
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif Path("/proc/cpuinfo").exists():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        name = names[0] if names else name
    return {"device": str(device), "device_name": name, "threads": torch.get_num_threads(), "torch": torch.__version__}


# --- the model with bench-only options -------------------------------------------------------------------------

class NoLogit(torch.nn.Module):
    """The identity in place of the logit (logit_alpha=None, the ablation's plain [0, 1]): (x, log_det 0)."""

    def forward(self, x):
        return x, x.new_zeros(len(x))

    def inverse(self, y):
        return y, y.new_zeros(len(y))


def _net_out_in_weight_dtype(net, inputs, out):
    """A forward hook on a coupling MLP: under bf16 autocast its output comes back in the weights' dtype, so that
    the coupling arithmetic, the log-determinants and the prior stay in float32 (a no-op without autocast)."""
    return out.to(net[0].weight.dtype)


class Flow(lib.NormalizingFlow):
    """The notebook's NormalizingFlow with bench's model variants and bench-only options. The variants
    (BENCH_MODEL_KEYS, at BENCH_DEFAULTS the notebook's model) come in through the notebook's extension points:
    `halves()` cuts the `split` of bench/variants.py, `coupling()` builds the `coupling` ("affine": the notebook's
    CouplingLayer; "additive", "spline": bench/variants.py's); layer_scale=False replaces every layer's s_i by a
    zero buffer (exp(s_i) = 1, not trained; still in the state dict, as older notebook versions kept it);
    logit_alpha=None replaces the logit by the identity. `self.kwargs` holds the variant keys too, so that
    `load_flow` rebuilds the model from its checkpoint. In training mode only, `calc_likelihood` adds
    sigma * N(0, 1) noise to the logits before the couplings (`self.sigma`, from a generator seeded per step with
    `self.noise_seed`), and on a CPU with `self.bf16` runs under bfloat16 autocast (the MLPs' matrix products).
    Evaluation and sampling are the notebook's."""

    def __init__(self, *, logit_alpha, coupling=BENCH_DEFAULTS["coupling"], split=BENCH_DEFAULTS["split"],
                 spline_bins=BENCH_DEFAULTS["spline_bins"], spline_bound=BENCH_DEFAULTS["spline_bound"],
                 layer_scale=BENCH_DEFAULTS["layer_scale"], **kw):
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {list(COUPLINGS)}, got {coupling!r}")
        # read by halves() and coupling(), which the notebook's __init__ calls
        self.variant = dict(coupling=coupling, split=split, spline_bins=spline_bins, spline_bound=spline_bound,
                            layer_scale=layer_scale)
        super().__init__(logit_alpha=0.25 if logit_alpha is None else logit_alpha, **kw)
        if logit_alpha is None:
            self.preprocess, self.kwargs["logit_alpha"] = NoLogit(), None
        if not layer_scale:
            for layer in self.layers:
                del layer.s
                layer.register_buffer("s", torch.zeros(lib.D))
        self.kwargs.update(self.variant)
        self.sigma, self.noise_seed, self.bf16 = 0.0, 0, False
        for layer in self.layers:
            layer.net.register_forward_hook(_net_out_in_weight_dtype)

    def halves(self):
        return variants.make_halves(self.variant["split"], self.kwargs["split_seed"])

    def coupling(self, idx_cond, idx_trans):
        v, kw = self.variant, self.kwargs
        if v["coupling"] == "affine":
            return super().coupling(idx_cond, idx_trans)
        if v["coupling"] == "additive":
            return variants.AdditiveCoupling(idx_cond, idx_trans, kw["hidden"], kw["scale_bound"])
        return variants.SplineCoupling(idx_cond, idx_trans, kw["hidden"], kw["scale_bound"], bins=v["spline_bins"],
                                       bound=v["spline_bound"])

    def calc_likelihood(self, x, validate=True):
        if not self.training or not (self.sigma or self.bf16):
            return super().calc_likelihood(x, validate=validate)
        if validate:
            lib.check_batch(x, "x", self.layers[0].s, data=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16 and x.device.type == "cpu"):
            h, log_det = self.preprocess(x)
            if self.sigma:          # logit(x) + sigma * eps: the data blurred where the couplings see it
                gen = torch.Generator(h.device).manual_seed(self.noise_seed)
                h = h + self.sigma * torch.randn(h.shape, generator=gen, device=h.device, dtype=h.dtype)
            for layer in self.layers:
                h, ld = layer(h)
                log_det = log_det + ld
        return -0.5 * (h ** 2).sum(dim=1) - 0.5 * lib.D * lib.LOG_2PI + log_det


def model_kwargs(cfg) -> dict:
    """Flow's arguments from a config: the notebook's model keys, and bench's variant keys (their defaults where cfg,
    say a stored config of the notebook, lacks them)."""
    return {**{k: cfg[k] for k in lib.MODEL_KEYS}, **{k: cfg.get(k, BENCH_DEFAULTS[k]) for k in BENCH_MODEL_KEYS}}


def build_model(cfg, device="cpu") -> Flow:
    """A Flow of cfg's model keys and variant keys, initialised from torch's global RNG seeded with cfg['seed'] (as
    the notebook)."""
    torch.manual_seed(cfg["seed"])
    return Flow(**model_kwargs(cfg)).to(device)


def noise_sigma(cfg, epoch) -> float:
    """sigma of the training noise in `epoch` (1, 2, ...): train_noise, falling linearly to 0 over the last
    noise_anneal epochs (so the last epoch sees the clean data)."""
    k, s = cfg.get("noise_anneal", 0), cfg.get("train_noise", 0.0)
    return s * min(1.0, (cfg["epochs"] - epoch) / k) if k else s


def run_dir(root, cfg, adv=False) -> Path:
    """The notebook's run_dir(root, cfg, adv), with a suffix hashing the bench-only training keys when any differs
    from the notebook's behaviour (and the epochs, with an annealed noise), and the variant keys too when any of them
    differs from its default: runs of other settings never share a folder, and the notebook's runs keep its folder."""
    base = lib.run_dir(root, cfg, adv)
    extra = {k: cfg.get(k, BENCH_DEFAULTS[k]) for k in BENCH_TRAIN_KEYS}
    variant = {k: cfg.get(k, BENCH_DEFAULTS[k]) for k in BENCH_MODEL_KEYS}
    if any(variant[k] != BENCH_DEFAULTS[k] for k in variant):
        extra.update(variant)
    elif all(extra[k] == BENCH_DEFAULTS[k] for k in extra):
        return base
    if extra["noise_anneal"]:
        extra["epochs"] = cfg["epochs"]
    return base.with_name(f"{base.name}_{hashlib.sha1(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:6]}")


def train(model, data, cfg, ckpt_dir, on_step=None, quiet=False) -> dict:
    """The notebook's fit() in exactly ckpt_dir, with the bench-only options: the noise sigma of each epoch and a
    noise seed per step (so a resumed run draws the same noise), and CPU bf16. on_step runs after that setting."""
    model.bf16 = bool(cfg.get("cpu_bf16"))
    if "stop_val_bpd" in cfg and cfg["stop_val_bpd"] is None:       # None = no stop; fit() compares it as a number
        cfg = {k: v for k, v in cfg.items() if k != "stop_val_bpd"}

    def hook(epoch, step, m):
        m.sigma = noise_sigma(cfg, epoch)
        m.noise_seed = (cfg["seed"] * 1_000_003 + epoch) * 100_003 + step
        if on_step is not None:
            on_step(epoch, step, m)

    try:
        return lib.fit(model, data["train_pix"], data["val_x"], cfg, ckpt_dir, on_step=hook, quiet=quiet)
    finally:
        model.sigma, model.bf16 = 0.0, False


def train_step(model, opt, grad_clip):
    """One training step as fit() takes it (loss = mean bits/dim, backward, clip, Adam) on a batch x; returns
    (loss, grad_norm). For the speed studies; bench's own code, not the notebook's."""
    params = list(model.parameters())

    def step(x):
        loss = lib.bits_per_dim(model.calc_likelihood(x, validate=False)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        return loss.detach(), grad_norm
    return step


def load_flow(path, device="cpu") -> tuple:
    """(model in eval mode, checkpoint) from a checkpoint written by fit(): the model it was trained as (a variant
    too, from the notebook's or bench's own checkpoints), rebuilt from the checkpoint's own arguments. A damaged file
    is the notebook's RuntimeError that names it and the fix."""
    ck = lib.load_checkpoint(path)
    # keys that checkpoints of older notebook versions lack, with the values those versions used implicitly; the
    # variant keys (which older notebook versions held and wrote) at their defaults where a checkpoint lacks them
    model = Flow(**{"split_seed": 0, **{k: BENCH_DEFAULTS[k] for k in BENCH_MODEL_KEYS}, **ck["model_kw"]})
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), ck


def mnist(cfg, device="cpu") -> dict:
    """The notebook's mnist_splits: the data folder is the one the notebook reads (its environment variable)."""
    return lib.mnist_splits(cfg, device)


def classifier(cfg, data, path, device):
    """The notebook's digit classifier (same data, epochs and seed cfg['clf_seed']), trained once, cached at path."""
    clf = lib.DigitClassifier().to(device)
    path = Path(path)
    if path.exists():
        try:
            clf.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        except Exception as e:
            raise RuntimeError(f"{path} cannot be read as the cached classifier ({type(e).__name__}). Delete it: it "
                               "is trained again.") from None
        return clf.eval()
    clf = lib.train_classifier(data["clf_pix"], data["clf_y"], cfg["clf_epochs"],
                               torch.Generator().manual_seed(cfg["clf_seed"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    lib.atomic_save(clf.state_dict(), path)
    return clf


def speckle(x, bright=0.5) -> float:
    """Isolated bright pixels per image: pixels >= `bright` with none of their 8 neighbours >= `bright`, x [N, 784]."""
    b = (x.reshape(-1, 1, 28, 28) >= bright).float()
    neighbours = torch.nn.functional.conv2d(b, torch.ones(1, 1, 3, 3, device=b.device), padding=1) - b
    return ((b > 0) & (neighbours == 0)).sum(dim=(1, 2, 3)).double().mean().item()


def score_samples(k, clf, train_ref, cfg) -> dict:
    """The notebook's sample measures (`measure`: the shares at cfg's confident_p and strict_p, class entropy, digit
    counts, the distance to the nearest image of train_ref) of uint8 samples k [n, 784], with bench's speckle and the
    largest predicted class's share (a collapse guard)."""
    x = lib.from_uint8(k).to(train_ref.device)
    q = lib.measure(x, clf, train_ref, cfg)
    return {**q, "speckle": speckle(x), "top_class_share": max(q["digit_counts"]) / len(k)}


def write_json(path, obj) -> None:
    """Write JSON through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
