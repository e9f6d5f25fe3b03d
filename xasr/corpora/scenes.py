"""Pictures of simple scenes and English sentences about them, for speech-with-image corpora.

In: a scene id and a ``random.Random`` (everything is decided by it: same seed, same scene,
same picture bytes, same sentences).
Out:
  * :func:`sample_scene` -> :class:`Scene`: 2-4 objects on a neutral grey background, each with
    a colour (8), a shape (6), a size class (SMALL / LARGE) and its rendered geometry (centre,
    radius, rotation, bounding box). Objects sit in distinct cells of a 3 x 3 grid with jitter,
    and each object's ``row`` / ``column`` words are derived from its rendered centre
    (thirds of the picture), never from the grid cell it was meant for.
  * :func:`render_scene` -> a 224 x 224 RGB ``PIL.Image`` (drawn at 4x and averaged down, so
    the edges are smooth).
  * :func:`describe_scene` -> :class:`Description`\\ s: an upper-case LibriSpeech-style
    transcript, the text handed to the TTS engine (mixed case, punctuation for prosody), the
    template it came from, the facts it states (JSON-able claims, checked by
    :func:`check_claims` against the scene) and the words only the picture can decide
    (``keywords``: colour, shape, size, position, relation and count words, with their word
    index in the transcript).

Every sentence is true of its picture. Colour + shape is unique within a scene, so "THE RED
CIRCLE" always names exactly one object. The templates draw the objects they talk about at
random, so the sentence frame does not give away the colour, shape, size or position words.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "RED": (215, 35, 35),
    "GREEN": (35, 155, 50),
    "BLUE": (35, 75, 215),
    "YELLOW": (240, 215, 30),
    "PURPLE": (135, 45, 165),
    "ORANGE": (245, 135, 20),
    "BLACK": (20, 20, 20),
    "WHITE": (245, 245, 245),
}
SHAPES = ("CIRCLE", "SQUARE", "TRIANGLE", "STAR", "DIAMOND", "CROSS")
SIZES = ("SMALL", "LARGE")
NUMBER_WORDS = {1: "ONE", 2: "TWO", 3: "THREE", 4: "FOUR"}
PLACES = ("LEFT", "RIGHT", "TOP", "BOTTOM", "MIDDLE", "TOP LEFT", "TOP RIGHT", "BOTTOM LEFT",
          "BOTTOM RIGHT")
RELATIONS = ("ABOVE", "BELOW", "LEFT_OF", "RIGHT_OF", "BIGGER", "SMALLER", "SAME_SIZE", "SAME_COLOUR")
# Kinds of words that the picture decides (the rest is sentence frame).
KEYWORD_KINDS = ("colour", "shape", "size", "position", "relation", "count")

IMAGE_SIZE = 224
MIN_OBJECTS, MAX_OBJECTS = 2, 4
# Radius (circumradius, pixels in a 224-px picture; scaled with the picture) of each size class:
# far apart so that "bigger" is plain to see.
RADIUS = {"SMALL": (11.0, 15.0), "LARGE": (27.0, 33.0)}
SUPERSAMPLE = 4


def plural(shape: str) -> str:
    return shape + ("ES" if shape.endswith("SS") else "S")


def column_word(x: float, width: int) -> str:
    """LEFT / MIDDLE / RIGHT third of the picture that holds x."""
    return "LEFT" if x < width / 3 else ("RIGHT" if x >= 2 * width / 3 else "MIDDLE")


def row_word(y: float, height: int) -> str:
    """TOP / MIDDLE / BOTTOM third of the picture that holds y (y grows downwards)."""
    return "TOP" if y < height / 3 else ("BOTTOM" if y >= 2 * height / 3 else "MIDDLE")


# ---------------------------------------------------------------------------------------------
# Scenes

@dataclass
class SceneObject:
    colour: str  # a key of COLOURS
    shape: str  # one of SHAPES
    size: str  # SMALL | LARGE
    centre: Tuple[float, float]  # pixels, x to the right, y downwards
    radius: float  # circumradius in pixels
    rotation: float  # degrees, counter-clockwise
    rgb: Tuple[int, int, int]  # the jittered fill colour
    bbox: Tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # rendered extent x0, y0, x1, y1
    row: str = ""  # TOP | MIDDLE | BOTTOM, from the rendered centre
    column: str = ""  # LEFT | MIDDLE | RIGHT, from the rendered centre


@dataclass
class Scene:
    id: str
    width: int
    height: int
    background: Tuple[int, int, int]
    objects: List[SceneObject] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        for o in d["objects"]:
            o["centre"] = [round(v, 2) for v in o["centre"]]
            o["bbox"] = [round(v, 2) for v in o["bbox"]]
            o["radius"] = round(o["radius"], 2)
            o["rotation"] = round(o["rotation"], 2)
            o["rgb"] = list(o["rgb"])
        d["background"] = list(d["background"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        objs = [SceneObject(**{**o, "centre": tuple(o["centre"]), "rgb": tuple(o["rgb"]),
                               "bbox": tuple(o["bbox"])}) for o in d["objects"]]
        return cls(d["id"], d["width"], d["height"], tuple(d["background"]), objs)

    def signature(self) -> Tuple:
        """What a listener could tell apart: objects as (colour, shape, size, row, column)."""
        return tuple(sorted((o.colour, o.shape, o.size, o.row, o.column) for o in self.objects))


def shape_outline(shape: str, cx: float, cy: float, r: float, rotation: float) -> List[Tuple[float, float]]:
    """Polygon vertices of a shape (a circle is approximated by 72 points)."""
    if shape == "CIRCLE":
        pts = [(r * math.cos(2 * math.pi * k / 72), r * math.sin(2 * math.pi * k / 72)) for k in range(72)]
    elif shape == "SQUARE":
        h = r / math.sqrt(2)
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "DIAMOND":
        pts = [(0.0, -r), (0.62 * r, 0.0), (0.0, r), (-0.62 * r, 0.0)]
    elif shape == "TRIANGLE":
        pts = [(r * math.cos(math.radians(a)), -r * math.sin(math.radians(a))) for a in (90, 210, 330)]
    elif shape == "STAR":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else 0.45 * r
            a = math.radians(90 + 36 * k)
            pts.append((rr * math.cos(a), -rr * math.sin(a)))
    elif shape == "CROSS":
        w = 0.34 * r
        pts = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w),
               (-r, -w), (-w, -w)]
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    # counter-clockwise on screen (y down): x' = x c + y s, y' = -x s + y c
    return [(cx + x * c + y * s, cy - x * s + y * c) for x, y in pts]


def sample_scene(scene_id: str, rng: random.Random, size: int = IMAGE_SIZE) -> Scene:
    """2-4 objects, distinct (colour, shape) pairs, in distinct cells of a 3 x 3 grid."""
    n = rng.randint(MIN_OBJECTS, MAX_OBJECTS)
    cells = rng.sample(range(9), n)
    pairs: List[Tuple[str, str]] = []
    while len(pairs) < n:
        p = (rng.choice(list(COLOURS)), rng.choice(SHAPES))
        if p not in pairs:
            pairs.append(p)
    grey = rng.randint(115, 165)
    background = tuple(min(255, max(0, grey + rng.randint(-6, 6))) for _ in range(3))
    cell = size / 3.0
    objects = []
    for (colour, shape), c in zip(pairs, cells):
        sz = rng.choice(SIZES)
        radius = rng.uniform(*RADIUS[sz]) * size / IMAGE_SIZE
        rotation = rng.uniform(-12.0, 12.0) if shape != "CIRCLE" else 0.0
        slack = max(0.0, cell / 2 - radius - 2.0)  # keep the whole shape inside its cell
        cx = (c % 3 + 0.5) * cell + rng.uniform(-slack, slack)
        cy = (c // 3 + 0.5) * cell + rng.uniform(-slack, slack)
        rgb = tuple(min(255, max(0, v + rng.randint(-14, 14))) for v in COLOURS[colour])
        pts = shape_outline(shape, cx, cy, radius, rotation)
        bbox = (min(p[0] for p in pts), min(p[1] for p in pts), max(p[0] for p in pts), max(p[1] for p in pts))
        objects.append(SceneObject(colour, shape, sz, (cx, cy), radius, rotation, rgb, bbox,
                                   row=row_word(cy, size), column=column_word(cx, size)))
    return Scene(scene_id, size, size, background, objects)


def render_scene(scene: Scene):
    """The scene as an RGB ``PIL.Image`` of scene.width x scene.height pixels."""
    from PIL import Image, ImageDraw

    k = SUPERSAMPLE
    img = Image.new("RGB", (scene.width * k, scene.height * k), tuple(scene.background))
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        cx, cy = o.centre
        if o.shape == "CIRCLE":
            draw.ellipse([(cx - o.radius) * k, (cy - o.radius) * k, (cx + o.radius) * k, (cy + o.radius) * k],
                         fill=tuple(o.rgb))
        else:
            pts = shape_outline(o.shape, cx * k, cy * k, o.radius * k, o.rotation)
            draw.polygon(pts, fill=tuple(o.rgb))
    return img.reduce(k)  # box-filter average of k x k pixels: smooth edges


# ---------------------------------------------------------------------------------------------
# Facts about a scene

def _ref(o: SceneObject, with_size: bool = False) -> dict:
    r = {"colour": o.colour, "shape": o.shape}
    if with_size:
        r["size"] = o.size
    return r


def matching(scene: Scene, flt: dict) -> List[SceneObject]:
    """Objects whose fields (colour, shape, size, place) all agree with the filter."""
    out = []
    for o in scene.objects:
        ok = all(getattr(o, k) == v for k, v in flt.items() if k in ("colour", "shape", "size"))
        if "place" in flt:
            ok = ok and at_place(o, flt["place"])
        if ok:
            out.append(o)
    return out


def at_place(o: SceneObject, place: str) -> bool:
    """Whether the object's rendered centre is in the named part of the picture."""
    if place == "MIDDLE":
        return o.row == "MIDDLE" and o.column == "MIDDLE"
    if place in ("LEFT", "RIGHT"):
        return o.column == place
    if place in ("TOP", "BOTTOM"):
        return o.row == place
    if place in PLACES:
        vertical, horizontal = place.split()
        return o.row == vertical and o.column == horizontal
    raise ValueError(f"unknown place {place!r}; known: {PLACES}")


