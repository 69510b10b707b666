"""SenseVoice's rich tags are read by the set their value belongs to, not by where they stand."""

from __future__ import annotations

import pytest

from server.asr.tags import RichTags, is_tag_piece, kind_of, read_tags, split_rich_text


@pytest.mark.parametrize("raw", [
    "<|en|><|HAPPY|><|BGM|><|withitn|>Hello there.",  # the trained model's order
    "<|BGM|><|withitn|><|HAPPY|><|en|>Hello there.",  # another order
    "<|HAPPY|><|en|>Hello there.<|BGM|>",  # a tag after the text
])
def test_tags_in_any_order_fill_the_right_fields(raw):
    text, tags = split_rich_text(raw)
    assert text == "Hello there."
    assert tags == RichTags(language="en", emotion="HAPPY", event="BGM", text_norm="withitn" if "itn" in raw else None)


def test_a_dropped_tag_leaves_only_its_field_empty():
    # A fine-tuned model without emotion: the event must not be taken for the emotion.
    text, tags = split_rich_text("<|zh|><|Laughter|><|woitn|>你好")
    assert (text, tags.language, tags.emotion, tags.event) == ("你好", "zh", None, "Laughter")
    assert split_rich_text("<|NEUTRAL|>hi")[1] == RichTags(emotion="NEUTRAL")


def test_kinds_by_value():
    assert [kind_of(t) for t in ("yue", "nospeech", "de", "SAD", "EMO_UNKNOWN", "Cough", "Event_UNK", "woitn")] == [
        "language", "language", "language", "emotion", "emotion", "event", "event", "text_norm"]
    assert kind_of("SOMETHING_ELSE") is None
    assert read_tags(["en", "ja"]).language == "en"  # the first of a kind wins
    assert split_rich_text("<|SOMETHING_ELSE|>text") == ("text", RichTags())  # unknown: dropped from the text
    assert is_tag_piece("<|en|>") and not is_tag_piece("▁hello") and not is_tag_piece("<unk>")
