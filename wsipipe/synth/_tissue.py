"""H&E-like procedural texture: stroma, nuclei and tumour, defined in µm and rendered per level.

The tissue of each class (normal lymph-node-like tissue, tumour) is a periodic *texture
canvas*: a square of ``canvas_px`` level-0 pixels (about 500 µm for the default 2048 px)
drawn once from the seed in Beer-Lambert optical-density space (haematoxylin + eosin), with
nuclei sized in µm. Its coarser versions are exact 2x2-mean downsamples, so at every level up
to ``log2(canvas_px / tile)`` a pure-tissue tile is exactly the downsample of the level-0 tiles
it covers. The slide plane repeats the canvas (it wraps around seamlessly) under one of
its 8 rotations/flips, picked by hashing the seed, so slides differ; orientation commutes
with the downsampling.

Tiles that cross a tissue or tumour border are composited from the class canvases with soft
masks drawn from the ground-truth polygons at the tile's own level (edge blur given in µm).
Every tile's pixels are a pure function of ``(seed, level, tile column, tile row)``, so tiles
can be rendered in any order and in parallel, with identical results.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from PIL import Image, ImageDraw, ImageFilter
from shapely.geometry import Polygon

from wsipipe.types import RGBArray

__all__ = ["BACKGROUND_RGB", "CanvasSet", "TileRenderer", "downsample2", "make_canvases"]

#: Colour of the glass (background) outside the tissue.
BACKGROUND_RGB = (243, 242, 246)

# Optical density per unit stain concentration, (R, G, B); tuned for H&E-like colours.
_H_VEC = np.array([0.60, 0.80, 0.32], dtype=np.float32)
_E_VEC = np.array([0.09, 0.70, 0.38], dtype=np.float32)

TILE = 256

BG, NORMAL, TUMOR, MIXED = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class _NucleusSpec:
    density_per_mm2: float
    radius_um: tuple[float, float]  # mean, sd
    aspect: tuple[float, float]  # min, max (short/long axis)
    irregularity: float
    stain: tuple[float, float]  # haematoxylin OD mean, sd
    nucleoli: bool


@dataclass(frozen=True, slots=True)
class _ClassSpec:
    eosin: float
    eosin_texture: float
    haem_background: float
    holes: float  # fraction of white space (vessels, fat)
    nuclei: tuple[_NucleusSpec, ...]


_SPECS: dict[int, _ClassSpec] = {
    NORMAL: _ClassSpec(
        eosin=0.42,
        eosin_texture=0.45,
        haem_background=0.05,
        holes=0.04,
        nuclei=(
            _NucleusSpec(4200.0, (3.1, 0.35), (0.8, 1.0), 0.04, (1.05, 0.12), False),
            _NucleusSpec(500.0, (4.6, 0.6), (0.6, 0.9), 0.08, (0.65, 0.10), False),
        ),
    ),
    TUMOR: _ClassSpec(
        eosin=0.40,
        eosin_texture=0.30,
        haem_background=0.17,
        holes=0.0,
        nuclei=(_NucleusSpec(3900.0, (5.6, 1.2), (0.55, 1.0), 0.14, (1.45, 0.22), True),),
    ),
}


def downsample2(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Halve an image by 2x2 means (rounded), shape (2h, 2w[, c]) -> (h, w[, c]) uint8."""
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    a = img[:h:2, :w:2].astype(np.uint16) + img[1:h:2, :w:2] + img[:h:2, 1:w:2] + img[1:h:2, 1:w:2]
    return ((a + 2) >> 2).astype(np.uint8)


def _periodic_noise(rng: np.random.Generator, n: int, sigma_px: float) -> npt.NDArray[np.float32]:
    """Unit-variance, zero-mean periodic Gaussian noise on an (n, n) grid, smoothed by ``sigma_px``."""
    # sample the field every ~sigma/2 px and interpolate: smooth fields need few samples
    m = min(n, max(16, int(2 ** math.ceil(math.log2(2.0 * n / max(sigma_px, 1e-3))))))
    white = rng.standard_normal((m, m)).astype(np.float32)
    fy = np.fft.fftfreq(m)[:, None]
    fx = np.fft.rfftfreq(m)[None, :]
    s = sigma_px * m / n
    field = np.fft.irfft2(np.fft.rfft2(white) * np.exp(-2.0 * math.pi**2 * s**2 * (fx**2 + fy**2)), s=(m, m))
    field = field.astype(np.float32)
    if m < n:
        from scipy.ndimage import zoom

        field = zoom(field, n / m, order=1, mode="grid-wrap", grid_mode=True).astype(np.float32)
    field -= field.mean()
    field /= max(float(field.std()), 1e-6)
    return field


