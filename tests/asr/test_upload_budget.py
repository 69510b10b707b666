"""Bounded work per upload: headers no audio has are refused before anything is decoded, decoded
audio is bounded by the upload's size, and the uploads being prepared are bounded in number and
in the decoded audio they hold together (server/asr/audio.py, upload_budget.py)."""

from __future__ import annotations

import asyncio
import math
import resource
import time

import numpy as np
import pytest
from test_audio_corpus import s16, tone, wav_bytes

from server.errors import Overloaded, Timeout
from server.asr import audio as audio_module
from server.asr import upload_budget
from server.asr.audio import MAX_CHANNELS, AudioError, decode_audio
from server.asr.upload_budget import UploadBudget

RATE = 16000


@pytest.mark.parametrize(("rate", "channels", "said"), [
    (1, 1, "1 Hz"), (1999, 1, "1999 Hz"), (2**31 - 1, 1, "2147483647 Hz"), (4_000_000, 1, "4000000 Hz"),
    (RATE, MAX_CHANNELS + 1, f"{MAX_CHANNELS + 1} channels"), (RATE, 255, "255 channels"),
])
def test_a_header_no_audio_has_is_refused_before_decoding(rate, channels, said):
    """The 7 KB "hour at 1 Hz" took 48 s of CPU and 840 MB to resample; 2^31 Hz failed inside the
    resampler with an out-of-memory error, a 500. Both are now a 400 at once."""
    data = wav_bytes(s16(tone(0.5))[: 7200 - 7200 % (2 * channels)], channels=channels, rate=rate)
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    with pytest.raises(AudioError, match=said) as err:
        decode_audio(data, max_seconds=3600)
    assert err.value.status == 400 and err.value.code == "invalid_audio"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu < 0.5


