"""The keyword adapter's nodes (issue 12) on an in-memory catalog with the `test` environment's
parameters and a tiny random Llama: no hidden taste, no evaluation user and no target item ever
reaches training; the adapter's header lists the users it trained on; base trains nothing."""

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from pmg_kedro.components.method.keyword_adapter import ADAPTER_KIND, adapted_llm
from pmg_kedro.components.models.llm import LLM
from pmg_kedro.config_loader import project_config_loader
from pmg_kedro.pipelines.model_preparation.keyword_adapter import (
    TAG,
    keyword_adapter_pipeline,
    train_keyword_adapter,
    write_keyword_adapter_card,
)
from pmg_kedro.scenes import scene_names
from tests.components.tiny_llm import build_tiny_chat_llama

SCENES = scene_names()

pytestmark = pytest.mark.usefixtures("one_thread")
N_USERS, N_CLICKS = 6, 8
EVALUATION = {"u0", "u3"}
# Hidden taste of the SIMULATED costume users: words no item text or answer ever contains.
TASTE = {
    "taste_classes": "zebracloak",
    "taste_brightness": "ultraviolet",
    "taste_texture": "velvetish",
}


class KeptDataset(MemoryDataset):
    """In memory, and not released by the runner, so the test can read every output."""

    def _release(self) -> None:
        pass


def _items(scene: str) -> pd.DataFrame:
    n = N_USERS * N_CLICKS
    ids = [f"{scene[0]}{i}" for i in range(n)]
    if scene == "movie":
        table = pd.DataFrame(
            {
                "item_id": ids,
                "title": [f"Film {i}" for i in range(n)],
                "year": [1950 + (i % 7) * 10 for i in range(n)],
                "genres": [[["Comedy"], ["Drama", "War"], ["Horror"]][i % 3] for i in range(n)],
            }
        )
        table["caption"] = table["title"] + " (" + table["year"].astype(str) + ")"
        return table
    if scene == "emoticon":
        names = ["slightly smiling face", "winking face", "crying face"]
        return pd.DataFrame(
            {"item_id": ids, "title": [names[i % 3] for i in range(n)], "caption": "emoji"}
        )
    classes, levels = ["coat", "bag", "dress", "sandal"], ["dark", "medium", "light"]
    table = pd.DataFrame(
        {
            "item_id": ids,
            "class_name": [classes[i % 4] for i in range(n)],
            "brightness_level": [levels[i % 3] for i in range(n)],
            "texture_level": [["plain", "patterned"][i % 2] for i in range(n)],
        }
    )
    table["caption"] = table["brightness_level"] + " " + table["class_name"]
    return table


def _scene_data(scene: str):
    """Every user clicks N_CLICKS distinct items, the last one their held-out target."""
    items = _items(scene)
    rows = [
        (f"u{u}", items["item_id"][u * N_CLICKS + k], k, True, f"msg {u} {k} :)")
        for u in range(N_USERS)
        for k in range(N_CLICKS)
    ]
    interactions = pd.DataFrame(
        rows, columns=["user_id", "item_id", "timestamp", "positive", "message"]
    )
    last = interactions.groupby("user_id").tail(1)
    histories = pd.DataFrame(
        {"user_id": last["user_id"], "history": [[]] * N_USERS, "target": last["item_id"]}
    )
    users = [f"u{u}" for u in range(N_USERS)]
    split = pd.DataFrame(
        {
            "user_id": users,
            "split": ["evaluation" if u in EVALUATION else "train" for u in users],
            "seed": 7,
        }
    )
    return items, interactions, histories, split


@pytest.fixture(scope="module")
def test_params():
    return project_config_loader("test")["parameters"]


@pytest.fixture(scope="module")
def llm(tmp_path_factory) -> LLM:
    return LLM.from_pretrained(build_tiny_chat_llama(tmp_path_factory.mktemp("tiny_llama")))


