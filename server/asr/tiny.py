"""A tiny random-weight SenseVoiceSmall, written in the real model repo's on-disk layout.

The network is funasr's own ``SenseVoiceSmall`` (``SenseVoiceEncoderSmall`` + a CTC head over the
real 25055-token vocabulary), so ``funasr.AutoModel(model=<dir>)`` loads it like the real weights.
Random weights alone would decode to random tokens, but SenseVoice's contract is that the four query
frames it prepends (language, emotion, event, text norm) decode to rich tags. So a few channels of
the residual stream are set by hand and everything else stays random:

* In the first layer a constant value vector through the FSMN memory (a depthwise conv with zero
  padding) gives exact 0/1 indicators of positions 0..3, and projections of the (large, orthogonal)
  query embeddings give one channel per language and text-norm choice. No other layer reads or
  writes these channels, so on speech frames the position channels are exactly 0.
* The CTC head sends position j to tag group j. Within a group the requested language / text norm
  wins (the trained model echoes them too); otherwise small random weights pick one. Speech frames
  decode to blanks and random BPE pieces.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
import yaml

FORMAT = 1  # bump when the output changes, so cached builds (serve --demo) are redone

# Named sizes of this architecture (random weights), for benchmarks and soak runs.
SENSEVOICE_SIZES = {
    "tiny": {},
    "small": dict(output_size=256, attention_heads=4, linear_units=1024, num_blocks=6, tp_blocks=2),
    "base": dict(output_size=512, attention_heads=4, linear_units=2048, num_blocks=16, tp_blocks=4),
    "full": dict(output_size=512, attention_heads=4, linear_units=2048, num_blocks=50, tp_blocks=20),
}
BPE_FILE = "chn_jpn_yue_eng_ko_spectok.bpe.model"
VOCAB_SIZE = 25055  # the real tokenizer's size; funasr hard-codes token ids up to 25017
# Token ids of the tags: language, emotion and text-norm ids are the ones funasr hard-codes
# (lid_int_dict, emo_dict, textnorm_int_dict); event ids are a guess inside the real special range.
LANGS = {"zh": 24884, "en": 24885, "yue": 24888, "ja": 24892, "ko": 24896, "nospeech": 24992}
EMOS = {**dict(zip(["HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED"],
                   range(25001, 25008))), "EMO_UNKNOWN": 25009}
EVENTS = {**dict(zip(["Speech", "BGM", "Laughter", "Applause", "Cry", "Sneeze", "Breath", "Cough"],
                     range(24993, 25001))), "Event_UNK": 25010}
ITN = {"withitn": 25016, "woitn": 25017}
TAG_GROUPS = [LANGS, EMOS, EVENTS, ITN]  # in the order of the four query frames
# Rows of SenseVoiceSmall.embed, from its lid_dict / textnorm_dict (rows 1, 2: emotion, event query).
EMBED_ROWS = {"zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13, "withitn": 14, "woitn": 15}

TINY_ENCODER = {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 2, "tp_blocks": 1}
POS_VALUE, GATE, ID, TIE, TEXT_W, TEXT_B = 1000.0, 16.0, 2.0, 0.01, 2.0, -6.0
CORPUS = {  # words per language; random lines of them train the BPE
    "en": "the quick brown fox jumps over a lazy dog we test tiny speech models today hello world",
    "zh": "今天 天气 很好 我们 一起 去 公园 散步 然后 回家 吃饭 听 音乐 语音 识别",
    "ja": "今日 は とても 良い 天気 なので 公園 を 散歩 しましょう 音声 認識",
    "ko": "오늘은 날씨가 좋아서 공원에서 산책을 합시다 음성 인식",
    "yue": "你哋 今日 食咗 飯 未 呀 我哋 一齊 去 行街 睇戲 啦",
}


def _config(encoder_conf: dict) -> dict:
    """The real config.yaml, key for key, except the encoder sizes and ``dither``."""
    return {
        "encoder": "SenseVoiceEncoderSmall", "encoder_conf": encoder_conf,
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        # dither 0: WavFrontend dithers by default (1.0), which would make features and text random.
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25,
                          "frame_shift": 10, "lfr_m": 7, "lfr_n": 6, "cmvn_file": None, "dither": 0.0},
        "dataset": "SenseVoiceCTCDataset",
        "dataset_conf": {"index_ds": "IndexDSJsonl", "batch_sampler": "EspnetStyleBatchSampler",
                         "data_split_num": 32, "batch_type": "token", "batch_size": 14000,
                         "max_token_length": 2000, "min_token_length": 60, "max_source_length": 2000,
                         "min_source_length": 60, "max_target_length": 200, "min_target_length": 0,
                         "shuffle": True, "num_workers": 4, "sos": "${model_conf.sos}",
                         "eos": "${model_conf.eos}", "IndexDSJsonl": "IndexDSJsonl", "retry": 20},
        "train_conf": {"accum_grad": 1, "grad_clip": 5, "max_epoch": 20, "keep_nbest_models": 10,
                       "avg_nbest_model": 10, "log_interval": 100, "resume": True,
                       "validate_interval": 10000, "save_checkpoint_interval": 10000},
        "optim": "adamw", "optim_conf": {"lr": 0.00002},
        "scheduler": "warmuplr", "scheduler_conf": {"warmup_steps": 25000},
    }


def _tokenizer() -> tuple[bytes, list[int]]:
    """A small BPE laid out over the real 25055 ids; returns the model and its text-piece ids."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    tags = {f"<|{name}|>": i for group in TAG_GROUPS for name, i in group.items()}
    rng = np.random.default_rng(0)  # fixed: the tokenizer does not depend on the weight seed
    lines = [(" " if lang in ("en", "ko") else "").join(rng.choice(words.split(), 8))
             for lang, words in CORPUS.items() for _ in range(40)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, model_type="bpe", vocab_size=400,
        hard_vocab_limit=False, character_coverage=1.0, max_sentencepiece_length=4,
        num_threads=1, minloglevel=2,
        user_defined_symbols=list(tags),  # kept whole when encoding, decoded verbatim
        # no leading "▁": funasr's timestamp code re-encodes the text and skips exactly 4 tag pieces
        add_dummy_prefix=False,
    )
    trained = pb.ModelProto.FromString(buf.getvalue())
    normal = [p for p in trained.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL]
    slots = dict(enumerate(trained.pieces[:3]))  # <unk> (also the CTC blank), <s>, </s>
    slots.update({3 + i: p for i, p in enumerate(normal)})
    slots.update({tags[p.piece]: p for p in trained.pieces if p.piece in tags})
    out = pb.ModelProto()
    out.CopyFrom(trained)
    del out.pieces[:]
    for i in range(VOCAB_SIZE):  # the ids we have no piece for get placeholders that match no text
        if i in slots:
            out.pieces.append(slots[i])
        else:
            out.pieces.add(piece=f"<unused{i}>", type=pb.ModelProto.SentencePiece.UNUSED)
    out.trainer_spec.vocab_size = VOCAB_SIZE
    return out.SerializeToString(), list(range(3, 3 + len(normal)))


