"""Preprocessing gives the model what it was trained on: grey, cv2.resize INTER_AREA, quantized."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.config import SyntheticConfig
from agent.inference import Quant
from agent.preprocess import Preprocessor
from agent.sources.synthetic import SyntheticScene

QUANT = Quant(1 / 255, -128, np.int8)


def frames(width: int, height: int) -> list[np.ndarray]:
    """Scene frames at this size, and noise (the hardest case for rounding)."""
    scene = SyntheticScene(SyntheticConfig(width=width, height=height, seed=3))
    rng = np.random.default_rng(0)
    return [scene.frame_at(index) for index in (0, 80)] + [rng.integers(0, 256, (height, width, 3), np.uint8)]


@pytest.mark.parametrize(("width", "height", "exact"), [
    (480, 360, True),  # two passes: the horizontal box average, then the vertical area pass
    (1920, 1080, False),  # two passes; an average on exactly half a level may round the other way
    (360, 240, True),  # OpenCV's general area path
    (384, 256, True),  # OpenCV's integer-factor path
    (1280, 720, True),
])
def test_the_model_input_is_the_area_average_of_the_grey_frame(width: int, height: int, exact: bool) -> None:
    preprocess = Preprocessor((1, 64, 96, 1), QUANT, (32, 48))
    for image in frames(width, height):
        tensor = preprocess(image)
        expected = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (96, 64), interpolation=cv2.INTER_AREA)
        differ = preprocess.small != expected
        if exact:
            assert not differ.any()
        else:
            assert np.abs(preprocess.small.astype(int) - expected).max() <= 1 and differ.mean() < 1e-3
        np.testing.assert_array_equal(tensor[0, :, :, 0], QUANT.quantize(preprocess.small / 255))
        np.testing.assert_allclose(
            preprocess.current,
            cv2.resize(preprocess.small.astype(np.float32) / 255, (48, 32), interpolation=cv2.INTER_AREA),
            atol=1e-6,
        )


def test_a_source_that_changes_size_is_followed() -> None:
    preprocess = Preprocessor((1, 64, 96, 1), QUANT, (32, 48))
    for width, height in ((480, 360), (360, 240), (480, 360)):
        image = frames(width, height)[1]
        preprocess(image)
        expected = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (96, 64), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(preprocess.small, expected)
