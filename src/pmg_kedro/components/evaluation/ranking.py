"""Full-ranking top-k evaluation of a recommender (paper §4.5, MMGCN's protocol).

Every item is ranked for every user; the items a user already interacted with in the sets named as
known (training, and for the test also validation) are masked out, so a ranking never contains
them. Binary relevance: an item is relevant when it is in the user's held-out set.

- Precision@k = hits in the top k / k
- Recall@k    = hits in the top k / |held-out items|
- NDCG@k      = DCG@k / IDCG@k, DCG = sum over ranks r <= k of rel_r / log2(r + 1),
                IDCG = the DCG of the min(k, |held-out|) relevant items ranked first.

Metrics are averaged over the users with at least one held-out item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

METRICS = ("precision", "recall", "ndcg")


def pair_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> Tensor:
    """A sparse (n_users, n_items) 0/1 matrix (CSR) of (user, item) index pairs."""
    keys = np.unique(
        np.asarray(users, dtype=np.int64) * n_items + np.asarray(items, dtype=np.int64)
    )
    index = torch.as_tensor(np.stack([keys // n_items, keys % n_items]))
    values = torch.ones(len(keys), dtype=torch.float32)
    return torch.sparse_coo_tensor(index, values, (n_users, n_items)).to_sparse_csr()


def top_k(scores: Tensor, known: Tensor | None, k: int) -> Tensor:
    """Each row's k best items (n_users, k) after removing the `known` (dense bool) items.

    A user with fewer than k items left gets -1 in the slots beyond them: masked items are never
    part of a ranking, not even at its end.
    """
    if known is not None:
        scores = scores.masked_fill(known, float("-inf"))
    values, ranked = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    ranked = ranked.masked_fill(values == float("-inf"), -1)
    if ranked.shape[1] < k:
        ranked = torch.cat([ranked, ranked.new_full((len(ranked), k - ranked.shape[1]), -1)], 1)
    return ranked


def metrics_at_k(ranked: Tensor, relevant: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """Per-user metrics from rankings (n_users, >= max k; -1 = empty slot) and relevance (dense
    bool (n_users, n_items)).

    Returns {"precision@k", "recall@k", "ndcg@k": (n_users,)}; users without relevant items get NaN.
    """
    # (n_users, K): 1 where the ranked item is relevant
    hits = (torch.gather(relevant, 1, ranked.clamp(min=0)) & (ranked >= 0)).float()
    n_relevant = relevant.sum(1).float()
    discount = 1.0 / torch.log2(torch.arange(2, ranked.shape[1] + 2, dtype=torch.float32))
    out = {}
    for k in ks:
        h = hits[:, :k]
        n_hits = h.sum(1)
        ideal = torch.cumsum(discount[:k], 0)[(n_relevant.clamp(1, k) - 1).long()]
        undefined = n_relevant == 0
        out[f"precision@{k}"] = (n_hits / k).masked_fill(undefined, float("nan"))
        out[f"recall@{k}"] = (n_hits / n_relevant.clamp(min=1)).masked_fill(undefined, float("nan"))
        out[f"ndcg@{k}"] = ((h * discount[:k]).sum(1) / ideal).masked_fill(undefined, float("nan"))
    return out


def evaluate_ranking(
    score_fn: Callable[[Tensor], Tensor],
    n_users: int,
    relevant: Tensor,
    known: Tensor,
    ks: Sequence[int] = (10, 20),
    user_batch: int = 1024,
) -> dict[str, float]:
    """Mean full-ranking metrics over the users that have relevant items.

    `score_fn(user_indices) -> (len(users), n_items)` scores; `relevant` and `known` are sparse
    CSR (n_users, n_items) matrices (`pair_matrix`): the held-out items and the items to mask.
    Also returns "users" (how many users were evaluated) and "ranked_known" (how many masked items
    reached a top-k list: 0 unless masking failed, kept as a check).
    """
    per_user: dict[str, list[Tensor]] = {}
    ranked_known = 0
    k_max = max(ks)
    for begin in range(0, n_users, user_batch):
        users = torch.arange(begin, min(begin + user_batch, n_users))
        rel = _dense_rows(relevant, users)
        keep = rel.any(1)
        if not keep.any():
            continue
        users, rel = users[keep], rel[keep]
        mask = _dense_rows(known, users)
        ranked = top_k(score_fn(users), mask, k_max)
        ranked_known += int((torch.gather(mask, 1, ranked.clamp(min=0)) & (ranked >= 0)).sum())
        for name, values in metrics_at_k(ranked, rel, ks).items():
            per_user.setdefault(name, []).append(values)
    result = {name: float(torch.cat(v).mean()) for name, v in per_user.items()}
    result["users"] = int(sum(len(v) for v in per_user.get(f"recall@{k_max}", [])))
    result["ranked_known"] = ranked_known
    return result


def popularity_scores(train: Tensor) -> Tensor:
    """Training popularity of every item (n_items,): the number of training users per item."""
    return torch.sparse.sum(train.to_sparse_coo(), dim=0).to_dense()


def _dense_rows(matrix: Tensor, rows: Tensor) -> Tensor:
    """Rows of a sparse CSR 0/1 matrix as a dense bool tensor (len(rows), n_cols)."""
    crow, col = matrix.crow_indices(), matrix.col_indices()
    out = torch.zeros(len(rows), matrix.shape[1], dtype=torch.bool)
    for i, r in enumerate(rows.tolist()):
        out[i, col[crow[r] : crow[r + 1]]] = True
    return out