def _am_mvn(dim: int = 560) -> str:
    """CMVN in the Kaldi nnet text format funasr's load_cmvn parses, with typical log-mel stats."""
    mel = np.arange(80)
    shift = np.tile(-(8.5 + 5.0 * (1 - np.exp(-mel / 10))), dim // 80)  # minus mean log-mel energy
    scale = np.tile(0.15 + 0.05 * mel / 79, dim // 80)  # 1 / std
    row = lambda v: "<LearnRateCoef> 0 [ " + " ".join(f"{x:.6f}" for x in v) + " ]"  # noqa: E731
    return "\n".join(["<Nnet>", f"<Splice> {dim} {dim}", "[ 0 ]", f"<AddShift> {dim} {dim}",
                      row(shift), f"<Rescale> {dim} {dim}", row(scale), "</Nnet>", ""])


@torch.no_grad()
def _weights(config: dict, text_ids: list[int], seed: int) -> dict[str, torch.Tensor]:
    import server.asr.quiet_funasr  # noqa: F401 - first: keeps funasr's notices out
    from funasr.models.sense_voice.model import SenseVoiceSmall

    torch.manual_seed(seed)
    model = SenseVoiceSmall(encoder=config["encoder"], encoder_conf=config["encoder_conf"],
                            input_size=560, vocab_size=VOCAB_SIZE, **config["model_conf"])
    enc, d = model.encoder, model.encoder.output_size()
    # Residual channels 0-3: position indicators; 4-11: requested language / text norm; rest random.
    pos, id_ch = [0, 1, 2, 3], {name: 4 + i for i, name in enumerate(EMBED_ROWS)}
    planted, rand = list(range(12)), torch.arange(12, d)
    attn0 = enc.encoders0[0].self_attn
    left = attn0.pad_fn.padding[0]
    if d < 16 or left < 4:
        raise ValueError("need output_size >= 16 and an FSMN with >= 4 frames of left context")
    # Query embeddings: large orthonormal zero-mean rows, so the first LayerNorm maps each query
    # onto its own direction whatever the positional encoding adds.
    u = torch.randn(560, 16)
    u = torch.linalg.qr(u - u.mean(0))[0].T
    model.embed.weight.copy_(50.0 * u)

    for n, layer in enumerate([*enc.encoders0, *enc.encoders, *enc.tp_encoders]):
        att, ff = layer.self_attn, layer.feed_forward  # random layers: planted channels are off limits
        if n:  # (layer 0 reads the 560-dim features, not the residual stream)
            att.linear_q_k_v.weight[:, planted] = 0
        att.linear_q_k_v.weight[2 * d:][planted] = 0  # value rows: the FSMN adds them to the output
        att.linear_q_k_v.bias[2 * d:][planted] = 0
        att.fsmn_block.weight[planted] = 0
        att.linear_out.weight[planted] = 0
        att.linear_out.weight[:, planted] = 0
        att.linear_out.bias[planted] = 0
        ff.w_1.weight[:, planted] = 0
        ff.w_2.weight[planted] = 0
        ff.w_2.bias[planted] = 0
    v_w, v_b = attn0.linear_q_k_v.weight[2 * d:], attn0.linear_q_k_v.bias[2 * d:]
    # FSMN output is v(t) + sum_o w_o v(t+o), v = POS_VALUE on real frames and 0 before t=0, so
    # w_0 = -1, w_-j = 1, w_-j-1 = -1 leave v(t-j) - v(t-j-1) = POS_VALUE * [t == j].
    for j in pos:
        v_b[j] = POS_VALUE
        w = attn0.fsmn_block.weight[j, 0]
        w[left] -= 1
        w[left - j] += 1
        w[left - j - 1] -= 1
    for name, c in id_ch.items():  # ~sqrt(560) on the query frame asking for `name`, ~N(0, 1) on speech
        v_w[c] = u[EMBED_ROWS[name]]

    # CTC head. The gate x[P_j] - mean_k x[P_k] is exactly 0 on speech frames (all P_k equal there).
    lo = model.ctc.ctc_lo
    lo.weight.zero_()
    lo.bias.fill_(-1e3)  # never <s>, </s> or placeholders
    lo.bias[0] = 0.0  # blank
    t = torch.tensor(text_ids)
    lo.weight[t[:, None], rand] = torch.randn(len(t), len(rand)) * TEXT_W / len(rand) ** 0.5
    lo.bias[t] = TEXT_B
    for j, group in enumerate(TAG_GROUPS):
        for name, i in group.items():
            lo.weight[i, pos] = -GATE / 4
            lo.weight[i, j] += GATE
            lo.weight[i, rand] = torch.randn(len(rand)) * TIE / len(rand) ** 0.5
            if name in id_ch:
                lo.weight[i, id_ch[name]] = ID
            # LayerNorm outputs are bounded by sqrt(d): no tag can beat the blank on a speech frame.
            lo.bias[i] = -(ID + TIE) * d ** 0.5 - 10.0
    return model.state_dict()


def build_tiny_sensevoice(target: Path, *, seed: int = 0, **encoder_overrides) -> Path:
    """Write a tiny random-weight SenseVoiceSmall into ``target`` (created) and return ``target``.

    Files, as in the real model repo: ``config.yaml`` (the real one with tiny encoder sizes and
    ``dither: 0``), ``configuration.json`` (funasr resolves its ``file_path_metas`` against the
    directory), ``model.pt`` (state dict), ``am.mvn`` (CMVN) and ``chn_jpn_yue_eng_ko_spectok.bpe.model``
    (sentencepiece BPE over the real 25055 ids, with the rich tags at their real ids).
    ``encoder_overrides`` update ``encoder_conf``; the real sizes are output_size=512,
    attention_heads=4, linear_units=2048, num_blocks=50, tp_blocks=20. The same seed and overrides
    give byte-identical files, and a finished build of them in ``target`` is returned at once.
    """
    target = Path(target)
    encoder_conf = {**TINY_ENCODER, "dropout_rate": 0.1, "positional_dropout_rate": 0.1,
                    "attention_dropout_rate": 0.1, "input_layer": "pe",
                    "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
                    "kernel_size": 11, "sanm_shfit": 0, "selfattention_layer_type": "sanm",
                    **encoder_overrides}
    stamp = json.dumps({"format": FORMAT, "seed": seed, "encoder_conf": encoder_conf})
    marker = target / ".complete"
    if marker.exists() and marker.read_text() == stamp:
        return target
    target.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    config = _config(encoder_conf)
    proto, text_ids = _tokenizer()
    (target / BPE_FILE).write_bytes(proto)
    (target / "am.mvn").write_text(_am_mvn())
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (target / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition", "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"}, "model_name_in_hub": {"ms": "", "hf": ""},
        "file_path_metas": {"init_param": "model.pt", "config": "config.yaml",
                            "tokenizer_conf": {"bpemodel": BPE_FILE},
                            "frontend_conf": {"cmvn_file": "am.mvn"}}}, indent=2))
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG alone
        torch.save(_weights(config, text_ids, seed), target / "model.pt")
    marker.write_text(stamp)  # last, so an interrupted build is redone
    return target
