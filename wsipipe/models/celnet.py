"""CELNet: the cancerous-evidence localization network of Huang & Chung.

Source: ``003_d079139a1795bfd3.txt`` ("CELNet: Evidence Localization for Pathology Images using
Weakly Supervised Learning"), Section 2.1 and Fig. 1.

Architecture (widths 16/32/64: 296,364 parameters; the paper's 297K, see ``docs/models.md``)::

    input (B, 3, H, W)
    head      3x3 conv, 16 ch, stride 1, BN, ReLU
    module 1  3 MA-ResBlocks, 16 ch, stride 1
    module 2  3 MA-ResBlocks, 32 ch, first block stride 2     -> "cam2" (B, 32, H/2, W/2)
    module 3  3 MA-ResBlocks, 64 ch, first block stride 2     -> "cam3" (B, 64, H/4, W/4)
    companion outputs: [GAP ‖ GMP](module 2) = 64 values, [GAP ‖ GMP](module 3) = 128 values
    classifier: 1x1 conv on their concatenation (192 -> num_classes) -> logits; sigmoid = score

An MA-ResBlock is conv3x3-BN-ReLU, conv3x3-BN, then the multi-branch attention module (MAM),
the shortcut added, and ReLU. A downsampling shortcut is a 3x3 stride-2 conv + BN (the paper
uses 3x3 instead of 1x1 "to reduce information loss"). The MAM is CBAM-style channel attention
(a shared two-layer MLP on the GAP and GMP of the features, summed, sigmoid) followed by spatial
attention ``A_s = sigmoid(f3x3(F) + f5x5(F) + f7x7(F))`` computed, as in CBAM, on the
channel-wise mean and max of the channel-refined features ``F_sq``.

Ablations of Tables 1 and 3, registered as model names: ``celnet_no_mam`` ("CELNet⁻", no
attention), ``celnet_cbam`` ("CELNet⁻+CBAM", one 7x7 spatial branch) and ``celnet_no_ds``
("Ours w/o DS", the classifier reads module 3's companion output only).

Deep supervision is realised as the paper draws it: the two companion outputs feed the final
1x1 conv directly, so module 2 receives a gradient straight from the loss.
:meth:`CELNet.companions` returns them.

Dense maps on larger regions
----------------------------
CELNet is fully convolutional except for its global poolings (channel attention in every
block and the companion GAP/GMP). :meth:`CELNet.forward_map` runs the network once over a
region and replaces every global pooling by pooling over *tile windows*: window ``(i, j)``
covers input pixels ``[i*S, i*S+T) x [j*S, j*S+T)`` (rows x cols) for tile size ``T`` and
stride ``S``, i.e. ``[i*S/f, (i*S+T)/f)`` on a feature map downsampled by ``f``. Cell ``(i, j)``
of the returned map is the score of that tile: map stride = ``S`` input px, offset 0 (the cell
holds the tile whose top-left corner is at ``(x, y) = (j*S, i*S)``), map shape
``((H-T)//S + 1, (W-T)//S + 1)``. Each feature pixel takes its channel attention from the
window whose centre is nearest.

Where it is exact: with ``S == T`` every feature pixel lies in exactly one window, so channel
attention and pooling match tile-by-tile inference. What differs is zero padding: a tile run on
its own sees zeros beyond its border at every conv, while the region run sees the neighbouring
pixels. The convolutional receptive field is 207 px (:data:`RECEPTIVE_FIELD_PX`), larger than a
96 px tile, so every tile score shifts, by an amount that depends on the model (mean |Δp| from
0.008 to 0.06 on the 96 px mosaics measured, see ``docs/models.md``). With
``S < T`` tiles overlap, a pixel's channel attention comes from the nearest window only, and the
map is an approximation. :meth:`CELNet.tile_scores` gives exact tile-by-tile scores (same layout)
at tile-by-tile cost.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsipipe.models.registry import register_model

__all__ = [
    "CBAM_KERNELS",
    "MAM_KERNELS",
    "RECEPTIVE_FIELD_PX",
    "CELNet",
    "celnet_cbam",
    "celnet_no_ds",
    "celnet_no_mam",
]

#: Receptive field (input px) of one cell of the last feature map, from the 3x3 convs
#: (head, blocks, stride-2 convs) and the 7x7 spatial-attention branches; channel attention
#: and the companion pooling add the whole tile window on top.
RECEPTIVE_FIELD_PX = 207

#: Kernel sizes of the MAM's spatial-attention branches (``k' in {3, 5, 7}``, Section 2.1).
MAM_KERNELS = (3, 5, 7)

#: CBAM's single 7x7 spatial-attention convolution (Woo et al., the paper's "+CBAM" ablation).
CBAM_KERNELS = (7,)

#: Window on a feature map: (kernel, stride) in that map's pixels, or None for global pooling.
_Window = tuple[int, int] | None


def _pool_windows(x: Tensor, window: _Window) -> tuple[Tensor, Tensor]:
    """GAP and GMP of ``x`` (B, C, h, w) over windows -> two (B, C, nh, nw) tensors."""
    if window is None:
        # max pooling's backward scatters to one index; amax's builds masks and counts (3x slower)
        return x.mean(dim=(2, 3), keepdim=True), F.adaptive_max_pool2d(x, 1)
    k, s = window
    return F.avg_pool2d(x, k, s), F.max_pool2d(x, k, s)


def _window_index(n_win: int, n_px: int, window: tuple[int, int], device: torch.device) -> Tensor:
    """Window of each pixel along one axis (n_px,) int64: the one whose centre is nearest."""
    k, s = window
    pos = torch.arange(n_px, dtype=torch.float64) + 0.5 - k / 2.0
    return torch.clamp(torch.floor(pos / s + 0.5), 0, n_win - 1).long().to(device)


def _scale(x: Tensor, att: Tensor, window: _Window, *, in_place: bool = False) -> Tensor:
    """``x`` (B, C, h, w) times per-window values ``att`` (B, C, nh, nw) spread to the nearest window.

    Without autograd the product is written row run by row run, so the (B, C, h, w) spread of
    ``att`` is never built (index_select over the full map cost as much as the product), and
    with ``in_place`` into ``x`` itself (a tensor the caller no longer needs).
    """
    if window is None:
        return x.mul_(att) if in_place and not torch.is_grad_enabled() and att.dtype == x.dtype else x * att
    idx_h = _window_index(att.shape[2], x.shape[2], window, att.device)
    att_w = att.index_select(3, _window_index(att.shape[3], x.shape[3], window, att.device))  # B, C, nh, w
    att_w = att_w.contiguous(memory_format=torch.channels_last)  # x's layout: rows broadcast as flat runs
    if torch.is_grad_enabled() and (x.requires_grad or att.requires_grad):
        return x * att_w.index_select(2, idx_h)
    out = x if in_place and att.dtype == x.dtype else torch.empty_like(x, dtype=torch.result_type(x, att))
    rows = idx_h.cpu().tolist()
    start = 0
    for r in range(1, len(rows) + 1):
        if r == len(rows) or rows[r] != rows[start]:
            i = rows[start]
            torch.mul(x[:, :, start:r], att_w[:, :, i : i + 1], out=out[:, :, start:r])
            start = r
    return out


def _channel_max(x: Tensor) -> Tensor:
    """Max over channels (B, C, h, w) -> (B, 1, h, w); ``max`` with indices when autograd needs them."""
    if torch.is_grad_enabled() and x.requires_grad:
        return x.max(dim=1, keepdim=True).values  # index backward: amax's mask backward is 3x slower
    if x.dtype in (torch.bfloat16, torch.float16) and x.shape[1] > 1:
        # halving pairwise maxima: the same values, 1.5-2x faster than amax in 16 bits on the CPU
        while x.shape[1] > 1:
            half = x.shape[1] // 2
            top = torch.maximum(x[:, :half], x[:, half : 2 * half])
            x = top if x.shape[1] % 2 == 0 else torch.cat([top, x[:, 2 * half :]], dim=1)
        return x
    return x.amax(dim=1, keepdim=True)


def _channel_mean(x: Tensor) -> Tensor:
    """Mean over channels (B, C, h, w) -> (B, 1, h, w).

    Without autograd it is a 1x1 convolution with weights 1/C: on 16-bit input ``mean`` first
    copies the whole tensor to float32 (a 65 MB copy for 16 x 1008 x 1008, and 15 times slower).
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return x.mean(dim=1, keepdim=True)
    weight = torch.full((1, x.shape[1], 1, 1), 1.0 / x.shape[1], dtype=x.dtype, device=x.device)
    return F.conv2d(x, weight)