def _draw_nuclei(
    rng: np.random.Generator, n: int, mpp: float, spec: _NucleusSpec, stain: np.ndarray, cover: np.ndarray
) -> None:
    """Draw nuclei of ``spec`` into the periodic maps ``stain`` (H OD) and ``cover`` (0..1), in place."""
    area_mm2 = (n * mpp * 1e-3) ** 2
    count = int(rng.poisson(spec.density_per_mm2 * area_mm2))
    for _ in range(count):
        r = max(1.5, rng.normal(*spec.radius_um)) / mpp
        aspect = rng.uniform(*spec.aspect)
        a, b = r / math.sqrt(aspect), r * math.sqrt(aspect)
        half = math.ceil(a * (1.0 + 2.0 * spec.irregularity)) + 2
        cx, cy = rng.uniform(0, n), rng.uniform(0, n)
        ix, iy = int(cx), int(cy)
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
        dx, dy = xx - (cx - ix), yy - (cy - iy)
        phi = rng.uniform(0.0, math.pi)
        c, s = math.cos(phi), math.sin(phi)
        u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
        rad = np.sqrt(u * u + v * v)
        boundary = np.ones_like(rad)
        if spec.irregularity > 0:
            theta = np.arctan2(v, u)
            for k in (2, 3, 5):
                boundary += spec.irregularity * rng.uniform(0.3, 1.0) / k * np.cos(k * theta + rng.uniform(0, 6.283))
        inside = np.clip((boundary - rad) * b + 0.5, 0.0, 1.0)
        level = max(0.2, rng.normal(*spec.stain))
        patch = inside * level
        if spec.nucleoli:
            # a dark nucleolus off-centre
            nu, nv = rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)
            dn = np.sqrt((u - nu) ** 2 + (v - nv) ** 2) * b
            patch += inside * 0.6 * np.clip(1.6 / mpp * 0.25 - dn * 0.25, 0.0, 1.0)
        rows = np.arange(iy - half, iy + half + 1) % n
        cols = np.arange(ix - half, ix + half + 1) % n
        sel = np.ix_(rows, cols)
        stain[sel] = np.maximum(stain[sel], patch)
        cover[sel] = np.maximum(cover[sel], inside)


def _render_canvas(seed: int, cls: int, n: int, mpp: float) -> RGBArray:
    """Draw the level-0 texture canvas of one class: (n, n, 3) uint8, periodic in both axes."""
    spec = _SPECS[cls]
    rng = np.random.default_rng([seed, 7919, cls, n])
    stain = np.zeros((n, n), np.float32)
    cover = np.zeros((n, n), np.float32)
    for nspec in spec.nuclei:
        _draw_nuclei(rng, n, mpp, nspec, stain, cover)
    fibres = _periodic_noise(rng, n, 1.5 / mpp)
    broad = _periodic_noise(rng, n, 25.0 / mpp)
    grain = _periodic_noise(rng, n, 0.5 / mpp)
    eosin = spec.eosin * np.clip(1.0 + spec.eosin_texture * (0.6 * fibres + 0.4 * broad), 0.15, None)
    eosin *= 1.0 - 0.5 * cover
    haem = spec.haem_background * (1.0 + 0.3 * broad) + stain * (1.0 + 0.18 * grain)
    if spec.holes > 0:
        lumen = _periodic_noise(rng, n, 12.0 / mpp)
        thresh = float(np.quantile(lumen, 1.0 - spec.holes))
        keep = np.clip((thresh - lumen) * 4.0 + 0.5, 0.05, 1.0)
        eosin *= keep
        haem *= keep
    od = haem[..., None] * _H_VEC + eosin[..., None] * _E_VEC
    rgb = 255.0 * np.exp(-od)
    rgb += 2.0 * grain[..., None]
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class CanvasSet:
    """The texture canvases of every class at every canvas level.

    Attributes
    ----------
    size0 : int
        Canvas side at level 0, px (a power of two, at least one tile).
    levels : tuple of dict
        ``levels[L][cls]`` is the canvas of class ``cls`` at level ``L``: shape
        (size0 / 2**L, size0 / 2**L, 3) uint8, for ``L`` up to ``log2(size0 / tile)``.
    """

    size0: int
    levels: tuple[dict[int, RGBArray], ...]

    @property
    def max_level(self) -> int:
        """The coarsest level whose canvas is still at least one tile wide."""
        return len(self.levels) - 1


