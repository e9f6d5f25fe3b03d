"""System specs: parsing, default names, options, and clear errors for bad specs."""
import pytest

from xasr.benchmark import systems
from xasr.benchmark.systems import SystemSpecError, find_ct2_dir, parse_system_spec, parse_system_specs
from xasr.errors import XasrError


def test_xasr_spec_with_name_and_method():
    s = parse_system_spec("llm=xasr:exp/stage2/model:llm_greedy")
    assert (s.name, s.kind, s.path) == ("llm", "xasr", "exp/stage2/model")
    assert s.options == {"method": "llm_greedy", "max_duration": 60.0}
    assert s.text == "llm=xasr:exp/stage2/model:llm_greedy"


def test_default_names_and_options():
    assert parse_system_spec("xasr:m:ctc_greedy").name == "ctc_greedy"
    assert parse_system_spec("xasr:m").options["method"] == "llm_greedy"
    assert parse_system_spec("xasr:m:cif_greedy:max_duration=20").options == {"method": "cif_greedy",
                                                                             "max_duration": 20.0}
    assert parse_system_spec("xasr:m:repeat_ngram=0").options["repeat_ngram"] == 0
    joint = parse_system_spec("xasr:m:llm_ctc:ctc_weight=0.7:length_bonus=-0.5").options
    assert (joint["ctc_weight"], joint["length_bonus"]) == (0.7, -0.5)
    assert parse_system_spec("xasr:m:llm_rescore:homophone_scale=0.5").options["homophone_scale"] == 0.5
    assert parse_system_spec("xasr:m:llm_greedy:llm_vocab=units").options["llm_vocab"] == "units"
    assert parse_system_spec("xasr:m:llm_greedy:prompt_draft=ctc_beam").options["prompt_draft"] == "ctc_beam"
    fw = parse_system_spec("faster-whisper:/models/ct2:int8")
    # faster-whisper's own default decoding: beam search with 5 beams
    assert (fw.name, fw.options) == ("faster-whisper-int8-beam5", {"compute_type": "int8", "beam": 5, "fallback": False})
    assert parse_system_spec("faster-whisper:d:beam=1").name == "faster-whisper-int8-greedy"
    fw5 = parse_system_spec("faster-whisper:whisper-base:float32:beam=5")
    assert (fw5.name, fw5.options) == ("faster-whisper-float32-beam5",
                                       {"compute_type": "float32", "beam": 5, "fallback": False})
    assert parse_system_spec("faster-whisper:d:fallback").name == "faster-whisper-int8-beam5-fallback"
    assert parse_system_spec("faster-whisper:d").options["compute_type"] == "int8"
    hf = parse_system_spec("hf-whisper:whisper-base:batch=4")
    assert (hf.name, hf.options) == ("hf-whisper", {"batch": 4})


def test_methods_come_from_the_registry_at_run_time():
    from xasr.decoding.methods import METHODS

    with pytest.raises(SystemSpecError, match="unknown decoding method 'llm_newer'"):
        parse_system_spec("xasr:m:llm_newer")
    METHODS.register("llm_newer")(lambda search: None)
    try:
        assert parse_system_spec("xasr:m:llm_newer").options["method"] == "llm_newer"
    finally:
        METHODS.unregister("llm_newer")


def test_a_path_may_hold_an_equals_sign():
    s = parse_system_spec("xasr:exp/lr=1e-3/model:ctc_greedy")
    assert (s.name, s.path) == ("ctc_greedy", "exp/lr=1e-3/model")


@pytest.mark.parametrize("spec, message", [
    ("xasr", "is not KIND:PATH"),
    (":path", "is not KIND:PATH"),
    ("kaldi:exp/model", "unknown system kind 'kaldi'; known: faster-whisper, hf-whisper, xasr"),
    ("xasr::ctc_greedy", "the path after xasr: is empty"),
    ("xasr:m:no_such_search", "unknown decoding method 'no_such_search'; choose from ctc_greedy"),
    ("xasr:m:ctc_greedy:cif_greedy", "one decoding method per system"),
    ("xasr:m:ctc_greedy:beam=4", "unknown option 'beam=4' for xasr"),
    ("xasr:m:max_duration=-3", "max_duration must be a positive number"),
    ("xasr:m:repeat_ngram=-1", "repeat_ngram must be a whole number >= 0"),
    ("xasr:m:llm_ctc:ctc_weight=1.5", "ctc_weight must be a number in [0, 1], got '1.5'"),
    ("xasr:m:llm_ctc:length_bonus=x", "length_bonus must be a number, got 'x'"),
    ("xasr:m:ctc_beam:homophone_scale=2", "homophone_scale must be a number in [0, 1], got '2'"),
    ("xasr:m:llm_greedy:llm_vocab=all", "llm_vocab must be full or units, got 'all'"),
    ("xasr:m:llm_greedy:prompt_draft=cif", "prompt_draft must be ctc_greedy, ctc_beam, none, got 'cif'"),
    ("faster-whisper:d:int3", "unknown compute type 'int3'"),
    ("faster-whisper:d:beam=0", "beam must be a positive integer, got '0'"),
    ("faster-whisper:d:beam=x", "beam must be a positive integer"),
    ("faster-whisper:d:temperature=1", "unknown option 'temperature=1' for faster-whisper"),
    ("hf-whisper:d:int8", "unknown option 'int8' for hf-whisper"),
    ("bad name=xasr:m", "a system name may only hold"),
])
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(SystemSpecError) as e:
        parse_system_spec(spec)
    assert message in str(e.value)
    assert isinstance(e.value, XasrError)


def test_names_must_be_unique():
    specs = parse_system_specs(["xasr:a:ctc_greedy", "b=xasr:a:ctc_greedy"])
    assert [s.name for s in specs] == ["ctc_greedy", "b"]
    with pytest.raises(SystemSpecError, match="are both called 'ctc_greedy': name them"):
        parse_system_specs(["xasr:a:ctc_greedy", "xasr:b:ctc_greedy"])
    with pytest.raises(SystemSpecError, match="no system"):
        parse_system_specs([])


def test_find_ct2_dir(tmp_path):
    inst = tmp_path / "whisper"
    (inst / "ct2").mkdir(parents=True)
    (inst / "ct2/model.bin").write_bytes(b"x")
    assert find_ct2_dir(str(inst)) == inst / "ct2"  # an installed-style directory
    assert find_ct2_dir(str(inst / "ct2")) == inst / "ct2"  # the CTranslate2 directory itself
    with pytest.raises(XasrError, match="no CTranslate2 Whisper model here"):
        find_ct2_dir(str(tmp_path / "missing"))
    with pytest.raises(XasrError, match="xasr models install whisper-base"):
        find_ct2_dir(str(tmp_path))


def test_find_ct2_dir_takes_an_installed_name(tmp_path):
    from xasr.pretrained.install import MARKER

    d = tmp_path / "whisper-base"
    (d / "ct2").mkdir(parents=True)
    (d / "ct2/model.bin").write_bytes(b"x")
    (d / MARKER).write_text("{}")
    assert find_ct2_dir("whisper-base", models_dir=str(tmp_path)) == d / "ct2"


def test_xasr_system_refuses_a_missing_model_dir(tmp_path):
    s = systems.make_system(parse_system_spec(f"xasr:{tmp_path / 'nope'}:ctc_greedy"), systems.RunSettings())
    with pytest.raises(XasrError, match="model directory .*nope does not exist"):
        s.load()
