"""Ground-truth geometry of a synthetic slide: tissue islands and tumour lesions.

Everything here is in level-0 pixels (x right, y down), sized from physical lengths in µm
through the slide's MPP. A tumour slide gets, besides its ordinary lesions, the two
CAMELYON16 corner cases the evaluation must handle:

* an isolated tumour cell cluster (ITC) of about 100 µm: its major axis after the 37.5 µm
  growth of the evaluation mask stays below 275 µm, so it is excluded from the targets;
* a pair of lesions whose boundaries are about 40 µm apart (< 75 µm): the evaluation mask
  merges them into one lesion.

Any other two lesions are kept at least :data:`MIN_SEPARATION_UM` apart so they stay
distinct, and every lesion lies inside a tissue island (shrunk by a margin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import Polygon

from wsipipe.errors import ConfigError

__all__ = [
    "ITC_DIAMETER_UM",
    "MIN_SEPARATION_UM",
    "PAIR_GAP_UM",
    "Layout",
    "SynthLesion",
    "blob",
    "make_layout",
]

#: Target diameter of the isolated tumour cell cluster, µm (< 200 µm before growth).
ITC_DIAMETER_UM = 100.0
#: Boundary-to-boundary gap of the lesion pair that CAMELYON16 merges (< 75 µm).
PAIR_GAP_UM = 40.0
#: Smallest boundary gap between lesions meant to stay separate (> 75 µm with room to spare).
MIN_SEPARATION_UM = 120.0
#: Smallest mean radius of an ordinary lesion, µm: its extent stays well above the ITC limit.
_MIN_LESION_RADIUS_UM = 120.0
#: Lesions stay this far inside the border of their tissue island, µm.
_TISSUE_MARGIN_UM = 30.0


@dataclass(frozen=True, slots=True)
class SynthLesion:
    """One ground-truth tumour region.

    Attributes
    ----------
    polygon : shapely.Polygon
        Outline in level-0 pixels.
    role : str
        ``"lesion"`` (ordinary metastasis), ``"pair"`` (one of the two lesions < 75 µm apart)
        or ``"itc"`` (the isolated tumour cell cluster < 275 µm).
    """

    polygon: Polygon
    role: str


@dataclass(frozen=True, slots=True)
class Layout:
    """Tissue islands and lesions of one slide, in level-0 pixels."""

    islands: tuple[Polygon, ...]
    lesions: tuple[SynthLesion, ...]


def blob(
    rng: np.random.Generator,
    center: tuple[float, float],
    radius: float,
    *,
    irregularity: float = 0.2,
    elongation: float = 1.0,
    n_vertices: int = 128,
) -> Polygon:
    """Return an irregular closed blob: an ellipse whose radius is modulated by low harmonics.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the shape's randomness.
    center : (float, float)
        Level-0 (x, y) of the centre, px.
    radius : float
        Mean radius, px.
    irregularity : float
        Amplitude of the radial harmonics (0 = ellipse); kept below 0.5 so the outline
        stays star-shaped and simple.
    elongation : float
        Ratio of the long to the short axis (>= 1); the area stays about pi * radius**2.
    n_vertices : int
        Number of polygon vertices.
    """
    theta = np.linspace(0.0, 2.0 * math.pi, n_vertices, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 7):
        amp = irregularity * rng.uniform(0.2, 1.0) / k**0.8
        r += amp * np.cos(k * theta + rng.uniform(0.0, 2.0 * math.pi))
    r = np.clip(r, 0.35, None) * radius
    a, b = math.sqrt(elongation), 1.0 / math.sqrt(elongation)
    phi = rng.uniform(0.0, math.pi)
    x, y = r * np.cos(theta) * a, r * np.sin(theta) * b
    xr = center[0] + x * math.cos(phi) - y * math.sin(phi)
    yr = center[1] + x * math.sin(phi) + y * math.cos(phi)
    poly = Polygon(np.column_stack([xr, yr]))
    if not poly.is_valid:  # pragma: no cover - star-shaped outlines are simple
        poly = shapely.make_valid(poly).buffer(0)
    return poly


def _islands(rng: np.random.Generator, size: tuple[int, int], mpp: float, tissue_fraction: float) -> list[Polygon]:
    w, h = size
    area_mm2 = w * h * (mpp * 1e-3) ** 2
    n = int(np.clip(round(area_mm2 / 3.0), 1, 6))
    n = max(1, min(n, int(rng.integers(max(1, n - 1), n + 1))))
    target = tissue_fraction * w * h / n
    islands: list[Polygon] = []
    margin = 0.04 * min(w, h)
    for attempt in range(400):
        shrink = 0.97 ** (attempt // 5)
        radius = math.sqrt(target / math.pi) * rng.uniform(0.8, 1.15) * shrink
        elong = rng.uniform(1.0, 1.8)
        reach = radius * math.sqrt(elong) * 1.2
        lo_x, hi_x = margin + reach, w - margin - reach
        lo_y, hi_y = margin + reach, h - margin - reach
        if lo_x >= hi_x:
            lo_x = hi_x = w / 2
        if lo_y >= hi_y:
            lo_y = hi_y = h / 2
        cand = blob(rng, (rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)), radius, irregularity=0.3, elongation=elong)
        if not shapely.box(margin, margin, w - margin, h - margin).contains(cand):
            continue
        if any(cand.distance(other) < margin for other in islands):
            continue
        islands.append(cand)
        if len(islands) == n:
            break
    if not islands:
        raise ConfigError(f"slide size {w}x{h} px is too small to hold a tissue island; use at least 1024x1024")
    return islands


class _Placer:
    """Places lesions inside the tissue, keeping the separations the evaluation rules need."""

    def __init__(self, rng: np.random.Generator, islands: list[Polygon], mpp: float) -> None:
        self.rng = rng
        self.mpp = mpp
        self.allowed = [isl.buffer(-_TISSUE_MARGIN_UM / mpp) for isl in islands]
        self.lesions: list[SynthLesion] = []

    def px(self, um: float) -> float:
        return um / self.mpp

    def _fits(self, poly: Polygon, island: int) -> bool:
        if not self.allowed[island].contains(poly):
            return False
        sep = self.px(MIN_SEPARATION_UM)
        return all(les.polygon.distance(poly) >= sep for les in self.lesions)

    def _random_point(self, island: int, reach: float) -> tuple[float, float] | None:
        """A random point where a shape reaching ``reach`` px around it fits the island and its spacing."""
        region = self.allowed[island].buffer(-reach)
        if self.lesions and not region.is_empty:
            taken = shapely.union_all([les.polygon for les in self.lesions])
            region = region.difference(taken.buffer(self.px(MIN_SEPARATION_UM) + reach))
        if region.is_empty:
            return None
        shapely.prepare(region)
        x0, y0, x1, y1 = region.bounds
        for _ in range(100):
            x, y = self.rng.uniform(x0, x1), self.rng.uniform(y0, y1)
            if region.contains(shapely.Point(x, y)):
                return x, y
        return None

    def place(
        self, radius_um: float, role: str, *, irregularity: float, min_radius_um: float = 0.0, tries: int = 60
    ) -> Polygon | None:
        order = self.rng.permutation(len(self.allowed))
        for attempt in range(tries):
            island = int(order[attempt % len(order)])
            radius = self.px(max(min_radius_um, radius_um * 0.97 ** (attempt // 4)))
            pt = self._random_point(island, 0.9 * radius)
            if pt is None:
                continue
            cand = blob(self.rng, pt, radius, irregularity=irregularity, elongation=self.rng.uniform(1.0, 1.5))
            if self._fits(cand, island):
                self.lesions.append(SynthLesion(cand, role))
                return cand
        return None

    def place_pair(self, radius_um: float, tries: int = 60) -> bool:
        gap = self.px(PAIR_GAP_UM)
        order = self.rng.permutation(len(self.allowed))
        for attempt in range(tries):
            island = int(order[attempt % len(order)])
            r = self.px(radius_um) * 0.98 ** (attempt // 4)
            angles = self.rng.uniform(0.0, 2.0 * math.pi, 8)
            # prefer a spot where the whole pair fits in any direction; else one for the first lesion
            mid = self._random_point(island, 1.1 * (2.0 * r + 0.5 * gap))
            if mid is not None:
                pt = (mid[0] - math.cos(angles[0]) * (r + 0.5 * gap), mid[1] - math.sin(angles[0]) * (r + 0.5 * gap))
            else:
                pt = self._random_point(island, 1.1 * r)  # type: ignore[assignment]
            if pt is None:
                continue
            first = blob(self.rng, pt, r, irregularity=0.15, elongation=self.rng.uniform(1.0, 1.3))
            if not self._fits(first, island):
                continue
            shape = blob(self.rng, (0.0, 0.0), r * self.rng.uniform(0.8, 1.0), irregularity=0.15)
            for angle in angles[:1] if mid is not None else angles[:4]:
                second = self._beside(first, shape, pt, float(angle), gap)
                if second is not None and self._fits(second, island):
                    self.lesions.append(SynthLesion(first, "pair"))
                    self.lesions.append(SynthLesion(second, "pair"))
                    return True
        return False

    @staticmethod
    def _beside(
        first: Polygon, shape: Polygon, origin: tuple[float, float], angle: float, gap: float
    ) -> Polygon | None:
        """``shape`` moved from ``origin`` along ``angle`` until its gap to ``first`` is about ``gap`` px."""
        ux, uy = math.cos(angle), math.sin(angle)
        _, _, sx, _ = shape.bounds
        lo, hi = 0.0, 2.0 * (first.length / math.pi + sx) + 2.0 * gap
        best = None
        for _ in range(14):  # bisect the centre distance
            mid = 0.5 * (lo + hi)
            moved = shapely.affinity.translate(shape, origin[0] + ux * mid, origin[1] + uy * mid)
            if moved.distance(first) < gap:
                lo = mid
            else:
                hi, best = mid, moved
        if best is None or not 0.8 * gap <= best.distance(first) <= 1.1 * gap:
            return None
        return best


def make_layout(
    rng: np.random.Generator,
    size: tuple[int, int],
    *,
    mpp: float,
    kind: str,
    tissue_fraction: float = 0.35,
    n_lesions: int | None = None,
) -> Layout:
    """Draw the tissue islands and (for ``kind="tumor"``) the lesions of one slide.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness (seeded by the caller).
    size : (int, int)
        Level-0 (width, height), px.
    mpp : float
        Level-0 µm/px.
    kind : {"tumor", "normal"}
        Normal slides get islands only.
    tissue_fraction : float
        Approximate fraction of the slide area covered by tissue.
    n_lesions : int, optional
        Number of ordinary lesions besides the ITC and the close pair; default grows with the
        tissue area (1 to 4).

    Returns
    -------
    Layout
        Tumour slides always hold one ITC (``role="itc"``) and one close pair
        (``role="pair"``) besides at least one ordinary lesion.

    Raises
    ------
    ConfigError
        When the slide is too small to place the required lesions.
    """
    if kind not in ("tumor", "normal"):
        raise ConfigError(f"slide kind {kind!r} is not one of 'tumor', 'normal'")
    last = ConfigError(f"slide size {size[0]}x{size[1]} px is too small for the tumour lesions")
    for _ in range(30):  # a layout that cannot hold the lesions is redrawn (deterministically)
        islands = _islands(rng, size, mpp, tissue_fraction)
        if kind == "normal":
            return Layout(tuple(islands), ())
        try:
            return Layout(tuple(islands), _lesions(rng, islands, size, mpp, n_lesions))
        except ConfigError as err:
            last = err
    raise last


def _lesions(
    rng: np.random.Generator, islands: list[Polygon], size: tuple[int, int], mpp: float, n_lesions: int | None
) -> tuple[SynthLesion, ...]:
    tissue_um = math.sqrt(sum(i.area for i in islands) / len(islands)) * mpp  # side of a typical island, µm
    main_r = float(np.clip(0.14 * tissue_um, _MIN_LESION_RADIUS_UM, 1600.0))
    pair_r = float(np.clip(0.08 * tissue_um, 70.0, 400.0))
    if n_lesions is None:
        n_lesions = int(np.clip(round(sum(i.area for i in islands) * (mpp * 1e-3) ** 2 / 8.0), 1, 4))
    placer = _Placer(rng, islands, mpp)
    # the largest lesion first, while the tissue is empty; then the small, flexible ones
    if placer.place(main_r, "lesion", irregularity=0.35, min_radius_um=_MIN_LESION_RADIUS_UM) is None:
        raise ConfigError(f"slide size {size[0]}x{size[1]} px is too small to place a tumour lesion")
    if not placer.place_pair(pair_r):
        raise ConfigError(f"slide size {size[0]}x{size[1]} px is too small to place the close lesion pair")
    if placer.place(ITC_DIAMETER_UM / 2.0, "itc", irregularity=0.1) is None:
        raise ConfigError(f"slide size {size[0]}x{size[1]} px is too small to place the isolated tumour cluster")
    for _ in range(n_lesions - 1):
        radius = max(_MIN_LESION_RADIUS_UM, main_r * float(rng.uniform(0.5, 1.0)))
        placer.place(radius, "lesion", irregularity=0.35, min_radius_um=_MIN_LESION_RADIUS_UM)
    return tuple(placer.lesions)