def relation_holds(rel: str, a: SceneObject, b: SceneObject) -> bool:
    """Spatial relations compare rendered extents: A is ABOVE B when A ends before B starts."""
    if rel == "ABOVE":
        return a.bbox[3] < b.bbox[1]
    if rel == "BELOW":
        return a.bbox[1] > b.bbox[3]
    if rel == "LEFT_OF":
        return a.bbox[2] < b.bbox[0]
    if rel == "RIGHT_OF":
        return a.bbox[0] > b.bbox[2]
    if rel == "BIGGER":
        return a.size == "LARGE" and b.size == "SMALL" and a.radius > b.radius
    if rel == "SMALLER":
        return a.size == "SMALL" and b.size == "LARGE" and a.radius < b.radius
    if rel == "SAME_SIZE":
        return a.size == b.size
    if rel == "SAME_COLOUR":
        return a.colour == b.colour
    raise ValueError(f"unknown relation {rel!r}; known: {RELATIONS}")


def check_claims(scene: Scene, claims: Sequence[dict]) -> List[str]:
    """Problems with the claims as statements about the scene; [] when every claim is true.

    Claim types: ``exists`` (ref), ``at`` (ref, place), ``relation`` (relation, a, b),
    ``between`` (a, b, c: a lies horizontally between b and c), ``count`` (filter, n).
    Every ref must name exactly one object.
    """
    problems = []

    def one(ref: dict) -> Optional[SceneObject]:
        objs = matching(scene, ref)
        if len(objs) != 1:
            problems.append(f"{ref} names {len(objs)} objects, not one")
            return None
        return objs[0]

    for c in claims:
        t = c["type"]
        if t == "exists":
            one(c["ref"])
        elif t == "at":
            o = one(c["ref"])
            if o is not None and not at_place(o, c["place"]):
                problems.append(f"{c['ref']} is not at {c['place']} (row {o.row}, column {o.column})")
        elif t == "relation":
            a, b = one(c["a"]), one(c["b"])
            if a is not None and b is not None and not relation_holds(c["relation"], a, b):
                problems.append(f"{c['a']} is not {c['relation']} {c['b']}")
        elif t == "between":
            a, b, cc = one(c["a"]), one(c["b"]), one(c["c"])
            if None not in (a, b, cc) and not (
                    (relation_holds("LEFT_OF", b, a) and relation_holds("LEFT_OF", a, cc))
                    or (relation_holds("LEFT_OF", cc, a) and relation_holds("LEFT_OF", a, b))):
                problems.append(f"{c['a']} is not between {c['b']} and {c['c']}")
        elif t == "count":
            n = len(matching(scene, c["filter"]))
            if n != c["n"]:
                problems.append(f"{n} objects match {c['filter']}, not {c['n']}")
        else:
            problems.append(f"unknown claim type {t!r}")
    return problems


