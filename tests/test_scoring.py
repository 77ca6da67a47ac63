"""Per-cell calibration and scoring."""

from __future__ import annotations

import numpy as np
import pytest

from agent.scoring import Calibrator, CellScorer, CellStats, cell_region


def test_calibration_matches_the_sample_mean_and_spread() -> None:
    rng = np.random.default_rng(0)
    maps = rng.gamma(2.0, 1.0, size=(200, 4, 6)).astype(np.float32)
    calibrator = Calibrator(target_frames=200)
    for m in maps:
        assert not calibrator.done
        calibrator.add(m)
    assert calibrator.done
    stats = calibrator.result()
    np.testing.assert_allclose(stats.mean, maps.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, maps.std(axis=0, ddof=1), rtol=1e-4)


def test_the_score_is_the_largest_cell_z_score_and_names_its_cell() -> None:
    stats = CellStats(np.zeros((2, 3), np.float32), np.full((2, 3), 2.0, np.float32), 100)
    scorer = CellScorer(stats, std_floor=0.5)
    anomaly_map = np.zeros((2, 3), np.float32)
    anomaly_map[1, 2] = 10.0
    score, cell = scorer(anomaly_map)
    assert score == pytest.approx(5.0)
    assert cell == (1, 2)


def test_a_cell_nobody_crosses_gets_the_floor_spread_not_its_own() -> None:
    std = np.array([[1e-6, 1.0, 1.0, 1.0], [8.0, 8.0, 8.0, 8.0]], np.float32)
    # Nobody ever walked through cell (0, 0): its own spread would turn noise into alarms.
    scorer = CellScorer(CellStats(np.zeros((2, 4), np.float32), std, 100), std_floor=2.0)
    anomaly_map = np.zeros((2, 4), np.float32)
    anomaly_map[0, 0] = 4.0
    score, cell = scorer(anomaly_map)
    assert cell == (0, 0)
    assert score == pytest.approx(2.0)  # 4 / (2 x the quiet cells' spread, 1.0)
    anomaly_map[0, 0], anomaly_map[1, 3] = 0.0, 16.0
    assert scorer(anomaly_map)[0] == pytest.approx(2.0)  # busy cells keep their own spread


def test_cell_regions_tile_the_frame() -> None:
    assert cell_region((0, 0), (8, 12), (360, 240)).as_list() == [0, 0, 30, 30]
    assert cell_region((7, 11), (8, 12), (360, 240)).as_list() == [330, 210, 30, 30]
