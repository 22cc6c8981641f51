"""Drawing the procedural world: an object (shape, colour pattern, texture) in a scene, then a global style
(docs/world.md). ``render(spec)`` returns the image and the object's exact mask; everything is seeded by the spec.

Images are drawn at twice the output side and downsampled with a box filter (anti-aliased edges). Arrays are
``(H, W, 3) float32`` in ``[0, 1]`` until the final ``uint8`` conversion.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from eqdiff.world.vocabulary import COLOURS, Identity, Spec

SUPERSAMPLE = 2


def _rgb(name: str) -> np.ndarray:
    return np.asarray(COLOURS[name], dtype=np.float32) / 255.0


def _silhouette(shape: str, side: int) -> np.ndarray:
    """``(side, side) bool`` silhouette of ``shape`` filling the square."""
    image = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(image)
    s = side - 1
    if shape == "ball":
        draw.ellipse((0, 0, s, s), fill=255)
    elif shape == "box":
        draw.rectangle((int(0.08 * s), int(0.08 * s), int(0.92 * s), int(0.92 * s)), fill=255)
    elif shape == "pyramid":
        draw.polygon([(s / 2, 0), (s, s * 0.92), (0, s * 0.92)], fill=255)
    elif shape == "ring":
        draw.ellipse((0, 0, s, s), fill=255)
        draw.ellipse((0.3 * s, 0.3 * s, 0.7 * s, 0.7 * s), fill=0)
    elif shape == "star":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 0.5, 0.21) * s
        draw.polygon([(s / 2 + r * np.cos(a), s / 2 - r * np.sin(a)) for r, a in zip(radii, angles, strict=True)], 255)
    elif shape == "heart":
        draw.ellipse((0, 0.05 * s, 0.55 * s, 0.6 * s), fill=255)
        draw.ellipse((0.45 * s, 0.05 * s, s, 0.6 * s), fill=255)
        draw.polygon([(0.03 * s, 0.42 * s), (0.97 * s, 0.42 * s), (0.5 * s, 0.97 * s)], fill=255)
    else:
        raise ValueError(f"world shape {shape!r} has no drawing")
    return np.asarray(image) > 127


def _pattern(identity: Identity, side: int, rng: np.random.Generator) -> np.ndarray:
    """``(side, side) float`` in [0, 1]: where the second colour shows."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    if identity.pattern == "plain":
        return np.zeros((side, side), np.float32)
    if identity.pattern == "striped":
        return (np.sin((x + y) * np.pi * 7) > 0.2).astype(np.float32)
    if identity.pattern == "checkered":
        return ((np.floor(x * 5) + np.floor(y * 5)) % 2).astype(np.float32)
    # spotted: a jittered grid of round spots
    spots = np.zeros((side, side), np.float32)
    for cy in np.linspace(0.12, 0.88, 4):
        for cx in np.linspace(0.12, 0.88, 4):
            jx, jy = rng.uniform(-0.04, 0.04, size=2)
            spots[(x - cx - jx) ** 2 + (y - cy - jy) ** 2 < 0.085**2] = 1.0
    return spots


