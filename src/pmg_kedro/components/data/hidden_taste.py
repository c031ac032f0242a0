"""The SIMULATED costume users' hidden taste as words: the ORACLE keywords (issue 29).

A simulated user clicks by a hidden taste (two favourite classes, a brightness level, a texture
level; `sources.fashion_mnist.simulate_users`). Written as keywords ("light, patterned, dress,
coat") it is the most a preference-keyword list can carry about that user: the `oracle_keywords`
variant and the oracle Generated-user images use it as k^p, to bound what generation, selection
and MMGCN can do with perfect keywords. It exists only for simulated users, is labelled ORACLE
wherever it appears, and never judges PMG.
"""

from __future__ import annotations

import pandas as pd

ORACLE_LABEL = "ORACLE (simulated users' hidden taste as keywords)"
TASTE_COLUMNS = ("taste_brightness", "taste_texture", "taste_classes")


def has_hidden_tastes(users: pd.DataFrame) -> bool:
    """Whether `users` carries the hidden-taste columns of simulated users."""
    return set(TASTE_COLUMNS) <= set(users.columns)


def oracle_keywords(users: pd.DataFrame) -> pd.Series:
    """Per user id: [brightness level, texture level, *favourite classes] — the hidden taste in the
    words item captions use ("light patterned ankle boot"). Raises where there is no hidden taste."""
    if not has_hidden_tastes(users):
        missing = sorted(set(TASTE_COLUMNS) - set(users.columns))
        raise ValueError(
            f"oracle keywords need the hidden-taste columns {missing} (simulated users)"
        )
    rows = users.drop_duplicates("user_id")
    return pd.Series(
        [
            [str(r.taste_brightness), str(r.taste_texture), *map(str, r.taste_classes)]
            for r in rows.itertuples()
        ],
        index=rows["user_id"].astype(str).to_numpy(),
        name="oracle_keywords",
    )
