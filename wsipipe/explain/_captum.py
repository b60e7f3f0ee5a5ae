"""Perturbation and path attributions through captum: Integrated Gradients, NoiseTunnel, LIME.

Source: ``004_ca56ba36b15215b1.txt`` (Section 3.4 and its appendix code). Attributions
(B, 3, H, W) become one map per image as in that code: absolute value, each channel min-max
normalised, the channels summed, and the sum min-max normalised to [0, 1]. LIME maps keep
the positive evidence for the class (a segment's weight where positive, else 0), divided by
the largest weight; with ``top_k`` they are instead ``004``'s mask of the ``top_k`` segments of
largest absolute weight (its ``get_image_and_mask(..., positive_only=False, num_features=3)``
followed by ``abs``): 1 on those segments, 0 elsewhere. ``004``'s LIME segments with the
``lime`` package's default, scikit-image quickshift with ``kernel_size=4, max_dist=200,
ratio=0.2`` (:data:`QUICKSHIFT`), available here as ``segments="quickshift"``.

Randomness (NoiseTunnel's noise, LIME's perturbations) is drawn inside
:func:`torch.random.fork_rng` seeded with ``seed``, so results are reproducible and the
caller's global RNG state is left untouched.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from wsipipe.explain._common import Target, _check_input, as_maps, eval_mode, normalize_minmax, resolve_target

__all__ = [
    "QUICKSHIFT",
    "LimeSegments",
    "NoiseTunnelType",
    "feature_mask",
    "integrated_gradients",
    "lime",
    "noise_tunnel",
]

#: LIME's interpretable features: grid squares, SLIC or quickshift superpixels.
LimeSegments = Literal["grid", "slic", "quickshift"]
#: captum's NoiseTunnel aggregations.
NoiseTunnelType = Literal["smoothgrad", "smoothgrad_sq", "vargrad"]
#: Quickshift settings of the ``lime`` package's image explainer (``004``'s segmentation).
QUICKSHIFT = {"kernel_size": 4, "max_dist": 200, "ratio": 0.2}


def _to_map(attr: Tensor) -> Tensor:
    """``004``'s ``process_img``: |a|, per-channel min-max, channel sum, min-max -> (B, H, W)."""
    per_channel = normalize_minmax(attr.abs().flatten(0, 1)).view_as(attr)
    return normalize_minmax(per_channel.sum(dim=1))


def _targets(model: nn.Module, x: Tensor, target: Target) -> list[int]:
    with torch.no_grad(), eval_mode(model):
        logits = model(x)
    return [int(t) for t in resolve_target(logits, target).tolist()]


def _baseline(x: Tensor, baseline: float | Tensor) -> Tensor:
    if isinstance(baseline, Tensor):
        return baseline.to(x.device, x.dtype).expand_as(x)
    return torch.full_like(x, float(baseline))


def integrated_gradients(
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    *,
    baseline: float | Tensor = 0.0,
    n_steps: int = 32,
    internal_batch_size: int = 16,
) -> npt.NDArray[np.float32]:
    """Integrated Gradients (captum) from ``baseline`` to ``x``, as a (B, H, W) float32 map in [0, 1].

    Parameters
    ----------
    baseline : float or tensor
        The reference input in the model's (normalised) input space; ``004`` uses a black
        image, i.e. ``(0 - mean) / std`` per channel (:func:`wsipipe.explain.black_baseline`).
    n_steps : int
        Riemann steps of the path integral (Gauss-Legendre, captum's default method).
    internal_batch_size : int
        Path points evaluated per forward pass (memory bound).
    """
    from captum.attr import IntegratedGradients

    _check_input(x)
    idx = _targets(model, x, target)
    with eval_mode(model), torch.enable_grad():
        ig = IntegratedGradients(model)
        attr = ig.attribute(
            x.detach(),
            baselines=_baseline(x, baseline),
            target=idx,
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
        )
    return as_maps(_to_map(attr.detach()))


def noise_tunnel(
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    *,
    baseline: float | Tensor = 0.0,
    n_samples: int = 8,
    stdev: float = 0.2,
    n_steps: int = 16,
    nt_type: NoiseTunnelType = "smoothgrad",
    seed: int = 0,
    internal_batch_size: int = 16,
) -> npt.NDArray[np.float32]:
    """Integrated Gradients under captum's NoiseTunnel (``004``, Eq. 3): the mean attribution of
    ``n_samples`` copies of ``x`` with Gaussian noise of ``stdev`` (input units) added.

    Returns
    -------
    (B, H, W) float32 ndarray in [0, 1]; identical for identical ``seed``.
    """
    from captum.attr import IntegratedGradients, NoiseTunnel

    _check_input(x)
    idx = _targets(model, x, target)
    with eval_mode(model), torch.enable_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nt = NoiseTunnel(IntegratedGradients(model))
        attr = nt.attribute(
            x.detach(),
            baselines=_baseline(x, baseline),
            target=idx,
            nt_type=nt_type,
            nt_samples=n_samples,
            stdevs=stdev,
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
        )
    return as_maps(_to_map(attr.detach()))