# ---------------------------------------------------------------------------------------------
# Sentences

@dataclass
class Description:
    template: str
    text: str  # upper-case transcript, words separated by single spaces
    spoken: str  # what the TTS engine reads (mixed case, punctuation)
    keywords: List[Tuple[int, str, str]]  # (word index in text, word, kind)
    claims: List[dict]


class _Builder:
    """Collects words (with the kind of the picture-decided ones), punctuation and claims."""

    def __init__(self) -> None:
        self.words: List[str] = []
        self.kinds: List[Optional[str]] = []
        self.marks: Dict[int, str] = {}  # punctuation after word index
        self.claims: List[dict] = []

    def say(self, text: str) -> "_Builder":
        for w in text.split():
            self.words.append(w)
            self.kinds.append(None)
        return self

    def key(self, word: str, kind: str) -> "_Builder":
        for w in word.split():
            self.words.append(w)
            self.kinds.append(kind)
        return self

    def stop(self, mark: str) -> "_Builder":
        self.marks[len(self.words) - 1] = mark
        return self

    def obj(self, o: SceneObject, article: str, with_size: bool) -> dict:
        """Say "[article] [size] colour shape"; the article A becomes AN before a vowel."""
        first = o.size if with_size else o.colour
        if article == "A" and first[0] in "AEIOU":
            article = "AN"
        if article:
            self.say(article)
        if with_size:
            self.key(o.size, "size")
        self.key(o.colour, "colour").key(o.shape, "shape")
        return _ref(o, with_size)

    def place(self, o: SceneObject, rng: random.Random) -> str:
        """Say a true place phrase for the object; returns the place."""
        options = []
        if o.column in ("LEFT", "RIGHT"):
            options.append(("ON THE", o.column, ""))
        if o.row in ("TOP", "BOTTOM"):
            options.append(("AT THE", o.row, ""))
        if o.row == o.column == "MIDDLE":
            options.append(("IN THE", "MIDDLE", ""))
        if o.row != "MIDDLE" and o.column != "MIDDLE":
            options.append(("IN THE", f"{o.row} {o.column}", "CORNER"))
        before, place, after = rng.choice(options)
        self.say(before).key(place, "position")
        if after:
            self.say(after)
        return place

    def number(self, n: int) -> None:
        self.key(NUMBER_WORDS[n], "count")

    def build(self, template: str) -> Description:
        spoken_words = []
        start = True
        for i, w in enumerate(self.words):
            s = w.lower() if w != "I" else w
            if start:
                s = s[0].upper() + s[1:]
            s += self.marks.get(i, "")
            start = self.marks.get(i, "") in (".", "?", "!")
            spoken_words.append(s)
        spoken = " ".join(spoken_words)
        if spoken[-1] not in ".?!":
            spoken += "."
        keywords = [(i, w, k) for i, (w, k) in enumerate(zip(self.words, self.kinds)) if k is not None]
        return Description(template, " ".join(self.words), spoken, keywords, self.claims)


