"""behavior_summarization + keyword_extraction for all scenes on an in-memory catalog, with the
`test` environment's parameters and the paper path: a tiny random Llama-architecture model with a
Llama-2 chat template, loaded from a Hugging Face folder through the same component."""

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from pmg_kedro.components.data.splits import split_users
from pmg_kedro.components.models.llm import load_llm
from pmg_kedro.config_loader import project_config_loader
from pmg_kedro.pipelines.behavior_summarization import create_pipeline as behavior_pipeline
from pmg_kedro.pipelines.keyword_extraction import create_pipeline as keyword_pipeline
from pmg_kedro.scenes import scene_names
from tests.components.tiny_llm import build_tiny_chat_llama

SCENES = scene_names()

N_USERS = 5  # the test env's protocol evaluates 3 of them


class KeptDataset(MemoryDataset):
    """In memory, and not released by the runner, so the test can read every output."""

    def _release(self) -> None:
        pass


def _movie():
    items = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(1, 7)],
            "title": ["Toy Story", "Heat", "Alien", "Casino", "Up", "Fargo"],
            "genres": [
                ["Animation", "Comedy"],
                ["Crime"],
                ["Horror", "Sci-Fi"],
                ["Crime", "Drama"],
                ["Animation"],
                ["Comedy", "Crime"],
            ],
        }
    )
    items["caption"] = items["title"] + " (1995): " + items["genres"].map(", ".join)
    histories = pd.DataFrame(
        {
            "user_id": [f"m{u}" for u in range(N_USERS)],
            "history": [[str(1 + (u + k) % 6) for k in range(4)] for u in range(N_USERS)],
            "target": [str(1 + (u + 4) % 6) for u in range(N_USERS)],
        }
    )
    users = pd.DataFrame({"user_id": histories["user_id"], "simulated": False})
    return items, histories, users


def _emoticon():
    items = pd.DataFrame(
        {
            "item_id": ["1f642", "1f606", "1f622"],
            "title": ["slightly smiling face", "grinning squinting face", "crying face"],
            "keywords": [["smile"], ["laugh"], ["sad", "tear"]],
        }
    )
    items["caption"] = items["title"] + " emoji"
    histories = pd.DataFrame(
        {
            "user_id": [f"e{u}" for u in range(N_USERS)],
            "history": [["1f642", "1f606"]] * N_USERS,
            "target": ["1f622"] * N_USERS,
            "history_message": [["hi :)", "so funny XD " + "ha " * 60]] * N_USERS,
            "target_message": [f"my cat is sick :'( {u}" for u in range(N_USERS)],
            # e0 and e1 have no conversation (one of them is an evaluation user)
            "target_context": ["", ""] + ["how is your cat | not good"] * (N_USERS - 2),
        }
    )
    users = pd.DataFrame({"user_id": histories["user_id"], "simulated": False})
    return items, histories, users


def _costume():
    classes = ["t-shirt", "trouser", "dress", "bag"]
    items = pd.DataFrame(
        {
            "item_id": [f"fm{i}" for i in range(8)],
            "class_name": [classes[i % 4] for i in range(8)],
            "brightness_level": ["dark", "light"] * 4,
            "texture_level": ["plain"] * 4 + ["patterned"] * 4,
        }
    )
    items["title"] = items["class_name"]
    items["caption"] = (
        items["brightness_level"] + " " + items["texture_level"] + " " + items["class_name"]
    )
    histories = pd.DataFrame(
        {
            "user_id": [f"sim{u}" for u in range(N_USERS)],
            "history": [[f"fm{(u + k) % 8}" for k in range(5)] for u in range(N_USERS)],
            "target": [f"fm{(u + 5) % 8}" for u in range(N_USERS)],
        }
    )
    users = pd.DataFrame(
        {
            "user_id": histories["user_id"],
            "simulated": True,
            "taste_classes": [["dress", "bag"]] * N_USERS,
            "taste_brightness": ["dark"] * N_USERS,
            "taste_texture": ["plain"] * N_USERS,
        }
    )
    return items, histories, users


