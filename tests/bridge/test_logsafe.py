from bridge.logsafe import clip


def test_clip_keeps_short_text_and_cuts_long_text_with_a_note() -> None:
    assert clip("short") == "short"
    assert clip(ValueError("bad")) == "bad"
    clipped = clip("x" * 1_000_000)
    assert clipped.startswith("x" * 200) and clipped.endswith("(999800 more characters)") and len(clipped) < 240