def _noun(rng: random.Random, plural_form: bool = True) -> str:
    return rng.choice(("SHAPES", "OBJECTS")) if plural_form else rng.choice(("SHAPE", "OBJECT"))


def _coin(rng: random.Random) -> bool:
    return rng.random() < 0.5


def _ordered_pairs(scene: Scene, pred: Callable[[SceneObject, SceneObject], bool]
                   ) -> List[Tuple[SceneObject, SceneObject]]:
    return [(a, b) for a in scene.objects for b in scene.objects if a is not b and pred(a, b)]


def _t_there_is(scene, rng, b):
    o = rng.choice(scene.objects)
    b.say("THERE IS")
    ref = b.obj(o, "A", _coin(rng))
    b.claims.append({"type": "at", "ref": ref, "place": b.place(o, rng)})
    return True


def _t_place_first(scene, rng, b):
    o = rng.choice(scene.objects)
    place = b.place(o, rng)
    b.stop(",").say(rng.choice(("THERE IS", "YOU CAN SEE")))
    b.claims.append({"type": "at", "ref": b.obj(o, "A", _coin(rng)), "place": place})
    return True


def _t_i_see_at(scene, rng, b):
    o = rng.choice(scene.objects)
    b.say(rng.choice(("I CAN SEE", "I SEE", "THERE IS ALSO")))
    ref = b.obj(o, "A", _coin(rng))
    b.claims.append({"type": "at", "ref": ref, "place": b.place(o, rng)})
    return True


