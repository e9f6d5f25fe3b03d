import pytest

from xasr.scoring.plot import plot_error_breakdown
from xasr.scoring.wer import score


def test_plot_error_breakdown_writes_an_image(tmp_path):
    a = score({"u": "A B C D"}, {"u": "A X C"}, "none")
    b = score({"u": "A B C D"}, {"u": "A B C D E"}, "none")
    zero = score({"u": "A"}, {"u": "A"}, "none")
    path = plot_error_breakdown({"greedy": a, "beam-4": b, "oracle": zero}, tmp_path / "plots" / "errors.png")
    assert path == tmp_path / "plots" / "errors.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    only_zero = plot_error_breakdown({"oracle": zero}, tmp_path / "zero.png")
    assert only_zero.stat().st_size > 0
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_error_breakdown({}, tmp_path / "x.png")
