"""The variants of the flow that the notebook no longer holds, as bench's own code: the halves other than the
notebook's random ones, the additive (NICE) coupling and the rational-quadratic spline coupling.

bench.common's `Flow` builds them through the notebook's two extension points (`NormalizingFlow.halves()` and
`.coupling()`), from the config keys `split`, `coupling`, `spline_bins` and `spline_bound`:

    build_model({**config(), "coupling": "spline", "split": "checkerboard"})

Both couplings subclass the notebook's CouplingLayer: its MLP, its per-layer exp(s_i), its forward and inverse;
only `transform` (what the MLP's outputs do to the transformed half) and the outputs per pixel differ. Each names
itself in a class attribute `coupling` ("additive", "spline"); the notebook's CouplingLayer has none ("affine").
"""
import math

import torch
from torch import nn

from bench.common import SPLITS, lib


def make_halves(split: str, seed: int = 0) -> tuple:
    """Two disjoint, sorted index sets (A, B) of 392 pixels each: 'random' is the notebook's random_halves(seed);
    'checkerboard' (A: the pixels with row + column even), 'contiguous' (A: the top 14 rows) and 'evenodd' (A: the
    even columns) ignore the seed."""
    if split == "random":
        return lib.random_halves(seed)
    idx = torch.arange(lib.D)
    in_a = {"contiguous": idx < lib.D // 2, "checkerboard": (idx // 28 + idx % 28) % 2 == 0,
            "evenodd": idx % 2 == 0}.get(split)
    if in_a is None:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    return idx[in_a], idx[~in_a]


class AdditiveCoupling(lib.CouplingLayer):
    """NICE's additive coupling: h_B -> h_B + t with t = MLP(h_A), log-det 0; then everything times exp(s)."""
    coupling = "additive"
    outputs_per_pixel = 1                                         # t

    def transform(self, h_trans, out, inverse):                  # -> (new h_B [B, 392], its log_det [B] = 0)
        shift = out[:, 0]
        return (h_trans - shift if inverse else h_trans + shift), h_trans.new_zeros(len(h_trans))


class SplineCoupling(lib.CouplingLayer):
    """h_B -> the monotone rational-quadratic spline of each pixel on [-B, B] (K bins, the identity outside), its
    3K - 1 parameters per pixel = MLP(h_A); then everything times exp(s). At initialisation (zero outputs) it is
    the identity."""
    coupling = "spline"

    def __init__(self, idx_cond, idx_trans, hidden, scale_bound=3.0, bins=4, bound=10.0):
        if int(bins) != bins or bins < 1 or not bound > 0:
            raise ValueError(f"a spline needs bins >= 1 and a bound > 0, got {bins!r} and {bound!r}")
        self.bins, self.bound = int(bins), float(bound)           # read by the notebook's __init__ (its MLP's size)
        super().__init__(idx_cond, idx_trans, hidden, scale_bound)

    @property
    def outputs_per_pixel(self):                                 # K widths, K heights, K - 1 inner slopes
        return 3 * self.bins - 1

    def transform(self, h_trans, out, inverse):
        return rq_spline(h_trans, out, self.bound, inverse)


# --- the rational-quadratic spline (Durkan et al. 2019), as the notebook's Appendix defined it ----------------------

MIN_BIN, MIN_SLOPE = 1e-3, 1e-3   # the smallest bin width and height (shares of 2B) and knot slope

def rq_spline(x, params, bound, inverse=False):
    """Monotone rational-quadratic spline on [-B, B], identity outside: x [N, n], params [N, 3K-1, n] ->
    (y, sum of log dy/dx [N]); inverse=True maps an output y back to (x, minus that sum)."""
    K = (params.shape[1] + 1) // 3
    raw_wh, raw_d = params.split([2 * K, K - 1], dim=1)
    # bin widths w and heights h: 2B [MIN_BIN + (1 - K MIN_BIN) softmax], each at least MIN_BIN of 2B  [N, 2, K, n]
    wh = torch.softmax(raw_wh.unflatten(1, (2, K)), dim=2) * (2 * bound * (1 - MIN_BIN * K)) + 2 * bound * MIN_BIN
    # slopes at the inner knots: softplus, shifted so that a zero output gives 1 (the ends' 1s come below) [N, K-1, n]
    d_in = MIN_SLOPE + nn.functional.softplus(raw_d + math.log(math.expm1(1 - MIN_SLOPE)))
    v = x.clamp(-bound, bound)
    with torch.no_grad():
        # inner knots -B + w_1 + ... + w_j (of the heights when inverse); k = how many lie below v (bin 0..K-1)
        knots = torch.cumsum(wh[:, int(inverse), :-1], dim=1) - bound                              # [N, K-1, n]
        k = (v[:, None] > knots).sum(dim=1, keepdim=True)                                          # [N, 1, n]
        j = torch.arange(K, device=x.device)[:, None]
        in_k, below_k = (j == k).to(x.dtype), (j < k).to(x.dtype)     # one-hot masks of bin k and the bins below
    # bin k's left knot (x_k, y_k) = -B + the widths and heights below it; its width w_k and height h_k  [N, n]
    x0, y0 = ((wh * below_k[:, None]).sum(2) - bound).unbind(1)
    wk, hk = (wh * in_k[:, None]).sum(2).unbind(1)
    # its knot slopes d_k and d_k+1, which are 1 at -B and at B
    d0, d1 = (d_in * in_k[:, 1:]).sum(1) + in_k[:, 0], (d_in * in_k[:, :-1]).sum(1) + in_k[:, -1]
    s = hk / wk
    if inverse:
        # xi solves a xi^2 + b xi + c = 0; its root in [0, 1] is 2c / (-b - sqrt(b^2 - 4ac))
        a = hk * (s - d0) + (v - y0) * (d1 + d0 - 2 * s)
        b = hk * d0 - (v - y0) * (d1 + d0 - 2 * s)
        c = -s * (v - y0)
        xi = 2 * c / (-b - torch.sqrt((b * b - 4 * a * c).clamp_min(0)))
        out = x0 + xi * wk
    else:
        xi = (v - x0) / wk
    xi1 = xi * (1 - xi)
    denom = s + (d1 + d0 - 2 * s) * xi1
    if not inverse:
        # y = y_k + h_k [s xi^2 + d_k xi (1 - xi)] / denom
        out = y0 + hk * (s * xi * xi + d0 * xi1) / denom
    # log dy/dx = log(s^2 [d_k+1 xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2]) - 2 log denom
    log_dydx = torch.log(s * s * (d1 * xi * xi + 2 * s * xi1 + d0 * (1 - xi) ** 2)) - 2 * torch.log(denom)
    inside = (x > -bound) & (x < bound)
    out, log_det = torch.where(inside, out, x), torch.where(inside, log_dydx, torch.zeros_like(log_dydx)).sum(1)
    return out, (-log_det if inverse else log_det)
