"""Targets of the image-path fit in recipes/multimodal/local/align_image.py."""
import importlib.util
from pathlib import Path

import pytest

from xasr.corpora.scenes import Scene, SceneObject

SCRIPT = Path(__file__).resolve().parents[2] / "recipes/multimodal/local/align_image.py"


@pytest.fixture(scope="module")
def align_image():
    spec = importlib.util.spec_from_file_location("align_image", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _scene():
    objs = [SceneObject("RED", "CIRCLE", "SMALL", (190.0, 30.0), 10.0, 0.0, (215, 35, 35), row="TOP", column="RIGHT"),
            SceneObject("BLUE", "STAR", "LARGE", (110.0, 112.0), 20.0, 0.0, (35, 75, 215), row="MIDDLE", column="MIDDLE"),
            SceneObject("GREEN", "SQUARE", "LARGE", (30.0, 200.0), 20.0, 0.0, (35, 155, 50), row="BOTTOM", column="LEFT")]
    return Scene("s", 224, 224, (128, 128, 128), objs)


def test_cells_layout_gives_each_cell_its_object_words_and_place(align_image):
    slots = align_image.scene_words(_scene(), 36, "cells")
    assert len(slots) == 36
    cell = lambda k: slots[4 * k:4 * k + 4]  # noqa: E731 (row-major cells, four slots each)
    assert cell(2) == [("colour", "RED"), ("shape", "CIRCLE"), ("size", "SMALL"), ("place", "TOP RIGHT")]
    assert cell(4) == [("colour", "BLUE"), ("shape", "STAR"), ("size", "LARGE"), ("place", "MIDDLE")]
    assert cell(6) == [("colour", "GREEN"), ("shape", "SQUARE"), ("size", "LARGE"), ("place", "BOTTOM LEFT")]
    # an empty cell: empty words (zero targets) but its place
    assert cell(0) == [("colour", ""), ("shape", ""), ("size", ""), ("place", "TOP LEFT")]
    assert [w for kind, w in slots if kind == "place"] == align_image.PLACE_OF_CELL
    with pytest.raises(ValueError, match="36 queries"):
        align_image.scene_words(_scene(), 16, "cells")


def test_objects_layout_reads_the_objects_in_reading_order(align_image):
    slots = align_image.scene_words(_scene(), 16, "objects")
    assert [w for kind, w in slots if kind == "colour"] == ["RED", "BLUE", "GREEN", "RED"]
    assert slots[3] == ("place", "TOP RIGHT")
