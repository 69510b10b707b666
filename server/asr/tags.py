"""SenseVoice's rich tags (``<|en|><|NEUTRAL|><|Speech|><|withitn|>``), read by what they are.

The trained model emits one tag per query frame, language first, but nothing in the contract makes
that order binding: a fine-tuned model may emit them in another order or drop one. So each tag is
recognised by the set its value belongs to, never by where it stands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TAG = re.compile(r"<\|([^|]*)\|>")

# The values SenseVoiceSmall's vocabulary holds for each kind (funasr's lid_dict, emo_dict and
# event_dict, and the unknown markers the model emits when unsure).
LANGUAGES = frozenset({"zh", "en", "yue", "ja", "ko", "nospeech"})
EMOTIONS = frozenset({"HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED", "EMO_UNKNOWN"})
EVENTS = frozenset({"Speech", "BGM", "Laughter", "Applause", "Cry", "Sneeze", "Breath", "Cough", "Sing",
                    "Speech_Noise", "Event_UNK"})
TEXT_NORMS = frozenset({"withitn", "woitn"})
# The vocabulary has more language tags than the five the model was trained on (ISO 639 codes);
# one a fine-tuned model emits is still a language.
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")


@dataclass(frozen=True)
class RichTags:
    language: str | None = None
    emotion: str | None = None
    event: str | None = None
    text_norm: str | None = None


def kind_of(tag: str) -> str | None:
    """``language``, ``emotion``, ``event`` or ``text_norm`` for a tag's value; None if unknown."""
    if tag in EMOTIONS:
        return "emotion"
    if tag in EVENTS:
        return "event"
    if tag in TEXT_NORMS:
        return "text_norm"
    if tag in LANGUAGES or _LANGUAGE_CODE.fullmatch(tag):
        return "language"
    return None


def read_tags(values: list[str]) -> RichTags:
    """The first tag of each kind among ``values`` (tag names without ``<|`` ``|>``)."""
    found: dict[str, str] = {}
    for value in values:
        kind = kind_of(value)
        if kind is not None:
            found.setdefault(kind, value)
    return RichTags(**found)


def split_rich_text(raw: str) -> tuple[str, RichTags]:
    """The text without any tag, and the tags it held."""
    return TAG.sub("", raw).strip(), read_tags(TAG.findall(raw))


def is_tag_piece(piece: str) -> bool:
    """Whether a vocabulary piece is a rich tag (decoded verbatim, never part of the text)."""
    return piece.startswith("<|") and piece.endswith("|>")
