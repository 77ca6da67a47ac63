"""Tampering: each kind is reported with its reason, ends when the view heals, and a normal scene
raises nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.broker import LocalBroker
from agent.config import SyntheticConfig, TamperConfig
from agent.sources.synthetic import SyntheticScene
from agent.tamper import TamperDetector
from bench.tamper import DEGRADATIONS, Degrade
from tests.conftest import AgentProcess, Subscriber

FPS = 10.0
SCENE = SyntheticScene(SyntheticConfig(seed=4, anomaly=None))


def small(image: np.ndarray) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (96, 64), interpolation=cv2.INTER_AREA)


def transitions(degrade: Degrade | None, start_s: float = 20, end_s: float = 30, total_s: float = 45) -> list:
    detector = TamperDetector(TamperConfig(), FPS)
    out = []
    for index in range(int(total_s * FPS)):
        t = index / FPS
        image = SCENE.frame_at(index)
        if degrade is not None and start_s <= t < end_s:
            image = degrade(image)
        change = detector.update(t, small(image))
        if change is not None:
            out.append((t, *change))
    return out


def test_a_normal_scene_raises_no_tamper() -> None:
    assert transitions(None) == []


@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_each_kind_of_tampering_starts_and_ends_an_event_with_its_reason(name: str) -> None:
    degrade, reason = DEGRADATIONS[name]
    found = transitions(degrade)
    assert [kind for _, kind, _ in found] == ["start", "end"], found
    (started, _, why), (ended, _, _) = found
    assert why.startswith(reason)
    assert 20 + 3 <= started <= 20 + 4  # after min_duration_s of the tampered look
    assert 30 + 3 <= ended <= 30 + 4


def test_a_slow_change_of_light_is_followed_not_reported() -> None:
    detector = TamperDetector(TamperConfig(adapt_s=30), FPS)
    for index in range(int(300 * FPS)):
        dusk = max(0.3, 1 - index / (300 * FPS))  # light fades to 30 % over five minutes
        image = (SCENE.frame_at(index % 600).astype(np.float32) * dusk).astype(np.uint8)
        assert detector.update(index / FPS, small(image)) is None, index / FPS


def test_the_agent_publishes_a_covered_lens_on_the_tamper_topic(
    broker: LocalBroker, tmp_path: Path, subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    video = tmp_path / "covered.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (360, 240))
    cover = DEGRADATIONS["covered"][0]
    for index in range(int(40 * FPS)):
        image = SCENE.frame_at(index)
        writer.write(cover(image) if 20 <= index / FPS < 30 else image)
    writer.release()
    sub = subscribe(["edge/tampered/+/tamper"])
    agent = start_agent({"device_id": "tampered", "mqtt": {"port": broker.port},
                         "cameras": [{"name": "cam", "source": str(video), "realtime": False}]})
    assert sub.wait_for(lambda: len(sub.on("/tamper")) == 2, 60), agent.log
    start, end = (json.loads(m.payload) for m in sub.on("/tamper"))
    assert (start["type"], end["type"]) == ("start", "end") and start["kind"] == "tamper"
    assert start["id"] == end["id"] and start["reason"].startswith("covered")
    assert 23 <= start["pts"] <= 24 and end["end_ts"] is not None
    assert end["seq"] > start["seq"]
    assert "camera cam: the whole picture changed at once" in agent.log  # covered: the model started again
