import pytest

from xasr.utils.registry import Registry


def test_register_get_and_errors():
    r = Registry("encoder")

    @r.register("a")
    class A:
        pass

    assert r.get("a") is A and r.names() == ["a"]
    with pytest.raises(KeyError, match="unknown encoder 'b'; known: a"):
        r.get("b")
    with pytest.raises(KeyError, match="registered twice"):
        r.register("a")(A)