def _t_list_all(scene, rng, b):
    objs = list(scene.objects)
    rng.shuffle(objs)
    b.say(rng.choice(("I CAN SEE", "THE PICTURE SHOWS", "THIS IMAGE HAS")))
    b.number(len(objs))
    b.say(_noun(rng)).stop(":")
    b.claims.append({"type": "count", "filter": {}, "n": len(objs)})
    for i, o in enumerate(objs):
        if i == len(objs) - 1:
            b.say("AND")
        b.claims.append({"type": "exists", "ref": b.obj(o, "A", _coin(rng))})
        if i < len(objs) - 2:
            b.stop(",")
    return True


def _true_relations(scene: Scene, rels: Sequence[str]) -> List[Tuple[str, SceneObject, SceneObject]]:
    return [(rel, a, c) for rel in rels for a in scene.objects for c in scene.objects
            if a is not c and relation_holds(rel, a, c)]


def _relation_sentence(scene, rng, b, rels: Sequence[str], words: Dict[str, Tuple[str, str, str]]):
    options = _true_relations(scene, rels)
    if not options:
        return False
    rel, a, c = rng.choice(options)
    before, word, after = words[rel]
    b.say("THE")
    ra = b.obj(a, "", False)
    b.say("IS")
    if before:
        b.say(before)
    b.key(word, "relation")
    b.say(after + " THE" if after else "THE")
    rc = b.obj(c, "", False)
    b.claims.append({"type": "relation", "relation": rel, "a": ra, "b": rc})
    return True


REL_WORDS = {
    "ABOVE": ("", "ABOVE", ""), "BELOW": ("", "BELOW", ""),
    "LEFT_OF": ("TO THE", "LEFT", "OF"), "RIGHT_OF": ("TO THE", "RIGHT", "OF"),
    "BIGGER": ("", "BIGGER", "THAN"), "SMALLER": ("", "SMALLER", "THAN"),
}


def _t_above_below(scene, rng, b):
    return _relation_sentence(scene, rng, b, ("ABOVE", "BELOW"), REL_WORDS)