@pytest.fixture(scope="module")
def test_params():
    return project_config_loader("test")["parameters"]


def _run_scenes(llm, test_params, scenes=SCENES, max_keyword_words: int | None = 8):
    """behavior_summarization + keyword_extraction of `scenes` (the synthetic users above) on `llm`
    with the test environment's parameters; returns the catalog holding every output."""
    catalog = DataCatalog()
    data = dict(zip(SCENES, (_movie(), _emoticon(), _costume()), strict=True))
    for scene in scenes:
        items, histories, users = data[scene]
        catalog[f"{scene}.items"] = items
        catalog[f"{scene}.histories"] = histories
        catalog[f"{scene}.users"] = users
        protocol = test_params[scene]["protocol"]
        catalog[f"{scene}.user_split"] = split_users(
            histories["user_id"], int(protocol["n_evaluation"]), int(protocol["seed"])
        )
        catalog[f"params:{scene}.protocol"] = protocol
        catalog[f"params:{scene}.ingestion"] = test_params[scene]["ingestion"]
        catalog[f"{scene}.image_index"] = pd.DataFrame(
            columns=["item_id", "image_path", "image_offset"]
        )
        catalog["llm"] = MemoryDataset(llm, copy_mode="assign")
        catalog["keyword_adapter"] = {"tensors": {}, "metadata": {}}  # test: zero-shot
        keyword_params = dict(test_params[scene]["keyword_extraction"])
        if max_keyword_words is not None:
            keyword_params["max_keyword_words"] = max_keyword_words
        catalog[f"params:{scene}.behavior_summarization"] = test_params[scene][
            "behavior_summarization"
        ]
        catalog[f"params:{scene}.keyword_extraction"] = keyword_params
    catalog["params:sharding"] = {"cluster": "none"}

    pipeline = (behavior_pipeline() + keyword_pipeline()).only_nodes_with_namespaces(list(scenes))
    for name in pipeline.all_outputs():
        catalog[name] = KeptDataset()
    SequentialRunner().run(pipeline, catalog)
    return catalog


def test_pipelines_run_for_every_scene_on_a_tiny_llama(tmp_path, test_params):
    llm = load_llm(build_tiny_chat_llama(tmp_path / "llama"))
    # random words rarely hit a comma: keep them
    catalog = _run_scenes(llm, test_params, max_keyword_words=8)

    for scene in SCENES:
        params = test_params[scene]["keyword_extraction"]
        behavior = catalog.load(f"{scene}.behavior_texts")
        preference = catalog.load(f"{scene}.preference_keywords")
        target = catalog.load(f"{scene}.target_keywords")
        assert len(behavior) == len(preference) == len(target) == 3
        assert all(len(texts) >= 2 for texts in behavior["history_texts"])
        for row in preference.itertuples():
            assert list(row.attributes) == list(params["attributes"])
            assert len(row.raw_answers) == len(params["attributes"])
            assert 1 <= len(row.keywords) <= params["k_p"]
        assert preference["n_parsed"].sum() > 0, "the tiny Llama's (nonsense) answers parse"
        for row in target.itertuples():
            n_prefix = len(params["target_prefix"])
            assert n_prefix < len(row.keywords) <= n_prefix + params["k_t"]
        assert set(preference["llm_adapter"]) == {"none"}
        assert catalog.load(f"{scene}.comparison_keywords").empty  # test: no comparison run
        report = catalog.load(f"{scene}.keyword_quality")
        assert report["n_users"] == 3
        assert f"Keyword quality ({scene})" in catalog.load(f"{scene}.keyword_quality_report")

    assert list(catalog.load("movie.target_keywords")["keywords"].iloc[0][:1]) == ["movie poster"]
    emoticon = catalog.load("emoticon.behavior_texts")
    assert emoticon["target_text"].str.startswith("my cat is sick").all()  # message, not the emoji
    # a user without conversation keeps an empty summary, every other one is summarised
    has_conversation = emoticon["user_id"].isin(["e2", "e3", "e4"])
    assert set(has_conversation) == {True, False}
    assert (emoticon["conversation_summary"] != "").tolist() == has_conversation.tolist()
    costume = catalog.load("costume.keyword_quality")
    assert set(costume["checks"]) == {
        "taste_class",
        "taste_brightness",
        "taste_texture",
        "target_class",
    }
    assert set(costume["checks"]["taste_class"]["methods"]) == {"llm_zero_shot", "baseline"}
    assert costume["not_applicable"] == {}
    assert costume["scene_note"].startswith("SIMULATED users")