@pytest.fixture(scope="module")
def run(test_params, llm):
    catalog = DataCatalog()
    data = {}
    for scene in SCENES:
        items, interactions, histories, split = _scene_data(scene)
        data[scene] = (interactions, histories, split)
        catalog[f"{scene}.items"] = items
        catalog[f"{scene}.interactions"] = interactions
        catalog[f"{scene}.histories"] = histories
        catalog[f"{scene}.user_split"] = split
        # the costume users' hidden taste is in the catalog: the pipeline must never read it
        catalog[f"{scene}.users"] = pd.DataFrame({"user_id": split["user_id"], **TASTE})
        catalog[f"params:{scene}.ingestion"] = {
            "split": {"filter_column": "positive", "order_columns": ["timestamp"]}
        }
        for block in ("behavior_summarization", "keyword_extraction", "keyword_adapter"):
            catalog[f"params:{scene}.{block}"] = test_params[scene][block]
    catalog["params:keyword_adapter_training"] = test_params["keyword_adapter_training"]
    catalog["params:model_preparation"] = test_params["model_preparation"]
    catalog["llm"] = MemoryDataset(llm, copy_mode="assign")
    pipeline = keyword_adapter_pipeline()
    for name in pipeline.all_outputs():
        catalog[name] = KeptDataset()
    SequentialRunner().run(pipeline, catalog)
    return catalog, data, pipeline


def test_nodes_are_tagged_and_read_no_users_table(run):
    _, _, pipeline = run
    assert all(TAG in node.tags for node in pipeline.nodes)
    assert all(n.name.split(".")[-1].startswith("keyword_adapter") for n in pipeline.nodes)
    assert not [i for i in pipeline.all_inputs() if i.endswith("users")]


@pytest.mark.parametrize("scene", SCENES)
def test_no_evaluation_user_target_item_or_hidden_taste_reaches_training(run, scene):
    catalog, data, _ = run
    interactions, histories, split = data[scene]
    examples = catalog.load(f"{scene}.keyword_adapter_examples")
    assert len(examples) and set(examples["user_id"]) <= set(
        split.loc[split["split"] == "train", "user_id"]
    )
    targets = dict(zip(histories["user_id"], histories["target"], strict=True))
    all_targets = set(targets.values())
    for row in examples.itertuples():
        assert not all_targets & ({*row.history} | {*row.next_items})
        text = f"{row.message} {row.answer}"
        assert not [w for w in TASTE.values() if w in text]
    # each window shows the items before its end and is answered by the ones right after it
    row = examples.iloc[0]
    clicks = interactions.loc[interactions["user_id"] == row["user_id"], "item_id"].tolist()
    end = int(row["window_end"])
    assert list(row["history"]) == clicks[max(0, end - 10) : end]
    assert list(row["next_items"]) == clicks[end : end + len(row["next_items"])]


def test_the_adapter_header_lists_the_users_it_trained_on(run, llm):
    catalog, data, _ = run
    adapter = catalog.load("embedded_keyword_adapter")
    metadata = adapter["metadata"]
    assert metadata["kind"] == ADAPTER_KIND and metadata["split_seed"] == dict.fromkeys(SCENES, 7)
    for scene in SCENES:
        examples = catalog.load(f"{scene}.keyword_adapter_examples")
        trained = set(metadata["trained_users"][scene])
        assert trained and trained <= set(examples["user_id"]) and not trained & EVALUATION
        held = metadata["examples"][scene]["validation_users"]
        assert held == 1 and len(trained) <= len(set(examples["user_id"])) - held
    assert metadata["examples"]["movie"]["left_out"] == ["country", "style", "actor", "director"]
    assert metadata["lora_config"]["layers_to_transform"] == [1]  # test: the top layer of 2
    assert adapted_llm(llm, adapter).name == f"{llm.name}+lora"
    history = catalog.load("keyword_adapter_training_history")
    assert history["steps_done"] == 2
    card = catalog.load("keyword_adapter_card")
    cells = " ".join(card.split())  # Markdown tables pad their cells; compare the text
    assert "| costume | 7 |" in cells and "season, style" in card
    assert "genre <- genres, age <- year (decade)" in card


def test_base_trains_nothing_and_says_so(test_params):
    params = {**test_params["keyword_adapter_training"], "train": False}
    adapter, history = train_keyword_adapter(None, params)
    assert adapter["tensors"] == {} and adapter["metadata"]["kind"] != ADAPTER_KIND
    assert "nothing trained" in write_keyword_adapter_card(history)
