"""Tiny random-weight BERT-family models with real, locally trained tokenizers.

Everything is built offline at call time: a small deterministic corpus is made from
stdlib docstrings (plus the Zen of Python and a few hand-written lines with accents,
emoji, CJK and odd whitespace), tokenizers are trained on it with the same libraries
the real checkpoints used (SentencePiece unigram for ALBERT, byte-level BPE for
RoBERTa, WordPiece for BERT/ELECTRA/SpanBERT), and tiny models are initialised with a
fixed seed. Each model is saved with ``save_pretrained`` so the ordinary
``AutoTokenizer`` / ``AutoModel`` / ``AutoModelForQuestionAnswering`` loading path works.

Builds are cached under ``root / "v-<hash>" / <name>``; the hash covers this file, the
corpus and the library versions, so editing any of them triggers a rebuild.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import io
import json
import os
import shutil
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sentencepiece
import tokenizers
import torch
import transformers
from sentencepiece import sentencepiece_model_pb2
from tokenizers import AddedToken, BertWordPieceTokenizer, ByteLevelBPETokenizer
from transformers import (
    AlbertConfig,
    AlbertForMaskedLM,
    AlbertForQuestionAnswering,
    AlbertModel,
    AlbertTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertTokenizer,
    ElectraConfig,
    ElectraForMaskedLM,
    ElectraForPreTraining,
    ElectraForQuestionAnswering,
    ElectraModel,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    RobertaTokenizer,
)
from transformers.utils import logging as hf_logging

MAX_TOKENS = 128
"""Usable sequence length of every tiny model (``tokenizer.model_max_length``)."""

VOCAB_SIZE = 1500
MARKER = ".complete"

_CORPUS_MODULES = (
    "argparse",
    "collections",
    "csv",
    "datetime",
    "email",
    "functools",
    "http",
    "itertools",
    "json",
    "logging",
    "pathlib",
    "re",
    "string",
    "textwrap",
    "unittest",
)

# Repeated so their words are frequent enough to become whole BPE/WordPiece pieces ("Ġcity",
# "paris"); the unigram SentencePiece model still splits some ("▁p" "aris", "▁c" "ity").
_HANDWRITTEN = (
    "Paris is a beautiful city.",
    "Paris is the capital of France.",
    "What is the capital of France?",
    "What is machine learning? Machine learning is a subset of artificial intelligence.",
    "Machine learning models learn patterns from data.",
    "Café naïve résumé façade coöperate Ångström",
    "🙂 emoji 🚀 rocket 🎉 party",
    "東京は日本の首都です。北京是中国的首都。",
    "Multiple   spaces\tand\ttabs   between    words",
    "The quick brown fox jumps over the lazy dog.",
    "Who wrote the Zen of Python? Tim Peters wrote the Zen of Python.",
)
_HANDWRITTEN_REPEATS = 20


def build_corpus() -> list[str]:
    """Deterministic (for a given Python version) list of non-empty text lines."""
    with contextlib.redirect_stdout(io.StringIO()):
        import this  # importing prints the Zen
    zen = "".join(this.d.get(c, c) for c in this.s)
    texts = [zen]
    for module_name in sorted(_CORPUS_MODULES):
        module = importlib.import_module(module_name)
        texts.append(inspect.getdoc(module) or "")
        for attr in sorted(n for n in dir(module) if not n.startswith("_")):
            obj = getattr(module, attr, None)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                texts.append(inspect.getdoc(obj) or "")
    texts.extend(list(_HANDWRITTEN) * _HANDWRITTEN_REPEATS)
    return [line for text in texts for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- tokenizers


def _albert_normalize(text: str) -> str:
    """What AlbertTokenizer(do_lower_case=True, keep_accents=False) does before the SPM model."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _sentencepiece_tokenizer(corpus: list[str]) -> PreTrainedTokenizerBase:
    """SentencePiece unigram model laid out like albert-base-v2's spiece.model."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([_albert_normalize(line) for line in corpus]),
        model_writer=model,
        model_type="unigram",
        vocab_size=VOCAB_SIZE,
        character_coverage=1.0,
        # albert-base-v2: <pad>=0 <unk>=1 [CLS]=2 [SEP]=3 [MASK]=4 (AlbertTokenizer hard-codes unk_id=1)
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        num_threads=1,
        minloglevel=2,
    )
    proto = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]
    proto.ParseFromString(model.getvalue())
    return AlbertTokenizer(
        vocab=[(piece.piece, piece.score) for piece in proto.pieces],
        _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap or None,
        do_lower_case=True,
        keep_accents=False,
        model_max_length=MAX_TOKENS,
    )


def _byte_level_bpe_tokenizer(corpus: list[str]) -> PreTrainedTokenizerBase:
    """Byte-level BPE laid out like roberta-base: <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus,
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    raw_merges = json.loads(bpe.to_str())["model"]["merges"]  # [[a, b], ...] (older: ["a b", ...])
    merges = [tuple(m.split(" ") if isinstance(m, str) else m) for m in raw_merges]
    return RobertaTokenizer(
        vocab=bpe.get_vocab(),
        merges=merges,  # type: ignore[arg-type]  # annotated list[str]; tokenizers' BPE wants pairs
        # roberta-base's <mask> swallows the space before it ("is <mask>" -> "Ġis", "<mask>").
        mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True),  # type: ignore[arg-type]
        model_max_length=MAX_TOKENS,
    )


