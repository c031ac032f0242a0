"""The demo's handlers on the `test` environment's last run: a request in, the trace out; every
bad input answered with its message while the service keeps serving."""

import io
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pmg_kedro.demo import service as service_module
from pmg_kedro.demo.render import RESPONSE_KEYS, trace_html, trace_json
from pmg_kedro.demo.requests import (
    MAX_TEXT_CHARS,
    MAX_UPLOAD_BYTES,
    DemoError,
    DemoRequest,
)

SEED = 2024  # the test environment's first noise seed


def _png(size=(8, 8), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def costume_trace(demo_service):
    user = demo_service.scenes["costume"].evaluation_users()[0]
    return demo_service.respond(DemoRequest("costume", user_id=user))


def test_an_evaluation_user_gets_the_whole_trace(demo_service, costume_trace):
    trace, settings = costume_trace, demo_service.settings("costume")
    # the grid of the environment, one noise seed, exactly one chosen candidate
    assert list(zip(trace.selections["w_p"], trace.selections["w_t"], strict=True)) == settings.grid
    assert trace.selections["chosen"].sum() == 1 and set(trace.selections["seed"]) == {SEED}
    assert trace.variant.name == "pmg" and trace.soft["used"]
    assert trace.soft["shape"] == [4, 384]
    # k^p per attribute: the raw answer and what parsed from it; k^t after the scene's prefix
    p = trace.preference_keywords
    assert p["attributes"] == list(
        demo_service.params["costume"]["keyword_extraction"]["attributes"]
    )
    assert len(p["raw_answers"]) == len(p["parsed"]) == len(p["attributes"])
    assert trace.target_keywords["keywords"][0] == "costume"
    assert trace.source == {
        "kind": "evaluation_user",
        "user_id": trace.request.user_id,
        "simulated": True,
    }
    assert trace.baseline_variant.name == "without_both" and len(trace.baseline) == 1
    assert {"keywords", "generation", "scoring_selection", "baseline", "total"} <= set(
        trace.seconds
    )
    page = trace_html(trace)
    for shown in (
        "SIMULATED",
        "raw LLM answer",
        "id='candidates'",
        "pmg-chosen",
        "Target-only baseline",
        "E_m used",
        "test</b>",
        "Seed <b>2024",
    ):
        assert shown in page
    response = trace_json(trace)
    assert tuple(response) == RESPONSE_KEYS
    assert sum(c["chosen"] for c in response["candidates"]) == 1
    assert response["chosen"]["image"].startswith("data:image/png;base64,")


def test_with_the_stored_keywords_the_grid_equals_what_the_pipeline_wrote(
    demo_service, test_catalog, monkeypatch
):
    """Given the keywords the last run wrote (the live LLM may answer otherwise in bfloat16), the
    demo's candidates, scores, choice and images are the weighted_generation pipeline's for that
    user and seed: the demo runs PMG itself, not a copy."""
    data = demo_service.scenes["costume"]
    user = data.evaluation_users()[1]
    stored_p = data.preference_keywords[data.preference_keywords["user_id"] == user]
    stored_t = data.target_keywords[data.target_keywords["user_id"] == user]
    monkeypatch.setattr(service_module.PMG, "keywords", lambda *a, **k: (stored_p, stored_t))
    trace = demo_service.respond(DemoRequest("costume", user_id=user, seed=SEED))

    catalog = test_catalog()
    for variant, mine in (("pmg", trace.selections), ("without_both", trace.baseline)):
        written = catalog.load(f"costume.{variant}.selections")
        written = written[(written["user_id"] == user) & (written["seed"] == SEED)]
        exact = ["image_key", "w_p", "w_t", "noise_seed", "alpha", "chosen"]
        pd.testing.assert_frame_equal(
            mine[exact].reset_index(drop=True),
            written[exact].reset_index(drop=True),
            check_dtype=False,
        )
        # The run denoised other batches (chunks of 7 across users and seeds): float rounding
        # moves a pixel by at most one level, which moves the scorer's cosines by up to ~0.3%.
        scores = ["d_p", "d_t", "z"]
        np.testing.assert_allclose(mine[scores], written[scores], rtol=1e-2, atol=1e-3)
    chosen = catalog.load("costume.pmg.chosen_images")[f"{user}/s{SEED}"]
    mine = np.asarray(trace.images[trace.chosen["image_key"]], dtype=int)
    assert np.abs(mine - np.asarray(chosen, dtype=int)).max() <= 1


def test_alpha_reselects_among_the_same_candidates_without_generating(
    demo_service, costume_trace, monkeypatch
):
    def no_generation(*args, **kwargs):
        raise AssertionError("re-selection generated images")

    monkeypatch.setattr(demo_service.generator, "generate", no_generation)
    scores = costume_trace.selections
    floor = costume_trace.settings.cosine_floor
    log_d_p = np.log(np.maximum(scores["d_p"].to_numpy(), floor))
    log_d_t = np.log(np.maximum(scores["d_t"].to_numpy(), floor))
    for alpha in (1.0, 0.0, 0.25):
        again = demo_service.reselect(costume_trace.trace_id, alpha)
        assert again.settings.alpha == alpha and again.images is costume_trace.images
        pd.testing.assert_frame_equal(
            again.selections[["image_key", "d_p", "d_t"]], scores[["image_key", "d_p", "d_t"]]
        )
        z = alpha * log_d_p + (1 - alpha) * log_d_t
        np.testing.assert_allclose(again.selections["z"], z)
        assert again.selections["chosen"].tolist() == (np.arange(len(z)) == np.argmax(z)).tolist()
    with pytest.raises(DemoError, match="No response 'nope'"):
        demo_service.reselect("nope", 0.5)


def test_a_composed_history_is_summarised_by_the_pipeline_functions(demo_service):
    """An evaluation user's own history and target, composed by hand: the same behavior texts as
    the last run wrote, and E_m from the trained embedder close to their stored E_m."""
    data = demo_service.scenes["costume"]
    user = data.evaluation_users()[0]
    row = data.behavior_texts[data.behavior_texts["user_id"] == user].iloc[0]
    trace = demo_service.respond(
        DemoRequest("costume", history=tuple(row["history"]), target=row["target"], seed=7)
    )
    assert trace.behavior["history_texts"] == list(row["history_texts"])
    assert trace.behavior["target_text"] == row["target_text"]
    assert trace.source["kind"] == "composed_history" and not trace.source["simulated"]
    assert trace.soft["used"] and "trained embedder" in trace.soft["source"]
    stored = data.soft_embeddings["tensors"][user]
    composed = demo_service.scenes["costume"].embedder
    assert composed is not None
    soft = service_module.PMG(demo_service.generator, embedder=composed).soft_embeddings(
        [user], [trace.soft["prompt"]]
    )[user]
    # bfloat16 LLM, a batch of one here and of several in the run: close, not bit-equal
    torch.testing.assert_close(soft, stored, rtol=0.05, atol=0.05)
    assert set(trace.selections["noise_seed"]) == {7}


def test_a_composed_chat_masks_the_answer_and_needs_no_target_item(demo_service):
    trace = demo_service.respond(
        DemoRequest(
            "emoticon",
            history=("1f603", "1f606"),
            history_messages=("so much fun",),
            message="see you tomorrow :) XD",
            conversation="how was the game? | we won!",
        )
    )
    assert trace.behavior["target_text"] == "see you tomorrow"  # emoticons removed
    assert trace.behavior["history_texts"][0].endswith('with the message "so much fun"')
    assert trace.behavior["conversation_summary"]  # y from LLM_g
    assert trace.target["item_id"] is None and "x^t is the current message" in trace.target["note"]
    assert trace.target_keywords["keywords"][0] == "emoji"


def test_a_scene_without_item_images_runs_without_e_m_and_says_why(demo_service):
    user = demo_service.scenes["movie"].evaluation_users()[0]
    trace = demo_service.respond(DemoRequest("movie", user_id=user, mode="composed_guidance"))
    assert not trace.soft["used"] and "no images" in trace.soft["why"]
    assert trace.variant.name == "without_embeddings" and trace.settings.mode == "composed_guidance"
    assert "E_m <b>not used</b>" in trace_html(trace)


def test_an_uploaded_image_joins_the_history_as_its_description(demo_service):
    trace = demo_service.respond(
        DemoRequest(
            "costume",
            history=("fm00018",),
            target="fm00104",
            upload=_png(),
            upload_text="red striped scarf",
        )
    )
    assert trace.behavior["history_texts"][-1] == "red striped scarf"
    assert trace.history[-1]["image"].size == (8, 8)


def test_history_lines_parse_to_ids_and_messages(demo_service):
    assert demo_service.parse_history("emoticon", "1f603 | hi there\n\n 1f606\n") == (
        ("1f603", "1f606"),
        ("hi there", ""),
    )
    assert demo_service.parse_history("costume", "fm00018\nfm00104") == (
        ("fm00018", "fm00104"),
        (),
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (DemoRequest("costume", history=(), target="fm00104"), "The history is empty"),
        (
            DemoRequest("costume", history=("fm00018", "fm_nope"), target="fm00104"),
            r"Unknown item id\(s\) in scene 'costume': \['fm_nope'\]",
        ),
        (DemoRequest("costume", history=("fm00018",), target="nope"), "Unknown target item id"),
        (DemoRequest("costume", history=("fm00018",)), "choose the target item"),
        (DemoRequest("costume", user_id="nobody"), "Unknown user id 'nobody'"),
        (DemoRequest("costume", user_id="sim0001"), "is a train user"),
        (
            DemoRequest("emoticon", history=("1f603",), message="x" * 10_000),
            f"The message has 10,000 characters; at most {MAX_TEXT_CHARS:,}",
        ),
        (
            DemoRequest("emoticon", history=("1f603",), message=":) XD 😀 <3"),
            "only emoticons or emoji",
        ),
        (
            DemoRequest(
                "costume",
                history=("fm00018",),
                target="fm00104",
                upload=b"not an image",
                upload_text="scarf",
            ),
            "not an image",
        ),
        (
            DemoRequest(
                "costume",
                history=("fm00018",),
                target="fm00104",
                upload=_png() + b"\0" * MAX_UPLOAD_BYTES,
                upload_text="scarf",
            ),
            "at most 2 MB",
        ),
        (
            DemoRequest("costume", history=("fm00018",), target="fm00104", upload=_png()),
            "what the uploaded image shows",
        ),
        (
            DemoRequest("movie", history=("1",), target="2", upload=_png(), upload_text="a poster"),
            "no item images",
        ),
        (DemoRequest("costume", user_id="sim0000", history=("fm00018",)), "not both"),
        (DemoRequest("costume", user_id="sim0000", seed=-1), "seed must lie"),
        (DemoRequest("costume", user_id="sim0000", mode="loud"), "Unknown weighting mode"),
        (DemoRequest("costume", user_id="sim0000", alpha=1.5), r"alpha must lie in \[0, 1\]"),
        (DemoRequest("pets", user_id="x"), "Unknown scene 'pets'"),
    ],
)
def test_bad_input_gets_its_message(demo_service, request_, message):
    with pytest.raises(DemoError, match=message):
        demo_service.respond(request_)


def test_a_second_request_from_the_same_page_is_refused_and_the_first_completes(
    demo_service, monkeypatch
):
    running, release = threading.Event(), threading.Event()
    personalize = demo_service._personalize

    def slow(request):
        running.set()
        assert release.wait(60)
        return personalize(request)

    monkeypatch.setattr(demo_service, "_personalize", slow)
    user = demo_service.scenes["emoticon"].evaluation_users()[0]
    results = {}
    first = threading.Thread(
        target=lambda: results.update(
            first=demo_service.respond(DemoRequest("emoticon", user_id=user), session="page-1")
        )
    )
    first.start()
    assert running.wait(60)
    with pytest.raises(DemoError, match="This page already has a request running"):
        demo_service.respond(DemoRequest("emoticon", user_id=user), session="page-1")
    release.set()
    first.join(120)
    assert results["first"].selections["chosen"].sum() == 1
    # the page may ask again once its answer came
    again = demo_service.respond(DemoRequest("emoticon", user_id=user), session="page-1")
    assert again.trace_id != results["first"].trace_id
