"""The detector: smoothing, hysteresis, minimum duration, updates, cooldown, maximum length."""

from __future__ import annotations

from agent.config import DetectorConfig
from agent.detector import FELL_BELOW, LASTED_TOO_LONG, Detector, Transition


def run(detector: Detector, scores: list[float], fps: float = 10.0, t0: float = 0.0) -> list[tuple[float, str]]:
    """Feed ``scores`` at ``fps``; returns (time, transition) for every transition."""
    out = []
    for i, score in enumerate(scores):
        t = t0 + i / fps
        decision = detector.update(t, score)
        if decision.transition is not None:
            out.append((round(t, 2), decision.transition.value))
    return out


def config(**overrides: float) -> DetectorConfig:
    base = {"on_threshold": 6, "off_threshold": 4, "smoothing": 1.0, "min_duration_s": 0.0, "cooldown_s": 0.0,
            "update_interval_s": 100.0, "max_event_s": 600.0}
    return DetectorConfig(**{**base, **overrides})


def test_quiet_scores_raise_nothing() -> None:
    assert run(Detector(config()), [1, 2, 5.9, 3, 0]) == []


def test_an_event_starts_at_on_and_ends_below_off() -> None:
    transitions = run(Detector(config()), [0, 7, 5, 4.5, 3.9, 0])
    assert transitions == [(0.1, "start"), (0.4, "end")]


def test_hysteresis_keeps_one_event_through_a_dip_between_thresholds() -> None:
    transitions = run(Detector(config()), [7, 5, 7, 5, 7, 0])
    assert [kind for _, kind in transitions] == ["start", "end"]


def test_a_spike_shorter_than_min_duration_is_ignored() -> None:
    detector = Detector(config(min_duration_s=0.3))
    assert run(detector, [0, 9, 9, 0, 0]) == []
    assert run(detector, [9, 9, 9, 9, 0], t0=1.0) == [(1.3, "start"), (1.4, "end")]


def test_smoothing_uses_only_past_frames() -> None:
    detector = Detector(config(smoothing=0.5))
    smoothed = [detector.update(i / 10, s).smoothed for i, s in enumerate([0, 8, 8, 8])]
    assert smoothed == [0, 4, 6, 7]


def test_updates_come_at_most_every_interval() -> None:
    transitions = run(Detector(config(update_interval_s=1.0)), [7] * 35 + [0])
    assert [kind for _, kind in transitions] == ["start", "update", "update", "update", "end"]
    assert [t for t, kind in transitions if kind == "update"] == [1.0, 2.0, 3.0]


def test_no_new_event_during_cooldown() -> None:
    detector = Detector(config(cooldown_s=1.0))
    transitions = run(detector, [7, 0, 7, 7, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0])
    assert transitions == [(0.0, "start"), (0.1, "end"), (1.2, "start"), (1.3, "end")]


def test_an_endless_event_is_cut_at_max_event_s_and_says_so() -> None:
    transitions = run(Detector(config(max_event_s=1.0)), [9] * 25)
    assert transitions == [(0.0, "start"), (1.0, "end"), (1.1, "start"), (2.1, "end"), (2.2, "start")]
    detector = Detector(config(max_event_s=1.0))
    reasons = [detector.update(index / 10, score).reason for index, score in enumerate([9] * 11)]
    assert [reason for reason in reasons if reason] == [LASTED_TOO_LONG]
    detector = Detector(config())
    reasons = [detector.update(index / 10, score).reason for index, score in enumerate([9, 9, 0, 0])]
    assert [reason for reason in reasons if reason] == [FELL_BELOW]


def test_end_can_be_forced_when_the_source_stops() -> None:
    detector = Detector(config())
    run(detector, [9])
    assert detector.active
    assert detector.end(5.0) is Transition.END
    assert not detector.active
