"""Stain normalisation of tile batches on the tensor device: Macenko, Reinhard and Vahadane, batched.

Every method estimates a tile's own stain statistics and maps them onto a reference (the built-in one or
one fitted to a user's image). All work on a whole batch at once on its device (no per-tile loop, one
host sync per batch), so normalisation costs little next to an encoder. Macenko and Reinhard reproduce torchstain's
``TorchMacenkoNormalizer`` / ``TorchReinhardNormalizer`` (tests compare them); Vahadane is milkit's own
(sparse non-negative dictionary learning with an exact per-pixel two-stain lasso).

A tile with under ``MIN_TISSUE`` of its pixels stained (optical density >= ``BETA`` in every channel),
or whose estimate degenerates, is passed through unnormalised and counted, never turned into NaN.
"""

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from milkit.errors import DataError

StainMethod = Literal["none", "macenko", "reinhard", "vahadane"]
STAIN_METHODS: tuple[str, ...] = get_args(StainMethod)

IO = 240.0
"""Transmitted light intensity of the optical density (Macenko's and torchstain's ``Io``)."""
ALPHA = 1.0
"""Macenko: stain vectors are the ``ALPHA`` and ``100 - ALPHA`` percentiles of the angle."""
BETA = 0.15
"""Pixels with optical density below this in any channel are background (transparent)."""
MAX_PERCENTILE = 99.0
"""A stain's maximum concentration is this percentile over the tile's pixels."""
MIN_TISSUE = 0.01
"""A tile with fewer stained pixels than this fraction is left unnormalised (and counted)."""
VAHADANE_LAMBDA = 0.1
"""Vahadane: L1 weight of the concentrations while learning the stain matrix (StainTools' value)."""
VAHADANE_LASSO = 0.01
"""Vahadane: L1 weight of the concentrations given the stain matrix (StainTools' value)."""
VAHADANE_STEPS = 20
"""Vahadane: alternating dictionary-learning steps, from the tile's Macenko estimate."""
VAHADANE_PIXELS = 4096
"""Vahadane: at most about this many pixels per tile (an even stride) learn the stain matrix."""

# The built-in references. Macenko and Vahadane: the stain matrix and maximum concentrations of
# Macenko's MATLAB code, which torchstain and HEnorm_python ship. Reinhard: fitted (``fit_target``) to a
# 512 x 512 crop of the OpenSlide test slide CMU-1 (CC0), cmu-1-small-region.svs level 0 at x=896,
# y=1792 (H&E epidermis and dermis); tests/extract/test_stain.py refits it.
_MACENKO_REFERENCE = {"stain_matrix": [[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]],
                      "max_concentration": [1.9705, 1.0308]}
BUILTIN: dict[str, dict[str, list]] = {
    "macenko": _MACENKO_REFERENCE,
    "reinhard": {"lab_mean": [47.8532, 25.8037, -14.3044], "lab_std": [22.1016, 11.4422, 9.9671]},
    "vahadane": _MACENKO_REFERENCE,
}

# sRGB (D65) -> XYZ and the reference white, as torchstain's rgb2lab
_RGB2XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_XYZ2RGB = torch.linalg.inv(_RGB2XYZ)
_VALUES = torch.arange(256, dtype=torch.float32)
_OD = -torch.log((_VALUES + 1) / IO)
"""Optical density of each uint8 value, computed as torchstain does (a look-up instead of a log per pixel)."""
_LINEAR = torch.where(_VALUES / 255 > 0.04045, ((_VALUES / 255 + 0.055) / 1.055).pow(2.4), _VALUES / 255 / 12.92)
"""Linear RGB of each uint8 sRGB value."""
_TABLES = {"od": _OD, "linear": _LINEAR, "to_xyz": _RGB2XYZ / _WHITE[:, None], "from_xyz": _XYZ2RGB * _WHITE}
STAINED_MAX = math.floor(IO * math.exp(-BETA) - 1)
"""A pixel is stained (optical density >= BETA in every channel) when every channel is <= this (205)."""


@functools.cache
def _on(table: str, device: torch.device) -> Tensor:
    """A constant of ``_TABLES`` on ``device`` (copied there once)."""
    return _TABLES[table].to(device)


