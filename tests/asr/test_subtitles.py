from dataclasses import dataclass

from server.asr.subtitles import timestamp, to_srt, to_vtt


@dataclass
class Seg:
    start: float
    end: float
    text: str


SEGMENTS = [Seg(0.0, 1.5, "Hello there."), Seg(2.25, 3661.0046, "An hour later."), Seg(3700, 3701, "")]


def test_timestamps_in_both_formats():
    assert timestamp(0, ",") == "00:00:00,000"
    assert timestamp(3661.0046, ",") == "01:01:01,005"
    assert timestamp(59.9996, ".") == "00:01:00.000"
    assert timestamp(-0.2, ".") == "00:00:00.000"


def test_srt_numbers_cues_from_one_and_skips_empty_text():
    assert to_srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
        "2\n00:00:02,250 --> 01:01:01,005\nAn hour later.\n"
    )


def test_vtt_has_its_header_and_dot_millis():
    assert to_vtt(SEGMENTS) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n"
        "00:00:02.250 --> 01:01:01.005\nAn hour later.\n"
    )
    assert to_vtt([]) == "WEBVTT\n\n"
