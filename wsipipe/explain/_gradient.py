"""Gradient maps: Grad-CAM on any named layer, vanilla saliency, guided backprop and CELM.

Sources
-------
* ``003_d079139a1795bfd3.txt`` (CELNet, Section 2.2): the cancer activation map of a layer
  ``l`` is ``M_l = ReLU(sum_k a_k F_l^k)`` with ``a_k`` the spatial mean of ``dy/dF_l^k`` (Grad-CAM,
  ``y`` the logit before the sigmoid); CAM3 and CAM2 are upsampled bilinearly and fused,
  ``M^c = alpha f_u(M_3) + (1 - alpha) f_u(M_2)``; the cancer saliency map ``M^s`` is the
  guided-backprop input gradient normalised to [0, 1], converted to greyscale and
  Gaussian-smoothed; the CELM is ``M = beta (M^c ⊙ M^s) + (1 - beta) M^c``.
* ``002_6f3949f0d2031186.txt``: vanilla class saliency, the gradient of the class logit with
  respect to the pixels, Euclidean norm over the three channels.

All functions take normalised images ``x`` (B, 3, H, W) float and return (B, H, W) float32
ndarrays in the pixel frame of ``x`` (``[b, row, col]``), in [0, 1]. The model runs in eval mode
(restored afterwards); hooks are removed and ReLUs restored even when an error is raised.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from wsipipe.explain._common import (
    Target,
    _check_input,
    as_maps,
    eval_mode,
    gaussian_smooth,
    normalize_max,
    normalize_minmax,
    resolve_target,
    select_logit,
)
from wsipipe.models import CamModel, capability_error

__all__ = [
    "CELM_ALPHA",
    "CELM_BETA",
    "CELM_SIGMA",
    "cam_layer_names",
    "celm",
    "grad_cam",
    "guided_backprop",
    "guided_gradients",
    "saliency",
]

#: Default CAM3/CAM2 weight. The paper fixes alpha "by validation" and prints no value; 0.5
#: weighs both layers equally.
CELM_ALPHA = 0.5
#: Default weight of the product ``M^c ⊙ M^s``. The paper estimates beta "by cross-validation"
#: and prints no value; 0.5 keeps half of the plain CAM.
CELM_BETA = 0.5
#: Default Gaussian sigma of the cancer saliency map in input px (not given in the paper).
CELM_SIGMA = 2.0

#: ITU-R BT.601 luma weights of the greyscale conversion.
_LUMA = (0.299, 0.587, 0.114)


def _layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    modules = dict(model.named_modules())
    cams = model.cam_layers if isinstance(model, CamModel) else {}
    if layer not in modules and layer in cams:
        return cams[layer]
    if layer not in modules:
        from wsipipe.config import suggest

        names = [n for n in modules if n]
        aliases = f"; CAM aliases: {', '.join(cams)}" if cams else ""
        raise ValueError(
            f"{type(model).__name__} has no layer {layer!r}{suggest(layer, names)} "
            f"(named modules include {', '.join(names[:12])}{'…' if len(names) > 12 else ''}{aliases})"
        )
    return modules[layer]


def cam_layer_names(model: nn.Module) -> list[str]:
    """Qualified names (``dict(model.named_modules())`` keys) of ``model.cam_layers`` (a
    :class:`~wsipipe.models.CamModel`), or of the last ``Conv2d`` when it has none."""
    by_id = {id(m): n for n, m in model.named_modules()}
    if isinstance(model, CamModel) and model.cam_layers:
        return [by_id[id(m)] for m in model.cam_layers.values()]
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer and no cam_layers; pass layer= explicitly")
    return [convs[-1]]


def _cams(model: nn.Module, x: Tensor, layers: list[nn.Module], target: Target) -> list[Tensor]:
    """Raw Grad-CAMs (B, h_l, w_l) of ``layers`` from one forward/backward pass."""
    _check_input(x)
    acts: dict[int, Tensor] = {}

    def hook(module: nn.Module, _inp: Any, out: Any) -> None:
        acts[id(module)] = out[0] if isinstance(out, tuple | list) else out

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        with eval_mode(model), torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            logits = model(xg)
            score = select_logit(logits, resolve_target(logits, target)).sum()
            feats = [acts[id(layer)] for layer in layers]
            for f, layer in zip(feats, layers, strict=True):
                if not isinstance(f, Tensor) or f.ndim != 4:
                    raise ValueError(f"layer {layer.__class__.__name__} must output (B, C, h, w), got {type(f)}")
            grads = torch.autograd.grad(score, feats, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    cams = []
    for f, g in zip(feats, grads, strict=True):
        if g is None:  # the layer does not influence the output
            cams.append(torch.zeros(f.shape[0], *f.shape[2:], dtype=f.dtype, device=f.device))
            continue
        weights = g.mean(dim=(2, 3), keepdim=True)
        cams.append(F.relu((weights * f).sum(dim=1)).detach())
    return cams


def _upsample(cam: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def grad_cam(
    model: nn.Module, x: Tensor, layer: str | nn.Module | None = None, target: Target = None
) -> npt.NDArray[np.float32]:
    """Grad-CAM of one layer, bilinearly upsampled to the input and divided by its maximum.

    Parameters
    ----------
    model : nn.Module
        Returns logits (B, C).
    x : (B, 3, H, W) float tensor
        Normalised images.
    layer : str or nn.Module, optional
        A name from ``dict(model.named_modules())`` (or a ``cam_layers`` alias such as ``"cam3"``);
        default: the deepest of :func:`cam_layer_names`.
    target : int, sequence of int, tensor or None
        Class to explain (see :data:`wsipipe.explain.Target`).

    Returns
    -------
    (B, H, W) float32 ndarray
        ``ReLU(sum_k a_k F^k)`` upsampled, in [0, 1] (all zero when no feature votes for the class).
    """
    chosen = _layer(model, layer if layer is not None else cam_layer_names(model)[-1])
    (cam,) = _cams(model, x, [chosen], target)
    return as_maps(normalize_max(_upsample(cam, (x.shape[2], x.shape[3]))))


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients at positive inputs (guided backprop)."""

    @staticmethod
    def forward(ctx: Any, inp: Tensor) -> Tensor:
        out = inp.clamp(min=0)
        ctx.save_for_backward(inp)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (inp,) = ctx.saved_tensors
        return grad.clamp(min=0) * (inp > 0).to(grad.dtype)