def _t_left_right(scene, rng, b):
    return _relation_sentence(scene, rng, b, ("LEFT_OF", "RIGHT_OF"), REL_WORDS)


def _t_bigger_smaller(scene, rng, b):
    return _relation_sentence(scene, rng, b, ("BIGGER", "SMALLER"), REL_WORDS)


def _t_yes_question(scene, rng, b):
    options = _true_relations(scene, tuple(REL_WORDS))
    if not options:
        return False
    rel, a, c = rng.choice(options)
    before, word, after = REL_WORDS[rel]
    b.say("IS THE")
    ra = b.obj(a, "", False)
    if before:
        b.say(before)
    b.key(word, "relation")
    b.say(after + " THE" if after else "THE")
    rc = b.obj(c, "", False)
    b.stop("?").say("YES").stop(",").say("IT IS")
    b.claims.append({"type": "relation", "relation": rel, "a": ra, "b": rc})
    return True


def _t_same_size(scene, rng, b):
    pairs = _ordered_pairs(scene, lambda x, y: relation_holds("SAME_SIZE", x, y))
    if not pairs:
        return False
    a, c = rng.choice(pairs)
    b.say("THE")
    ra = b.obj(a, "", False)
    b.say("AND THE")
    rc = b.obj(c, "", False)
    b.claims.append({"type": "relation", "relation": "SAME_SIZE", "a": ra, "b": rc})
    if _coin(rng):
        b.say("ARE THE SAME SIZE")
    else:
        b.say("ARE BOTH").key(a.size, "size")
        b.claims += [{"type": "exists", "ref": {**ra, "size": a.size}},
                     {"type": "exists", "ref": {**rc, "size": c.size}}]
    return True


def _t_where(scene, rng, b):
    o = rng.choice(scene.objects)
    b.say("WHERE IS THE")
    ref = b.obj(o, "", _coin(rng))
    b.stop("?").say("IT IS")
    b.claims.append({"type": "at", "ref": ref, "place": b.place(o, rng)})
    return True


def _t_colour_question(scene, rng, b):
    options = []
    for o in scene.objects:
        if len(matching(scene, {"shape": o.shape})) == 1:
            options.append((o, {"shape": o.shape}))
        elif len(matching(scene, {"shape": o.shape, "size": o.size})) == 1:
            options.append((o, {"shape": o.shape, "size": o.size}))
    if not options:
        return False
    o, flt = rng.choice(options)
    b.say("WHAT COLOR IS THE")
    if "size" in flt:
        b.key(o.size, "size")
    b.key(o.shape, "shape").stop("?").say("IT IS").key(o.colour, "colour")
    b.claims += [{"type": "count", "filter": flt, "n": 1}, {"type": "exists", "ref": {**flt, "colour": o.colour}}]
    return True


def _t_shape_question(scene, rng, b):
    options = [o for o in scene.objects if len(matching(scene, {"colour": o.colour})) == 1]
    if not options:
        return False
    o = rng.choice(options)
    b.say("WHAT IS THE").key(o.colour, "colour").say(_noun(rng, False)).stop("?").say("IT IS A")
    ref = {"colour": o.colour, "shape": o.shape}
    if _coin(rng):
        b.key(o.size, "size")
        ref["size"] = o.size
    b.key(o.shape, "shape")
    b.claims += [{"type": "count", "filter": {"colour": o.colour}, "n": 1}, {"type": "exists", "ref": ref}]
    return True


def _t_which_at_place(scene, rng, b):
    options = []
    for o in scene.objects:
        for place in (o.column, o.row):
            if place != "MIDDLE" and len(matching(scene, {"place": place})) == 1:
                options.append((o, place))
    if not options:
        return False
    o, place = rng.choice(options)
    b.say("WHICH " + _noun(rng, False) + " IS")
    b.say("ON THE" if place in ("LEFT", "RIGHT") else "AT THE").key(place, "position").stop("?")
    ref = b.obj(o, "THE", _coin(rng))
    b.claims += [{"type": "count", "filter": {"place": place}, "n": 1},
                 {"type": "at", "ref": ref, "place": place}]
    return True