def feature_mask(x: Tensor, *, segments: LimeSegments = "grid", n_segments: int = 64, seed: int = 0) -> Tensor:
    """LIME's interpretable features: a (B, 1, H, W) int64 label image per input.

    ``"grid"`` cuts each image into about ``n_segments`` equal squares; ``"slic"`` runs
    scikit-image SLIC superpixels (``n_segments``, compactness 10) and ``"quickshift"``
    scikit-image quickshift with :data:`QUICKSHIFT` (the ``lime`` package's default, ``004``;
    ``n_segments`` is ignored, ``seed`` breaks its ties) on the image min-max scaled to [0, 1].
    Labels are 0..n-1 per image.
    """
    _check_input(x)
    b, _, h, w = x.shape
    if n_segments < 1:
        raise ValueError(f"n_segments must be >= 1, got {n_segments}")
    if segments == "grid":
        side = max(1, round(float(np.sqrt(n_segments))))
        rows = torch.clamp(torch.arange(h) * side // h, max=side - 1)
        cols = torch.clamp(torch.arange(w) * side // w, max=side - 1)
        grid = rows.view(-1, 1) * side + cols.view(1, -1)
        return grid.expand(b, 1, h, w).clone().to(x.device)
    if segments in ("slic", "quickshift"):
        from skimage.segmentation import quickshift, slic

        imgs = normalize_minmax(x.detach()).permute(0, 2, 3, 1).cpu().numpy()
        labels = []
        for img in imgs:
            if segments == "slic":
                lab = slic(img, n_segments=n_segments, compactness=10.0, start_label=0, channel_axis=-1)
            else:
                lab = quickshift(img, **QUICKSHIFT, rng=seed, channel_axis=-1)  # type: ignore[arg-type]
            _, lab = np.unique(lab, return_inverse=True)
            labels.append(torch.from_numpy(lab.reshape(h, w).astype(np.int64)))
        return torch.stack(labels).unsqueeze(1).to(x.device)
    raise ValueError(f"segments must be 'grid', 'slic' or 'quickshift', got {segments!r}")


class _WeightedRidge:
    """Closed-form weighted ridge regression for captum's LIME (no scikit-learn needed).

    Implements captum's ``Model`` interface: ``fit`` reads ``(x, y, w)`` batches and solves
    ``(X'WX + lam I) b = X'Wy`` with an unpenalised intercept; ``representation`` returns the
    feature weights (1, n_features).
    """

    def __init__(self, lam: float = 1e-3) -> None:
        self.lam = lam
        self.coef = torch.zeros(1, 0)
        self.bias = torch.zeros(1)

    def fit(self, train_data: Any, **kwargs: object) -> dict[str, float]:
        xs, ys, ws = [], [], []
        for batch in train_data:
            xb, yb = batch[0], batch[1]
            wb = batch[2] if len(batch) > 2 else torch.ones(xb.shape[0])
            xs.append(xb.double().reshape(xb.shape[0], -1))
            ys.append(yb.double().reshape(-1))
            ws.append(wb.double().reshape(-1))
        X, y, w = torch.cat(xs), torch.cat(ys), torch.cat(ws)
        A = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], dim=1)
        reg = self.lam * torch.eye(A.shape[1], dtype=X.dtype)
        reg[-1, -1] = 0.0
        Aw = A * w.view(-1, 1)
        sol = torch.linalg.lstsq(A.T @ Aw + reg, Aw.T @ y.view(-1, 1)).solution.view(-1)
        self.coef = sol[:-1].view(1, -1).float()
        self.bias = sol[-1:].float()
        return {"n_samples": float(X.shape[0])}

    def representation(self) -> Tensor:
        return self.coef

    def __call__(self, x: Tensor) -> Tensor:
        return x.float() @ self.coef.T + self.bias


def _top_k_mask(attr: Tensor, labels: Tensor, k: int) -> Tensor:
    """1.0 on the ``k`` segments of largest ``|weight|`` (non-zero weights only), 0.0 elsewhere."""
    n = int(labels.max()) + 1
    weights = torch.zeros(n, dtype=attr.dtype, device=attr.device).scatter_(0, labels.flatten(), attr.flatten())
    order = torch.argsort(weights.abs(), descending=True, stable=True)[:k]
    top = order[weights[order] != 0]
    return torch.isin(labels, top).to(attr.dtype)


def lime(
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    *,
    segments: LimeSegments = "grid",
    n_segments: int = 64,
    n_samples: int = 200,
    top_k: int | None = None,
    baseline: float | Tensor = 0.0,
    seed: int = 0,
    perturbations_per_eval: int = 32,
) -> npt.NDArray[np.float32]:
    """LIME (captum) over superpixel or grid features, seeded; (B, H, W) float32 map in [0, 1].

    Each image is explained on its own: ``n_samples`` random on/off patterns of the segments of
    :func:`feature_mask` (an "off" segment takes ``baseline``), weighted by captum's cosine
    similarity kernel, fit by weighted ridge regression. By default a pixel's value is its
    segment's positive weight divided by the largest weight (0 for segments voting against the
    class). With ``top_k`` the map is ``004``'s mask instead: 1 on the ``top_k`` segments of
    largest absolute weight (for or against the class), 0 elsewhere.
    """
    from captum._utils.models.model import Model
    from captum.attr import Lime

    _check_input(x)
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    Model.register(_WeightedRidge)
    idx = _targets(model, x, target)
    masks = feature_mask(x, segments=segments, n_segments=n_segments, seed=seed)
    base = _baseline(x, baseline)
    maps = []
    with eval_mode(model), torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        explainer = Lime(model, interpretable_model=_WeightedRidge())  # type: ignore[arg-type]
        for i in range(x.shape[0]):
            attr = explainer.attribute(
                x[i : i + 1].detach(),
                baselines=base[i : i + 1],
                target=idx[i],
                feature_mask=masks[i : i + 1],
                n_samples=n_samples,
                perturbations_per_eval=perturbations_per_eval,
            )
            a = attr.detach()[0, 0]
            if top_k is None:
                a = a.clamp(min=0)
                maps.append(a / a.max().clamp_min(1e-12))
            else:
                maps.append(_top_k_mask(a, masks[i, 0], top_k))
    return as_maps(torch.stack(maps))