class _GuidedMode(TorchFunctionMode):
    """Route every ReLU call (``nn.ReLU``, ``F.relu``, ``torch.relu``, in-place or not) through
    :class:`_GuidedReLU` while active. Nothing on the model changes; leaving the ``with`` block
    restores plain ReLUs. In-place calls return a new tensor (callers use the return value)."""

    _RELUS: ClassVar[set[Any]] = {
        F.relu,
        F.relu_,
        torch.relu,
        torch.relu_,
        Tensor.relu,
        Tensor.relu_,
    }

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in self._RELUS:
            return _GuidedReLU.apply(args[0])
        return func(*args, **(kwargs or {}))


def guided_gradients(model: nn.Module, x: Tensor, target: Target = None) -> Tensor:
    """Guided-backprop gradient of the class logit with respect to ``x``: (B, 3, H, W) float tensor.

    Every ReLU call during the pass backpropagates only positive gradients through positive
    activations (Springenberg et al.). The model itself is not modified: no hooks, no
    module swaps (a :class:`torch.overrides.TorchFunctionMode` intercepts ReLU calls, which
    also covers functional and in-place ReLUs that module hooks cannot reach).
    """
    _check_input(x)
    with eval_mode(model), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        with _GuidedMode():
            logits = model(xg)
            score = select_logit(logits, resolve_target(logits, target)).sum()
        (grad,) = torch.autograd.grad(score, xg)
    return grad.detach()


def _cancer_saliency(grad: Tensor, sigma: float) -> Tensor:
    """CELNet's CSM from a (B, 3, H, W) gradient: min-max to [0, 1], greyscale, Gaussian -> (B, H, W)."""
    w = normalize_minmax(grad)
    luma = torch.tensor(_LUMA, dtype=w.dtype, device=w.device).view(1, 3, 1, 1)
    grey = (w * luma).sum(dim=1)
    return gaussian_smooth(grey, sigma)


def guided_backprop(
    model: nn.Module, x: Tensor, target: Target = None, *, sigma: float = CELM_SIGMA
) -> npt.NDArray[np.float32]:
    """CELNet's cancer saliency map (CSM): guided-backprop gradient, normalised, greyscale, smoothed.

    Returns
    -------
    (B, H, W) float32 ndarray in [0, 1]
        The gradient ``w`` (B, 3, H, W) min-max normalised to [0, 1] per image (over all three
        channels), converted to greyscale (BT.601: 0.299 R + 0.587 G + 0.114 B) and smoothed
        with a Gaussian of ``sigma`` input px. A zero gradient gives an all-zero map.
    """
    return as_maps(_cancer_saliency(guided_gradients(model, x, target=target), sigma))