def _wordpiece_tokenizer(corpus: list[str], *, lowercase: bool) -> PreTrainedTokenizerBase:
    wordpiece = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=None if lowercase else False)
    # The trainer creates the "##c" continuation pieces in hash-map order, so their ids (and
    # with them merge tie-breaks, hence the vocabulary) change from run to run. Registering them
    # up front, sorted, makes training deterministic.
    alphabet = sorted({c for line in corpus for c in wordpiece.normalizer.normalize_str(line) if not c.isspace()})
    wordpiece.train_from_iterator(
        corpus,
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"##{c}" for c in alphabet)],
        show_progress=False,
    )
    return BertTokenizer(vocab=wordpiece.get_vocab(), do_lower_case=lowercase, model_max_length=MAX_TOKENS)


_TOKENIZER_BUILDERS: dict[str, Callable[[list[str]], PreTrainedTokenizerBase]] = {
    "sentencepiece": _sentencepiece_tokenizer,
    "bpe": _byte_level_bpe_tokenizer,
    "wordpiece-uncased": lambda corpus: _wordpiece_tokenizer(corpus, lowercase=True),
    "wordpiece-cased": lambda corpus: _wordpiece_tokenizer(corpus, lowercase=False),
}

# --------------------------------------------------------------------------- models

_COMMON: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    # With the usual 0.02, attention is ~uniform and [CLS]/pooled outputs are ~identical
    # (cosine 1.000) for any input; 0.5 gives clearly input-dependent outputs.
    "initializer_range": 0.5,
}

# Per-family deviations from _COMMON, mirroring the real checkpoints' shapes.
_FAMILY: dict[type[PretrainedConfig], dict[str, Any]] = {
    AlbertConfig: {"embedding_size": 16, "num_attention_heads": 2},
    RobertaConfig: {"type_vocab_size": 1},
    ElectraConfig: {"embedding_size": 16},
    BertConfig: {},
}


def _make_config(
    config_cls: type[PretrainedConfig], tok: PreTrainedTokenizerBase, extra: dict[str, Any] | None = None
) -> PretrainedConfig:
    assert tok.pad_token_id is not None
    positions = MAX_TOKENS
    if config_cls is RobertaConfig:
        # RoBERTa position ids start at padding_idx + 1: 128 usable positions need 130 rows.
        positions += tok.pad_token_id + 1
    kwargs: dict[str, Any] = {
        **_COMMON,
        **_FAMILY[config_cls],
        "vocab_size": len(tok),
        "max_position_embeddings": positions,
        "pad_token_id": tok.pad_token_id,
    }
    if tok.bos_token is not None:  # ALBERT/RoBERTa configs carry bos/eos ids, BERT/ELECTRA's don't
        kwargs |= {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    return config_cls(**kwargs, **(extra or {}))


@dataclass(frozen=True)
class _Spec:
    tokenizer: str
    config: type[PretrainedConfig]
    model: type[PreTrainedModel]
    seed: int
    extra: dict[str, Any] | None = None  # config settings of a head (labels, problem type)


def _labels(*names: str, **extra: Any) -> dict[str, Any]:
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
        **extra,
    }


_NER = _labels("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")


