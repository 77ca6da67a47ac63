"""The scoring study's synthetic anomalies: people are found, pasted where and as fast as asked."""

import numpy as np
import pytest

from agent.evaluation.metrics import roc_auc
from agent.scoring import cell_means
from models.scoring_study import (
    fast_band,
    hottest_mean,
    nested_auc,
    pair_wins,
    path_rows,
    people_in,
    self_weighted,
    walk_across,
)

HEIGHT, WIDTH, FRAMES = 120, 160, 80


def walkway_clip(rng: np.random.Generator) -> np.ndarray:
    """Grey noise background with a dark 30x12 'person' walking along rows 50-80 at 1 px a frame."""
    background = rng.integers(150, 170, (HEIGHT, WIDTH)).astype(np.uint8)
    clip = np.repeat(background[None], FRAMES, axis=0)
    for t in range(FRAMES):
        clip[t, 50:80, 20 + t:32 + t] = 40
    return clip


def test_the_quiet_rows_are_off_the_walkway_and_the_busy_ones_on_it() -> None:
    quiet, busy = path_rows([walkway_clip(np.random.default_rng(0))])
    assert busy.size and np.all((busy >= 50) & (busy < 80))
    assert quiet.size and not np.any((quiet >= 50) & (quiet < 80))


def test_a_walker_is_cut_out_of_its_clip() -> None:
    people = people_in(walkway_clip(np.random.default_rng(0)), np.random.default_rng(1), wanted=3)
    pixels, mask = people[0]
    assert pixels.shape == mask.shape and pixels.shape[0] > pixels.shape[1]
    assert pixels[mask > 0.9].mean() < 60  # the dark person, not the background


def test_a_pasted_person_crosses_at_the_asked_speed_and_is_labelled_while_in_view() -> None:
    rng = np.random.default_rng(2)
    clip = np.full((200, HEIGHT, WIDTH), 160, np.uint8)
    person = (np.full((20, 8), 30, np.float32), np.ones((20, 8), np.float32))
    frames, labels = walk_across(clip, rng, person, np.array([30]), speed=4.0)
    shown = np.flatnonzero(labels)
    assert 30 <= shown[0] < 50 and np.all(np.diff(shown) == 1)
    assert len(shown) == (WIDTH - 8) // 4 + 1
    columns = [np.flatnonzero(frames[t, 30] < 100) for t in shown[:2]]
    assert abs(abs(columns[1].mean() - columns[0].mean()) - 4.0) < 0.5
    assert np.all(frames[~labels] == 160)


def test_the_fast_band_replays_its_own_clip_twice_as_fast() -> None:
    clip = np.arange(100, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 40), np.uint8)
    frames, labels = fast_band(clip, np.random.default_rng(3))
    start = int(np.flatnonzero(labels)[0])
    changed = np.flatnonzero(frames[start + 5, 0] != clip[start + 5, 0])
    assert changed.size >= 10 and np.all(frames[start + 5, 0, changed] == start + 10)


def test_hottest_pooling_takes_the_mean_of_each_cells_largest_values() -> None:
    values = np.zeros((4, 6), np.float32)
    values[0, 0], values[0, 1], values[1, 0] = 9.0, 3.0, 1.0  # cell (0, 0) of a 2x2 grid is rows 0-1, cols 0-2
    values[3, 5] = 4.0  # cell (1, 1)
    assert hottest_mean(2)(values, (2, 2)).tolist() == [[6.0, 0.0], [0.0, 2.0]]
    assert hottest_mean(1)(values, (2, 2)).tolist() == [[9.0, 0.0], [0.0, 4.0]]
    assert hottest_mean(6)(values, (2, 2)).tolist() == cell_means(values, (2, 2)).tolist()


def test_self_weighted_pooling_does_not_grow_with_the_number_of_movers_but_leans_to_the_fastest() -> None:
    one, two, rider = (np.zeros((4, 6), np.float32) for _ in range(3))
    one[0, 0] = 2.0
    two[0, 0] = two[1, 1] = 2.0  # a second walker in cell (0, 0)
    rider[0, 0], rider[1, 1] = 2.0, 8.0
    assert self_weighted(one, (2, 2))[0, 0] == self_weighted(two, (2, 2))[0, 0] == 2.0
    assert cell_means(two, (2, 2))[0, 0] == 2 * cell_means(one, (2, 2))[0, 0]
    assert self_weighted(rider, (2, 2))[0, 0] == (4.0 + 64.0) / 10.0
    assert self_weighted(one, (2, 2))[1, 1] == 0.0  # an empty cell, not a division by zero


