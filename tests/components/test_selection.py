import numpy as np
import pandas as pd
import pytest

from pmg_kedro.components.method.selection import choose, weight_grid, z_scores


def test_weight_grid_scales_the_paper_ratios_to_the_total():
    grid = weight_grid([[0, 4], [1, 3], [2, 2], [3, 1], [4, 0]], total=2.0)
    assert grid == [(0.0, 2.0), (0.5, 1.5), (1.0, 1.0), (1.5, 0.5), (2.0, 0.0)]


@pytest.mark.parametrize("bad", [[0, 0], [1, -1], [1, 2, 3]])
def test_weight_grid_rejects_bad_ratios(bad):
    with pytest.raises(ValueError, match="ratio"):
        weight_grid([bad], 2.0)


def test_z_is_the_weighted_sum_of_logs_with_a_floor():
    z = z_scores(np.array([0.5, -0.3]), np.array([0.2, 0.4]), alpha=0.25, floor=1e-3)
    assert z[0] == pytest.approx(0.25 * np.log(0.5) + 0.75 * np.log(0.2))
    assert z[1] == pytest.approx(0.25 * np.log(1e-3) + 0.75 * np.log(0.4))


def test_alpha_moves_the_choice_between_preference_and_target():
    d_p, d_t = np.array([0.9, 0.2]), np.array([0.2, 0.9])
    scored = pd.DataFrame({"user_id": ["u", "u"]})
    picks = []
    for alpha in (0.9, 0.1):
        scored["z"] = z_scores(d_p, d_t, alpha, 1e-3)
        picks.append(int(np.flatnonzero(choose(scored, ["user_id"]))[0]))
    assert picks == [0, 1]


def test_choose_marks_one_argmax_per_group_first_on_ties():
    scored = pd.DataFrame({"user_id": ["a", "a", "a", "b", "b"], "z": [1.0, 3.0, 3.0, 0.0, -1.0]})
    assert choose(scored, ["user_id"]).tolist() == [False, True, False, True, False]


def test_invalid_alpha_or_floor_is_rejected():
    with pytest.raises(ValueError, match="alpha"):
        z_scores(np.ones(1), np.ones(1), alpha=1.5, floor=1e-3)
    with pytest.raises(ValueError, match="floor"):
        z_scores(np.ones(1), np.ones(1), alpha=0.5, floor=0.0)
