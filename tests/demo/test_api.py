"""The demo's HTTP API over a running server (127.0.0.1): 8 concurrent requests all answered and
equal to the same requests made one at a time; the raw-HTTP example of docs/demo.md; bad requests."""

import json

import httpx
import pytest
from gradio_client import Client

from pmg_kedro.demo.render import RESPONSE_KEYS


def _requests(service) -> list[dict]:
    """Eight requests over the three scenes, both ways in, two seeds."""
    users = {s: service.scenes[s].evaluation_users() for s in ("movie", "emoticon", "costume")}
    return [
        {"scene": "costume", "user_id": users["costume"][0], "seed": 2024},
        {"scene": "costume", "user_id": users["costume"][1], "seed": 5},
        {"scene": "emoticon", "user_id": users["emoticon"][0], "seed": 2024},
        {"scene": "emoticon", "user_id": users["emoticon"][1], "mode": "composed_guidance"},
        {"scene": "movie", "user_id": users["movie"][0], "alpha": 0.8},
        {"scene": "movie", "history": ["1", "2", "32"], "target": "3", "seed": 11},
        {"scene": "costume", "history": ["fm00018", "fm00104"], "target": "fm00104"},
        {
            "scene": "emoticon",
            "history": ["1f603", "1f606"],
            "history_messages": ["great game", "haha"],
            "message": "see you tomorrow :)",
            "conversation": "how was it? | we won",
        },
    ]


def _outcome(response: dict) -> dict:
    """A response without what differs between two runs of one request (its id, its times)."""
    return {k: v for k, v in response.items() if k not in ("trace_id", "seconds")}


def test_eight_concurrent_requests_equal_the_same_requests_one_at_a_time(demo_url, demo_service):
    client = Client(demo_url, verbose=False)
    requests = _requests(demo_service)
    jobs = [client.submit(r, api_name="/personalize") for r in requests]
    concurrent = [job.result(timeout=600) for job in jobs]
    one_at_a_time = [client.predict(r, api_name="/personalize") for r in requests]

    assert len(concurrent) == len(requests) == 8
    assert len({r["trace_id"] for r in concurrent + one_at_a_time}) == 16  # none lost or merged
    for request, response in zip(requests, concurrent, strict=True):
        assert tuple(response) == RESPONSE_KEYS
        assert response["scene"] == request["scene"]
        assert sum(c["chosen"] for c in response["candidates"]) == 1
    assert [_outcome(r) for r in concurrent] == [_outcome(r) for r in one_at_a_time]
    # they did queue: the models serve one request at a time
    assert max(r["seconds"]["waited_for_models"] for r in concurrent) > 0


def test_the_documented_raw_http_example_and_reselect(demo_url, demo_service):
    """POST /gradio_api/call/personalize, then read the answer's event stream (curl in docs/demo.md)."""
    user = demo_service.scenes["emoticon"].evaluation_users()[0]
    with httpx.Client(base_url=demo_url, timeout=300) as http:
        posted = http.post(
            "/gradio_api/call/personalize", json={"data": [{"scene": "emoticon", "user_id": user}]}
        ).raise_for_status()
        stream = http.get(f"/gradio_api/call/personalize/{posted.json()['event_id']}").text
    event, data = [line.split(": ", 1)[1] for line in stream.strip().splitlines()[-2:]]
    assert event == "complete"
    response = json.loads(data)[0]
    assert tuple(response) == RESPONSE_KEYS and response["source"]["user_id"] == user

    client = Client(demo_url, verbose=False)
    again = client.predict(trace_id=response["trace_id"], alpha=1.0, api_name="/reselect")
    assert again["settings"]["alpha"] == 1.0
    assert [c["image"] for c in again["candidates"]] == [c["image"] for c in response["candidates"]]
    scenes = client.predict(api_name="/scenes")
    assert scenes["costume"]["simulated_users"] and not scenes["movie"]["item_images"]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"scene": "costume", "user_id": "nobody"}, "Unknown user id 'nobody'"),
        ({"scene": "emoticon", "history": [], "message": "hi"}, "The history is empty"),
        ({"scene": "emoticon", "history": ["1f603"], "message": "y" * 10_000}, "10,000 characters"),
        ({"scene": "costume", "user": "sim0000"}, "Unknown request keys"),
        ({"scene": "costume", "history": "fm00018"}, "history must be a list of strings"),
    ],
)
def test_a_bad_request_gets_its_message_and_the_server_keeps_serving(
    demo_url, demo_service, request_, message
):
    client = Client(demo_url, verbose=False)
    with pytest.raises(Exception, match=message):
        client.predict(request_, api_name="/personalize")
    scenes = client.predict(api_name="/scenes")
    assert scenes["emoticon"]["ready"]


def test_the_server_binds_to_localhost_without_a_share_link(demo_url):
    assert demo_url.startswith("http://127.0.0.1:")
    config = httpx.get(f"{demo_url}config", timeout=30).json()
    assert not config.get("share_url")