class ChannelAttention(nn.Module):
    """CBAM channel attention: ``sigmoid(MLP(GAP(x)) + MLP(GMP(x)))`` with a shared MLP."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def attention(self, x: Tensor, window: _Window = None) -> Tensor:
        """The attention (B, C, nh, nw) of ``x`` (B, C, h, w) per window ((B, C, 1, 1) for ``None``)."""
        avg, mx = _pool_windows(x, window)
        both = self.mlp(torch.cat([avg, mx]))  # the shared MLP once on both poolings
        return torch.sigmoid(both[: avg.shape[0]] + both[avg.shape[0] :])

    def forward(self, x: Tensor, window: _Window = None, *, in_place: bool = False) -> Tensor:
        """Return ``x`` (B, C, h, w) scaled by its channel attention (into ``x`` with ``in_place``, without autograd)."""
        return _scale(x, self.attention(x, window), window, in_place=in_place)


class MultiBranchSpatialAttention(nn.Module):
    """CELNet's spatial attention: ``sigmoid(sum_k f_kxk([mean_c(x), max_c(x)]))``, k in 3, 5, 7."""

    def __init__(self, kernel_sizes: tuple[int, ...] = MAM_KERNELS) -> None:
        super().__init__()
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"spatial attention kernel sizes must be odd and positive, got {kernel_sizes!r}")
        self.branches = nn.ModuleList(nn.Conv2d(2, 1, k, padding=k // 2, bias=False) for k in kernel_sizes)

    def attention(self, x: Tensor) -> Tensor:
        """The attention map (B, 1, h, w) of ``x`` (B, C, h, w), in (0, 1).

        The branches are linear and centred, so their sum is one convolution with the sum of
        their kernels zero-padded to the largest: one pass instead of one per branch.
        """
        squeezed = torch.cat([_channel_mean(x), _channel_max(x)], dim=1)
        convs = [cast(nn.Conv2d, b) for b in self.branches]
        k = max(c.kernel_size[0] for c in convs)
        weight = F.pad(convs[0].weight, [(k - convs[0].kernel_size[0]) // 2] * 4)
        for c in convs[1:]:
            weight = weight + F.pad(c.weight, [(k - c.kernel_size[0]) // 2] * 4)
        return torch.sigmoid(F.conv2d(squeezed, weight, padding=k // 2))

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` (B, C, h, w) scaled by a (B, 1, h, w) spatial attention map."""
        return x * self.attention(x)


class MABlock(nn.Module):
    """A building block of an MA-ResModule (Fig. 1, right)."""

    #: (conv, batch norm) pairs that inference folds into one conv (:func:`wsipipe.models.fold_batchnorm`).
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, reduction: int, attention: bool, kernels: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.channel_att: ChannelAttention | None = ChannelAttention(out_ch, reduction) if attention else None
        self.spatial_att: MultiBranchSpatialAttention | None = (
            MultiBranchSpatialAttention(kernels) if attention else None
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor, window: _Window = None) -> Tensor:
        """Run the block; ``window`` is the tile window on this block's output map."""
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        if self.channel_att is None or self.spatial_att is None:
            return F.relu(out + self.shortcut(x), inplace=True)
        if not torch.is_grad_enabled():  # inference: scale and add in place, two full-size maps fewer
            out = self.channel_att(out, window, in_place=True)
            att = self.spatial_att.attention(out)
            return F.relu(torch.addcmul(self.shortcut(x), out, att, out=out), inplace=True)
        out = self.channel_att(out, window)
        # relu(out * A_s + shortcut) in one pass; relu in place (addcmul's backward keeps its inputs)
        return F.relu(torch.addcmul(self.shortcut(x), out, self.spatial_att.attention(out)), inplace=True)


class MAResModule(nn.Module):
    """``depth`` MA-ResBlocks; the first one changes width and stride."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        depth: int,
        reduction: int,
        attention: bool,
        kernels: tuple[int, ...] = MAM_KERNELS,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            MABlock(in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1, reduction, attention, kernels)
            for i in range(depth)
        )

    def forward(self, x: Tensor, window: _Window = None) -> Tensor:
        """Run the blocks in order."""
        for block in self.blocks:
            x = block(x, window)
        return x


@register_model("celnet")
class CELNet(nn.Module):
    """CELNet (see the module docstring for the layout, dense maps and exactness).

    Parameters
    ----------
    num_classes : int
        Output logits; 1 for the paper's binary tumour score (sigmoid).
    widths : tuple of 4 int
        Channels of the head and of modules 1-3 (paper: 16, 32, 64 after a 16-channel head).
    depth : int
        Building blocks per MA-ResModule (paper: 3).
    reduction : int
        Channel-attention MLP reduction ratio (CBAM's 16).
    attention : bool
        False builds the paper's ablation "CELNet⁻" (no MAM: neither channel nor spatial
        attention; registered as ``celnet_no_mam``).
    spatial_kernels : tuple of int
        Kernel sizes of the spatial-attention branches: :data:`MAM_KERNELS` (3, 5, 7) for the
        MAM, :data:`CBAM_KERNELS` (7,) for the "CELNet⁻+CBAM" ablation (``celnet_cbam``).
    deep_supervision : bool
        True (the paper): the classifier reads the companion outputs of modules 2 *and* 3.
        False ("Ours w/o DS" of Table 3, ``celnet_no_ds``): it reads module 3's only, so module 2
        learns through module 3 alone; ``cam_layers`` keep both layers for CELM.

    Notes
    -----
    ``forward`` takes (B, 3, H, W) float32 with H, W multiples of 4 (96 for PCam) and returns
    logits (B, num_classes); the network stride is 4 (:attr:`stride`).
    """

    #: Total downsampling of module 3 relative to the input.
    stride = 4

    def __init__(
        self,
        num_classes: int = 1,
        widths: tuple[int, int, int, int] = (16, 16, 32, 64),
        depth: int = 3,
        reduction: int = 16,
        attention: bool = True,
        spatial_kernels: tuple[int, ...] = MAM_KERNELS,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"widths must have 4 entries (head, module 1-3), got {widths!r}")
        w0, w1, w2, w3 = (int(w) for w in widths)
        self.num_classes = int(num_classes)
        self.head = nn.Sequential(nn.Conv2d(3, w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        kernels = tuple(int(k) for k in spatial_kernels)
        self.deep_supervision = bool(deep_supervision)
        self.module1 = MAResModule(w0, w1, 1, depth, reduction, attention, kernels)
        self.module2 = MAResModule(w1, w2, 2, depth, reduction, attention, kernels)
        self.module3 = MAResModule(w2, w3, 2, depth, reduction, attention, kernels)
        self.classifier = nn.Conv2d(2 * (w2 + w3) if self.deep_supervision else 2 * w3, self.num_classes, 1)

    @property
    def cam_layers(self) -> dict[str, nn.Module]:
        """The Grad-CAM target layers: ``"cam2"`` (end of module 2), ``"cam3"`` (end of module 3)."""
        return {"cam2": self.module2, "cam3": self.module3}

    def _features(self, x: Tensor, tile: int | None = None, step: int | None = None) -> tuple[Tensor, Tensor]:
        def win(f: int) -> _Window:
            return None if tile is None or step is None else (tile // f, step // f)

        h = self.head(x)
        h = self.module1(h, win(1))
        f2 = self.module2(h, win(2))
        f3 = self.module3(f2, win(4))
        return f2, f3

    def _companions(self, f2: Tensor, f3: Tensor, tile: int | None, step: int | None) -> tuple[Tensor, Tensor]:
        w2: _Window = None if tile is None or step is None else (tile // 2, step // 2)
        w3: _Window = None if tile is None or step is None else (tile // 4, step // 4)
        return torch.cat(_pool_windows(f2, w2), dim=1), torch.cat(_pool_windows(f3, w3), dim=1)

    def companions(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return the companion outputs [GAP ‖ GMP] of modules 2 and 3: (B, 2*w2) and (B, 2*w3)."""
        c2, c3 = self._companions(*self._features(x), None, None)
        return c2.flatten(1), c3.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits (B, num_classes) for images ``x`` (B, 3, H, W), one score per image."""
        c2, c3 = self._companions(*self._features(x), None, None)
        return self._classify(c2, c3).flatten(1)

    def _classify(self, c2: Tensor, c3: Tensor) -> Tensor:
        """The 1x1 conv on the companion outputs (module 3's only without deep supervision)."""
        return self.classifier(torch.cat([c2, c3], dim=1) if self.deep_supervision else c3)

    def forward_map(self, x: Tensor, tile_size: int = 96, stride: int | None = None) -> Tensor:
        """Dense logit map of the tiles of ``x`` (one network pass; see the module docstring).

        Parameters
        ----------
        x : (B, 3, H, W) float tensor
            A region; H and W multiples of 4 and at least ``tile_size``.
        tile_size : int
            Tile side T in input px (multiple of 4).
        stride : int, optional
            Tile stride S in input px (multiple of 4, default ``tile_size``).

        Returns
        -------
        (B, num_classes, (H-T)//S + 1, (W-T)//S + 1) float tensor
            Logits; cell ``[i, j]`` is the tile with top-left ``(x, y) = (j*S, i*S)`` input px.
        """
        step = tile_size if stride is None else stride
        _check_region(x, tile_size, step, self.stride)
        f2, f3 = self._features(x, tile_size, step)
        c2, c3 = self._companions(f2, f3, tile_size, step)
        return self._classify(c2, c3)

    def tile_scores(self, x: Tensor, tile_size: int = 96, stride: int | None = None, batch: int = 256) -> Tensor:
        """Exact tile-by-tile logits in :meth:`forward_map`'s layout (cost: one pass per tile)."""
        step = tile_size if stride is None else stride
        _check_region(x, tile_size, step, 1)
        b, c = x.shape[:2]
        tiles = x.unfold(2, tile_size, step).unfold(3, tile_size, step)  # B, C, nh, nw, T, T
        nh, nw = tiles.shape[2:4]
        tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, tile_size, tile_size)
        out = torch.cat([self(tiles[i : i + batch]) for i in range(0, tiles.shape[0], batch)])
        return out.reshape(b, nh, nw, -1).permute(0, 3, 1, 2)


@register_model("celnet_no_mam")
def celnet_no_mam(num_classes: int = 1, widths: tuple[int, int, int, int] = (16, 16, 32, 64), depth: int = 3) -> CELNet:
    """CELNet⁻ of Table 1 / "Ours w/o MAM" of Table 3: no multi-branch attention module (292K)."""
    return CELNet(num_classes=num_classes, widths=widths, depth=depth, attention=False)


@register_model("celnet_cbam")
def celnet_cbam(
    num_classes: int = 1, widths: tuple[int, int, int, int] = (16, 16, 32, 64), depth: int = 3, reduction: int = 16
) -> CELNet:
    """CELNet⁻+CBAM of Table 1: CBAM (channel attention + one 7x7 spatial conv) instead of the MAM (296K)."""
    return CELNet(
        num_classes=num_classes, widths=widths, depth=depth, reduction=reduction, spatial_kernels=CBAM_KERNELS
    )


@register_model("celnet_no_ds")
def celnet_no_ds(
    num_classes: int = 1, widths: tuple[int, int, int, int] = (16, 16, 32, 64), depth: int = 3, reduction: int = 16
) -> CELNet:
    """ "Ours w/o DS" of Table 3: CELNet without deep supervision (the classifier reads module 3 only)."""
    return CELNet(num_classes=num_classes, widths=widths, depth=depth, reduction=reduction, deep_supervision=False)


def _check_region(x: Tensor, tile: int, step: int, multiple: int) -> None:
    h, w = x.shape[-2:]
    if tile % multiple or step % multiple or step < 1:
        raise ValueError(f"tile_size={tile} and stride={step} must be positive multiples of {multiple}")
    if h < tile or w < tile or h % multiple or w % multiple:
        raise ValueError(
            f"region of {w}x{h} px (W x H) must be at least the tile size {tile} and a multiple of {multiple}"
        )
