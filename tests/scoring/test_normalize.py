import pytest

from xasr.scoring.normalize import (
    NORMALIZERS, NormalizerError, get_normalizer, normalize, normalizer_for_language,
)


def test_registry_names_and_units():
    assert NORMALIZERS.names() == ["chinese_char", "english_word", "none"]
    assert get_normalizer("chinese_char").unit == "CER"
    assert get_normalizer("english_word").unit == "WER"
    assert get_normalizer("none").unit == "WER"
    assert get_normalizer("none").name == "none"
    with pytest.raises(NormalizerError,
                       match="unknown normalizer 'kaldi'; known: chinese_char, english_word, none"):
        get_normalizer("kaldi")


def test_normalizer_for_language():
    assert normalizer_for_language("zh") == "chinese_char"
    assert normalizer_for_language("Chinese") == "chinese_char" and normalizer_for_language("English") == "english_word"
    assert normalizer_for_language("zh-CN") == "chinese_char"
    assert normalizer_for_language("en") == "english_word"
    assert normalizer_for_language("EN_us") == "english_word"
    with pytest.raises(NormalizerError, match="no scoring normalizer for language 'fr'"):
        normalizer_for_language("fr")


def test_none_splits_on_whitespace_only():
    assert normalize("a  B,\tc\n", "none") == ["a", "B,", "c"]
    assert normalize("", "none") == []


# ----------------------------------------------------------------------------- Chinese

def test_chinese_one_token_per_character_without_punctuation():
    assert normalize("你好，世界！", "chinese_char") == ["你", "好", "世", "界"]
    # half-width punctuation and spaces give the same tokens
    assert normalize("你 好,世界!", "chinese_char") == ["你", "好", "世", "界"]
    assert normalize("“测试”（一）《书》、；：？…—「引号」。", "chinese_char") == \
        ["测", "试", "一", "书", "引", "号"]
    assert normalize("\u3000你\u3000好\u3000", "chinese_char") == ["你", "好"]  # ideographic spaces


def test_chinese_full_width_digits_and_letters():
    # NFKC: full-width digits and letters become ASCII; a run of them is one token
    assert normalize("今天是２０２０年１２月。", "chinese_char") == \
        ["今", "天", "是", "2020", "年", "12", "月"]
    assert normalize("今天是2020年12月", "chinese_char") == \
        normalize("今天是２０２０年１２月", "chinese_char")
    assert normalize("ＡＩ模型", "chinese_char") == ["AI", "模", "型"]


def test_chinese_latin_words_upper_cased_and_split_on_spaces():
    assert normalize("我用iPhone 12 Pro拍照", "chinese_char") == \
        ["我", "用", "IPHONE", "12", "PRO", "拍", "照"]
    assert normalize("U.S.的don't", "chinese_char") == ["US", "的", "DONT"]
    assert normalize("。，！", "chinese_char") == []


# ----------------------------------------------------------------------------- English

def test_english_librispeech_style():
    assert normalize("It's 2 o'clock.", "english_word") == ["IT'S", "TWO", "O'CLOCK"]
    assert normalize("A well-known man -- said: 'No!'", "english_word") == \
        ["A", "WELL", "KNOWN", "MAN", "SAID", "NO"]
    assert normalize("The 21st of 1,000 men", "english_word") == \
        ["THE", "TWENTY", "FIRST", "OF", "ONE", "THOUSAND", "MEN"]
    assert normalize("  ", "english_word") == []


def test_english_numbers_spelled_consistently():
    # digits and their spelled-out form score the same
    assert normalize("I have 12 apples", "english_word") == normalize("i have twelve apples", "english_word")
    assert normalize("the 3rd day", "english_word") == ["THE", "THIRD", "DAY"]
    assert normalize("105", "english_word") == ["ONE", "HUNDRED", "FIVE"]


def test_english_text_normalize_english_would_reject():
    assert normalize("3.14", "english_word") == ["THREE", "POINT", "ONE", "FOUR"]
    assert normalize("50% at 10:30", "english_word") == ["FIFTY", "PERCENT", "AT", "TEN", "THIRTY"]
    assert normalize("5pm", "english_word") == ["FIVE", "PM"]
    assert normalize("1,000 people at 5pm", "english_word") == ["ONE", "THOUSAND", "PEOPLE", "AT", "FIVE", "PM"]
    assert normalize("Café naïve", "english_word") == ["CAFE", "NAIVE"]
    assert normalize("me@home", "english_word") == ["ME", "HOME"]
    # letters outside ASCII stay as words: an inserted foreign word is still an error
    assert normalize("hello 世界 2", "english_word") == ["HELLO", "世界", "TWO"]


def test_english_reference_transcripts_score_as_themselves():
    ref = "HE SAID IT'S TWENTY FIRST CENTURY NONSENSE"
    assert normalize(ref, "english_word") == ref.split()
    assert normalize(" ".join(normalize(ref.lower() + "!", "english_word")), "english_word") == ref.split()