def test_real_rates_and_channel_counts_still_decode():
    for rate, channels in ((8000, 1), (96000, 2), (RATE, 8), (RATE, MAX_CHANNELS)):
        audio = decode_audio(wav_bytes(s16(tone(0.5, rate, channels)), channels=channels, rate=rate), max_seconds=60)
        assert audio.size == pytest.approx(RATE // 2, abs=50), (rate, channels)


def test_decoded_audio_is_bounded_by_the_upload_size(monkeypatch):
    """A minute plus a second per 64 bytes; made tighter here to exercise it on a real file: 3 s of
    16-bit WAV (96 KB) with a budget of 1 s plus a second per 100 KB."""
    data = wav_bytes(s16(tone(3.0)))
    assert decode_audio(data, max_seconds=60).size == 3 * RATE
    monkeypatch.setattr(audio_module, "FREE_SECONDS", 1.0)
    monkeypatch.setattr(audio_module, "MIN_BYTES_PER_SECOND", 100_000)
    with pytest.raises(AudioError, match="decodes to more than 2 s of audio"):
        decode_audio(data, max_seconds=60)


def test_uploads_decoded_at_once_are_bounded_the_next_wait_and_past_that_are_refused(monkeypatch):
    """Two slots: two decode, eight (4 per slot, here) wait their turn in order, the eleventh is
    refused at once; slots come back."""
    monkeypatch.setattr(upload_budget, "WAITING_PER_SLOT", 4)

    async def go():
        budget = UploadBudget(max_decoding=2, max_seconds=60, sample_rate=RATE)
        release = asyncio.Event()
        order: list[int] = []

        async def upload(i: int) -> None:
            async with budget.decoding():
                order.append(i)
                await release.wait()

        tasks = [asyncio.create_task(upload(i)) for i in range(10)]
        await asyncio.sleep(0.01)
        assert order == [0, 1]
        with pytest.raises(Overloaded) as err:
            async with budget.decoding():
                pytest.fail("an eleventh must not wait")
        assert err.value.status == 503 and err.value.headers["Retry-After"] == "1"
        release.set()
        await asyncio.gather(*tasks)
        assert order == list(range(10))
        async with budget.decoding():  # slots come back
            pass

    asyncio.run(go())


def test_interactive_uploads_wait_for_a_slot_ahead_of_bulk_ones():
    """One slot, taken; a bulk clip, then an interactive one, then another bulk clip wait: the
    interactive one gets the slot next. A waiter that leaves gives up its place, or passes on a
    slot it was just handed."""

    async def go():
        budget = UploadBudget(max_decoding=1, max_seconds=60, sample_rate=RATE)
        order: list[str] = []
        gates = {name: asyncio.Event() for name in ("first", "bulk1", "query", "bulk2", "leaver")}

        async def upload(name: str, priority: str) -> None:
            async with budget.decoding(priority):
                order.append(name)
                await gates[name].wait()

        first = asyncio.create_task(upload("first", "normal"))
        await asyncio.sleep(0.01)
        tasks = [asyncio.create_task(upload(name, priority)) for name, priority in
                 (("bulk1", "normal"), ("leaver", "interactive"), ("query", "interactive"), ("bulk2", "background"))]
        await asyncio.sleep(0.01)
        tasks[1].cancel()  # the leaver goes before its turn
        for name in ("first", "query", "bulk1", "bulk2"):
            gates[name].set()
        await asyncio.gather(first, *tasks[:1], *tasks[2:])
        assert order == ["first", "query", "bulk1", "bulk2"]
        async with budget.decoding():  # the slot is free again
            pass

    asyncio.run(go())


def test_the_wait_for_a_slot_is_forecast_from_how_long_slots_are_held():
    """The door's forecast of the wait (server.engine.deadlines.judge's ready_in): none while a slot
    is free; else the requests waiting at the priority or above, each a slot's hold lately over
    the slots."""

    async def go():
        budget = UploadBudget(max_decoding=2, max_seconds=60, sample_rate=RATE)
        assert budget.wait_forecast() == 0.0  # nothing to go by yet
        for _ in range(3):
            async with budget.decoding():
                await asyncio.sleep(0.05)
        release = asyncio.Event()

        async def upload(priority: str) -> None:
            async with budget.decoding(priority):
                await release.wait()

        tasks = [asyncio.create_task(upload(p)) for p in ("normal", "normal", "normal", "normal", "background")]
        await asyncio.sleep(0.01)
        forecasts = {p: budget.wait_forecast(p) for p in ("interactive", "normal", "background")}
        release.set()
        await asyncio.gather(*tasks)
        return forecasts, budget.wait_forecast()

    forecasts, after = asyncio.run(go())
    hold = forecasts["interactive"] * 2  # one slot's hold: the interactive request would be next
    assert 0.04 <= hold <= 0.2
    assert forecasts["normal"] == pytest.approx(3 * hold / 2)  # two normal ones wait ahead of it
    assert forecasts["background"] == pytest.approx(4 * hold / 2)
    assert after == 0.0


def test_under_load_the_wait_is_forecast_from_the_pace_slots_are_handed_over():
    """Slots held 50 ms each, then, under load, 150 ms (more preparations at once share the cores):
    the forecast follows the pace at which waiting requests got their slots, not the calm holds."""

    async def go():
        budget = UploadBudget(max_decoding=1, max_seconds=60, sample_rate=RATE)
        for _ in range(3):
            async with budget.decoding():
                await asyncio.sleep(0.05)

        async def upload(seconds: float) -> None:
            async with budget.decoding():
                await asyncio.sleep(seconds)

        await asyncio.gather(*(upload(0.15) for _ in range(6)))  # five handed over, 150 ms apart
        release = asyncio.Event()

        async def held() -> None:
            async with budget.decoding():
                await release.wait()

        tasks = [asyncio.create_task(held()) for _ in range(3)]  # one holds the slot, two wait
        await asyncio.sleep(0.01)
        forecast = budget.wait_forecast()
        release.set()
        await asyncio.gather(*tasks)
        return forecast

    assert 3 * 0.13 <= asyncio.run(go()) <= 3 * 0.3  # the third in line, at ~150 ms a turn


def test_a_request_waiting_for_a_slot_past_its_deadline_gets_504_and_leaves_the_line():
    async def go():
        budget = UploadBudget(max_decoding=1, max_seconds=60, sample_rate=RATE)
        release, order = asyncio.Event(), []

        async def upload(name: str, deadline: float = math.inf) -> None:
            async with budget.decoding(deadline=deadline):
                order.append(name)
                await release.wait()

        first = asyncio.create_task(upload("first"))
        await asyncio.sleep(0.01)
        hasty = asyncio.create_task(upload("hasty", time.monotonic() + 0.1))
        patient = asyncio.create_task(upload("patient"))
        with pytest.raises(Timeout):
            await hasty
        release.set()
        await asyncio.gather(first, patient)
        return order

    assert asyncio.run(go()) == ["first", "patient"]


def test_decoded_audio_held_across_requests_is_bounded_and_given_back():
    async def go():
        budget = UploadBudget(max_decoding=4, max_seconds=10, sample_rate=RATE)
        data = wav_bytes(s16(tone(4.0)))
        async with budget.decoding() as first, budget.decoding() as second:
            decode_audio(data, max_seconds=60, hold=first)
            decode_audio(data, max_seconds=60, hold=second)
            assert budget.held_seconds == pytest.approx(8.0, abs=0.1)
            async with budget.decoding() as third:
                with pytest.raises(Overloaded, match="the most this server keeps in memory at once"):
                    decode_audio(data, max_seconds=60, hold=third)
        assert budget.held_seconds == 0
        async with budget.decoding() as again:
            assert decode_audio(data, max_seconds=60, hold=again).size == 4 * RATE

    asyncio.run(go())


def test_the_worst_upload_under_the_bounds_costs_little(capsys):
    """The costliest upload per byte these bounds let through: the lowest rate (2 kHz, 8-bit PCM:
    the most output per byte a codec gives that is not refused by size) resampled to 16 kHz; 100 KB
    of it. Prints CPU seconds and decoded megabytes per KB uploaded."""
    pcm8 = (np.clip(tone(50.0, 2000)[0], -1, 1) * 127 + 128).astype(np.uint8).tobytes()
    data = wav_bytes(pcm8, rate=2000, bits=8)
    started = time.process_time()
    audio = decode_audio(data, max_seconds=3600)
    cpu = time.process_time() - started
    kb = len(data) / 1024
    print(f"{kb:.0f} KB at 2 kHz 8-bit: {audio.size / RATE:.0f} s decoded, {cpu / kb * 1000:.2f} ms CPU and "
          f"{audio.nbytes / 2**20 / kb * 1024:.0f} KB decoded per KB uploaded")
    assert audio.size == pytest.approx(50 * RATE, rel=0.01)
    assert cpu < 2.0
