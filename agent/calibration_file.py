"""A camera's calibration file, ``state_dir/calibration/<camera>.json``.

What it is for (the model's SHA-256, the camera's source and grid: the camera ignores a file for
another), what made it (``edge-agent calibrate`` records its footage and suggested threshold),
and the per-cell statistics of each lighting the camera knows (:mod:`agent.lighting`) under
``profiles``. Written by the camera when it learns a lighting (keeping what else the file
records) and by ``edge-agent calibrate``; read when the camera starts. A file that is not what
it should be is refused whole, with what is wrong, rather than half read: a bad lighting found
only when it comes up, at night, stopped the camera.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.lighting import Lighting, Profile
from agent.scoring import CellStats

#: The keys that say what a file is for.
IDENTITY = ("model_sha256", "source", "grid")


class FromBeforeLightings(ValueError):
    """A file with one set of statistics at its top level: whose lighting is not known."""


@dataclass
class CalibrationFile:
    #: Everything the file records but the statistics (``IDENTITY``, and what made it).
    record: dict[str, Any]
    profiles: list[Profile]

    def is_for(self, identity: dict[str, Any]) -> bool:
        return all(self.record.get(key) == identity[key] for key in IDENTITY)


def identity(model_sha256: str, source: str, grid: tuple[int, int] | list[int]) -> dict[str, Any]:
    return {"model_sha256": model_sha256, "source": source, "grid": list(grid)}


def _profile_json(profile: Profile) -> dict[str, Any]:
    return {"lighting": None if profile.lighting is None else asdict(profile.lighting),
            "last_used": round(profile.last_used, 1), **profile.stats.to_json()}


def _finite_number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: {value!r} is not a finite number")
    return float(value)


def _profile(item: object, grid: tuple[int, int], where: str) -> Profile:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: not an object")  # noqa: TRY004 - one error for a bad file, whatever is wrong
    lighting = item.get("lighting")
    if not isinstance(lighting, dict) or set(lighting) != {"brightness", "contrast", "colour"}:
        raise ValueError(f"{where}.lighting: brightness, contrast and colour are needed")
    figures = {key: _finite_number(value, f"{where}.lighting.{key}") for key, value in lighting.items()}
    cells = {}
    for key in ("cell_mean", "cell_std"):
        try:
            values = np.asarray(item[key], dtype=np.float32)
        except KeyError:
            raise ValueError(f"{where}.{key}: missing") from None
        except (TypeError, ValueError):
            raise ValueError(f"{where}.{key}: not a grid of numbers") from None
        if values.shape != grid or not np.isfinite(values).all():
            raise ValueError(f"{where}.{key}: not {grid[0]}x{grid[1]} finite numbers (the file's grid)")
        cells[key] = values
    frames = int(_finite_number(item.get("n_frames", 0), f"{where}.n_frames"))
    return Profile(Lighting(**figures), CellStats(cells["cell_mean"], cells["cell_std"], frames),
                   _finite_number(item.get("last_used", 0.0), f"{where}.last_used"))


def parse(data: object) -> CalibrationFile:
    """A calibration file's JSON, checked whole (``ValueError`` naming what is wrong)."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 - one error for a bad file, whatever is wrong
    if "profiles" not in data:
        if "cell_mean" in data:
            raise FromBeforeLightings("one set of statistics, from before lightings were told apart")
        raise ValueError("profiles: missing")
    grid = data.get("grid")
    if not (isinstance(grid, list) and len(grid) == 2 and all(isinstance(n, int) and n > 0 for n in grid)):
        raise ValueError(f"grid: {grid!r} is not [rows, columns]")
    items = data["profiles"]
    if not isinstance(items, list) or not items:
        raise ValueError("profiles: not a list of lightings")
    profiles = [_profile(item, (grid[0], grid[1]), f"profiles[{index}]") for index, item in enumerate(items)]
    return CalibrationFile({key: value for key, value in data.items() if key != "profiles"}, profiles)


def read(path: Path) -> CalibrationFile:
    """The file at ``path``: ``FileNotFoundError``, ``OSError``, or ``ValueError`` (not JSON, or
    not a calibration file: :class:`FromBeforeLightings` for one from before lightings)."""
    return parse(json.loads(path.read_text(encoding="utf-8")))


def write(path: Path, profiles: list[Profile], record: dict[str, Any]) -> None:
    """Write ``record`` and the statistics of each lighting at ``path`` (an atomic replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**record, "profiles": [_profile_json(p) for p in profiles]}, allow_nan=False),
                   encoding="utf-8")
    tmp.replace(path)