SPECS: dict[str, _Spec] = {
    "albert": _Spec("sentencepiece", AlbertConfig, AlbertModel, 1),
    "roberta": _Spec("bpe", RobertaConfig, RobertaModel, 2),
    "electra": _Spec("wordpiece-uncased", ElectraConfig, ElectraModel, 3),
    "bert": _Spec("wordpiece-uncased", BertConfig, BertModel, 4),
    "albert-qa": _Spec("sentencepiece", AlbertConfig, AlbertForQuestionAnswering, 5),
    "roberta-qa": _Spec("bpe", RobertaConfig, RobertaForQuestionAnswering, 6),
    "electra-qa": _Spec("wordpiece-uncased", ElectraConfig, ElectraForQuestionAnswering, 7),
    # SpanBERT checkpoints are plain BERT with a cased WordPiece vocabulary.
    "spanbert-qa": _Spec("wordpiece-cased", BertConfig, BertForQuestionAnswering, 8),
    # Heads: masked-language models of each variant (ELECTRA's generator among them), ELECTRA's
    # discriminator, sequence classifiers (NLI-like single-label; multi-label; a one-label
    # cross-encoder) and token classifiers (NER).
    "albert-mlm": _Spec("sentencepiece", AlbertConfig, AlbertForMaskedLM, 9),
    "roberta-mlm": _Spec("bpe", RobertaConfig, RobertaForMaskedLM, 10),
    "bert-mlm": _Spec("wordpiece-uncased", BertConfig, BertForMaskedLM, 11),
    "electra-generator": _Spec("wordpiece-uncased", ElectraConfig, ElectraForMaskedLM, 12),
    "electra-discriminator": _Spec("wordpiece-uncased", ElectraConfig, ElectraForPreTraining, 13),
    "bert-nli": _Spec(
        "wordpiece-uncased",
        BertConfig,
        BertForSequenceClassification,
        14,
        _labels("entailment", "neutral", "contradiction"),
    ),
    "roberta-multilabel": _Spec(
        "bpe",
        RobertaConfig,
        RobertaForSequenceClassification,
        15,
        _labels("sports", "politics", "science", problem_type="multi_label_classification"),
    ),
    "bert-cross-encoder": _Spec("wordpiece-uncased", BertConfig, BertForSequenceClassification, 16, {"num_labels": 1}),
    "bert-ner": _Spec("wordpiece-uncased", BertConfig, BertForTokenClassification, 17, _NER),
    "roberta-ner": _Spec("bpe", RobertaConfig, RobertaForTokenClassification, 18, _NER),
}


def _build_model(spec: _Spec, tok: PreTrainedTokenizerBase) -> PreTrainedModel:
    torch.manual_seed(spec.seed)
    model = spec.model(_make_config(spec.config, tok, spec.extra))
    qa_outputs = getattr(model, "qa_outputs", None)
    if isinstance(qa_outputs, torch.nn.Linear):
        # Default init gives near-identical start/end logits; make span choice input-dependent.
        torch.nn.init.normal_(qa_outputs.weight, std=1.0)
        torch.nn.init.zeros_(qa_outputs.bias)
    model.eval()
    return model


# --------------------------------------------------------------------------- cache / API


def _cache_key(corpus: list[str]) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for part in (
        transformers.__version__,
        tokenizers.__version__,
        sentencepiece.__version__,
        torch.__version__,
        "\n".join(corpus),
    ):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Silence save_pretrained's "Writing model shards" bar without leaking global state."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def build_tiny_models(root: Path) -> dict[str, Path]:
    """Build (or reuse from cache) every tiny model under root; return name -> directory."""
    corpus = build_corpus()
    cache = Path(root) / f"v-{_cache_key(corpus)[:12]}"
    cache.mkdir(parents=True, exist_ok=True)
    dirs = {name: cache / name for name in SPECS}
    tokenizers_by_kind: dict[str, PreTrainedTokenizerBase] = {}
    for name, spec in SPECS.items():
        if (dirs[name] / MARKER).is_file():
            continue
        if spec.tokenizer not in tokenizers_by_kind:
            tokenizers_by_kind[spec.tokenizer] = _TOKENIZER_BUILDERS[spec.tokenizer](corpus)
        tok = tokenizers_by_kind[spec.tokenizer]
        # Build in a private directory and rename it into place, so concurrent builders
        # (e.g. pytest-xdist workers) never see a half-written model.
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
        try:
            tmp.chmod(0o755)
            with _no_progress_bars():
                _build_model(spec, tok).save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            (tmp / MARKER).write_text(f"{name}\n")
            if dirs[name].exists() and not (dirs[name] / MARKER).is_file():
                shutil.rmtree(dirs[name], ignore_errors=True)  # stale, incomplete leftover
            os.replace(tmp, dirs[name])
        except OSError:
            if not (dirs[name] / MARKER).is_file():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dirs


if __name__ == "__main__":
    for model_name, path in build_tiny_models(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-models")).items():
        print(f"{model_name}: {path}")