def saliency(model: nn.Module, x: Tensor, target: Target = None, *, normalize: bool = True) -> npt.NDArray[np.float32]:
    """Vanilla class saliency (``002``): ``|| d y_c / d x ||_2`` over the three channels.

    Returns
    -------
    (B, H, W) float32 ndarray
        The per-pixel Euclidean norm of the input gradient of the class logit (before any
        sigmoid/softmax), divided by its maximum per image when ``normalize`` (then in [0, 1]).
    """
    _check_input(x)
    with eval_mode(model), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        logits = model(xg)
        score = select_logit(logits, resolve_target(logits, target)).sum()
        (grad,) = torch.autograd.grad(score, xg)
    norm = grad.detach().pow(2).sum(dim=1).sqrt()
    return as_maps(normalize_max(norm) if normalize else norm)


def celm(
    model: nn.Module,
    x: Tensor,
    *,
    alpha: float = CELM_ALPHA,
    beta: float = CELM_BETA,
    sigma: float = CELM_SIGMA,
    layers: tuple[str, str] | None = None,
    target: Target = None,
) -> npt.NDArray[np.float32]:
    """CELM, the cancerous-evidence localization map of CELNet (``003``, Section 2.2).

    Parameters
    ----------
    model : nn.Module
        A :class:`~wsipipe.models.CamModel` such as CELNet (its ``cam_layers`` ``"cam3"``/``"cam2"``:
        ends of modules 3 and 2), or any model with two named layers given in ``layers``.
    x : (B, 3, H, W) float tensor
        Normalised images.
    alpha : float in [0, 1]
        ``M^c = alpha f_u(M_3) + (1 - alpha) f_u(M_2)``; default :data:`CELM_ALPHA` (0.5: the paper
        tunes alpha on validation data and reports no value).
    beta : float in [0, 1]
        ``M = beta (M^c ⊙ M^s) + (1 - beta) M^c``; default :data:`CELM_BETA` (0.5, same reason).
    sigma : float
        Gaussian sigma of the cancer saliency map, input px.
    layers : (str, str), optional
        ``(deep, shallow)`` layer names standing for (CAM3, CAM2); default the model's
        ``cam_layers`` in reverse order (deepest first).
    target : int, sequence of int, tensor or None
        Class to explain.

    Returns
    -------
    (B, H, W) float32 ndarray in [0, 1]
        The CELM. Each CAM is ``ReLU(sum_k a_k F^k)`` divided by its own maximum before the
        bilinear upsampling and the alpha fusion (the paper leaves the CAM scales unstated;
        without this the deeper layer's larger activations would dominate whatever alpha is).

    Raises
    ------
    ConfigError
        ``layers`` not given and ``model`` is not a :class:`~wsipipe.models.CamModel`.
    """
    for name, v in (("alpha", alpha), ("beta", beta)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    if layers is None:
        if not isinstance(model, CamModel):
            raise capability_error(model, "cam", hint="pass layers=(deep, shallow)")
        names = cam_layer_names(model)
        if len(names) < 2:
            raise ValueError(f"{type(model).__name__} has fewer than two cam_layers; pass layers=(deep, shallow)")
        layers = (names[-1], names[-2])
    deep, shallow = (_layer(model, n) for n in layers)
    size = (x.shape[2], x.shape[3])
    cam3, cam2 = _cams(model, x, [deep, shallow], target)
    m3 = _upsample(normalize_max(cam3), size)
    m2 = _upsample(normalize_max(cam2), size)
    mc = alpha * m3 + (1.0 - alpha) * m2
    ms = _cancer_saliency(guided_gradients(model, x, target=target), sigma)
    return as_maps(fuse_celm(mc, ms, beta))


def fuse_celm(mc: Tensor, ms: Tensor, beta: float) -> Tensor:
    """The CELM fusion ``beta (mc ⊙ ms) + (1 - beta) mc`` of a CAM ``mc`` and a CSM ``ms`` (same shape)."""
    return beta * (mc * ms) + (1.0 - beta) * mc
