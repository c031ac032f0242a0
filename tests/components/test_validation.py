import pandas as pd
import pytest

from pmg_kedro.components import validation as v


def _items(**overrides):
    data = {"item_id": ["1", "2", "3"], "title": ["A", "B", "C"], "caption": ["a", "b", "c"]}
    data.update(overrides)
    return pd.DataFrame(data)


def test_valid_table_passes_unchanged():
    df = _items()
    assert v.validate(df, v.ITEMS, "fixture").equals(df)


def test_error_names_source_row_field_and_expectation():
    df = _items(title=["A", "", "C"])
    with pytest.raises(v.DataValidationError) as err:
        v.validate(df, v.ITEMS, "items.csv")
    message = str(err.value)
    assert "items.csv" in message
    assert "row 1" in message
    assert "field 'title'" in message
    assert "str_length" in message


def test_duplicated_ids_are_reported_with_their_rows():
    with pytest.raises(v.DataValidationError) as err:
        v.validate(_items(item_id=["1", "2", "1"]), v.ITEMS, "fixture")
    assert "field 'item_id'" in str(err.value)
    assert "row 0" in str(err.value) and "row 2" in str(err.value)


def test_missing_field_is_reported():
    with pytest.raises(v.DataValidationError, match="caption"):
        v.validate(_items().drop(columns="caption"), v.ITEMS, "fixture")


def test_missing_values_are_reported():
    with pytest.raises(v.DataValidationError, match="row 2, field 'title'"):
        v.validate(_items(title=["A", "B", None]), v.ITEMS, "fixture")


def test_interactions_naming_unknown_items_are_listed():
    interactions = pd.DataFrame({"item_id": ["1", "9", "2"]})
    with pytest.raises(v.DataValidationError, match=r"row 1 \('9'\)"):
        v.check_references(
            interactions, "item_id", _items()["item_id"], "interactions", "f", "items"
        )


def test_missing_image_files_are_listed(tmp_path):
    present = tmp_path / "a.png"
    present.write_bytes(b"x")
    index = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "image_path": [str(present), str(tmp_path / "b.png"), str(tmp_path / "c.png")],
            "image_offset": [-1, -1, -1],
        }
    )
    with pytest.raises(v.DataValidationError) as err:
        v.check_image_files(index, "fixture")
    assert "2 image files are missing" in str(err.value)
    assert str(tmp_path / "b.png") in str(err.value) and str(tmp_path / "c.png") in str(err.value)


def test_empty_history_is_rejected():
    histories = pd.DataFrame(
        {"user_id": ["u1", "u2"], "history": [["a"], []], "target": ["b", "c"]}
    )
    with pytest.raises(v.DataValidationError, match="row 1, field 'history'"):
        v.validate(histories, v.HISTORIES, "fixture")