@functools.lru_cache(maxsize=4)
def make_canvases(seed: int, mpp: float, size0: int = 2048) -> CanvasSet:
    """Render (and cache) the canvases of all classes for ``seed`` at ``mpp`` µm/px.

    Parameters
    ----------
    seed : int
        Texture seed.
    mpp : float
        Level-0 µm/px; nuclei and texture scales are in µm.
    size0 : int
        Canvas side at level 0, px; a power of two >= 256.
    """
    levels: list[dict[int, RGBArray]] = [{cls: _render_canvas(seed, cls, size0, mpp) for cls in (NORMAL, TUMOR)}]
    while levels[-1][NORMAL].shape[0] > TILE:
        levels.append({cls: downsample2(img) for cls, img in levels[-1].items()})
    for lvl in levels:
        for img in lvl.values():
            img.setflags(write=False)
    return CanvasSet(size0, tuple(levels))


def _mix(seed: int, a: int, b: int) -> int:
    """A small integer hash (splitmix64 finaliser) of three integers."""
    x = (seed * 0x9E3779B97F4A7C15 + a * 0xBF58476D1CE4E5B9 + b * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _dihedral(img: npt.NDArray[np.uint8], variant: int) -> npt.NDArray[np.uint8]:
    out = np.rot90(img, variant % 4)
    return out[:, ::-1] if variant >= 4 else out


class TileRenderer:
    """Render any tile of a synthetic slide at any level as RGB pixels.

    Parameters
    ----------
    islands, tumors : sequence of shapely.Polygon
        Ground truth in level-0 pixels.
    canvases : CanvasSet
        Class textures (see :func:`make_canvases`).
    seed : int
        Seed of the block orientation hash.
    mpp : float
        Level-0 µm/px (sets the edge softness, 1.5 µm).
    """

    def __init__(
        self,
        islands: Sequence[Polygon],
        tumors: Sequence[Polygon],
        canvases: CanvasSet,
        *,
        seed: int,
        mpp: float,
        edge_um: float = 1.5,
    ) -> None:
        self.islands = list(islands)
        self.tumors = list(tumors)
        self.canvases = canvases
        self.seed = seed
        self.mpp = mpp
        self.edge_um = edge_um
        self.tissue = shapely.unary_union(self.islands) if self.islands else shapely.Polygon()
        self.tumor = shapely.unary_union(self.tumors) if self.tumors else shapely.Polygon()
        shapely.prepare(self.tissue)
        shapely.prepare(self.tumor)
        # GEOS prepared geometries build their indexes lazily: serialise the predicates
        self._lock = threading.Lock()
        # one orientation of the (periodic) canvases for the whole slide: seamless, yet slides differ
        self.variant = _mix(seed, 0, 0) % 8
        self._index = [
            _dihedral(np.arange(n * n).reshape(n, n), self.variant)
            for n in (canvases.size0 // (TILE * 2**lvl) for lvl in range(canvases.max_level + 1))
        ]
        self._bg = np.empty((TILE, TILE, 3), np.uint8)
        self._bg[:] = BACKGROUND_RGB
        self._bg.setflags(write=False)

    # --- classification ---------------------------------------------------------------

    def margin(self, level: int) -> tuple[float, int]:
        """Edge blur sigma at ``level`` (px of that level) and the tile margin it needs (px)."""
        sigma = max(0.5, self.edge_um / (self.mpp * 2**level))
        return sigma, math.ceil(3.0 * sigma) + 1

    def classify_row(self, level: int, row: int, cols: npt.NDArray[np.int_]) -> npt.NDArray[np.int8]:
        """Classes of tiles ``cols`` of tile row ``row`` at ``level``, shape (len(cols),) int8.

        A tile is BG when its footprint (grown by the edge-blur margin) misses the tissue,
        NORMAL or TUMOR when it lies wholly in one class, MIXED otherwise.
        """
        d = 2**level
        _, m = self.margin(level)
        x0 = (np.asarray(cols) * TILE - m) * d
        y0 = (row * TILE - m) * d
        span = (TILE + 2 * m) * d
        boxes = shapely.box(x0, y0, x0 + span, y0 + span)
        out = np.full(len(x0), MIXED, np.int8)
        with self._lock:
            touches = shapely.intersects(self.tissue, boxes)
            inside = shapely.contains(self.tissue, boxes)
            if self.tumors:
                hits_tumor = shapely.intersects(self.tumor, boxes)
                in_tumor = shapely.contains(self.tumor, boxes)
            else:
                hits_tumor = in_tumor = np.zeros(len(x0), bool)
        out[~touches] = BG
        out[in_tumor] = TUMOR
        out[inside & ~hits_tumor] = NORMAL
        return out

    def classify(self, level: int, col: int, row: int) -> int:
        """Class of one tile (see :meth:`classify_row`)."""
        return int(self.classify_row(level, row, np.array([col]))[0])

    # --- pixels -----------------------------------------------------------------------

    def block_key(self, level: int, col: int, row: int) -> tuple[int, int, int]:
        """(variant, source tile row, source tile col) of a pure tile at a canvas level.

        The plane repeats the slide's oriented canvas; tile (col, row) shows the canvas tile
        that the orientation ``variant`` moves to its place.
        """
        per_block = self.canvases.size0 // (TILE * 2**level)
        src = int(self._index[level][row % per_block, col % per_block])
        return self.variant, src // per_block, src % per_block

    def canvas_tile(self, cls: int, level: int, col: int, row: int) -> npt.NDArray[np.uint8]:
        """The pure-``cls`` tile at (col, row) of a canvas level, (256, 256, 3) uint8."""
        variant, si, sj = self.block_key(level, col, row)
        canvas = self.canvases.levels[level][cls]
        return _dihedral(canvas[si * TILE : (si + 1) * TILE, sj * TILE : (sj + 1) * TILE], variant)

    def _mask(self, polys: Sequence[Polygon], level: int, col: int, row: int) -> Image.Image | None:
        """Soft coverage of ``polys`` on one tile, an (256, 256) ``"L"`` image (0-255); None when empty.

        Drawn at a reduced scale where the blur is wide (cheaper, and the edge is smooth
        anyway), blurred, and resized back.
        """
        sigma, m = self.margin(level)
        d = 2**level
        f = 4 if sigma >= 4 else 2 if sigma >= 2 else 1
        m = -(-m // f) * f
        side = TILE + 2 * m
        ox, oy = col * TILE * d, row * TILE * d
        win = (ox - m * d, oy - m * d, ox + (TILE + m) * d, oy + (TILE + m) * d)
        hits = []
        for poly in polys:
            x0, y0, x1, y1 = poly.bounds
            if not (x1 < win[0] or x0 > win[2] or y1 < win[1] or y0 > win[3]):
                hits.append(poly)
        if not hits:
            return None
        img = Image.new("L", (side // f, side // f), 0)
        draw = ImageDraw.Draw(img)
        for poly in hits:
            for k, ring in enumerate([poly.exterior, *poly.interiors]):
                xy = ((np.asarray(ring.coords) - (ox, oy)) / d + m) / f - 0.5
                draw.polygon([tuple(p) for p in xy.tolist()], fill=255 if k == 0 else 0)
        img = img.filter(ImageFilter.GaussianBlur(sigma / f))
        if f > 1:
            img = img.resize((side, side), Image.Resampling.BILINEAR)
        return img.crop((m, m, m + TILE, m + TILE))

    def tile(self, level: int, col: int, row: int) -> npt.NDArray[np.uint8]:
        """RGB pixels of tile (col, row) at ``level``: (256, 256, 3) uint8.

        Levels up to the canvas depth are composited directly; coarser levels are the 2x2-mean
        downsample of the four tiles below, so the pyramid is consistent by construction.
        """
        if level > self.canvases.max_level:
            block = np.empty((2 * TILE, 2 * TILE, 3), np.uint8)
            for dy in (0, 1):
                for dx in (0, 1):
                    sub = self.tile(level - 1, 2 * col + dx, 2 * row + dy)
                    block[dy * TILE : (dy + 1) * TILE, dx * TILE : (dx + 1) * TILE] = sub
            return downsample2(block)
        cls = self.classify(level, col, row)
        if cls == BG:
            return self._bg
        if cls in (NORMAL, TUMOR):
            return self.canvas_tile(cls, level, col, row)
        # composite in PIL (C, releases the GIL): tumour over normal, then tissue over glass
        fg = Image.fromarray(np.ascontiguousarray(self.canvas_tile(NORMAL, level, col, row)))
        tumour = self._mask(self.tumors, level, col, row) if self.tumors else None
        if tumour is not None:
            fg = Image.composite(
                Image.fromarray(np.ascontiguousarray(self.canvas_tile(TUMOR, level, col, row))), fg, tumour
            )
        tissue = self._mask(self.islands, level, col, row)
        if tissue is None:
            return self._bg
        return np.asarray(Image.composite(fg, Image.new("RGB", (TILE, TILE), BACKGROUND_RGB), tissue))