def _kth(q: float, n: Tensor) -> Tensor:
    """0-based index of torchstain's nearest-rank ``q``-th percentile of ``n`` values (float64, as Python)."""
    return torch.round(0.01 * q * (n.double() - 1)).long().clamp(min=0)


def _planar(tiles: Tensor) -> Tensor:
    """uint8 ``[b, h, w, 3]`` -> uint8 ``[b, 3, n]`` (channel planes: wide, fast contractions)."""
    return tiles.permute(0, 3, 1, 2).reshape(tiles.shape[0], 3, -1)


def _optical_density(pixels: Tensor) -> Tensor:
    """uint8 ``[b, 3, n]`` -> optical density ``[b, 3, n]`` float32 (torchstain's)."""
    return _on("od", pixels.device)[pixels.long()]


def _stained(pixels: Tensor) -> Tensor:
    """uint8 ``[b, 3, n]`` -> ``[b, n]``: optical density >= BETA in every channel."""
    return (pixels <= STAINED_MAX).all(1)


def _inv2(m: Tensor) -> tuple[Tensor, Tensor]:
    """(inverse of ``[b, 2, 2]``, invertible ``[b]``); a singular matrix gets the identity."""
    det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    ok = det.abs() > 1e-8
    det = torch.where(ok, det, torch.ones_like(det))
    inv = torch.stack([torch.stack([m[:, 1, 1], -m[:, 0, 1]], -1),
                       torch.stack([-m[:, 1, 0], m[:, 0, 0]], -1)], 1) / det[:, None, None]
    return torch.where(ok[:, None, None], inv, torch.eye(2, device=m.device, dtype=m.dtype)), ok


def _order(vectors: Tensor) -> Tensor:
    """Columns of ``[b, 3, 2]`` stain vectors ordered haematoxylin first (the larger red optical density)."""
    swap = vectors[:, 0, 0] < vectors[:, 0, 1]
    return torch.where(swap[:, None, None], vectors.flip(-1), vectors)


def _macenko_vectors(od: Tensor, tissue: Tensor) -> tuple[Tensor, Tensor]:
    """Macenko's stain vectors ``[b, 3, 2]`` (columns H, E) from the stained pixels, and ``ok [b]``."""
    w = tissue.to(od.dtype)[:, None]                                           # b 1 n
    count = w.sum((1, 2))                                                      # b
    mean = (od * w).sum(2, keepdim=True) / count.clamp(min=1)[:, None, None]   # b 3 1
    centred = (od - mean) * w                                                  # b 3 n
    cov = centred @ centred.transpose(1, 2) / (count - 1).clamp(min=1)[:, None, None]   # b 3 3
    ok = (count >= 2) & torch.isfinite(cov).flatten(1).all(1)
    cov = torch.where(ok[:, None, None], cov, torch.eye(3, device=od.device, dtype=od.dtype))
    plane = torch.linalg.eigh(cov).eigenvectors[..., 1:]                      # b 3 2: 2nd and 1st component
    proj = plane.transpose(1, 2) @ od                                          # b 2 n
    phi = torch.atan2(proj[:, 1], proj[:, 0])                                  # b n
    # nearest-rank percentiles among the stained pixels: the ALPHA-th from below and from above lie
    # within the k smallest / largest values (topk, far cheaper than sorting every pixel)
    n = od.shape[2]
    k = min(n, math.ceil(0.01 * ALPHA * (n - 1)) + 2)
    low = phi.masked_fill(~tissue, math.inf).topk(k, dim=1, largest=False).values      # b k ascending
    high = phi.masked_fill(~tissue, -math.inf).topk(k, dim=1, largest=True).values     # b k descending
    lo = low.gather(1, _kth(ALPHA, count).clamp(max=k - 1)[:, None]).squeeze(1)
    hi = high.gather(1, (count.long() - 1 - _kth(100 - ALPHA, count)).clamp(0, k - 1)[:, None]).squeeze(1)
    lo, hi = (torch.where(ok, v, torch.zeros_like(v)) for v in (lo, hi))
    v_lo = (plane @ torch.stack([lo.cos(), lo.sin()], -1)[..., None]).squeeze(-1)   # b 3
    v_hi = (plane @ torch.stack([hi.cos(), hi.sin()], -1)[..., None]).squeeze(-1)
    first = (v_lo[:, 0] > v_hi[:, 0])[:, None, None]
    vectors = torch.where(first, torch.stack([v_lo, v_hi], -1), torch.stack([v_hi, v_lo], -1))
    return vectors, ok