def test_pair_wins_counts_the_pairs_an_anomalous_frame_outscores_and_ties_as_half() -> None:
    assert pair_wins(np.array([3.0, 1.0]), np.array([1.0, 2.0, 5.0])) == 2 + 0.5


LABELS = {"a": np.array([0, 0, 1, 1], bool), "b": np.array([0, 1, 1, 1], bool), "c": np.array([0, 0, 0, 1], bool),
          "d": np.array([1, 1, 1, 1], bool)}


def test_with_one_candidate_the_nested_figure_is_its_plain_micro_auc() -> None:
    rng = np.random.default_rng(4)
    scores = {name: rng.normal(size=len(truth)) + truth for name, truth in LABELS.items()}
    plain = roc_auc(np.concatenate(list(scores.values())), np.concatenate(list(LABELS.values())))
    assert nested_auc([scores], LABELS) == pytest.approx(plain)


def test_a_clips_frames_are_ranked_by_the_candidate_chosen_without_that_clip() -> None:
    """Two candidates rank every clip but "a" perfectly; in "a" one is backwards, the other flat.
    With "a" among the clips the flat one wins the choice, but the pairs that hold a frame of
    "a" are judged by the choice made without "a", a tie that goes to the first, backwards one:
    the nested figure is what the backwards candidate scores, not what the winner on all does."""
    perfect = {name: truth.astype(float) for name, truth in LABELS.items()}
    backwards_a = {**perfect, "a": 1.0 - LABELS["a"]}
    flat_a = {**perfect, "a": np.full(4, 0.5)}
    truth = np.concatenate(list(LABELS.values()))
    on_all = [roc_auc(np.concatenate(list(s.values())), truth) for s in (backwards_a, flat_a)]
    assert on_all[0] is not None and on_all[1] is not None and on_all[0] < on_all[1] < 1.0
    assert nested_auc([backwards_a, flat_a], LABELS) == pytest.approx(on_all[0])


def test_a_candidate_better_on_the_other_clips_is_chosen_over_the_first() -> None:
    flat = {name: np.zeros(len(truth)) for name, truth in LABELS.items()}
    perfect = {name: truth.astype(float) for name, truth in LABELS.items()}
    assert nested_auc([flat, perfect], LABELS) == 1.0


def nested_by_definition(scores: list[dict[str, np.ndarray]], labels: dict[str, np.ndarray]) -> tuple[float, set[int]]:
    """The nested figure pair by pair, as its docstring defines it, and the candidates chosen."""
    names = list(labels)

    def chosen(a: str, b: str) -> int:
        rest = [n for n in names if n not in (a, b)]
        truth = np.concatenate([labels[n] for n in rest])
        return int(np.argmax([roc_auc(np.concatenate([s[n] for n in rest]), truth) or -1.0 for s in scores]))

    def win(i: int, a: str, x: int, b: str, y: int) -> float:
        return float(np.sign(scores[i][a][x] - scores[i][b][y]) + 1) / 2

    total, count, picks = 0.0, 0, set()
    for a in names:
        for b in names:
            folds = [chosen(a, b)] if a != b else [chosen(a, o) for o in names if o != a]
            picks.update(folds)
            for x in np.flatnonzero(labels[a]):
                for y in np.flatnonzero(~labels[b]):
                    total += np.mean([win(i, a, x, b, y) for i in folds])
                    count += 1
    return total / count, picks


def test_the_nested_figure_is_its_definition_pair_by_pair_when_the_folds_choose_differently() -> None:
    rng = np.random.default_rng(7)
    labels = {name: rng.random(30) < share for name, share in zip("abcde", (0.3, 0.5, 0.7, 0.4, 1.0))}
    scores = [{name: truth * rng.uniform(0.2, 2.0) + rng.normal(size=truth.size) for name, truth in labels.items()}
              for _ in range(4)]
    expected, picks = nested_by_definition(scores, labels)
    assert len(picks) > 1  # the folds disagree, so which fold judges which pair matters
    assert nested_auc(scores, labels) == pytest.approx(expected)
