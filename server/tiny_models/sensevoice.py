"""A tiny random-weight SenseVoiceSmall, written in the real model repo's on-disk layout.

The architecture is funasr's own ``SenseVoiceSmall`` (``SenseVoiceEncoderSmall`` + CTC over the real
25055-token vocabulary), so ``funasr.AutoModel(model=<dir>)`` loads it exactly like the real weights.
A random network would decode to random tokens; SenseVoice's contract is that its first four CTC
frames (the language / emotion / event / text-norm query frames) decode to rich tags. So a few
channels of the residual stream are planted by hand to carry that contract, and the rest is random:

* The FSMN memory of the first layer, fed a constant, turns zero padding into exact 0/1 indicators
  of positions 0..3; no later layer reads or writes those channels, so speech frames hold exactly 0.
* The same layer projects the query embeddings (large orthogonal rows) onto one channel per language
  and per text-norm choice, so ``language="en"`` / ``use_itn`` are echoed, as the trained model does.
* The CTC head maps position j to its tag group; random channels pick the tag within a group
  (``language="auto"``, emotion, event) and random BPE pieces on speech frames.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
import yaml

BPE_FILE = "chn_jpn_yue_eng_ko_spectok.bpe.model"
VOCAB_SIZE = 25055  # the real tokenizer's size; funasr hard-codes ids up to 25017
# Ids funasr hard-codes (lid_int_dict, emo_dict, textnorm_int_dict) or that public token lists show;
# the event ids are a best guess (kept inside the real special-token range 24884..25054).
LANGS = {"zh": 24884, "en": 24885, "yue": 24888, "ja": 24892, "ko": 24896, "nospeech": 24992}
EVENTS = dict(zip(["Speech", "BGM", "Laughter", "Applause", "Cry", "Sneeze", "Breath", "Cough"], range(24993, 25001)))
EVENTS["Event_UNK"] = 25010
EMOS = dict(zip(["HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED"], range(25001, 25008)))
EMOS["EMO_UNKNOWN"] = 25009
ITN = {"withitn": 25016, "woitn": 25017}
TAG_GROUPS = [LANGS, EMOS, EVENTS, ITN]  # in the order the model emits them
# Rows of SenseVoiceSmall.embed: its lid_dict and textnorm_dict values; 1 and 2 are the emo/event queries.
LID_ROWS = {"zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
ITN_ROWS = {"withitn": 14, "woitn": 15}

GATE, ID, TIE, TEXT_W, TEXT_B = 16.0, 2.0, 0.1, 2.0, -6.0  # CTC head gains
TINY_ENCODER = dict(output_size=32, attention_heads=2, linear_units=64, num_blocks=2, tp_blocks=1)
CORPUS = {  # words per language; random lines of them train the BPE
    "en": "the quick brown fox jumps over a lazy dog we test tiny speech models today hello world",
    "zh": "今天 天气 很好 我们 一起 去 公园 散步 然后 回家 吃饭 听 音乐 语音 识别",
    "ja": "今日 は とても 良い 天気 なので 公園 を 散歩 しましょう 音声 認識",
    "ko": "오늘은 날씨가 좋아서 공원에서 산책을 합시다 음성 인식",
    "yue": "你哋 今日 食咗 飯 未 呀 我哋 一齊 去 行街 睇戲 啦",
}


def _config(encoder_conf: dict) -> dict:
    """The real config.yaml, key for key, but with the given encoder sizes and dither off."""
    return {
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": encoder_conf,
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        # dither 0: funasr dithers by default (1.0), which makes features, and text, random.
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


def _tokenizer_proto() -> tuple[bytes, list[int]]:
    """A BPE trained on CORPUS, laid out over the real 25055 ids; returns it and its text-piece ids."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    tags = {f"<|{name}|>": i for group in TAG_GROUPS for name, i in group.items()}
    rng = np.random.default_rng(0)  # fixed: the tokenizer does not depend on the weight seed
    lines = [(" " if lang in ("en", "ko") else "").join(rng.choice(words.split(), 8))
             for lang, words in CORPUS.items() for _ in range(40)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, model_type="bpe", vocab_size=400,
        hard_vocab_limit=False, character_coverage=1.0, max_sentencepiece_length=4, num_threads=1, minloglevel=2,
        user_defined_symbols=list(tags),  # parsed whole and decoded verbatim, like the real tags
    )
    trained = pb.ModelProto.FromString(buf.getvalue())
    normal = [p for p in trained.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL]
    slots = {i: p for i, p in enumerate(trained.pieces[:3])}  # <unk> (= CTC blank), <s>, </s>
    slots.update({3 + i: p for i, p in enumerate(normal)})
    slots.update({tags[p.piece]: p for p in trained.pieces if p.piece in tags})
    out = pb.ModelProto()
    out.CopyFrom(trained)
    del out.pieces[:]
    for i in range(VOCAB_SIZE):  # ids we have no piece for are placeholders that never match text
        if i in slots:
            out.pieces.append(slots[i])
        else:
            out.pieces.add(piece=f"<unused{i}>", score=0.0, type=pb.ModelProto.SentencePiece.UNUSED)
    out.trainer_spec.vocab_size = VOCAB_SIZE
    return out.SerializeToString(), list(range(3, 3 + len(normal)))


