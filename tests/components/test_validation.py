import gzip

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pmg_kedro.components.data import validation as v
from pmg_kedro.components.data.sources import SceneTables


def _items(**overrides):
    data = {"item_id": ["1", "2", "3"], "title": ["A", "B", "C"], "caption": ["a", "b", "c"]}
    data.update(overrides)
    return pd.DataFrame(data)


def _interactions(item_ids=("1", "2"), user_ids=("u1", "u1")):
    return pd.DataFrame(
        {
            "user_id": list(user_ids),
            "item_id": list(item_ids),
            "timestamp": np.arange(len(item_ids), dtype="int64"),
            "simulated": False,
        }
    )


def _index(paths, offsets=None):
    return pd.DataFrame(
        {
            "item_id": [str(k + 1) for k in range(len(paths))],
            "image_path": [str(p) for p in paths],
            "image_offset": offsets or [-1] * len(paths),
        }
    )


def _tables(items=None, interactions=None, image_index=None, defects=()):
    return SceneTables(
        items if items is not None else _items(),
        interactions if interactions is not None else _interactions(),
        image_index if image_index is not None else _index([]),
        pd.DataFrame({"user_id": ["u1"], "simulated": [False]}),
        "fixture source",
        defects=list(defects),
    )


def test_valid_table_passes_unchanged():
    df = _items()
    assert v.validate(df, v.ITEMS, "fixture").equals(df)


def test_error_names_source_row_field_and_expectation():
    with pytest.raises(v.IngestionError) as err:
        v.validate(_items(title=["A", "", "C"]), v.ITEMS, "items.csv")
    assert str(err.value).splitlines() == [
        "1 defect in items.csv (items: 1); the first 1 follows.",
        "  items row 1, field 'title': expected a non-empty string (str_length(1, None)), got ''",
    ]


def test_every_failure_of_a_table_is_listed_once():
    items = _items(item_id=["1", "2", "1"], title=["A", "B", None]).drop(columns="caption")
    with pytest.raises(v.IngestionError) as err:
        v.validate(items, v.ITEMS, "fixture")
    assert sorted(str(d) for d in err.value.defects) == [
        "items row 0, field 'item_id': expected a value no other row has (field_uniqueness), "
        "got '1'",
        "items row 2, field 'item_id': expected a value no other row has (field_uniqueness), "
        "got '1'",
        "items row 2, field 'title': expected a value (not null) (not_nullable), got nan",
        "items, field 'caption': expected the column to exist (column_in_dataframe), got 'caption'",
    ]


def test_rows_naming_unknown_ids_are_listed():
    interactions = pd.DataFrame({"item_id": ["1", "9", "2", "8"]})
    defects = v.reference_defects(interactions, "item_id", _items()["item_id"], "ia", "items")
    assert [(d.row, d.got) for d in defects] == [("row 1", "'9'"), ("row 3", "'8'")]


def test_images_are_decoded_and_idx_offsets_bounded(tmp_path):
    good = tmp_path / "good.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(good)
    truncated = tmp_path / "truncated.jpg"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with Image.open(truncated) as image:
        image.verify()  # passes: only a full decode finds the missing data
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    archive = tmp_path / "images-idx3-ubyte.gz"
    with gzip.open(archive, "wb") as fh:
        fh.write((2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (2, 2, 2)))
        fh.write(bytes(8))
    index = _index(
        [good, truncated, text, tmp_path / "absent.png", archive, archive],
        offsets=[-1, -1, -1, -1, 1, 2],
    )
    defects = v.image_defects(index)
    assert [(d.row.split()[1], d.got.split(":")[0]) for d in defects] == [
        ("1", "OSError"),  # truncated
        ("2", "UnidentifiedImageError"),
        ("3", "no such file"),
        ("5", "offset 2 of an archive of 2 images"),
    ]


def test_validate_scene_raises_one_error_with_every_kind_of_defect(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    reader = v.Defect("user_data.txt", "line 7", "user_id", "a value", "''")
    tables = _tables(
        items=_items(title=["A", "", "C"]),
        interactions=_interactions(item_ids=("1", "42")),
        image_index=_index([tmp_path / "zero.png"]),
        defects=[reader],
    )
    with pytest.raises(v.IngestionError) as err:
        v.validate_scene(tables)
    assert [(d.where, d.row.split(" (")[0], d.field) for d in err.value.defects] == [
        ("user_data.txt", "line 7", "user_id"),
        ("items", "row 1", "title"),
        ("interactions", "row 1", "item_id"),
        ("image_index", "row 0", "image_path"),
    ]
    assert str(err.value).startswith(
        "4 defects in fixture source (user_data.txt: 1, items: 1, interactions: 1, "
        "image_index: 1); the first 4 follow.\n"
    )


def test_error_survives_pickling_with_its_defects():
    import pickle

    error = v.IngestionError("src", [v.Defect("f.txt", "line 2", "x", "y", "z")])
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.defects == error.defects


def test_error_message_is_capped_but_counts_every_defect():
    defects = [v.Defect("f.txt", f"line {n}", "x", "y", "z") for n in range(30, 0, -1)]
    message = str(v.IngestionError("src", defects)).splitlines()
    assert message[0] == "30 defects in src (f.txt: 30); the first 20 follow."
    assert message[1] == "  f.txt line 1, field 'x': expected y, got z"  # sorted by line
    assert message[20] == "  f.txt line 20, field 'x': expected y, got z"
    assert message[21:] == ["  ... and 10 more"]


def test_valid_scene_comes_back_with_a_fresh_index(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "1.png")
    items = _items().set_axis([10, 11, 12])
    out = v.validate_scene(_tables(items=items, image_index=_index([tmp_path / "1.png"])))
    assert out[0]["item_id"].tolist() == ["1", "2", "3"]
    assert out[0].index.tolist() == [0, 1, 2]


def test_empty_history_is_rejected():
    histories = pd.DataFrame(
        {"user_id": ["u1", "u2"], "history": [["a"], []], "target": ["b", "c"]}
    )
    with pytest.raises(v.IngestionError, match="histories row 1, field 'history'"):
        v.validate(histories, v.HISTORIES, "fixture")