def _least_squares(od: Tensor, vectors: Tensor) -> tuple[Tensor, Tensor]:
    """Concentrations ``[b, 2, n]`` solving ``od ~ vectors @ c`` per pixel, and ``ok [b]``."""
    inv, ok = _inv2(vectors.transpose(1, 2) @ vectors)                         # b 2 2
    return inv @ vectors.transpose(1, 2) @ od, ok


def _lasso(od: Tensor, vectors: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """Exact per-pixel non-negative lasso ``min 1/2 |od - V c|^2 + lam |c|_1, c >= 0`` for two stains:
    the convex problem's minimum is the best of its active sets. ``[b, 2, n]`` and ``ok [b]``."""
    gram = vectors.transpose(1, 2) @ vectors                                   # b 2 2
    q = vectors.transpose(1, 2) @ od - lam                                     # b 2 n
    inv, ok = _inv2(gram)
    both = (inv @ q).clamp(min=0)                                              # b 2 n
    g00, g01, g11 = (gram[:, i, j, None] for i, j in ((0, 0), (0, 1), (1, 1)))  # b 1
    only0 = (q[:, 0] / g00.clamp(min=1e-12)).clamp(min=0)                      # b n
    only1 = (q[:, 1] / g11.clamp(min=1e-12)).clamp(min=0)

    def score(c0: Tensor, c1: Tensor) -> Tensor:     # the objective up to a constant; c = 0 scores 0
        return 0.5 * (g00 * c0 * c0 + 2 * g01 * c0 * c1 + g11 * c1 * c1) - q[:, 0] * c0 - q[:, 1] * c1

    s_both, s0, s1 = score(both[:, 0], both[:, 1]), score(only0, 0), score(0, only1)
    pick0 = (s0 < s_both) & (s0 <= s1)
    pick1 = (s1 < s_both) & (s1 < s0)
    c0 = torch.where(pick0, only0, torch.where(pick1, 0, both[:, 0]))
    c1 = torch.where(pick1, only1, torch.where(pick0, 0, both[:, 1]))
    best = torch.minimum(s_both, torch.minimum(s0, s1))
    return torch.stack([c0, c1], 1) * (best < 0)[:, None], ok


def _vahadane_vectors(od: Tensor, tissue: Tensor) -> tuple[Tensor, Tensor]:
    """Stain vectors ``[b, 3, 2]`` by sparse non-negative dictionary learning (Vahadane et al. 2016) on
    about ``VAHADANE_PIXELS`` stained pixels per tile, started from the tile's Macenko vectors; the
    dictionary step is block coordinate descent per stain vector, as scikit-learn's."""
    vectors, ok = _macenko_vectors(od, tissue)
    step = max(1, od.shape[2] // VAHADANE_PIXELS)
    x = od[:, :, ::step] * tissue[:, None, ::step]                             # b 3 m; background columns 0
    vectors = _order(vectors.clamp(min=0))
    vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-8)
    for _ in range(VAHADANE_STEPS):
        conc, _ = _lasso(x, vectors, VAHADANE_LAMBDA)                          # b 2 m
        for k in range(2):
            h = conc[:, k]                                                     # b m
            rest = x - vectors[:, :, 1 - k, None] * conc[:, None, 1 - k]       # b 3 m
            hh = (h * h).sum(1)                                                # b
            v = ((rest @ h[..., None]).squeeze(-1) / hh.clamp(min=1e-12)[:, None]).clamp(min=0)   # b 3
            v = v / v.norm(dim=1, keepdim=True).clamp(min=1.0)                 # onto the unit ball
            vectors = torch.stack([torch.where((hh > 1e-12)[:, None], v, vectors[:, :, k]) if j == k
                                   else vectors[:, :, j] for j in range(2)], -1)
    vectors = _order(vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-8))
    return vectors, ok & torch.isfinite(vectors).flatten(1).all(1)


