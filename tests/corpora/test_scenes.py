import hashlib
import io
import math
import random
import re

import numpy as np
import pytest

from xasr.corpora.scenes import (COLOURS, KEYWORD_KINDS, NUMBER_WORDS, SHAPES, TEMPLATES, Scene, check_claims,
                              describe, describe_scene, render_scene, sample_scene)

SIZE_WORDS = ("SMALL", "LARGE")
PLURALS = ("CIRCLES", "SQUARES", "TRIANGLES", "STARS", "DIAMONDS", "CROSSES")


def _scenes(seed: int, n: int):
    rng = random.Random(seed)
    return [sample_scene(f"s{i}", rng) for i in range(n)], rng


def _png(scene) -> bytes:
    buf = io.BytesIO()
    render_scene(scene).save(buf, format="PNG")
    return buf.getvalue()


# --- an independent reading of the scene JSON, from coordinates only -------------------------

def _third(v: float, extent: int, low: str, high: str) -> str:
    return low if v < extent / 3 else (high if v >= 2 * extent / 3 else "MIDDLE")


def _objects_matching(scene: dict, flt: dict):
    out = []
    for o in scene["objects"]:
        if any(o[k] != v for k, v in flt.items() if k != "place"):
            continue
        if "place" in flt and not _at(scene, o, flt["place"]):
            continue
        out.append(o)
    return out


def _at(scene: dict, o: dict, place: str) -> bool:
    col = _third(o["centre"][0], scene["width"], "LEFT", "RIGHT")
    row = _third(o["centre"][1], scene["height"], "TOP", "BOTTOM")
    if place == "MIDDLE":
        return row == col == "MIDDLE"
    if place in ("LEFT", "RIGHT"):
        return col == place
    if place in ("TOP", "BOTTOM"):
        return row == place
    v, h = place.split()
    return row == v and col == h


def _holds(rel: str, a: dict, b: dict) -> bool:
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a["bbox"], b["bbox"]
    return {
        "ABOVE": ay1 < by0, "BELOW": ay0 > by1, "LEFT_OF": ax1 < bx0, "RIGHT_OF": ax0 > bx1,
        "BIGGER": a["radius"] > 1.5 * b["radius"], "SMALLER": b["radius"] > 1.5 * a["radius"],
        "SAME_SIZE": a["size"] == b["size"], "SAME_COLOUR": a["colour"] == b["colour"],
    }[rel]


def independent_check(scene: dict, claims) -> None:
    def one(ref):
        objs = _objects_matching(scene, ref)
        assert len(objs) == 1, f"{ref} names {len(objs)} objects"
        return objs[0]

    for c in claims:
        if c["type"] == "exists":
            one(c["ref"])
        elif c["type"] == "at":
            assert _at(scene, one(c["ref"]), c["place"]), c
        elif c["type"] == "relation":
            assert _holds(c["relation"], one(c["a"]), one(c["b"])), c
        elif c["type"] == "between":
            a, b, cc = one(c["a"]), one(c["b"]), one(c["c"])
            assert (_holds("LEFT_OF", b, a) and _holds("LEFT_OF", a, cc)) or \
                   (_holds("LEFT_OF", cc, a) and _holds("LEFT_OF", a, b)), c
        elif c["type"] == "count":
            assert len(_objects_matching(scene, c["filter"])) == c["n"], c
        else:
            raise AssertionError(f"unknown claim {c}")


NOUN_PHRASE = re.compile(r"\b(?:(SMALL|LARGE) )?(%s) (%s)\b" % ("|".join(COLOURS), "|".join(SHAPES)))


def text_check(scene: dict, text: str) -> None:
    """Every '[size] colour shape' phrase in the transcript names an object of the picture."""
    for m in NOUN_PHRASE.finditer(text):
        flt = {"colour": m.group(2), "shape": m.group(3)}
        if m.group(1):
            flt["size"] = m.group(1)
        assert _objects_matching(scene, flt), f"{text!r}: no {m.group(0)} in the picture"


# ---------------------------------------------------------------------------------------------

def test_same_seed_same_scenes_pictures_and_sentences():
    def build(seed):
        scenes, rng = _scenes(seed, 12)
        texts = [d.text for s in scenes for d in describe_scene(s, rng, 2)]
        return [s.to_dict() for s in scenes], [hashlib.sha256(_png(s)).hexdigest() for s in scenes], texts

    a, b, c = build(3), build(3), build(4)
    assert a == b
    assert a[1] != c[1] and a[2] != c[2]


def test_pictures_show_the_objects_where_the_json_says():
    scenes, _ = _scenes(0, 40)
    for s in scenes:
        img = render_scene(s)
        assert img.mode == "RGB" and img.size == (224, 224)
        px = np.asarray(img).astype(int)
        assert 2 <= len(s.objects) <= 4
        assert len({(o.colour, o.shape) for o in s.objects}) == len(s.objects)
        for o in s.objects:
            x, y = o.centre
            assert np.abs(px[int(round(y)), int(round(x))] - np.array(o.rgb)).max() <= 3, (s.id, o)
            x0, y0, x1, y1 = o.bbox
            assert 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224
            # the words come from the rendered centre
            assert o.column == _third(x, 224, "LEFT", "RIGHT") and o.row == _third(y, 224, "TOP", "BOTTOM")
            r_small, r_large = 15.0, 27.0
            assert (o.size == "SMALL" and o.radius <= r_small) or (o.size == "LARGE" and o.radius >= r_large)
        # objects never overlap: their extents are disjoint
        for i, a in enumerate(s.objects):
            for b in s.objects[i + 1:]:
                assert a.bbox[2] < b.bbox[0] or b.bbox[2] < a.bbox[0] or a.bbox[3] < b.bbox[1] or b.bbox[3] < a.bbox[1]
        # the background is neutral grey
        assert max(s.background) - min(s.background) <= 12


