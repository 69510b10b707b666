"""Small random-weight stand-ins for BAAI/bge-m3 and BAAI/bge-reranker-v2-m3.

Both real models are XLM-RoBERTa. The builders here write the same architectures
(only smaller, unless sizes are overridden) in the same on-disk layout as the
Hugging Face repos, so the server's loading code and FlagEmbedding's own classes
load them exactly as they load the real weights. No download is needed: the
tokenizer is trained on the spot on a small built-in corpus.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaModel,
    XLMRobertaTokenizerFast,
)

# Named sizes of this architecture (random weights), for benchmarks and soak runs.
XLMR_SIZES = {
    "tiny": {},
    "small": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "full": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}

# XLM-R's special tokens and ids; <mask> is always the last id of the vocabulary.
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
MASK = "<mask>"
MODEL_MAX_LENGTH = 8192
MARKER = ".complete"

TINY_CONFIG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=MODEL_MAX_LENGTH + 2,  # RoBERTa positions start after pad id 1
    type_vocab_size=1,
    layer_norm_eps=1e-5,  # as in bge-m3's config.json (the XLMRobertaConfig default is 1e-12)
    # Only the random init, not the architecture: at the default 0.02 a 32-wide model's
    # residual stream is all embedding, so every text gets the same vector and score.
    initializer_range=0.2,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)

# Built-in training text. Domain words come first so they are frequent enough to
# become whole tokens; the rest are common English words.
_ENGLISH = """hello world what is the a an giant panda bear bamboo China search engine query document
answer question model server text vector dense sparse token embedding score rank language good
of and to in it you that he was for on are with as I his they be at one have this from or had by hot
word but some we can out other were all there when up use your how said each she which do their time
if will way about many then them write would like so these her long make thing see him two has look
more day could go come did number sound no most people my over know water than call first who may down
side been now find any new work part take get place made live where after back little only round man
year came show every me give our under name very through just form sentence great think say help low
line turn cause much mean before move right boy old too same tell does set three want air well also
play small end put home read hand large add even land here must big high such follow act why ask men
change went light kind off need house picture try us again animal point mother near build self earth
father head stand own page should country found school grow study still learn plant cover food sun four
between state keep eye never last let thought city tree cross farm hard start might story saw far sea
draw left late run while press close night real life few north open seem together next white children
begin got walk example paper group always music those both often letter until river car feet care
second book carry took science eat room friend began idea fish mountain stop once hear horse cut sure
watch color face wood main enough girl young ready above ever red list feel talk bird soon body dog
family leave song door black short class wind happen ship area half rock order fire south problem""".split()
# Frequent Chinese characters, plus short Japanese and Korean sentences.
_HANZI = ("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可"
          "她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已"
          "老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力"
          "机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军"
          "产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常"
          "提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直熊猫")
_JA_KO = ["こんにちは世界。今日はいい天気ですね。東京は日本の首都です。", "ジャイアントパンダは中国に住むクマです。",
          "検索エンジンは文書を探します。ありがとうございます。", "안녕하세요 세계. 오늘 날씨가 좋네요.",
          "서울은 한국의 수도입니다. 판다는 중국에 사는 곰입니다.", "검색 엔진은 문서를 찾습니다. 감사합니다."]


def _corpus() -> list[str]:
    """About 650 deterministic lines: English, CJK, digits and punctuation."""
    rng = random.Random(0)  # fixed seed: the tokenizer must be identical on every build
    # Zipf-like weights (1/sqrt(rank)) so common words become whole tokens and rare ones subwords.
    weights = [1 / (i + 1) ** 0.5 for i in range(len(_ENGLISH))]
    lines = [" ".join(rng.choices(_ENGLISH, weights, k=rng.randint(6, 14))).capitalize() + rng.choice(".?!,;:")
             for _ in range(400)]
    lines += ["".join(rng.choices(_HANZI, k=rng.randint(5, 15))) + rng.choice("。，！？") for _ in range(150)]
    lines += _JA_KO * 3
    lines += [f"{rng.randint(0, 10 ** rng.randint(1, 7))} {rng.random() * 100:.2f} #{i} (id-{i:04d}) 2024-{i % 12 + 1}"
              for i in range(100)]
    lines.append("0123456789 .,;:!?'\"()[]{}<>-_+=*/\\|@#$%^&~` … — «» “” 「」 、。，！？ " + _HANZI)
    return lines


def _with_xlmr_pipeline(tok: Tokenizer) -> Tokenizer:
    # XLM-R normalizes with sentencepiece's nmt_nfkc and collapses runs of spaces.
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def build_xlmr_tokenizer(target: Path) -> None:
    """Train a small XLM-R-like tokenizer and save it into ``target``.

    Like XLM-R's sentencepiece tokenizer it is a Unigram model behind a Metaspace
    ("▁") pre-tokenizer, with ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3,
    ``<mask>`` last, and the ``<s> A </s></s> B </s>`` pair template. It is saved
    as an ``XLMRobertaTokenizerFast`` so ``AutoTokenizer`` loads that class.
    """
    corpus = _corpus()
    trainer = trainers.UnigramTrainer(
        vocab_size=1500,
        special_tokens=SPECIALS,  # the trainer gives them ids 0..3 in this order
        unk_token="<unk>",
        show_progress=False,
        # Every character of the corpus stays in the vocabulary, so CJK text is never <unk>.
        initial_alphabet=sorted(set("".join(corpus))),
    )
    trained = _with_xlmr_pipeline(Tokenizer(models.Unigram()))
    trained.train_from_iterator(corpus, trainer=trainer)
    # The trained ids are not reproducible as they come: EM runs in parallel, so scores
    # jitter in the last bits, and characters that EM dropped are appended at the bottom
    # with scores min, min-1e-4, ... in (per-process random) hash-set order. Rounding the
    # scores, giving the bottom band one score and sorting by (score, piece) fixes the ids.
    vocab = json.loads(trained.to_str())["model"]["vocab"]
    specials, pieces = [tuple(v) for v in vocab[:len(SPECIALS)]], vocab[len(SPECIALS):]
    floor = round(min(score for _, score in pieces) + 0.05, 4)
    pieces = sorted(((piece, max(round(score, 8), floor)) for piece, score in pieces),
                    key=lambda piece_score: (-piece_score[1], piece_score[0]))
    tok = _with_xlmr_pipeline(Tokenizer(models.Unigram(specials + pieces, unk_id=3)))
    tok.add_special_tokens(SPECIALS + [MASK])  # MASK is new, so it takes the last id
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = XLMRobertaTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token=MASK, model_max_length=MODEL_MAX_LENGTH,
    )
    fast.save_pretrained(str(target))


def _build(target: Path, seed: int, overrides: dict, kind: str, write_weights) -> Path:
    """Shared skeleton: skip finished builds, write tokenizer + weights, marker last."""
    target = Path(target)
    stamp = json.dumps({"kind": kind, "seed": seed, "overrides": overrides}, sort_keys=True, default=str)
    marker = target / MARKER
    # The marker is written last, so its presence means every other file is complete;
    # its content guards against reusing a build made with other settings.
    if marker.is_file() and marker.read_text() == stamp:
        return target
    target.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    build_xlmr_tokenizer(target)
    vocab_size = len(XLMRobertaTokenizerFast.from_pretrained(str(target)))
    config = XLMRobertaConfig(**{**TINY_CONFIG, "vocab_size": vocab_size, **overrides})
    torch.manual_seed(seed)
    write_weights(target, config)
    marker.write_text(stamp)
    return target


def _write_bge_m3(target: Path, config: XLMRobertaConfig) -> None:
    XLMRobertaModel(config).save_pretrained(str(target))
    hidden = config.hidden_size
    colbert = torch.nn.Linear(hidden, hidden)
    sparse = torch.nn.Linear(hidden, 1)
    # relu(sparse(h)) is the token weight; with a zero-centred output roughly half the
    # tokens would be dropped at random, so a positive bias keeps sparse output non-empty.
    with torch.no_grad():
        sparse.bias.fill_(0.5)
    # Same file names and state-dict keys ("weight", "bias") that FlagEmbedding loads.
    torch.save(colbert.state_dict(), target / "colbert_linear.pt")
    torch.save(sparse.state_dict(), target / "sparse_linear.pt")


def _write_reranker(target: Path, config: XLMRobertaConfig) -> None:
    config.num_labels = 1  # one relevance logit, as bge-reranker-v2-m3
    XLMRobertaForSequenceClassification(config).save_pretrained(str(target))


def build_tiny_bge_m3(target: Path, *, seed: int = 0, **config_overrides) -> Path:
    """Write a random-weight bge-m3 (XLMRobertaModel + colbert/sparse heads) into ``target``.

    Layout as in BAAI/bge-m3: ``config.json``, ``model.safetensors``, tokenizer files,
    ``colbert_linear.pt`` and ``sparse_linear.pt``. ``config_overrides`` update the
    tiny ``XLMRobertaConfig`` (pass the real sizes for a full-size model). Returns
    ``target``; a second call with the same arguments returns at once.
    """
    return _build(target, seed, config_overrides, "bge-m3", _write_bge_m3)


def build_tiny_reranker(target: Path, *, seed: int = 0, **config_overrides) -> Path:
    """Write a random-weight bge-reranker-v2-m3 (XLMRobertaForSequenceClassification, one label).

    Layout as in BAAI/bge-reranker-v2-m3: ``config.json``, ``model.safetensors`` and the
    tokenizer files. ``config_overrides`` update the tiny ``XLMRobertaConfig``. Returns
    ``target``; a second call with the same arguments returns at once.
    """
    return _build(target, seed, config_overrides, "bge-reranker-v2-m3", _write_reranker)
