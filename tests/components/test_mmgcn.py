"""MMGCN and full-ranking metrics: hand-computed metrics, masking, aggregation, planted preferences."""

import math

import numpy as np
import pytest
import torch
from torch_geometric.utils import spmm

from pmg_kedro.components.evaluation.mmgcn import (
    MMGCN,
    Interactions,
    MMGCNConfig,
    ModalityConv,
    NegativeSampler,
    bipartite_adjacency,
    evaluate,
    evaluate_test,
    standardize,
    train_mmgcn,
)
from pmg_kedro.components.evaluation.ranking import (
    evaluate_ranking,
    metrics_at_k,
    pair_matrix,
    popularity_scores,
    top_k,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_match_hand_computed_values():
    # user 0: relevant {1, 4}, ranked [1, 2, 4]; user 1: relevant {5}, ranked [0, 3, 2]
    relevant = torch.zeros(2, 6, dtype=torch.bool)
    relevant[0, [1, 4]] = True
    relevant[1, 5] = True
    ranked = torch.tensor([[1, 2, 4], [0, 3, 2]])
    m = metrics_at_k(ranked, relevant, ks=(2, 3))
    idcg2 = 1 + 1 / math.log2(3)
    assert m["precision@2"].tolist() == [0.5, 0.0]
    assert m["recall@2"].tolist() == [0.5, 0.0]
    assert m["precision@3"][0].item() == pytest.approx(2 / 3)
    assert m["recall@3"][0].item() == pytest.approx(1.0)
    assert m["ndcg@2"][0].item() == pytest.approx(1 / idcg2)
    assert m["ndcg@3"][0].item() == pytest.approx((1 + 1 / math.log2(4)) / idcg2)
    # one relevant item: IDCG is 1 whatever k
    ranked[1] = torch.tensor([0, 5, 2])
    assert metrics_at_k(ranked, relevant, ks=(3,))["ndcg@3"][1].item() == pytest.approx(
        1 / math.log2(3)
    )


def test_known_items_are_masked_before_ranking():
    # item 0 scores highest for both users but is a training item of user 0 only
    scores = torch.tensor([[9.0, 1.0, 5.0, 2.0], [9.0, 1.0, 5.0, 2.0]])
    known = pair_matrix(np.array([0]), np.array([0]), 2, 4)
    relevant = pair_matrix(np.array([0, 1]), np.array([2, 2]), 2, 4)
    result = evaluate_ranking(lambda u: scores[u], 2, relevant, known, ks=(1,))
    # user 0: item 0 masked -> item 2 first (hit); user 1: item 0 first (miss)
    assert result["precision@1"] == pytest.approx(0.5)
    assert result["ranked_known"] == 0
    assert top_k(scores, known.to_dense().bool(), 1).flatten().tolist() == [2, 0]


def test_users_without_held_out_items_are_not_averaged():
    scores = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    relevant = pair_matrix(np.array([0, 2]), np.array([0, 2]), 3, 3)
    known = pair_matrix(np.array([], dtype=int), np.array([], dtype=int), 3, 3)
    result = evaluate_ranking(lambda u: scores[u], 3, relevant, known, ks=(1,))
    assert result["users"] == 2
    assert result["recall@1"] == pytest.approx(0.5)


def test_popularity_counts_training_users_per_item():
    train = pair_matrix(np.array([0, 1, 1, 2]), np.array([2, 2, 0, 2]), 3, 4)
    assert popularity_scores(train).tolist() == [1.0, 0.0, 3.0, 0.0]


# -- graph and layers -----------------------------------------------------------------------------


def test_aggregation_is_the_mean_or_max_of_the_neighbours():
    # users 0, 1; items 0, 1, 2 -> nodes 2, 3, 4. user 0 - items 0, 1; user 1 - item 2
    train = Interactions(np.array([0, 0, 1]), np.array([0, 1, 2]), 2, 3)
    adj_t = bipartite_adjacency(train)
    assert adj_t.layout == torch.sparse_csr
    torch.manual_seed(0)
    x = torch.randn(5, 4)
    for aggregation, reduce in (("mean", lambda t: t.mean(0)), ("max", lambda t: t.max(0).values)):
        conv = ModalityConv(4, aggregation, "concat", 0.01)
        with torch.no_grad():
            conv.w1.weight.copy_(torch.eye(4))
            conv.w1.bias.zero_()
            out = conv.propagate(adj_t, x=x)
        assert torch.allclose(out[0], reduce(x[[2, 3]]))  # user 0 <- items 0, 1
        assert torch.allclose(out[2], x[0])  # item 0 <- user 0
        assert torch.allclose(out[4], x[1])  # item 2 <- user 1


def test_the_mean_aggregation_and_its_gradient_are_spmms_on_directed_and_undirected_graphs():
    # _NeighbourMean replaces spmm(reduce="mean") for its faster backward: same forward, same
    # gradient, also where A is not symmetric (its backward needs A^T, not A) or a row is empty.
    torch.manual_seed(0)
    undirected = bipartite_adjacency(
        Interactions(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3, 2)
    )
    dense = (torch.rand(6, 6) < 0.4).float()
    dense[3] = 0  # a node without neighbours: mean 0, as spmm
    directed = dense.to_sparse_csr()
    for adj_t in (undirected, directed):
        n = adj_t.shape[0]
        x = torch.randn(n, 3, requires_grad=True)
        weights = torch.randn(n, 3)
        conv = ModalityConv(3, "mean", "concat", 0.01)
        ours = conv.message_and_aggregate(adj_t, x)
        (grad_ours,) = torch.autograd.grad((ours * weights).sum(), x)
        theirs = spmm(adj_t, x, reduce="mean")
        (grad_theirs,) = torch.autograd.grad((theirs * weights).sum(), x)
        assert torch.allclose(ours, theirs, atol=1e-6)
        assert torch.allclose(grad_ours, grad_theirs, atol=1e-6)


def test_negative_sampler_never_returns_a_training_item():
    train = Interactions(np.array([0, 0, 0, 1]), np.array([0, 1, 2, 3]), 2, 5)
    sampler = NegativeSampler(train, torch.Generator().manual_seed(0))
    users = torch.tensor([0] * 500 + [1] * 500)
    neg = sampler.sample(users)
    assert set(neg[:500].tolist()) == {3, 4}
    assert set(neg[500:].tolist()) == {0, 1, 2, 4}


def test_every_embedding_is_a_registered_trained_parameter():
    train = Interactions(np.array([0, 1]), np.array([0, 1]), 2, 2)
    feats = torch.randn(2, 6)
    model = MMGCN(2, 2, ["id", "visual"], {"visual": feats}, MMGCNConfig(dim=4), {"visual": feats})
    names = dict(model.named_parameters())
    for name in ("id_embedding", "preference.id", "preference.visual", "item_embedding.id"):
        assert name in names
    z = model(bipartite_adjacency(train))
    bpr, l2 = model.bpr_loss(z, torch.tensor([0]), torch.tensor([0]), torch.tensor([1]))
    (bpr + l2).backward()
    for name in (
        "id_embedding",
        "preference.visual",
        "item_embedding.id",
        "projection.visual.weight",
    ):
        assert names[name].grad is not None and names[name].grad.abs().sum() > 0, name


def test_user_features_enter_the_visual_preference_only():
    feats = torch.randn(3, 6)
    config = MMGCNConfig(dim=4)
    users = torch.randn(2, 6)
    torch.manual_seed(0)
    plain = MMGCN(2, 3, ["id", "visual"], {"visual": feats}, config)
    torch.manual_seed(0)
    with_users = MMGCN(2, 3, ["id", "visual"], {"visual": feats}, config, {"visual": users})
    # same seed, same parameters: only the users' visual input differs, by P(f_u)
    delta = with_users.modality_input("visual") - plain.modality_input("visual")
    assert torch.allclose(delta[:2], with_users.projection["visual"](users))
    assert torch.equal(delta[2:], torch.zeros(3, 4))
    assert torch.equal(with_users.modality_input("id"), plain.modality_input("id"))


def test_free_preference_weighs_the_free_vector_beside_the_user_features():
    feats, users = torch.randn(3, 6), torch.randn(2, 6)
    models = {}
    for w in (1.0, 0.25, 0.0):
        torch.manual_seed(0)
        config = MMGCNConfig(dim=4, free_preference=w)
        models[w] = MMGCN(2, 3, ["id", "visual"], {"visual": feats}, config, {"visual": users})
    given = models[0.0].projection["visual"](users)
    free = models[0.0].preference["visual"]
    for w, model in models.items():  # x_u = P f_u + w p_u; items and the id modality unchanged
        x = model.modality_input("visual")
        assert torch.allclose(x[:2], given + w * free)
        assert torch.equal(x[2:], models[1.0].modality_input("visual")[2:])
    torch.manual_seed(0)
    plain = MMGCN(2, 3, ["id", "visual"], {"visual": feats}, MMGCNConfig(dim=4, free_preference=0))
    # without user features the free vector is MMGCN's preference, whatever the weight
    assert torch.equal(plain.modality_input("visual")[:2], free)


@pytest.mark.parametrize("components", [None, 2])
def test_standardize_uses_the_items_statistics_for_users_too(components):
    items = torch.tensor([[0.0, 10.0, 1.0], [2.0, 30.0, 0.0], [1.0, 10.0, 5.0], [4.0, 0.0, 2.0]])
    users = items[[0, 2]].mean(0, keepdim=True)
    item_std, user_std = standardize(items, users, components)
    assert item_std.shape == (4, components or 3)
    # a user's averaged features stay the average of the same (transformed) items
    assert torch.allclose(user_std, item_std[[0, 2]].mean(0, keepdim=True), atol=1e-5)
    assert torch.allclose(item_std.mean(0), torch.zeros(components or 3), atol=1e-5)
    if components:  # principal axes: the kept columns are uncorrelated
        cov = item_std.T @ item_std
        assert abs(cov[0, 1].item()) < 1e-4 and cov[0, 0] >= cov[1, 1]


# -- planted preferences --------------------------------------------------------------------------


def _planted(seed=0):
    """Two tastes: 8 users like items 0-9 (group A), 16 users like items 10-19 (group B, so B is
    more popular). Each user: 6 training, 1 validation and 1 test item of their own group."""
    rng = np.random.default_rng(seed)
    parts = {"train": ([], []), "validation": ([], []), "test": ([], [])}
    groups = []
    for u in range(24):
        group = 0 if u < 8 else 1
        groups.append(group)
        items = rng.permutation(10)[:8] + 10 * group
        for split, chosen in (
            ("train", items[:6]),
            ("validation", items[6:7]),
            ("test", items[7:]),
        ):
            parts[split][0].extend([u] * len(chosen))
            parts[split][1].extend(chosen.tolist())
    made = {s: Interactions(np.array(u), np.array(i), 24, 20) for s, (u, i) in parts.items()}
    return made, np.array(groups)


CONFIG = MMGCNConfig(
    dim=16, n_layers=1, learning_rate=0.02, batch_size=64, max_epochs=40, eval_every=5, patience=3
)


@pytest.fixture(scope="module")
def planted_model():
    parts, groups = _planted()
    torch.manual_seed(0)
    model = MMGCN(24, 20, ["id"], {}, CONFIG)
    result = train_mmgcn(model, parts["train"], parts["validation"], seed=0, progress=False)
    return result, parts, groups


def test_planted_preference_is_ranked_first_and_beats_popularity(planted_model):
    result, parts, groups = planted_model
    model = result.model
    known = Interactions(
        np.concatenate([parts["train"].users, parts["validation"].users]),
        np.concatenate([parts["train"].items, parts["validation"].items]),
        24,
        20,
    ).matrix()
    with torch.no_grad():
        zu, zi = model.split(model(bipartite_adjacency(parts["train"])))
        ranked = top_k(zu @ zi.T, known.to_dense().bool(), 2)
    own_group = (ranked // 10).numpy() == groups[:, None]
    assert own_group.mean() >= 0.9  # the two remaining items of the own group come first
    mmgcn = evaluate_test(model, parts["train"], parts["validation"], parts["test"])
    pop = popularity_scores(parts["train"].matrix())
    popularity = evaluate_ranking(
        lambda u: pop.expand(len(u), -1), 24, parts["test"].matrix(), known, ks=(10, 20)
    )
    # popularity sends group-A users to group-B items: their test item never makes its top 2
    assert mmgcn["recall@10"] > popularity["recall@10"] + 0.2


def test_training_items_never_appear_in_a_ranking(planted_model):
    result, parts, _ = planted_model
    model = result.model
    train = parts["train"]
    with torch.no_grad():
        zu, zi = model.split(model(bipartite_adjacency(train)))
        # k = every item: the ranking must hold exactly the items the user has not trained on
        ranked = top_k(zu @ zi.T, train.matrix().to_dense().bool(), 20)
    for user in range(24):
        seen = set(train.items[train.users == user].tolist())
        listed = [i for i in ranked[user].tolist() if i >= 0]
        assert not seen & set(listed)
        assert sorted(listed) == sorted(set(range(20)) - seen)


def test_test_ranking_masks_training_and_validation_items(planted_model):
    """evaluate_test against an independent numpy ranking with train + validation masked: the
    held-out test item's rank (NDCG) moves when the validation item is left in the ranking."""
    result, parts, _ = planted_model
    model = result.model
    with torch.no_grad():
        zu, zi = model.split(model(bipartite_adjacency(parts["train"])))
        scores = (zu @ zi.T).numpy().astype(np.float64)
    for split in ("train", "validation"):
        scores[parts[split].users, parts[split].items] = -np.inf
    test_item = dict(zip(parts["test"].users.tolist(), parts["test"].items.tolist(), strict=True))
    ndcg = []
    for user in range(24):
        rank = int((scores[user] > scores[user, test_item[user]]).sum())  # 0-based
        ndcg.append(1 / math.log2(rank + 2) if rank < 10 else 0.0)
    got = evaluate_test(model, parts["train"], parts["validation"], parts["test"])
    assert got["ndcg@10"] == pytest.approx(np.mean(ndcg), abs=1e-6)
    # the validation metric of the best epoch is what evaluate() gives on the restored model
    again = evaluate(
        model,
        bipartite_adjacency(parts["train"]),
        parts["validation"].matrix(),
        parts["train"].matrix(),
    )
    assert again["recall@20"] == pytest.approx(result.validation["recall@20"])


def test_visual_features_rank_cold_items_that_ids_cannot():
    """Test items never seen in training: only item features can tell the users' taste."""
    parts, groups = _planted(seed=1)
    # every test item becomes a cold item: drop its training interactions of other users
    test_items = set(parts["test"].items.tolist())
    keep = ~np.isin(parts["train"].items, list(test_items))
    train = Interactions(parts["train"].users[keep], parts["train"].items[keep], 24, 20)
    validation = parts["validation"]
    rng = np.random.default_rng(0)
    features = torch.from_numpy(
        np.where(np.arange(20)[:, None] < 10, 1.0, -1.0) * np.ones((20, 8))
        + 0.3 * rng.standard_normal((20, 8))
    ).float()
    recall = {}
    for modalities in (["id"], ["id", "visual"]):
        torch.manual_seed(0)
        model = MMGCN(24, 20, modalities, {"visual": standardize(features)[0]}, CONFIG)
        trained = train_mmgcn(model, train, validation, seed=0, progress=False).model
        recall["+".join(modalities)] = evaluate_test(trained, train, validation, parts["test"])[
            "recall@10"
        ]
    assert recall["id+visual"] > recall["id"] + 0.2


def test_runs_in_shards_equal_one_call_and_are_kept_for_a_restart(tmp_path, caplog):
    """Table 3's runs are independent tasks: one (setting, seed) per shard, each seeding torch
    itself, gives the rows of one call (all but wall time); a second call reuses every run."""
    import logging

    from pmg_kedro.components.evaluation.mmgcn import SettingFeatures, run_settings
    from pmg_kedro.components.models.sharding import ShardSettings

    parts, groups = _planted(seed=2)
    rng = np.random.default_rng(1)
    items = torch.from_numpy(rng.standard_normal((20, 6))).float()
    users = {"averaged": torch.from_numpy(rng.standard_normal((24, 6))).float()}
    settings = {
        "ids": {"modalities": ["id"]},
        "users": {"modalities": ["id", "visual"], "user_features": "averaged"},
    }
    config = MMGCNConfig(
        dim=8, n_layers=1, learning_rate=0.02, batch_size=64, max_epochs=6, eval_every=3, patience=2
    )
    args = (parts, settings, SettingFeatures(items, users), [3, 4], config, ["recall@10"])

    def without_wall_time(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    one_call = run_settings(*args)
    shards = ShardSettings(shard_size=16, folder=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="pmg_kedro.components.models.sharding"):
        sharded = run_settings(*args, shards)
        again = run_settings(*args, shards)
    assert [(r["setting"], r["seed"]) for r in one_call] == [
        ("ids", 3), ("ids", 4), ("users", 3), ("users", 4)
    ]  # fmt: skip
    assert without_wall_time(sharded) == without_wall_time(one_call)
    assert again == sharded  # read back, wall time included
    assert "4 runs in 4 shards of up to 1 on this process; 0 reused" in caplog.text
    assert "4 runs in 4 shards of up to 1 on this process; 4 reused" in caplog.text