def test_scene_json_round_trip():
    scenes, _ = _scenes(1, 5)
    for s in scenes:
        again = Scene.from_dict(s.to_dict())
        assert again.to_dict() == s.to_dict() and again.signature() == s.signature()


def test_every_sentence_is_true_of_its_picture():
    scenes, rng = _scenes(7, 300)
    used = set()
    for s in scenes:
        sd = s.to_dict()
        for d in describe_scene(s, rng, 3):
            used.add(d.template)
            assert check_claims(s, d.claims) == []
            assert d.claims, d.template
            independent_check(sd, d.claims)
            text_check(sd, d.text)
            words = d.text.split()
            # what the claims say is in the words
            for c in d.claims:
                if c["type"] == "at":
                    assert " ".join(w for w in words if w in ("TOP", "BOTTOM", "LEFT", "RIGHT", "MIDDLE")).find(
                        c["place"]) >= 0, (d.text, c)
                if c["type"] == "relation" and c["relation"] in ("ABOVE", "BELOW", "BIGGER", "SMALLER"):
                    assert c["relation"] in words, (d.text, c)
                if c["type"] == "count" and c["n"] >= 2:
                    assert NUMBER_WORDS[c["n"]] in words or (c["n"] == 2 and "BOTH" in words), (d.text, c)
    assert len(used) >= 20, sorted(used)


def test_transcripts_keywords_and_spoken_text_agree():
    scenes, rng = _scenes(2, 150)
    for s in scenes:
        for d in describe_scene(s, rng, 2):
            assert re.fullmatch(r"[A-Z]+( [A-Z]+)*", d.text), d.text
            words = d.text.split()
            spoken = re.sub(r"[^a-z ]", "", d.spoken.lower()).split()
            assert spoken == [w.lower() for w in words]
            assert d.keywords, d.text
            for i, w, kind in d.keywords:
                assert words[i] == w and kind in KEYWORD_KINDS
                if kind == "colour":
                    assert w in COLOURS
                if kind == "shape":
                    assert w in SHAPES or w in PLURALS
                if kind == "size":
                    assert w in SIZE_WORDS
            # every colour and shape word of the sentence is marked as a keyword
            marked = {i for i, _, _ in d.keywords}
            for i, w in enumerate(words):
                if w in COLOURS or w in SHAPES:
                    assert i in marked, (d.text, w)


def test_templates_vary_and_words_are_not_given_away_by_the_frame():
    scenes, rng = _scenes(11, 400)
    names = set()
    colour_after_frame = {}
    for s in scenes:
        for d in describe_scene(s, rng, 2):
            names.add(d.template)
            for i, w, kind in d.keywords:
                if kind == "colour":
                    frame = " ".join(d.text.split()[:i])
                    colour_after_frame.setdefault((d.template, frame), set()).add(w)
    assert len(TEMPLATES) >= 15 and len(names) >= 20
    # sentence beginnings that recur are followed by several different colours
    frequent = [v for k, v in colour_after_frame.items() if k[1] in ("THERE IS A", "WHERE IS THE", "THE")]
    assert frequent and all(len(v) >= 4 for v in frequent)


def test_template_that_does_not_fit_returns_none():
    rng = random.Random(0)
    while True:
        s = sample_scene("x", rng)
        if len(s.objects) == 2 and s.objects[0].size != s.objects[1].size:
            break
    assert describe(s, "all_same_size", rng) is None
    assert describe(s, "between", rng) is None  # needs three objects in three columns


def test_false_claims_are_caught():
    s, _ = _scenes(5, 1)
    s = s[0]
    o = s.objects[0]
    absent = next(c for c in COLOURS if all(x.colour != c for x in s.objects))
    assert check_claims(s, [{"type": "exists", "ref": {"colour": absent, "shape": o.shape}}])
    wrong = "RIGHT" if o.column != "RIGHT" else "LEFT"
    assert check_claims(s, [{"type": "at", "ref": {"colour": o.colour, "shape": o.shape}, "place": wrong}])
    assert check_claims(s, [{"type": "count", "filter": {}, "n": len(s.objects) + 1}])
    assert math.isclose(len(check_claims(s, [{"type": "count", "filter": {}, "n": len(s.objects)}])), 0)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_each_template_can_speak(template):
    rng = random.Random(template)
    for i in range(300):
        s = sample_scene(f"t{i}", rng)
        d = describe(s, template, rng)
        if d is not None:
            assert d.template == template and check_claims(s, d.claims) == []
            independent_check(s.to_dict(), d.claims)
            return
    pytest.fail(f"template {template} fitted none of 300 scenes")