def _t_count_all(scene, rng, b):
    n = len(scene.objects)
    if _coin(rng):
        b.say("HOW MANY " + _noun(rng) + " ARE THERE").stop("?").say("THERE ARE")
        b.number(n)
    else:
        b.say("THERE ARE")
        b.number(n)
        b.say(_noun(rng) + " IN " + rng.choice(("THIS PICTURE", "THE IMAGE")))
    b.claims.append({"type": "count", "filter": {}, "n": n})
    return True


def _t_count_shape(scene, rng, b):
    shape = rng.choice([o.shape for o in scene.objects])
    n = len(matching(scene, {"shape": shape}))
    if n == 1:
        b.say("THERE IS ONLY").number(1)
        b.key(shape, "shape")
    else:
        b.say("THERE ARE")
        b.number(n)
        b.key(plural(shape), "shape")
    b.claims.append({"type": "count", "filter": {"shape": shape}, "n": n})
    return True


def _t_count_colour(scene, rng, b):
    colour = rng.choice([o.colour for o in scene.objects])
    n = len(matching(scene, {"colour": colour}))
    if n == 1:
        b.say("ONLY").number(1)
        b.say(_noun(rng, False) + " IS").key(colour, "colour")
    else:
        b.number(n)
        b.say("OF THE " + _noun(rng) + " ARE").key(colour, "colour")
    b.claims.append({"type": "count", "filter": {"colour": colour}, "n": n})
    return True


def _t_absent_colour(scene, rng, b):
    colour = rng.choice([c for c in COLOURS if not matching(scene, {"colour": c})])
    b.say("THERE IS NO").key(colour, "colour").say(_noun(rng, False) + " IN THE PICTURE")
    b.claims.append({"type": "count", "filter": {"colour": colour}, "n": 0})
    return True


def _t_absent_shape(scene, rng, b):
    shape = rng.choice([s for s in SHAPES if not matching(scene, {"shape": s})])
    b.say(rng.choice(("I DO NOT SEE ANY", "THERE ARE NO"))).key(plural(shape), "shape")
    if _coin(rng):
        b.say("HERE")
    b.claims.append({"type": "count", "filter": {"shape": shape}, "n": 0})
    return True


def _t_size_counts(scene, rng, b):
    counts = {s: len(matching(scene, {"size": s})) for s in SIZES}
    if min(counts.values()) == 0:
        return False
    first, second = ("SMALL", "LARGE") if _coin(rng) else ("LARGE", "SMALL")
    b.number(counts[first])
    b.say("OF THE " + _noun(rng) + (" IS" if counts[first] == 1 else " ARE")).key(first, "size")
    b.say("AND")
    b.number(counts[second])
    b.say("IS" if counts[second] == 1 else "ARE").key(second, "size")
    b.claims += [{"type": "count", "filter": {"size": s}, "n": counts[s]} for s in SIZES]
    return True


def _t_all_same_size(scene, rng, b):
    sizes = {o.size for o in scene.objects}
    if len(sizes) != 1:
        return False
    size = sizes.pop()
    n = len(scene.objects)
    if n == 2:
        b.key("BOTH", "count").say(_noun(rng) + " ARE").key(size, "size")
    else:
        b.say("ALL")
        b.number(n)
        b.say(_noun(rng) + " ARE").key(size, "size")
    b.claims += [{"type": "count", "filter": {}, "n": n}, {"type": "count", "filter": {"size": size}, "n": n}]
    return True


def _t_between(scene, rng, b):
    options = [(a, l, r) for a in scene.objects for l in scene.objects for r in scene.objects
               if relation_holds("LEFT_OF", l, a) and relation_holds("LEFT_OF", a, r)]
    if not options:
        return False
    a, l, r = rng.choice(options)
    if _coin(rng):
        l, r = r, l
    b.say("THE")
    ra = b.obj(a, "", False)
    b.say("IS BETWEEN THE")
    rl = b.obj(l, "", False)
    b.say("AND THE")
    rr = b.obj(r, "", False)
    b.claims.append({"type": "between", "a": ra, "b": rl, "c": rr})
    return True


