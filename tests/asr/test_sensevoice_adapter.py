"""The SenseVoice adapter's own pieces, against what funasr computes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from server.asr import model as sensevoice
from server.asr.ctc import CtcBestPath, best_path
from server.asr.model import AsrItem, SenseVoice, _encode_reduced


def test_best_path_is_the_arg_max_of_the_log_softmax_funasr_takes():
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(64, 3001)  # not a whole number of vocabulary slices
    hidden = torch.randn(3, 50, 64, generator=g)
    with torch.no_grad():
        expected = torch.log_softmax(head(hidden), dim=-1).argmax(dim=-1)
        for vocabulary_slice in (1024, 256, 3001, 5000):
            assert torch.equal(best_path(head, hidden, vocabulary_slice), expected)


def test_best_path_keeps_the_earlier_token_on_a_tie():
    head = torch.nn.Linear(4, 2100)
    hidden = torch.randn(1, 3, 4)
    # Tied best logits: across two slices of 1024, inside the first slice, inside a later one.
    for tied in ([300, 1300], [7, 900], [1500, 2050]):
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
            head.bias[tied] = 1.0
            assert best_path(head, hidden, 1024).tolist() == [[tied[0]] * 3]
            assert head(hidden).argmax(dim=-1).tolist() == [[tied[0]] * 3]


def near_tied_head() -> tuple[torch.nn.Linear, torch.Tensor]:
    """A head whose logits for tokens 10 and 20 differ by ~0.002 on every frame (20 wins in
    float32), far below a float16 logit's resolution at their size: float16 ties them, and a tie
    keeps the earlier token."""
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(64, 500)
    hidden = (torch.randn(2, 30, 64, generator=g) + 1.0).half().float()  # exact in float16 too
    with torch.no_grad():
        head.weight.mul_(0.1)
        head.weight[10] = hidden.mean((0, 1)) / hidden.mean((0, 1)).norm() * 0.9
        head.weight[20] = head.weight[10]
        head.bias[10], head.bias[20] = 3.0, 3.002
        head.weight.copy_(head.weight.half().float())  # the float16 head holds the same weights
        head.bias.copy_(head.bias.half().float())
    return head, hidden


def test_a_float16_head_rescores_near_ties_in_float32():
    head, hidden = near_tied_head()
    with torch.no_grad():
        exact = head(hidden).argmax(dim=-1)
        assert (exact == 20).any()
        half = head.half()(hidden.half()).argmax(dim=-1)
        assert not torch.equal(half, exact)  # the failure this guards against: float16 flips them
        head.float()
        for dtype in (torch.float16, torch.bfloat16):
            assert torch.equal(CtcBestPath(head, dtype, packed=False)(hidden.to(dtype)), exact)


def test_a_chunked_head_gives_what_a_whole_one_does():
    head, hidden = near_tied_head()
    with torch.no_grad():
        whole = CtcBestPath(head, torch.float16, packed=False)(hidden.half())
        assert torch.equal(CtcBestPath(head, torch.float16, packed=False, rows_per_chunk=7)(hidden.half()), whole)


@pytest.mark.parametrize("dtype, frames", [(torch.bfloat16, 287), (torch.float16, 2101)])
def test_reduced_precision_encoder_counts_frames_past_what_its_dtype_holds(sensevoice_dir, dtype, frames):
    """bfloat16 holds integers exactly only to 256, float16 to 2048: frame counts summed in them
    round (287 -> 288), and the shorter segment of a batch would decode a padding frame."""
    sv = SenseVoice(sensevoice_dir, torch.device("cpu"), torch.float32)
    encoder = copy.deepcopy(sv.model.encoder).to(dtype)
    depth = sv.features(np.zeros(16000, dtype=np.float32)).shape[-1]
    xs = torch.randn(2, frames + 13, depth).to(dtype)
    lengths = torch.tensor([frames, frames + 13], dtype=torch.int32)
    with torch.inference_mode():
        _, counted = _encode_reduced(encoder, xs, lengths)
    assert counted.tolist() == [frames, frames + 13]


def test_bfloat16_without_packed_layers_decodes_a_long_segment_batched_as_alone(sensevoice_dir, monkeypatch):
    monkeypatch.setattr(sensevoice, "fast_path", lambda device, dtype: False)
    sv = SenseVoice(sensevoice_dir, torch.device("cpu"), torch.bfloat16)
    noise = np.random.default_rng(0).standard_normal(16000 * 20).astype(np.float32) * 0.1
    segment, longer = AsrItem(noise[: 16000 * 16]), AsrItem(noise)  # 16 s: past 256 encoder frames
    alone = sv.run_batch([segment])[0]
    batched = sv.run_batch([segment, longer])[0]
    assert isinstance(sv.best_path, CtcBestPath)  # near ties scored again in float32, as on CUDA
    assert alone.encoder_frames > 256
    assert batched.encoder_frames == alone.encoder_frames
