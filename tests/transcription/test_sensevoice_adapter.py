"""The SenseVoice adapter's own pieces, against what funasr computes."""

from __future__ import annotations

import torch

from server.transcription.model import best_path


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