def _am_mvn(dim: int = 560) -> str:
    """Kaldi-nnet CMVN as funasr's load_cmvn reads it: typical log-mel means/inverse stds per mel bin."""
    mel = np.arange(80)
    shift = np.tile(-(14.0 - 5.0 * mel / 79), dim // 80)  # log-mel energy falls with frequency
    scale = np.tile(0.22 + 0.08 * np.cos(np.pi * mel / 79), dim // 80)
    row = lambda v: "<LearnRateCoef> 0 [ " + " ".join(f"{x:.6f}" for x in v) + " ]"
    return "\n".join(["<Nnet>", f"<Splice> {dim} {dim}", "[ 0 ]", f"<AddShift> {dim} {dim}", row(shift),
                      f"<Rescale> {dim} {dim}", row(scale), "</Nnet>", ""])


@torch.no_grad()
def _weights(config: dict, text_ids: list[int], seed: int) -> dict[str, torch.Tensor]:
    from funasr.models.sense_voice.model import SenseVoiceSmall

    torch.manual_seed(seed)
    model = SenseVoiceSmall(encoder=config["encoder"], encoder_conf=config["encoder_conf"],
                            input_size=560, vocab_size=VOCAB_SIZE, **config["model_conf"])
    enc, d = model.encoder, config["encoder_conf"]["output_size"]
    pos, lang_ch, itn_ch = [0, 1, 2, 3], {k: 4 + i for i, k in enumerate(LANGS)}, {"withitn": 10, "woitn": 11}
    planted, rand = list(range(12)), list(range(12, d))
    if len(rand) < 4:
        raise ValueError("output_size must be at least 16")
    # Query embeddings: large, orthonormal, zero-mean rows, so the first LayerNorm maps each onto
    # its own direction whatever the positional encoding adds.
    u = torch.randn(560, 16)
    u = torch.linalg.qr(u - u.mean(0))[0].T  # (16, 560)
    model.embed.weight.copy_(50.0 * u)

    layers = list(enc.encoders0) + list(enc.encoders) + list(enc.tp_encoders)
    for n, layer in enumerate(layers):
        att, ff = layer.self_attn, layer.feed_forward
        # Random layers neither read nor write the planted channels.
        att.linear_out.weight[planted] = 0
        att.linear_out.weight[:, planted] = 0
        att.linear_out.bias[planted] = 0
        att.linear_q_k_v.weight[2 * d:][planted] = 0
        att.linear_q_k_v.bias[2 * d:][planted] = 0
        att.fsmn_block.weight[planted] = 0
        ff.w_2.weight[planted] = 0
        ff.w_2.bias[planted] = 0
        ff.w_1.weight[:, planted] = 0
        if n:
            att.linear_q_k_v.weight[:, planted] = 0
    att, k = enc.encoders0[0].self_attn, enc.encoders0[0].self_attn.fsmn_block.kernel_size[0]
    v_w, v_b = att.linear_q_k_v.weight[2 * d:], att.linear_q_k_v.bias[2 * d:]
    left = att.pad_fn.padding[0]
    if left < 4:
        raise ValueError("kernel_size/sanm_shfit must give the FSMN at least 4 frames of left context")
    # Position indicators: v = const, and FSMN output x(t) + sum_o w_o x(t+o) with zero padding
    # before t=0 equals const * [t == j] for w_{-j} = 1, w_{-j-1} = -1, w_0 = -1.
    mag = 560 ** 0.5
    for j in pos:
        v_b[j] = mag
        w = att.fsmn_block.weight[j, 0]
        w[left - j] += 1
        w[left - j - 1] -= 1
        w[left] -= 1
    for name, c in lang_ch.items():
        v_w[c] = u[LID_ROWS[name]]
    for name, c in itn_ch.items():
        v_w[c] = u[ITN_ROWS[name]]

    # CTC head. gate_j = x[P_j] - mean_k x[P_k] is exactly 0 on speech frames and large on frame j.
    lo = model.ctc.ctc_lo
    lo.weight.zero_()
    lo.bias.fill_(-1e3)  # never emit <s>, </s> or placeholders
    lo.bias[0] = 0.0  # blank
    t, r = torch.tensor(text_ids), torch.tensor(rand)
    lo.weight[t[:, None], r] = torch.randn(len(t), len(r)) * TEXT_W / len(r) ** 0.5
    lo.bias[t] = TEXT_B
    id_ch = {LANGS[k]: c for k, c in lang_ch.items()} | {ITN[k]: c for k, c in itn_ch.items()}
    for j, group in enumerate(TAG_GROUPS):
        for i in group.values():
            lo.weight[i, pos] = -GATE / 4
            lo.weight[i, j] += GATE
            lo.weight[i, r] = torch.randn(len(r)) * TIE / len(r) ** 0.5
            if i in id_ch:  # the language / text-norm the caller asked for wins its group
                lo.weight[i, id_ch[i]] = ID
            # LayerNorm bounds every channel by sqrt(d), so this bias keeps tags off speech frames.
            lo.bias[i] = -(ID + TIE) * d ** 0.5 - 10.0
    return model.state_dict()


def build_tiny_sensevoice(target: Path, *, seed: int = 0, **encoder_overrides) -> Path:
    """Write a tiny random-weight SenseVoiceSmall into ``target`` and return ``target``.

    Layout as the real model repo: ``config.yaml``, ``configuration.json`` (funasr maps its
    ``file_path_metas`` to the files below), ``model.pt`` (state dict), ``am.mvn`` (CMVN) and
    ``chn_jpn_yue_eng_ko_spectok.bpe.model`` (sentencepiece BPE over the real 25055 ids).
    ``encoder_overrides`` update ``encoder_conf`` (real sizes: output_size=512, attention_heads=4,
    linear_units=2048, num_blocks=50, tp_blocks=20). Deterministic for a given seed and overrides;
    a complete build already in ``target`` is returned as is.
    """
    target = Path(target)
    marker = target / ".complete"
    if marker.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    encoder_conf = {**TINY_ENCODER, "dropout_rate": 0.1, "positional_dropout_rate": 0.1,
                    "attention_dropout_rate": 0.1, "input_layer": "pe",
                    "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
                    "kernel_size": 11, "sanm_shfit": 0, "selfattention_layer_type": "sanm"}
    encoder_conf.update(encoder_overrides)
    config = _config(encoder_conf)
    proto, text_ids = _tokenizer_proto()
    (target / BPE_FILE).write_bytes(proto)
    (target / "am.mvn").write_text(_am_mvn())
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    (target / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition", "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"}, "model_name_in_hub": {"ms": "", "hf": ""},
        "file_path_metas": {"init_param": "model.pt", "config": "config.yaml",
                            "tokenizer_conf": {"bpemodel": BPE_FILE},
                            "frontend_conf": {"cmvn_file": "am.mvn"}}}, indent=2))
    torch.save(_weights(config, text_ids, seed), target / "model.pt")
    marker.write_text("ok\n")  # last: an interrupted build is redone on the next call
    return target