def _random_adapter(llm, trained: list[str]) -> dict:
    """A keyword adapter at random LoRA weights for `llm`, trained (says its header) on `trained`."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from pmg_kedro.components.method.keyword_adapter import ADAPTER_KIND

    config = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}
    peft_model = get_peft_model(copy.deepcopy(llm.model), LoraConfig(**config))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 1.0)
    return {
        "tensors": get_peft_model_state_dict(peft_model),
        "metadata": {
            "kind": ADAPTER_KIND,
            "lora_config": config,
            "base_model": {"name": llm.name, "hidden_size": 32, "num_layers": 2},
            "trained_users": {"costume": trained},
        },
    }


def test_lora_keywords_in_shards_merge_the_adapter_once_per_process(
    tmp_path, test_params, monkeypatch
):
    """Sharded, a catalog-loaded LLM_g gets the adapter merged once per process (a Dask worker)
    for all its shards; a shard of one user answers as that user alone."""
    from pmg_kedro.components.models import sharding
    from pmg_kedro.datasets.llm_folder import load_llm_definition
    from pmg_kedro.pipelines.keyword_extraction import nodes

    folder = build_tiny_chat_llama(tmp_path / "llama")
    llm = sharding.attach_definition(
        load_llm(folder), sharding.ModelDefinition(load_llm_definition, {"path": str(folder)})
    )
    items, histories, _ = _costume()
    behavior = pd.DataFrame(
        {
            "user_id": histories["user_id"],
            "purpose": "evaluation",
            "history": histories["history"],
            "history_texts": [[f"item {i}" for i in h] for h in histories["history"]],
            "conversation_summary": "",
            "target": histories["target"],
            "target_text": "a shirt",
        }
    )
    adapter = _random_adapter(llm, ["nobody"])
    params = {**test_params["costume"]["keyword_extraction"], "llm_adapter": "lora"}
    merges = []
    merge = nodes.adapted_llm
    monkeypatch.setattr(nodes, "adapted_llm", lambda *a: merges.append(1) or merge(*a))
    sharding.release_models()
    sharded = nodes.extract_preference_keywords(
        behavior, items, llm, adapter, params, {"shard_size": 1}
    )
    assert len(merges) == 1 and sharding.release_models() == 1
    alone = [
        nodes.extract_preference_keywords(behavior[i : i + 1], items, llm, adapter, params)
        for i in range(len(behavior))
    ]
    pd.testing.assert_frame_equal(sharded, pd.concat(alone, ignore_index=True), check_exact=True)
    assert set(sharded["llm_adapter"]) == {"lora"} and sharded["llm"].str.endswith("+lora").all()


def test_lora_keywords_come_from_the_merged_adapter_and_are_compared(tmp_path, test_params):
    """llm_adapter: lora with a (random) adapter for the tiny Llama, zero-shot as the comparison:
    the two settings answer differently, and the report holds both beside the baseline."""
    llm = load_llm(build_tiny_chat_llama(tmp_path / "llama"))
    items, histories, users = _costume()
    split = split_users(histories["user_id"], 3, 0)
    adapter = _random_adapter(llm, sorted(split.loc[split["split"] == "train", "user_id"]))
    params = dict(test_params["costume"]["keyword_extraction"])
    params["max_keyword_words"] = 8
    params["llm_adapter"] = "lora"
    params["quality"] = {**params["quality"], "compare_llm_adapter": "none"}
    catalog = DataCatalog()
    catalog["costume.items"] = items
    catalog["costume.histories"] = histories
    catalog["costume.users"] = users
    catalog["costume.user_split"] = split
    catalog["costume.image_index"] = pd.DataFrame(columns=["item_id", "image_path", "image_offset"])
    catalog["params:costume.protocol"] = test_params["costume"]["protocol"]
    catalog["params:costume.ingestion"] = test_params["costume"]["ingestion"]
    catalog["params:costume.behavior_summarization"] = test_params["costume"][
        "behavior_summarization"
    ]
    catalog["params:costume.keyword_extraction"] = params
    catalog["params:sharding"] = {"cluster": "none"}
    catalog["llm"] = MemoryDataset(llm, copy_mode="assign")
    catalog["keyword_adapter"] = MemoryDataset(adapter, copy_mode="assign")
    pipeline = (behavior_pipeline() + keyword_pipeline()).only_nodes_with_namespaces(["costume"])
    for name in pipeline.all_outputs():
        catalog[name] = KeptDataset()
    SequentialRunner().run(pipeline, catalog)

    lora = catalog.load("costume.preference_keywords")
    zero_shot = catalog.load("costume.comparison_keywords")
    assert set(lora["llm_adapter"]) == {"lora"} and set(zero_shot["llm_adapter"]) == {"none"}
    evaluation = lora[lora["purpose"] == "evaluation"].set_index("user_id")
    assert set(zero_shot["user_id"]) == set(evaluation.index)
    answers = evaluation.loc[zero_shot["user_id"], "raw_answers"]
    pairs = zip(answers, zero_shot["raw_answers"], strict=True)
    assert any(list(a) != list(b) for a, b in pairs), "the merged adapter changes the answers"
    report = catalog.load("costume.keyword_quality")
    assert set(report["checks"]["taste_class"]["methods"]) == {
        "llm_lora",
        "llm_zero_shot",
        "baseline",
    }
    assert "llm_lora - llm_zero_shot" in report["checks"]["taste_class"]["paired_differences"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_embedded_llm_gives_valid_keywords_in_either_precision(dtype, test_params):
    """`dtype: auto` picks float32 or bfloat16 by the hardware (issue 28), so both must give valid
    answers: the real SmolLM2 (test env's token budget) answers every prompt of the costume scene,
    most answers parse, every user gets 1..K_p preference keywords and the target prefix plus
    1..K_t target keywords. Equal answers are not expected: greedy decoding in two precisions
    differs for some users."""
    from pmg_kedro.components.models.llm import EMBEDDED_GGUF_FILE, EMBEDDED_GGUF_PACKAGE
    from tests.conftest import PROJECT_ROOT

    llm = load_llm(
        PROJECT_ROOT / "data" / "06_models" / "smollm2-135m-instruct",
        EMBEDDED_GGUF_PACKAGE,
        EMBEDDED_GGUF_FILE,
        dtype=dtype,
        num_threads=1,
    )
    assert str(llm.model.dtype) == f"torch.{dtype}"
    catalog = _run_scenes(llm, test_params, scenes=["costume"], max_keyword_words=None)
    params = test_params["costume"]["keyword_extraction"]
    preference = catalog.load("costume.preference_keywords")
    target = catalog.load("costume.target_keywords")
    assert len(preference) == len(target) == 3
    for row in preference.itertuples():
        assert len(row.raw_answers) == len(params["attributes"])
        assert all(answer.strip() for answer in row.raw_answers), row.raw_answers
        assert 1 <= len(row.keywords) <= params["k_p"]
        assert all(isinstance(k, str) and k.strip() for k in row.keywords)
    # most of a real instruction model's answers parse (the tiny random model's rarely do)
    assert preference["n_parsed"].sum() >= len(preference) * len(params["attributes"]) // 2
    n_prefix = len(params["target_prefix"])
    for row in target.itertuples():
        assert n_prefix < len(row.keywords) <= n_prefix + params["k_t"]
