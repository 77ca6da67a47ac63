"""``edge-agent enhance --eval DIR``: how much the enhancement restores degraded real frames.

Every folder of images under DIR (searched recursively) is a sequence. From each, frames are
taken at even spacing, and each one with the frames before it (the temporal denoiser's input) is
degraded at several strengths, mildest to darkest: gamma (darkening), gain, then Poisson shot
noise and Gaussian read noise, with a fixed seed. PSNR and SSIM against the clean original are
reported for the degraded frame and for the enhanced one (``always`` mode), and the ``auto``
mode's output on the clean, well-lit frames against its input (it should leave them alone).
Timing: the classical pipeline on one 1280x720 frame (its last frame and three before it), as
wall time and as the CPU time of the thread (on a shared machine the former also counts the
time other processes held the core).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.config import EnhanceConfig
from agent.enhance import Enhancer
from agent.sources.folder import IMAGE_SUFFIXES

#: (name, gamma, gain, photons per unit of signal at full scale, read noise sigma in grey levels)
STRENGTHS = [
    ("mild", 1.5, 0.6, 400.0, 2.0),
    ("dim", 2.0, 0.4, 200.0, 3.0),
    ("dark", 2.5, 0.3, 120.0, 4.0),
    ("darkest", 3.0, 0.2, 80.0, 5.0),
]
HISTORY = 4


def degrade(clean: np.ndarray, gamma: float, gain: float, photons: float, read: float,
            rng: np.random.Generator) -> np.ndarray:
    signal = (clean.astype(np.float32) / 255) ** gamma * gain
    noisy = rng.poisson(signal * photons) / photons * 255 + rng.normal(0, read, clean.shape)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM on grey (Wang et al. 2004: Gaussian window 11, sigma 1.5)."""
    x = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).astype(np.float64)
    y = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(index.mean())


def sequences(root: Path, per_sequence: int) -> list[list[np.ndarray]]:
    """Windows of ``HISTORY`` consecutive frames, ``per_sequence`` of them from each folder."""
    folders = sorted({p.parent for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES})
    windows = []
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < HISTORY:
            continue
        for end in np.linspace(HISTORY - 1, len(files) - 1, min(per_sequence, len(files))).astype(int):
            window = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files[end - HISTORY + 1 : end + 1]]
            if all(w is not None for w in window):
                windows.append(window)
    return windows


def evaluate(root: Path, per_sequence: int = 8, seed: int = 0) -> dict[str, Any]:
    windows = sequences(root, per_sequence)
    if not windows:
        raise SystemExit(f"no sequences of {HISTORY}+ images under {root}")
    always = Enhancer(EnhanceConfig(mode="always"))
    auto = Enhancer(EnhanceConfig(mode="auto"))
    rng = np.random.default_rng(seed)
    rows = {}
    for name, gamma, gain, photons, read in STRENGTHS:
        scores = []
        for window in windows:
            degraded = [degrade(f, gamma, gain, photons, read, rng) for f in window]
            enhanced = always(degraded)
            clean = window[-1]
            scores.append((psnr(degraded[-1], clean), psnr(enhanced, clean),
                           ssim(degraded[-1], clean), ssim(enhanced, clean)))
        mean = np.mean(scores, axis=0)
        rows[name] = {"psnr_degraded": mean[0], "psnr_enhanced": mean[1], "psnr_gain_db": mean[1] - mean[0],
                      "ssim_degraded": mean[2], "ssim_enhanced": mean[3]}
    untouched = [min(psnr(auto(window), window[-1]), 100.0) for window in windows]
    big = [cv2.resize(f, (1280, 720), interpolation=cv2.INTER_LINEAR) for f in windows[0]]
    dark = [degrade(f, 3.0, 0.2, 80.0, 5.0, rng) for f in big]
    always(dark)  # warm-up
    started, cpu_started = time.perf_counter(), time.thread_time()
    for _ in range(10):
        always(dark)
    ms = (time.perf_counter() - started) / 10 * 1000
    cpu_ms = (time.thread_time() - cpu_started) / 10 * 1000
    return {
        "frames": len(windows),
        "strengths": rows,
        "psnr_gain_db": {name: round(row["psnr_gain_db"], 2) for name, row in rows.items()},
        "well_lit_psnr_db": round(float(np.mean(untouched)), 2),
        "ms_per_720p": round(ms, 2),
        "cpu_ms_per_720p": round(cpu_ms, 2),
    }


def report(result: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(result)
    lines = [f"{result['frames']} frames (each with its {HISTORY - 1} predecessors), classical pipeline, mode always",
             f"{'strength':<9} {'PSNR degraded':>14} {'enhanced':>9} {'gain':>7}   {'SSIM degraded':>13} {'enhanced':>9}"]
    for name, row in result["strengths"].items():
        lines.append(f"{name:<9} {row['psnr_degraded']:14.2f} {row['psnr_enhanced']:9.2f} {row['psnr_gain_db']:+7.2f}"
                     f"   {row['ssim_degraded']:13.3f} {row['ssim_enhanced']:9.3f}")
    lines.append(f"auto mode on the clean frames: {result['well_lit_psnr_db']:.1f} dB against its input "
                 "(100 = untouched)")
    lines.append(f"time: {result['ms_per_720p']:.1f} ms per 1280x720 frame (4-frame denoise, gamma, CLAHE), one thread "
                 f"({result['cpu_ms_per_720p']:.1f} ms of CPU)")
    return "\n".join(lines)


def figure(root: Path, path: Path) -> None:
    """Degraded (darkest) / enhanced / enhanced and annotated, side by side, as a PNG."""
    from agent.config import SnapshotConfig
    from agent.scoring import Region
    from agent.snapshot import annotate, publishable

    window = sequences(root, 1)[0]
    rng = np.random.default_rng(0)
    degraded = [degrade(f, 3.0, 0.2, 80.0, 5.0, rng) for f in window]
    enhanced, _ = publishable(degraded[-1], SnapshotConfig(), degraded[:-1])
    height, width = enhanced.shape[:2]
    boxed = annotate(enhanced, region=Region(width // 3, height // 3, width // 6, height // 4), camera="demo",
                     ts=time.time(), score=9.9, event_id="example")
    cv2.imwrite(str(path), np.hstack([degraded[-1], enhanced, boxed]))
