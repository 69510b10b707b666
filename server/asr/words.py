"""Word timestamps from the CTC path: when the model emitted each token, and which tokens make a word.

Timing: greedy CTC decoding emits a token at the first frame of a run of that token on the best
path; the run lasts until the path moves on (to a blank or another token). SenseVoice's encoder
frames are 60 ms (10 ms fbank frames stacked 6 at a time by LFR) and the first four are the query
frames (language, emotion, event, text norm), not audio. A token whose run covers speech frames
[s, e) spans ``s * 60 - 30`` to ``e * 60 - 30`` ms of the segment, clipped to the audio: funasr's
own convention for SenseVoice timestamps (``output_timestamp``), so the two agree on the same tokens.

Words: for scripts written with spaces, SentencePiece marks a word's first piece with ``▁``, so the
pieces up to the next ``▁`` are one word. Chinese, Cantonese and Japanese are written without
spaces: each of their tokens (a character, or a few) is a word of its own. Punctuation emitted
without ``▁`` belongs to the word before it ("world," / "好，"), as Whisper's word timestamps keep it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

QUERY_FRAMES = 4
WORD_BOUNDARY = "▁"  # SentencePiece's marker of a piece that follows a space
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # byte-fallback pieces
# Scripts written without spaces between words: Han, kana (and the iteration marks that go with them).
_UNSPACED = re.compile("[\u3005-\u3007\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
                       "\uff66-\uff9f\U00020000-\U0003ffff]")


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds from the start of the audio
    end: float


def token_times(frames: Sequence[tuple[int, int]], speech_frames: int, *, offset: float, duration: float,
                frame_ms: int = 60) -> list[tuple[float, float]]:
    """(start, end) in seconds from the start of the audio of each token, from its run ``[first,
    end)`` of encoder frames on the CTC path (query frames included); ``offset`` is where the
    segment starts in the audio, ``duration`` its length (no time goes past it)."""
    half = frame_ms // 2
    last_ms = min(speech_frames * frame_ms - half, round(duration * 1000))
    times = []
    for first, end in frames:
        # Integer milliseconds, as funasr computes them, so equal tokens give equal times.
        start_ms = min(max((first - QUERY_FRAMES) * frame_ms - half, 0), last_ms)
        end_ms = min(max((end - QUERY_FRAMES) * frame_ms - half, start_ms), last_ms)
        times.append((round(offset + start_ms / 1000, 3), round(offset + end_ms / 1000, 3)))
    return times


def group_words(pieces: Sequence[str]) -> list[list[int]]:
    """Indices into ``pieces`` of each word's tokens, in order (see the module's docstring)."""
    words: list[list[int]] = []
    unspaced_word = False  # the current word is Chinese/Japanese: the next letter starts another
    for i, piece in enumerate(pieces):
        unspaced = bool(_UNSPACED.search(piece))
        follows_space = piece.startswith(WORD_BOUNDARY)
        if words and not follows_space and _is_punctuation(piece):
            words[-1].append(i)
            continue
        if not words or follows_space or unspaced or unspaced_word:
            words.append([i])
            unspaced_word = unspaced
        else:
            words[-1].append(i)
    return words


def align_words(pieces: Sequence[str], times: Sequence[tuple[float, float]]) -> list[Word]:
    """Words with their start (first token's) and end (last token's); empty ones (a lone ``▁``) dropped."""
    words = []
    for indices in group_words(pieces):
        text = piece_text([pieces[i] for i in indices])
        if text:
            words.append(Word(text, times[indices[0]][0], times[indices[-1]][1]))
    return words


def piece_text(pieces: Sequence[str]) -> str:
    """What SentencePiece decodes ``pieces`` to: ``▁`` is a space, ``<0xNN>`` a byte."""
    data = bytearray()
    for piece in pieces:
        byte = _BYTE_PIECE.fullmatch(piece)
        data += bytes([int(byte.group(1), 16)]) if byte else piece.replace(WORD_BOUNDARY, " ").encode()
    return data.decode("utf-8", errors="replace").strip()


def _is_punctuation(piece: str) -> bool:
    return bool(piece) and all(unicodedata.category(c)[0] in "PS" for c in piece)