def _max_concentration(conc: Tensor) -> Tensor:
    """``MAX_PERCENTILE``-th nearest-rank percentile of ``[b, 2, n]`` concentrations -> ``[b, 2]``."""
    n = conc.shape[2]
    j = n - int(_kth(MAX_PERCENTILE, torch.tensor(n)))                          # its rank from the top
    return conc.topk(j, dim=2).values[..., -1]


def _stains(method: str, pixels: Tensor, tissue: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(stain vectors ``[b, 3, 2]``, concentrations ``[b, 2, n]``, ok ``[b]``) of Macenko or Vahadane."""
    od = _optical_density(pixels)
    if method == "macenko":
        vectors, ok = _macenko_vectors(od, tissue)
        conc, solvable = _least_squares(od, vectors)
    else:
        vectors, ok = _vahadane_vectors(od, tissue)
        conc, solvable = _lasso(od, vectors, VAHADANE_LASSO)
    return vectors, conc, ok & solvable


def _to_lab(lin: Tensor) -> Tensor:
    """Linear RGB ``[b, 3, n]`` -> CIE L*a*b* (L in [0, 100]), torchstain's conversion."""
    xyz = _on("to_xyz", lin.device) @ lin
    f = torch.where(xyz > 0.008856, xyz.clamp(min=0.008856).pow(1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def _from_lab(lab: Tensor) -> Tensor:
    """Inverse of :func:`_to_lab` followed by sRGB encoding, clamped to [0, 1]."""
    y = (lab[:, 0] + 16) / 116
    f = torch.stack([lab[:, 1] / 500 + y, y, y - lab[:, 2] / 200], 1)
    xyz = torch.where(f > 0.2068966, f.pow(3), (f - 16 / 116) / 7.787)
    lin = _on("from_xyz", lab.device) @ xyz
    rgb = torch.where(lin > 0.0031308, 1.055 * lin.clamp(min=0.0031308).pow(1 / 2.4) - 0.055, lin * 12.92)
    return rgb.clamp(0, 1)


def _lab_stats(pixels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(L*a*b* ``[b, 3, n]``, mean ``[b, 3, 1]``, unbiased std ``[b, 3, 1]``) of uint8 ``[b, 3, n]``."""
    lab = _to_lab(_on("linear", pixels.device)[pixels.long()])
    return lab, lab.mean(2, keepdim=True), lab.std(2, keepdim=True)


def fit_target(method: str, image: Tensor) -> dict[str, list]:
    """The reference statistics of ``method`` fitted to one uint8 RGB image ``[h, w, 3]`` (on the CPU,
    so a target is the same number on every machine). Raises :class:`DataError` when the image has
    too little stain to fit."""
    pixels = _planar(image.cpu()[None])
    tissue = _stained(pixels)
    share = float(tissue.float().mean())
    if share < MIN_TISSUE:
        raise DataError(f"only {100 * share:.2f}% of the stain target's pixels are stained (need "
                        f"{100 * MIN_TISSUE:g}%); pick a tile with tissue")
    if method == "reinhard":
        _, mean, std = _lab_stats(pixels)
        return {"lab_mean": mean[0, :, 0].tolist(), "lab_std": std[0, :, 0].tolist()}
    vectors, conc, ok = _stains(method, pixels, tissue)
    max_conc = _max_concentration(conc)
    if not bool(ok[0]) or not bool((max_conc > 1e-6).all()):
        raise DataError(f"the stain target gives no usable {method} estimate; pick a tile with both stains")
    return {"stain_matrix": vectors[0].tolist(), "max_concentration": max_conc[0].tolist()}


def read_target_image(path: Path) -> Tensor:
    """A PNG/JPEG/TIFF as uint8 RGB ``[h, w, 3]``; :class:`DataError` naming the file otherwise."""
    from PIL import Image

    if not path.is_file():
        raise DataError(f"[extractor] stain_target: file not found: {path}")
    try:
        with Image.open(path) as img:
            return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy())
    except Exception as exc:
        raise DataError(f"[extractor] stain_target: cannot read {path} as an image ({exc}); give a PNG, "
                        "JPEG or TIFF tile") from exc


@dataclass
class StainNormalizer:
    """Maps batches of tiles onto one reference: ``normalizer(tiles uint8 [b, h, w, 3])`` returns
    ``(tiles float [b, 3, h, w] in [0, 1], normalised [b] bool)``; a tile that is not normalised comes
    back as it was (scaled to [0, 1])."""

    method: str
    reference: dict[str, list]
    target: str = "builtin"
    """Where the reference comes from: ``builtin`` or the target image's file name."""
    target_sha256: str = ""
    _on_device: dict[torch.device, dict[str, Tensor]] = field(default_factory=dict, init=False, repr=False,
                                                              compare=False)

    @classmethod
    def build(cls, method: str, target: str | Path | None = None) -> "StainNormalizer | None":
        """None for ``method = "none"``; else the built-in reference or one fitted to ``target``."""
        if method not in STAIN_METHODS:
            raise DataError(f"[extractor] stain: unknown method {method!r}; valid: {', '.join(STAIN_METHODS)}")
        if method == "none":
            return None
        if target is None:
            return cls(method, BUILTIN[method])
        path = Path(target).expanduser()
        image = read_target_image(path)
        try:
            reference = fit_target(method, image)
        except DataError as exc:
            raise DataError(f"[extractor] stain_target {path}: {exc}") from None
        return cls(method, reference, path.name, hashlib.sha256(path.read_bytes()).hexdigest())

    def attrs(self) -> dict[str, str]:
        """Feature-file attributes that identify the normalisation (part of the resume identity)."""
        reference = {k: np.round(np.asarray(v, dtype=np.float64), 6).tolist() for k, v in self.reference.items()}
        return {"stain": self.method, "stain_target": self.target, "stain_target_sha256": self.target_sha256,
                "stain_reference": json.dumps(reference, sort_keys=True)}

    def _reference(self, device: torch.device) -> dict[str, Tensor]:
        if device not in self._on_device:
            self._on_device[device] = {k: torch.tensor(v, dtype=torch.float32, device=device)
                                       for k, v in self.reference.items()}
        return self._on_device[device]

    def __call__(self, tiles: Tensor) -> tuple[Tensor, Tensor]:
        b, h, w, _ = tiles.shape
        ref = self._reference(tiles.device)
        pixels = _planar(tiles)                                                # b 3 n uint8
        tissue = _stained(pixels)                                              # b n
        enough = tissue.sum(1) >= max(2, math.ceil(MIN_TISSUE * h * w))
        if self.method == "reinhard":
            lab, mean, std = _lab_stats(pixels)                                # b 3 n, b 3 1, b 3 1
            ok = enough & (std[..., 0] > 1e-6).all(1)
            std = torch.where(ok[:, None, None], std, torch.ones_like(std))
            out = _from_lab((lab - mean) / std * ref["lab_std"][:, None] + ref["lab_mean"][:, None])
        else:
            _, conc, ok = _stains(self.method, pixels, tissue)                 # b 2 n
            max_conc = _max_concentration(conc)                                # b 2
            ok = ok & enough & (max_conc > 1e-6).all(1)
            scale = ref["max_concentration"] / torch.where(ok[:, None], max_conc, torch.ones_like(max_conc))
            ok = ok & torch.isfinite(scale).all(1)       # with it every pixel is finite (od and vectors are)
            mix = -ref["stain_matrix"] * torch.where(ok[:, None], scale, torch.ones_like(scale))[:, None]  # b 3 2
            out = torch.bmm(mix, conc).exp_().mul_(IO / 255).clamp_(max=1)    # Io exp(-V c) / 255, <= 1
        out = out.reshape(b, 3, h, w)
        if not bool(ok.all()):                 # one host sync per batch; the encoder's output needs one anyway
            out = torch.where(ok[:, None, None, None], out, pixels.reshape(b, 3, h, w).float().div(255))
        return out, ok
