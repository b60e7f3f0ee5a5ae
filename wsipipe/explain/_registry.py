"""The explainer registry: method name -> function ``(model, x, **kw) -> (B, H, W) float32 in [0, 1]``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
from torch import Tensor, nn

from wsipipe.explain._captum import integrated_gradients, lime, noise_tunnel
from wsipipe.explain._gradient import celm, grad_cam, guided_backprop, saliency
from wsipipe.explain._patch import patch_logit_map

__all__ = ["EXPLAINERS", "METHOD_CAPABILITIES", "Explainer", "black_baseline", "explain", "method_capabilities"]

Explainer = Callable[..., npt.NDArray[np.float32]]


def _patchlogit(model: nn.Module, x: Tensor, **kwargs: Any) -> npt.NDArray[np.float32]:
    maps = patch_logit_map(model, x, **kwargs)
    lo = maps.reshape(maps.shape[0], -1).min(axis=1).reshape(-1, 1, 1)
    hi = maps.reshape(maps.shape[0], -1).max(axis=1).reshape(-1, 1, 1)
    return ((maps - lo) / np.maximum(hi - lo, 1e-12)).astype(np.float32)


#: Method name -> explainer. Every entry returns (B, H, W) float32 maps in [0, 1]
#: (``patchlogit`` is :func:`patch_logit_map` min-max scaled per image).
EXPLAINERS: dict[str, Explainer] = {
    "celm": celm,
    "gradcam": grad_cam,
    "saliency": saliency,
    "guided": guided_backprop,
    "ig": integrated_gradients,
    "noisetunnel": noise_tunnel,
    "lime": lime,
    "patchlogit": _patchlogit,
}


#: Method name -> the model capability it needs (a name in :data:`wsipipe.models.CAPABILITIES`);
#: the other methods work on any model.
METHOD_CAPABILITIES: dict[str, str] = {"celm": "cam", "patchlogit": "patch_map"}


def method_capabilities(methods: Iterable[str]) -> tuple[str, ...]:
    """The model capabilities that ``methods`` need, each once, in order."""
    return tuple(dict.fromkeys(METHOD_CAPABILITIES[m] for m in methods if m in METHOD_CAPABILITIES))


def explain(name: str, model: nn.Module, x: Tensor, **kwargs: Any) -> npt.NDArray[np.float32]:
    """Run the explainer ``name`` of :data:`EXPLAINERS` on normalised images ``x`` (B, 3, H, W).

    Returns
    -------
    (B, H, W) float32 ndarray in [0, 1]

    Raises
    ------
    ConfigError
        For an unknown method (with the nearest name and the list of methods).
    """
    if name not in EXPLAINERS:
        from wsipipe.config import suggest
        from wsipipe.errors import ConfigError

        raise ConfigError(
            f"unknown explanation method {name!r}{suggest(name, EXPLAINERS)} (methods: {', '.join(EXPLAINERS)})"
        )
    return EXPLAINERS[name](model, x, **kwargs)


def black_baseline(mean: tuple[float, float, float], std: tuple[float, float, float]) -> Tensor:
    """The black image in normalised input space, ``(0 - mean) / std``: a (1, 3, 1, 1) tensor."""
    import torch

    return (-torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)).view(1, 3, 1, 1)
