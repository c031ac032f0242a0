"""The generic folder source (components/data/sources/folder.py): the documented format read
correctly (BOM, CRLF, quoted commas and line breaks, mixed scripts, ISO and integer timestamps,
Parquet as CSV, both image layouts), and every defect of a folder in one error with its file,
line, field, what was expected and what was found."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pmg_kedro.components.data.defects import IngestionError
from pmg_kedro.components.data.sources import folder
from pmg_kedro.components.data.sources.folder_files import DefectLog, TableFile
from pmg_kedro.components.data.validation import validate_scene

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "ceramics"


def _write(path: Path, text: str, bom: bool = False, crlf: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.replace("\n", "\r\n") if crlf else text
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))


def _png(path: Path, colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


ITEMS = (
    "item_id,title,description,colour,tags\n"
    'a1,"Mug, tall","Thrown by hand,\nglazed twice",blue,kitchen|gift\n'
    "a2,茶碗,,green,kitchen\n"
    "a3,Ваза,,blue,\n"
)
INTERACTIONS = (
    "user_id,item_id,timestamp,rating,text\n"
    'u1,a1,2024-01-02T10:00:00Z,5,"Great, thanks"\n'
    "u1,a2,2024-01-01 09:00:00,2,\n"
    "u1,a3,2024-01-03T12:00:00+02:00,4,очень красиво\n"
    "u2,a1,2024-01-01T00:00:00Z,4,\n"
)


def _tables(root: Path, **params):
    return folder.build_tables(root, {"positive_min_rating": 4, **params})


def test_the_documented_format_reads_with_bom_crlf_quotes_and_mixed_scripts(tmp_path):
    _write(tmp_path / "items.csv", ITEMS, bom=True, crlf=True)
    _write(tmp_path / "interactions.csv", INTERACTIONS, crlf=True)
    tables = _tables(tmp_path)
    assert tables.defects == []
    items = tables.items.set_index("item_id")
    assert items.loc["a1", "title"] == "Mug, tall"
    assert items.loc["a1", "description"] == "Thrown by hand,\r\nglazed twice"
    assert items.loc["a2", "title"] == "茶碗" and items.loc["a3", "title"] == "Ваза"
    assert list(items.loc["a1", "tags"]) == ["kitchen", "gift"]  # `|` makes the column a list
    assert list(items.loc["a3", "tags"]) == []
    assert items.loc["a1", "caption"].startswith("Mug, tall: blue, kitchen, gift. Thrown by hand")
    assert items.loc["a2", "caption"] == "茶碗: green, kitchen"
    u1 = tables.interactions[tables.interactions["user_id"] == "u1"].set_index("item_id")
    assert u1.loc["a1", "timestamp"] == pd.Timestamp("2024-01-02T10:00:00Z").timestamp()
    assert u1.loc["a2", "timestamp"] == pd.Timestamp("2024-01-01T09:00:00Z").timestamp()
    assert u1.loc["a3", "timestamp"] == pd.Timestamp("2024-01-03T10:00:00Z").timestamp()
    assert u1.loc["a1", "text"] == "Great, thanks" and u1.loc["a3", "text"] == "очень красиво"
    assert u1["positive"].to_dict() == {"a1": True, "a2": False, "a3": True}
    assert u1["file_order"].tolist() == [2, 3, 4]  # the lines the rows are on
    assert tables.image_index.empty
    users = tables.users.set_index("user_id")
    assert users["n_interactions"].to_dict() == {"u1": 3, "u2": 1}
    assert users["n_positives"].to_dict() == {"u1": 2, "u2": 1}
    validate_scene(tables)


def test_parquet_files_read_as_their_csv(tmp_path):
    _write(tmp_path / "csv" / "items.csv", ITEMS)
    _write(
        tmp_path / "csv" / "interactions.csv",
        INTERACTIONS.replace("2024-01-01 09", "2024-01-01T09"),
    )
    from_csv = _tables(tmp_path / "csv")
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    pd.read_csv(tmp_path / "csv" / "items.csv", dtype=str).to_parquet(parquet / "items.parquet")
    interactions = pd.read_csv(tmp_path / "csv" / "interactions.csv")
    interactions["timestamp"] = pd.to_datetime(
        interactions["timestamp"], format="ISO8601", utc=True
    )
    interactions.to_parquet(parquet / "interactions.parquet")
    from_parquet = _tables(parquet)
    assert from_parquet.defects == []
    pd.testing.assert_frame_equal(from_csv.items, from_parquet.items)
    columns = ["user_id", "item_id", "timestamp", "rating", "positive"]
    pd.testing.assert_frame_equal(
        from_csv.interactions[columns], from_parquet.interactions[columns]
    )


def test_integer_timestamps_and_no_ratings(tmp_path):
    _write(tmp_path / "items.csv", "item_id,title\n1,one\n2,two\n")
    _write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu,1,20\nu,2,10\n")
    assert folder.is_folder_scene(tmp_path)  # users.csv is optional
    tables = _tables(tmp_path)
    assert tables.defects == []
    assert tables.interactions["timestamp"].tolist() == [20, 10]
    assert "positive" not in tables.interactions and "rating" not in tables.interactions
    assert tables.counts["positive_interactions"] == 2


def test_both_image_layouts(tmp_path):
    _write(tmp_path / "a" / "items.csv", "item_id,title\n1,one\n2,two\n")
    _write(tmp_path / "a" / "interactions.csv", "user_id,item_id,timestamp\nu,1,1\n")
    _png(tmp_path / "a" / "images" / "1.png")
    _png(tmp_path / "a" / "images" / "2.jpg")
    _png(tmp_path / "a" / "images" / "9.png")  # no such item: counted
    tables = _tables(tmp_path / "a")
    assert tables.defects == [] and folder.image_layout(tmp_path / "a") == "images/ folder"
    assert dict(
        zip(tables.image_index["item_id"], tables.image_index["image_path"], strict=True)
    ) == {
        "1": str(tmp_path / "a" / "images" / "1.png"),
        "2": str(tmp_path / "a" / "images" / "2.jpg"),
    }
    assert tables.counts["image_files_without_item"] == 1
    tables = _tables(FIXTURE)
    assert tables.defects == [] and folder.image_layout(FIXTURE) == "image column"
    assert len(tables.image_index) == len(tables.items) == 16
    assert all(Path(p).is_relative_to(FIXTURE / "photos") for p in tables.image_index["image_path"])


def test_the_users_file_is_kept_for_reporting(tmp_path):
    tables = _tables(FIXTURE)
    users = tables.users.set_index("user_id")
    assert users.loc["u01", "country"] == "Japan" and not users["simulated"].any()
    assert tables.counts["users_without_users_file_row"] == 0


def _malformed(tmp_path: Path) -> Path:
    """A copy of the fixture with one defect of every kind the format names (the items file is
    rewritten through `csv`: its descriptions hold line breaks)."""
    bad = tmp_path / "bad"
    shutil.copytree(FIXTURE, bad)
    with open(bad / "items.csv", encoding="utf-8-sig", newline="") as fh:
        header, *rows = list(csv.reader(fh))
    header.append("caption")  # a reserved column name (line 1)
    by_id = {row[0]: row + ["x"] for row in rows}
    by_id["cer-03"][0] = "cer-02"  # a duplicate id (line 5)
    by_id["cer-05"][1] = ""  # no title (line 8)
    by_id["cer-06"][-2] = "photos/bowls/missing.jpg"  # no such file (line 9)
    by_id["cer-08"][-2] = "../outside.jpg"  # outside the folder (line 12)
    with open(bad / "items.csv", "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([header, *by_id.values()])
    (bad / "photos" / "mugs" / "cer-01.png").write_text("not an image")
    lines = (bad / "interactions.csv").read_text().splitlines()
    lines[1] = lines[1].replace("cer-13", "cer-99")  # unknown item (line 2)
    lines[2] = lines[2].replace("2024-01-16T01:40:00Z", "yesterday")  # unparseable (line 3)
    lines[3] = lines[3].replace(",1,", ",one,")  # a rating that is no number (line 4)
    (bad / "interactions.csv").write_text("\n".join(lines) + "\n")
    (bad / "users.csv").write_text("user,country\nu01,Japan\n")  # no user_id column
    return bad


def test_a_malformed_folder_lists_every_defect_in_one_error(tmp_path):
    bad = _malformed(tmp_path)
    with pytest.raises(IngestionError) as raised:
        validate_scene(_tables(bad))
    found = {(d.where, d.row, d.field) for d in raised.value.defects}
    assert {
        ("items.csv", "line 1", "caption"),
        ("items.csv", "line 5", "item_id"),
        ("items.csv", "line 8", "title"),
        ("items.csv", "line 9", "image"),
        ("items.csv", "line 12", "image"),
        ("interactions.csv", "line 2", "item_id"),
        ("interactions.csv", "line 3", "timestamp"),
        ("interactions.csv", "line 4", "rating"),
        ("users.csv", "line 1", "user_id"),
    } <= found
    undecodable = [d for d in raised.value.defects if d.where == "image_index"]
    assert len(undecodable) == 1 and "cer-01.png" in undecodable[0].row
    message = str(raised.value)
    assert message.startswith(f"{len(raised.value.defects)} defects in folder {bad}")
    assert (
        "items.csv line 12, field 'image': expected a path of an image file relative to the folder"
        in message
    )
    assert "'../outside.jpg' (outside the folder)" in message
    assert "interactions.csv line 3, field 'timestamp': expected an ISO 8601 date-time" in message


def test_a_file_without_a_required_column_stops_only_itself(tmp_path):
    _write(tmp_path / "items.csv", "item_id,name\n1,one\n")
    _write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu,1,1\nu,1,x\n")
    defects = _tables(tmp_path).defects
    assert [(d.where, d.field) for d in defects] == [
        ("items.csv", "title"),
        ("interactions.csv", "timestamp"),  # still read row by row: line 3's timestamp
    ]
    assert "columns item_id, name" in defects[0].got


def test_missing_files_and_both_forms_are_defects(tmp_path):
    _write(tmp_path / "items.csv", "item_id,title\n1,one\n")
    pd.DataFrame({"item_id": ["1"], "title": ["one"]}).to_parquet(tmp_path / "items.parquet")
    defects = _tables(tmp_path).defects
    assert [(d.where, d.field, d.got) for d in defects] == [
        ("items", "(file)", "both"),
        ("interactions.csv", "(file)", "none"),
    ]
    assert not folder.is_folder_scene(tmp_path)


def test_bytes_that_are_not_utf8_are_a_defect_of_their_line(tmp_path):
    (tmp_path / "items.csv").write_bytes(b"item_id,title\n1,caf\xe9\n2,ok\n")
    _write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu,2,1\n")
    defects = _tables(tmp_path).defects
    assert [(d.where, d.row, d.expected) for d in defects] == [
        ("items.csv", "line 2", "UTF-8 text")
    ]


def test_a_mixed_timestamp_column_is_a_defect(tmp_path):
    _write(tmp_path / "items.csv", "item_id,title\n1,one\n")
    _write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu,1,5\nu,1,2024-01-01\n")
    (defect,) = _tables(tmp_path).defects
    assert (defect.row, defect.field) == ("line 3", "timestamp")
    assert "an integer >= 0, as the file's first timestamp (line 2)" in defect.expected


def test_the_defect_log_lists_a_bounded_number_per_kind():
    log = DefectLog(per_kind=3)
    table = TableFile(Path("interactions.csv"))
    log.add_rows(
        table, np.arange(2, 12), "item_id", "an item_id listed in the items file", ["x"] * 10
    )
    assert len(log) == 10
    defects = log.defects
    assert [d.row for d in defects] == ["line 2", "line 3", "line 4", ""]
    assert defects[-1].got == "7 more rows like the above"
