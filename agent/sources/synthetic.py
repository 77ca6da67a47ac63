"""A built-in scene for the demo and the tests: people walking a path, and a scripted anomaly.

Every frame is a pure function of its index and the seed, so a scene can be replayed exactly
(and written to a video file by a test). The layout echoes UCSD Ped2: a fixed camera over a
walkway crossing a lawn. Normal: pedestrians walking along the walkway. Anomalous, for
``duration_s`` from ``start_s``: something ``fast`` (a cyclist), ``large`` (a cart) or
``off_path`` (a person crossing the lawn).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from agent.config import SyntheticConfig
from agent.sources.pool import FramePool

#: Walking speed in frame widths per second (Ped2 walkers cross in about 15 s).
WALK_SPEED = 1 / 14
SENSOR_NOISE = 2.0
#: Rows of sensor noise drawn at a time: 1280 float64 columns make 320 KiB, cache-sized.
NOISE_BAND_ROWS = 32


class SyntheticScene:
    live = False

    def __init__(self, config: SyntheticConfig, fps: float = 10.0) -> None:
        self.config = config
        self.fps: float | None = fps
        self.width, self.height = config.width, config.height
        self._index = 0
        self._background = self._make_background()
        self._path_top = int(self.height * 0.38)
        self._path_bottom = int(self.height * 0.70)
        self._walkers = [self._make_walker(i) for i in range(config.people)]
        # Reused by every frame (see frame_at).
        self._canvas = np.empty_like(self._background)
        self._grey = np.empty((self.height, self.width), np.uint8)
        self._noise = np.empty((min(NOISE_BAND_ROWS, self.height), self.width), np.float64)
        self._noise32 = np.empty_like(self._noise, dtype=np.float32)
        self._pool = FramePool()

    # -- scene layout ---------------------------------------------------------------------
    def _make_background(self) -> np.ndarray:
        h, w = self.height, self.width
        rng = np.random.default_rng(self.config.seed + 7)
        grass = 95 + 25 * rng.random((h // 4 + 1, w // 4 + 1))
        grass = cv2.resize(grass, (w, h), interpolation=cv2.INTER_CUBIC)
        grass += np.linspace(-10, 10, w)[None, :]
        image = grass.astype(np.float32)
        top, bottom = int(h * 0.38), int(h * 0.70)
        image[top:bottom] = 170 + 6 * rng.standard_normal((bottom - top, w))
        image[top : top + 2] = 140
        image[bottom - 2 : bottom] = 140
        return np.clip(image, 0, 255).astype(np.float32)

    def _make_walker(self, index: int) -> dict[str, float]:
        rng = np.random.default_rng(self.config.seed * 1000 + index)
        return {
            "speed": WALK_SPEED * rng.uniform(0.8, 1.2),
            "phase": rng.uniform(0, 1),
            "direction": 1.0 if index % 2 == 0 else -1.0,
            "lane": rng.uniform(0.2, 0.8),
            "shade": rng.uniform(30, 80),
        }

    def anomaly_active(self, t: float) -> bool:
        anomaly = self.config.anomaly
        return anomaly is not None and anomaly.start_s <= t < anomaly.start_s + anomaly.duration_s

    # -- drawing --------------------------------------------------------------------------
    def _draw_person(self, image: np.ndarray, x: float, y: float, scale: float, shade: float) -> None:
        body_w, body_h = 7 * scale, 16 * scale
        cv2.ellipse(image, (int(x), int(y)), (int(body_w), int(body_h)), 0, 0, 360, shade, -1)
        cv2.circle(image, (int(x), int(y - body_h - 4 * scale)), int(5 * scale), shade - 10, -1)

    def _draw_walkers(self, image: np.ndarray, t: float) -> None:
        span = self.width + 60
        band = self._path_bottom - self._path_top
        for walker in self._walkers:
            travelled = (walker["phase"] + t * walker["speed"]) % 1.0
            x = -30 + travelled * span
            if walker["direction"] < 0:
                x = self.width + 30 - travelled * span
            y = self._path_top + walker["lane"] * band + 2 * math.sin(t * 6 + walker["phase"] * 9)
            self._draw_person(image, x, y, self.height / 240, walker["shade"])

    def _draw_anomaly(self, image: np.ndarray, t: float) -> None:
        anomaly = self.config.anomaly
        assert anomaly is not None
        progress = (t - anomaly.start_s) / anomaly.duration_s
        w, h, s = self.width, self.height, self.height / 240
        mid_path = (self._path_top + self._path_bottom) / 2
        if anomaly.kind == "fast":
            # A cyclist crossing the whole frame within the anomaly window.
            x = -40 + progress * (w + 80)
            cv2.ellipse(image, (int(x), int(mid_path)), (int(28 * s), int(12 * s)), 0, 0, 360, 20, -1)
            cv2.circle(image, (int(x), int(mid_path - 20 * s)), int(7 * s), 15, -1)
        elif anomaly.kind == "large":
            x = -60 + progress * (w * 0.5)
            top_left = (int(x), int(mid_path - 28 * s))
            cv2.rectangle(image, top_left, (int(x + 60 * s), int(mid_path + 22 * s)), 35, -1)
        else:  # off_path: a person crossing the lawn from top to bottom
            y = -20 + progress * (h * 0.35)
            self._draw_person(image, w * 0.3, y + 30 * s, s, 40)

    def frame_at(self, index: int) -> np.ndarray:
        """Frame ``index``, in a buffer of the scene's pool (reused once the caller lets go of it).

        The sensor noise is drawn and added a band of rows at a time into buffers kept from frame
        to frame: the same pixels as drawing it for the whole frame at once (the generator's
        stream is the same), without the whole-frame float64 noise and its float32 copies
        (about 20 MB of short-lived arrays per 1280x720 frame) that a reader allocated per read.
        """
        t = index / (self.fps or 10.0)
        image = self._canvas
        np.copyto(image, self._background)
        self._draw_walkers(image, t)
        if self.anomaly_active(t):
            self._draw_anomaly(image, t)
        rng = np.random.default_rng((self.config.seed, index))
        for top in range(0, self.height, NOISE_BAND_ROWS):
            band = image[top : top + NOISE_BAND_ROWS]
            noise, noise32 = self._noise[: len(band)], self._noise32[: len(band)]
            rng.standard_normal(out=noise)
            np.multiply(noise, SENSOR_NOISE, out=noise)
            np.copyto(noise32, noise, casting="same_kind")
            band += noise32
            np.clip(band, 0, 255, out=band)
            np.copyto(self._grey[top : top + NOISE_BAND_ROWS], band, casting="unsafe")
        frame = self._pool.free()
        if frame is None:
            frame = np.empty((self.height, self.width, 3), np.uint8)
            self._pool.add(frame)
        return cv2.cvtColor(self._grey, cv2.COLOR_GRAY2BGR, dst=frame)

    def read(self) -> np.ndarray | None:
        frame = self.frame_at(self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        pass


def write_video(path: Path, config: SyntheticConfig, seconds: float, fps: float = 10.0) -> Path:
    """Render the scene to a video file (mp4v), as a camera recording of it would be."""
    scene = SyntheticScene(config, fps=fps)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (config.width, config.height))
    if not writer.isOpened():
        raise OSError(f"cannot write a video to {path}")
    for index in range(int(seconds * fps)):
        writer.write(scene.frame_at(index))
    writer.release()
    return path
