import json

import pytest

from pmg_kedro.components.data.sources import chitchat

MAP = {":)": "🙂", "XD": "😆", "<3": "❤️"}


def _dataset(tmp_path, conversations):
    data = {
        cid: {"messages": [[{"text": t, "timestamp": ts, "sender": s}] for s, t, ts in msgs]}
        for cid, msgs in conversations.items()
    }
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_emoticon_uses_become_interactions_and_rare_users_are_counted(tmp_path):
    path = _dataset(
        tmp_path,
        {
            "c1": [
                ("alice", "hi :)", "2018-05-02T19:38:15Z"),
                ("bob", "see http://x.com/:) and a:)b", "2018-05-02T19:38:20Z"),
                ("alice", "lol XD <3", "2018-05-02T19:38:25Z"),
                ("alice", "bye :)!", "2018-05-02T19:38:30Z"),
                ("bob", "ok :)", "2018-05-02T19:38:35Z"),
            ]
        },
    )
    messages = chitchat.read_messages(path)
    params = {"emoticon_map": MAP, "min_emoticon_uses": 2, "context_turns": 2}
    tables = chitchat.build_tables(messages, params, "fixture")
    alice = tables.interactions[tables.interactions["user_id"] == "alice"]
    assert alice["emoticon"].tolist() == [":)", "XD", "<3", ":)"]
    assert tables.users["user_id"].tolist() == ["alice"]
    assert tables.counts["users_filtered_below_min_uses"] == 1  # bob: the URL and a:)b do not count
    assert tables.counts["emoticon_uses"] == 5
    heart = tables.items[tables.items["title"] == "red heart"]
    assert heart["emoticons"].iloc[0] == ["<3"]
    assert alice["context"].iloc[2].endswith("see http://x.com/:) and a:)b")
    for path in tables.image_index["image_path"]:
        assert path.endswith(".png")


def test_unknown_emoji_in_the_map_names_the_entry(tmp_path):
    path = _dataset(tmp_path, {"c1": [("a", "hi", "2018-05-02T19:38:15Z")]})
    params = {"emoticon_map": {":)": "not-an-emoji"}, "min_emoticon_uses": 1, "context_turns": 1}
    with pytest.raises(ValueError, match="entry ':\\)'"):
        chitchat.build_tables(chitchat.read_messages(path), params, "fixture")
