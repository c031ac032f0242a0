import pytest
from PIL import Image

from pmg_kedro.components.data.defects import IngestionError
from pmg_kedro.components.data.sources import pog
from pmg_kedro.components.data.validation import validate_scene


def _write_pog(folder, user_lines, item_lines, outfit_lines, image_ids):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "user_data.txt").write_text("\n".join(user_lines) + "\n")
    (folder / "item_data.txt").write_text("\n".join(item_lines) + "\n")
    (folder / "outfit_data.txt").write_text("\n".join(outfit_lines) + "\n")
    (folder / "images").mkdir(exist_ok=True)
    for item_id in image_ids:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / "images" / f"{item_id}.png")
    return str(folder)


def _tables(folder):
    return pog.build_tables(pog.read_files(folder), pog.find_images(folder), folder)


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
        ["o1,i1;i2", "o2,i3;i9"],
        ["i1", "i2", "i3"],
    )
    assert pog.is_present(folder)
    tables = _tables(folder)
    assert tables.defects == []
    assert tables.items["title"].tolist() == [
        "red silk dress",
        "denim jacket, washed",
        "white sneakers",
    ]
    assert tables.items["pic_url"].tolist() == ["http://x/1.jpg", "http://x/2.jpg", ""]
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
        "outfit_items_not_in_item_data": 1,  # i9
        "image_files_without_item": 0,
    }
    index = tables.image_index
    assert dict(zip(index["item_id"], index["image_path"], strict=True)) == {
        i: f"{folder}/images/{i}.png" for i in ("i1", "i2", "i3")
    }
    items, interactions, image_index, users = validate_scene(tables)
    assert users.set_index("user_id")["n_clicks"].to_dict() == {"u1": 3, "u2": 2}


def test_malformed_folder_gives_one_error_listing_every_defect(tmp_path):
    """Eight defects of six kinds in two files and the images folder: all in one error, grouped
    by file and in line order, the summary first."""
    folder = tmp_path / "pog"
    _write_pog(
        folder,
        [
            "u1,i1;i2,o1",
            "u2,i1;;i2,o2",  # 2: an empty id between ';'
            "u3,i1",  # 3: two fields instead of three
            "u4,i2;i7;i8,o4",  # 4: clicks on items that item_data.txt does not list
        ],
        [*ITEMS, "i1,c9,,copy", "i4,c3,,"],  # 4: repeated id, 5: empty title
        ["o1,i1"],
        ["i1", "i2"],  # i3 has no image
    )
    (folder / "images" / "i2.png").write_text("not a png")  # does not decode
    (folder / "images" / "i1.jpg").write_bytes(b"")  # a second image for i1

    with pytest.raises(IngestionError) as caught:
        validate_scene(_tables(str(folder)))
    lines = str(caught.value).splitlines()
    images = "images/i{}.<jpg|jpeg|png|webp>"
    assert lines[:8] == [
        f"8 defects in POG files in {folder} (user_data.txt: 3, item_data.txt: 4, "
        "image_index: 1); the first 8 follow.",
        "  user_data.txt line 2, field 'item_ids': expected item ids separated by ';', "
        "got 'i1;;i2'",
        "  user_data.txt line 3, field '(line)': expected 3 comma-separated fields "
        "(user_id, item_ids, outfit_id), got 2: 'u3,i1'",
        "  user_data.txt line 4, field 'item_ids': expected ids listed in item_data.txt, "
        "got 'i7', 'i8'",
        f"  item_data.txt line 1, field 'item_id': expected one image file {images.format(1)}, "
        f"got 2: {folder}/images/i1.jpg, {folder}/images/i1.png",
        f"  item_data.txt line 3, field 'item_id': expected one image file {images.format(3)}, "
        "got 0: none",
        "  item_data.txt line 4, field 'item_id': expected an id not used on an earlier line, "
        "got 'i1' (first on line 1)",
        "  item_data.txt line 5, field 'title': expected a value, got ''",
    ]
    assert lines[8].startswith(
        f"  image_index row 0 (item i2: {folder}/images/i2.png), field 'image_path': expected a readable "
        "image file (decoded with PIL), got UnidentifiedImageError"
    )
    assert len(lines) == 9 and len(caught.value.defects) == 8


def test_a_user_on_several_lines_keeps_the_file_order(tmp_path):
    folder = _write_pog(
        tmp_path / "pog",
        ["u1,i1;i2,o1", "u2,i3,o2", "u1,i3;i1,o3"],
        ITEMS,
        ["o1,i1"],
        ["i1", "i2", "i3"],
    )
    clicks = _tables(folder).interactions
    u1 = clicks[clicks["user_id"] == "u1"]
    assert u1["item_id"].tolist() == ["i1", "i2", "i3", "i1"]
    assert u1["timestamp"].tolist() == [0, 1, 2, 3]
    assert u1["outfit_id"].tolist() == ["o1", "o1", "o3", "o3"]


def test_lines_that_are_not_utf8_are_defects_not_crashes(tmp_path):
    folder = tmp_path / "pog"
    _write_pog(folder, ["u1,i1,o1"], ITEMS, ["o1,i1"], ["i1", "i2", "i3"])
    with (folder / "item_data.txt").open("ab") as fh:
        fh.write("i5,c1,,caf\u00e9\n".encode("latin-1"))
    tables = _tables(str(folder))
    assert [(d.where, d.row, d.expected) for d in tables.defects] == [
        ("item_data.txt", "line 4", "UTF-8 text")
    ]
    assert tables.items["item_id"].tolist() == ["i1", "i2", "i3"]


def test_empty_files_are_defects(tmp_path):
    folder = _write_pog(tmp_path / "pog", [""], [""], [""], [])
    with pytest.raises(IngestionError) as caught:
        validate_scene(_tables(folder))
    assert [(d.where, d.got) for d in caught.value.defects] == [
        ("user_data.txt", "an empty file"),
        ("item_data.txt", "an empty file"),
    ]


def test_absent_folder_is_not_present(tmp_path):
    assert not pog.is_present(str(tmp_path / "nothing"))