def _t_only_size(scene, rng, b):
    options = [o for o in scene.objects if len(matching(scene, {"size": o.size})) == 1]
    if not options:
        return False
    o = rng.choice(options)
    b.say("THE ONLY").key(o.size, "size").say(_noun(rng, False) + " IS THE")
    ref = b.obj(o, "", False)
    b.claims += [{"type": "count", "filter": {"size": o.size}, "n": 1},
                 {"type": "exists", "ref": {**ref, "size": o.size}}]
    return True


def _t_two_places(scene, rng, b):
    a, c = rng.sample(scene.objects, 2)
    b.say("THE")
    ra = b.obj(a, "", _coin(rng))
    b.say("IS")
    b.claims.append({"type": "at", "ref": ra, "place": b.place(a, rng)})
    b.say("AND THE")
    rc = b.obj(c, "", _coin(rng))
    b.say("IS")
    b.claims.append({"type": "at", "ref": rc, "place": b.place(c, rng)})
    return True


def _t_same_colour(scene, rng, b):
    unique_shape = [o for o in scene.objects if len(matching(scene, {"shape": o.shape})) == 1]
    pairs = [(a, c) for a in unique_shape for c in unique_shape
             if a is not c and a.colour == c.colour and SHAPES.index(a.shape) < SHAPES.index(c.shape)]
    if not pairs:
        return False
    a, c = rng.choice(pairs)
    if _coin(rng):
        a, c = c, a
    b.say("THE").key(a.shape, "shape").say("AND THE").key(c.shape, "shape").say("ARE BOTH")
    b.key(a.colour, "colour")
    b.claims += [{"type": "count", "filter": {"shape": a.shape}, "n": 1},
                 {"type": "count", "filter": {"shape": c.shape}, "n": 1},
                 {"type": "exists", "ref": {"shape": a.shape, "colour": a.colour}},
                 {"type": "exists", "ref": {"shape": c.shape, "colour": c.colour}}]
    return True


TEMPLATES: Dict[str, Callable[[Scene, random.Random, _Builder], bool]] = {
    "there_is": _t_there_is,
    "place_first": _t_place_first,
    "i_see_at": _t_i_see_at,
    "list_all": _t_list_all,
    "above_below": _t_above_below,
    "left_right": _t_left_right,
    "bigger_smaller": _t_bigger_smaller,
    "yes_question": _t_yes_question,
    "same_size": _t_same_size,
    "where": _t_where,
    "colour_question": _t_colour_question,
    "shape_question": _t_shape_question,
    "which_at_place": _t_which_at_place,
    "count_all": _t_count_all,
    "count_shape": _t_count_shape,
    "count_colour": _t_count_colour,
    "absent_colour": _t_absent_colour,
    "absent_shape": _t_absent_shape,
    "size_counts": _t_size_counts,
    "all_same_size": _t_all_same_size,
    "between": _t_between,
    "only_size": _t_only_size,
    "two_places": _t_two_places,
    "same_colour": _t_same_colour,
}


def describe(scene: Scene, template: str, rng: random.Random) -> Optional[Description]:
    """One sentence from the named template, or None when it does not fit the scene."""
    b = _Builder()
    if not TEMPLATES[template](scene, rng, b):
        return None
    return b.build(template)


def describe_scene(scene: Scene, rng: random.Random, count: int = 1) -> List[Description]:
    """``count`` sentences about the scene from distinct templates (fewer only if too few fit)."""
    names = list(TEMPLATES)
    rng.shuffle(names)
    out: List[Description] = []
    for name in names:
        if len(out) == count:
            break
        d = describe(scene, name, rng)
        if d is not None and d.text not in {x.text for x in out}:
            out.append(d)
    return out