def _object(identity: Identity, side: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The object's ``(side, side, 3)`` colours and ``(side, side)`` bool silhouette."""
    mask = _silhouette(identity.shape, side)
    pattern = _pattern(identity, side, rng)[..., None]
    colours = (1 - pattern) * _rgb(identity.colour) + pattern * _rgb(identity.second)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    shade = 1.08 - 0.35 * (0.6 * x + 0.4 * y)  # light from the top left
    if identity.texture == "fuzzy":
        fur = ndimage.gaussian_filter(rng.normal(0, 1, (side, side)), 0.7)
        shade = shade * (1 + 0.22 * fur / (fur.std() + 1e-6))
        edge = mask & ~ndimage.binary_erosion(mask, iterations=2)  # ragged fur outline
        mask = mask & ~(edge & (rng.random((side, side)) < 0.5))
    elif identity.texture == "shiny":
        shade = shade + 0.75 * np.exp(-((x - 0.33) ** 2 + (y - 0.3) ** 2) / 0.012)
    return np.clip(colours * shade[..., None], 0, 1).astype(np.float32), mask


# ----------------------------------------------------------------------------------------------------------
# Scenes.


def _noise(rng: np.random.Generator, side: int, sigma: float, amount: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(0, 1, (side, side)), sigma)
    return (amount * field / (field.std() + 1e-6))[..., None].astype(np.float32)


def _vertical(side: int, top: tuple, bottom: tuple, horizon: float, soft: float = 0.02) -> np.ndarray:
    y = np.linspace(0, 1, side, dtype=np.float32)[:, None, None]
    t = 1 / (1 + np.exp(-(y - horizon) / soft))
    image = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    return np.broadcast_to(image, (side, side, 3)).copy()


def _scene(name: str, side: int, rng: np.random.Generator) -> np.ndarray:
    horizon = float(rng.uniform(0.38, 0.55))
    if name == "studio":
        tone = rng.uniform(0.72, 0.9)
        image = _vertical(side, (tone, tone, tone * 0.97), (tone * 0.8,) * 3, horizon, 0.2)
    elif name == "beach":
        image = _vertical(side, (0.55, 0.78, 0.95), (0.9, 0.8, 0.58), horizon)
        sea = slice(int(horizon * side) - side // 12, int(horizon * side) + side // 20)
        image[sea] = (0.15, 0.45, 0.75)
        image += _noise(rng, side, 1.0, 0.03)
    elif name == "snow":
        image = _vertical(side, (0.78, 0.85, 0.93), (0.96, 0.97, 1.0), horizon)
        flakes = rng.random((side, side)) < 0.012
        image[ndimage.binary_dilation(flakes)] = 1.0
    elif name == "jungle":
        image = np.empty((side, side, 3), np.float32)
        image[:] = (0.08, 0.3, 0.1)
        canvas = Image.fromarray((image * 255).astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        for _ in range(40):
            cx, cy, r = rng.uniform(0, side), rng.uniform(0, side), rng.uniform(side / 16, side / 7)
            green = tuple(int(v) for v in (rng.uniform(20, 80), rng.uniform(90, 190), rng.uniform(20, 70)))
            draw.ellipse((cx - r, cy - r / 2.2, cx + r, cy + r / 2.2), fill=green)
        image = np.asarray(canvas, np.float32) / 255
    elif name == "table":
        image = _vertical(side, (0.85, 0.82, 0.74), (0.52, 0.32, 0.16), horizon, 0.01)
        y = np.arange(side)[:, None]
        grain = 0.06 * np.sin(y * 0.9 + 3 * np.sin(np.arange(side)[None, :] * 0.05 + rng.uniform(0, 6)))
        image += (grain * (y > horizon * side))[..., None].astype(np.float32)
    elif name == "city":
        image = _vertical(side, (0.62, 0.75, 0.9), (0.45, 0.45, 0.47), 0.85, 0.01)
        canvas = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        x = -rng.uniform(0, side / 8)
        while x < side:
            width, top = rng.uniform(side / 8, side / 4), rng.uniform(0.1, 0.5) * side
            grey = int(rng.uniform(70, 150))
            draw.rectangle((x, top, x + width, side), fill=(grey, grey, grey + 8))
            for wy in np.arange(top + 4, side * 0.85, side / 14):
                for wx in np.arange(x + 3, x + width - 4, side / 14):
                    draw.rectangle((wx, wy, wx + side / 40, wy + side / 40), fill=(235, 225, 150))
            x += width + rng.uniform(1, side / 20)
        image = np.asarray(canvas, np.float32) / 255
    elif name == "clutter":
        image = np.empty((side, side, 3), np.float32)
        image[:] = rng.uniform(0.35, 0.7, size=3)
        canvas = Image.fromarray((image * 255).astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        for _ in range(14):
            x0, y0 = rng.uniform(-side / 8, side, size=2)
            w, h = rng.uniform(side / 10, side / 3, size=2)
            fill = tuple(int(v) for v in rng.integers(20, 235, size=3))
            (draw.rectangle if rng.random() < 0.6 else draw.ellipse)((x0, y0, x0 + w, y0 + h), fill=fill)
        image = np.asarray(canvas, np.float32) / 255
    else:
        raise ValueError(f"world scene {name!r} has no drawing")
    return np.clip(image, 0, 1)


# ----------------------------------------------------------------------------------------------------------
# Styles: high-frequency ones replace fine detail, low-frequency ones the palette and lighting.


def _luminance(image: np.ndarray) -> np.ndarray:
    return image @ np.asarray([0.299, 0.587, 0.114], np.float32)


def _style(name: str, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    side = image.shape[0]
    if name == "photo":
        return image
    if name == "pencil":
        paper = 0.96 + _noise(rng, side, 0.5, 0.015)
        smooth = ndimage.gaussian_filter(image, (2, 2, 0))  # the strokes keep only the coarse colour
        darkness = 1 - _luminance(smooth)
        y, x = np.mgrid[0:side, 0:side]
        phase = rng.uniform(0, 6)
        hatch = (np.sin((x - y) * 2 * np.pi / 6 + phase) > 0.3).astype(np.float32)
        cross = (np.sin((x + y) * 2 * np.pi / 6 + phase) > 0.3).astype(np.float32)
        ink = hatch * (darkness > 0.25) + cross * (darkness > 0.55)
        edges = np.hypot(ndimage.sobel(_luminance(smooth), 0), ndimage.sobel(_luminance(smooth), 1))
        ink = np.clip(ink * 0.8 + (edges > 0.35), 0, 1)[..., None]
        stroke = np.clip(smooth * 0.75, 0, 1)  # coloured pencil
        return np.clip(paper * (1 - ink) + stroke * ink, 0, 1)
    if name == "mosaic":
        tile = max(2, side // 16)
        small = image.reshape(side // tile, tile, side // tile, tile, 3).mean(axis=(1, 3))
        small = small + rng.normal(0, 0.03, small.shape)
        tiles = np.repeat(np.repeat(small, tile, 0), tile, 1)
        grout = np.zeros((side, side), bool)
        grout[::tile] = True
        grout[:, ::tile] = True
        tiles[grout] = 0.25
        return np.clip(tiles, 0, 1).astype(np.float32)
    if name == "watercolor":
        wash = ndimage.gaussian_filter(image, (side / 40, side / 40, 0))
        wash = 0.55 * wash + 0.45 * np.asarray((0.98, 0.97, 0.93), np.float32)
        wash = wash + _noise(rng, side, side / 20, 0.035)  # uneven pigment
        return np.clip(wash, 0, 1)
    if name == "vintage":
        y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
        vignette = 1 - 0.55 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
        faded = 0.55 * image + 0.25
        warm = faded * np.asarray((1.12, 0.95, 0.68), np.float32)
        return np.clip(warm * vignette[..., None], 0, 1)
    raise ValueError(f"world style {name!r} has no drawing")


def render(spec: Spec, side: int = 64) -> tuple[Image.Image, Image.Image]:
    """``(image, mask)``: the spec drawn at ``side`` x ``side`` (RGB) and its object's exact mask (L, 0/255)."""
    rng = np.random.default_rng(spec.seed)
    big = side * SUPERSAMPLE
    canvas = _scene(spec.scene, big, rng)
    obj_side = max(8, int(spec.size * big))
    colours, silhouette = _object(spec.identity, obj_side, rng)
    if spec.angle:
        colours = ndimage.rotate(colours, spec.angle, axes=(1, 0), reshape=True, order=1)
        silhouette = ndimage.rotate(silhouette.astype(np.float32), spec.angle, reshape=True, order=0) > 0.5
    h, w = silhouette.shape
    top = int(spec.centre[1] * big - h / 2)
    left = int(spec.centre[0] * big - w / 2)
    mask = np.zeros((big, big), bool)
    ys, xs = slice(max(0, top), min(big, top + h)), slice(max(0, left), min(big, left + w))
    inner = (slice(ys.start - top, ys.stop - top), slice(xs.start - left, xs.stop - left))
    mask[ys, xs] = silhouette[inner]
    shadow = ndimage.gaussian_filter(np.roll(mask, (big // 40, big // 40), (0, 1)).astype(np.float32), big / 50)
    canvas = canvas * (1 - 0.3 * shadow[..., None])
    canvas[mask] = colours[inner][silhouette[inner]]
    styled = _style(spec.style, canvas.astype(np.float32), rng)
    image = Image.fromarray((np.clip(styled, 0, 1) * 255 + 0.5).astype(np.uint8)).resize((side, side), Image.BOX)
    mask_image = Image.fromarray(mask.astype(np.uint8) * 255).resize((side, side), Image.BOX)
    return image, mask_image.point(lambda v: 255 if v >= 128 else 0)
