"""POG (Alibaba iFashion, Chen et al. KDD 2019) files placed by the user in data/01_raw/costume/pog/.

Three files (UTF-8, comma-separated, ids separated by ';'):
  user_data.txt    user_id,item_id;item_id;...,outfit_id   (clicks in order)
  item_data.txt    item_id,cate_id,pic_url,title           (title may contain commas; pic_url may be empty)
  outfit_data.txt  outfit_id,item_id;item_id;...
Images are `images/<item_id>.<ext>` beside them (the pic_url addresses cannot be fetched here).
POG items have no attributes beyond the category id and the title (paper §4.1.1).

Reading never stops at a bad line: each one becomes a `Defect` (file, line, field, what was
expected) and the line is left out; `validation.validate_scene` raises them all in one error.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pmg_kedro.components.data.defects import Defect
from pmg_kedro.components.data.images import STANDALONE
from pmg_kedro.components.data.sources import IMAGE_SUFFIXES, SceneTables, image_files

FILES = ("user_data.txt", "item_data.txt", "outfit_data.txt")
FIELDS = {
    "user_data.txt": ("user_id", "item_ids", "outfit_id"),
    "item_data.txt": ("item_id", "cate_id", "pic_url", "title"),
    "outfit_data.txt": ("outfit_id", "item_ids"),
}
OPTIONAL_FIELDS = {"pic_url"}  # the images are local files; the address is kept when given


def is_present(folder: str | None) -> bool:
    """True when all three POG files are in `folder`."""
    return bool(folder) and all((Path(folder) / f).is_file() for f in FILES)


def _rows(root: Path, name: str, defects: list[Defect]):
    """(line number, fields) of every usable line of `name`; defects for the others."""
    fields = FIELDS[name]
    n_lines = 0
    for number, raw in enumerate((root / name).read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            defects.append(Defect(name, f"line {number}", "(line)", "UTF-8 text", str(err)))
            continue
        if not line.strip():
            continue
        n_lines += 1
        # the last field takes the rest of the line: a title may contain commas
        parts = [p.strip() for p in line.split(",", len(fields) - 1)]
        if len(parts) != len(fields):
            defects.append(
                Defect(
                    name,
                    f"line {number}",
                    "(line)",
                    f"{len(fields)} comma-separated fields ({', '.join(fields)})",
                    f"{len(parts)}: {line[:80]!r}",
                )
            )
            continue
        empty = [
            f for f, v in zip(fields, parts, strict=True) if not v and f not in OPTIONAL_FIELDS
        ]
        bad_ids = [
            (f, v)
            for f, v in zip(fields, parts, strict=True)
            if f == "item_ids" and v and any(not i.strip() for i in v.split(";"))
        ]
        defects += [Defect(name, f"line {number}", f, "a value", "''") for f in empty]
        defects += [
            Defect(name, f"line {number}", f, "item ids separated by ';'", repr(v))
            for f, v in bad_ids
        ]
        if not empty and not bad_ids:
            yield number, parts
    if not n_lines and name != "outfit_data.txt":
        defects.append(Defect(name, "", "(file)", "at least one line", "an empty file"))


def _ids(value: str) -> list[str]:
    return [i.strip() for i in value.split(";")]


def read_files(folder: str) -> dict:
    """Parse the three files: clicks, items and outfits tables (with their line numbers) and
    `defects`, the lines that could not be used (file, line, field, what was expected)."""
    root = Path(folder)
    defects: list[Defect] = []
    clicks = [
        (user_id, item_id, outfit_id, number)
        for number, (user_id, item_ids, outfit_id) in _rows(root, "user_data.txt", defects)
        for item_id in _ids(item_ids)
    ]
    items = [(*parts, number) for number, parts in _rows(root, "item_data.txt", defects)]
    outfits = [
        (outfit_id, _ids(item_ids))
        for _, (outfit_id, item_ids) in _rows(root, "outfit_data.txt", defects)
    ]
    # typed even when a file has no usable line, so an empty file is one defect, not a dtype each
    return {
        "clicks": pd.DataFrame(clicks, columns=["user_id", "item_id", "outfit_id", "line"]).astype(
            {"user_id": str, "item_id": str, "outfit_id": str}
        ),
        "items": pd.DataFrame(
            items, columns=["item_id", "cate_id", "pic_url", "title", "line"]
        ).astype({"item_id": str, "cate_id": str, "pic_url": str, "title": str}),
        "outfits": pd.DataFrame(outfits, columns=["outfit_id", "item_ids"]),
        "defects": defects,
    }


def find_images(folder: str) -> dict[str, list[str]]:
    """`images/<item_id>.<ext>` files keyed by item_id (see `sources.image_files`)."""
    return image_files(Path(folder) / "images")


def build_tables(raw: dict, images: dict[str, list[str]], folder: str) -> SceneTables:
    """POG clicks, items and image index (`raw` from `read_files`, `images` from `find_images`).

    Besides the reader's defects, records: a repeated item id, a click on an id not in
    item_data.txt, an item without exactly one image file. Those rows are left out of the tables
    (their defects make `validation.validate_scene` raise).
    """
    items, item_defects = _unique_items(raw["items"])
    clicks, click_defects = _known_clicks(raw["clicks"], items)
    interactions = pd.DataFrame(
        {
            "user_id": clicks["user_id"],
            "item_id": clicks["item_id"],
            # POG has no click times: the order of a user's clicks in the file (lines, then
            # positions in a line) is the order of clicks
            "timestamp": clicks.groupby("user_id").cumcount().astype("int64"),
            "outfit_id": clicks["outfit_id"],
            "simulated": False,
        }
    ).reset_index(drop=True)
    users = interactions.groupby("user_id").size().rename("n_clicks").reset_index()
    users["simulated"] = False
    image_index, image_defects = _image_index(items, images)
    items = items.drop(columns="line")
    items["caption"] = items["title"]
    outfit_items = {i for ids in raw["outfits"]["item_ids"] for i in ids}
    counts = {
        "pog_click_lines": int(clicks["line"].nunique()),
        "clicks": len(interactions),
        "users": len(users),
        "items": len(items),
        "outfits": len(raw["outfits"]),
        # outfits are read for their count only: items of other outfits need not be listed
        "outfit_items_not_in_item_data": len(outfit_items - set(items["item_id"])),
        "image_files_without_item": len(set(images) - set(items["item_id"])),
    }
    defects = [*raw["defects"], *item_defects, *click_defects, *image_defects]
    return SceneTables(
        items, interactions, image_index, users, f"POG files in {folder}", counts, defects=defects
    )


def _unique_items(items_raw: pd.DataFrame) -> tuple[pd.DataFrame, list[Defect]]:
    """Each item id once (its first line), and a defect per repeated one."""
    first_line = items_raw.drop_duplicates("item_id").set_index("item_id")["line"]
    repeated = items_raw[items_raw["item_id"].duplicated()]
    defects = [
        Defect(
            "item_data.txt",
            f"line {n}",
            "item_id",
            "an id not used on an earlier line",
            f"{i!r} (first on line {first_line[i]})",
        )
        for i, n in zip(repeated["item_id"], repeated["line"], strict=True)
    ]
    return items_raw.drop_duplicates("item_id").reset_index(drop=True), defects


def _known_clicks(clicks: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, list[Defect]]:
    """The clicks on items of item_data.txt, and a defect per line with other ids."""
    unknown = ~clicks["item_id"].isin(set(items["item_id"]))
    defects = [
        Defect(
            "user_data.txt",
            f"line {number}",
            "item_ids",
            "ids listed in item_data.txt",
            ", ".join(repr(i) for i in ids),
        )
        for number, ids in clicks[unknown].groupby("line", sort=True)["item_id"]
    ]
    return clicks[~unknown], defects


def _image_index(
    items: pd.DataFrame, images: dict[str, list[str]]
) -> tuple[pd.DataFrame, list[Defect]]:
    """The image index of the items with exactly one image file, and a defect per other item."""
    n_images = items["item_id"].map(lambda i: len(images.get(i, [])))
    defects = [
        Defect(
            "item_data.txt",
            f"line {number}",
            "item_id",
            f"one image file images/{item_id}.<{'|'.join(s[1:] for s in IMAGE_SUFFIXES)}>",
            f"{n}: {', '.join(images.get(item_id, [])) or 'none'}",
        )
        for item_id, number, n in zip(items["item_id"], items["line"], n_images, strict=True)
        if n != 1
    ]
    with_image = items[n_images == 1]
    image_index = pd.DataFrame(
        {
            "item_id": with_image["item_id"],
            "image_path": with_image["item_id"].map(lambda i: images[i][0]),
            "image_offset": STANDALONE,
        }
    ).reset_index(drop=True)
    return image_index, defects
