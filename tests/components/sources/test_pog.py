import pytest
from PIL import Image

from pmg_kedro.components.sources import pog


def _write_pog(folder, user_lines, item_lines, outfit_lines, image_ids):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "user_data.txt").write_text("\n".join(user_lines) + "\n")
    (folder / "item_data.txt").write_text("\n".join(item_lines) + "\n")
    (folder / "outfit_data.txt").write_text("\n".join(outfit_lines) + "\n")
    (folder / "images").mkdir(exist_ok=True)
    for item_id in image_ids:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / "images" / f"{item_id}.png")
    return str(folder)


ITEMS = [
    "i1,c1,http://x/1.jpg,red silk dress",
    "i2,c2,http://x/2.jpg,denim jacket, washed",
    "i3,c1,,white sneakers",
]


def test_tiny_pog_folder_becomes_scene_tables(tmp_path):
    folder = _write_pog(
        tmp_path / "pog",
        ["u1,i1;i2;i3,o1", "u2,i3;i1,o2"],
        ITEMS,
        ["o1,i1;i2", "o2,i3"],
        ["i1", "i2", "i3"],
    )
    assert pog.is_present(folder)
    tables = pog.build_tables(pog.read_files(folder), pog.find_images(folder), folder)
    assert tables.items["title"].tolist() == [
        "red silk dress",
        "denim jacket, washed",
        "white sneakers",
    ]
    u1 = tables.interactions[tables.interactions["user_id"] == "u1"]
    assert u1["item_id"].tolist() == ["i1", "i2", "i3"]
    assert u1["timestamp"].tolist() == [0, 1, 2]
    assert not tables.interactions["simulated"].any()
    assert tables.counts == {
        "pog_click_lines": 2,
        "clicks": 5,
        "users": 2,
        "items": 3,
        "outfits": 2,
    }
    assert set(tables.image_index["image_path"].map(lambda p: p.rsplit("/", 1)[-1])) == {
        "i1.png",
        "i2.png",
        "i3.png",
    }


def test_malformed_line_names_file_line_and_field(tmp_path):
    folder = _write_pog(tmp_path / "pog", ["u1,i1;i2,o1", "u2,i1;;i2,o2"], ITEMS, ["o1,i1"], [])
    with pytest.raises(pog.POGFormatError, match=r"user_data.txt:2 field 'item_ids'"):
        pog.read_files(folder)


def test_missing_field_names_file_and_line(tmp_path):
    folder = _write_pog(tmp_path / "pog", ["u1,i1"], ITEMS, ["o1,i1"], [])
    with pytest.raises(pog.POGFormatError, match=r"user_data.txt:1: expected 3 comma-separated"):
        pog.read_files(folder)


def test_duplicated_item_ids_are_reported(tmp_path):
    folder = _write_pog(
        tmp_path / "pog", ["u1,i1,o1"], [*ITEMS, "i1,c9,,copy"], ["o1,i1"], ["i1", "i2", "i3"]
    )
    with pytest.raises(pog.POGFormatError, match=r"duplicated ids at line 1 \('i1'\), line 4"):
        pog.build_tables(pog.read_files(folder), pog.find_images(folder), folder)


def test_missing_images_are_listed(tmp_path):
    folder = _write_pog(tmp_path / "pog", ["u1,i1;i2,o1"], ITEMS, ["o1,i1"], ["i1"])
    with pytest.raises(pog.POGFormatError, match=r"2 items .* images/i2\.\*, images/i3\.\*"):
        pog.build_tables(pog.read_files(folder), pog.find_images(folder), folder)


def test_absent_folder_is_not_present(tmp_path):
    assert not pog.is_present(str(tmp_path / "nothing"))
