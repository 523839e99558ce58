"""Plain-text pre-training corpora: documents of sentences, tokenized once and cached on disk.

Two text file formats are read, from any `etils.epath` path (a local file, or gs://... on a pod): 'plain'
(one sentence or paragraph a line, documents separated by blank lines) and 'wikitext' (WikiText-2/103:
` = Title = ` starts an article, ` = = Section = = ` headings are dropped, paragraphs are single lines,
blank lines carry no meaning). A TFDS text dataset prepared on disk is read example by example, each
example one document. Paragraphs are split into sentences by a simple regex, because BERT's pairs are
built from sentence boundaries.

Tokenizing is the slow part of loading, so each source (a file, or a TFDS split) is tokenized
into one shard, `<cache_dir>/<key>.npz` (cache_dir any epath path too), whose key hashes the source's
content, the tokenizer and the reading settings: a second run with the same inputs reads the shard and
never tokenizes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from etils import epath

from jaxmt.data.errors import DataError
from jaxmt.paths import absolute, expand_path, open_text

log = logging.getLogger(__name__)

FORMATS = ("auto", "plain", "wikitext")
CACHE_VERSION = 1  # bump when the shard layout or the reading rules change
_TOKENIZE_CHUNK = 2048  # sentences handed to the fast tokenizer at once

# A sentence ends at . ! or ? (perhaps followed by closing quotes or brackets), before whitespace and
# a capital, digit or opening quote. Abbreviations before a capital ("U.S. Army") split wrongly: cheap and
# harmless for pre-training.
_SENTENCE_END = re.compile(r"(?<=[.!?])([\"')\]]*)\s+(?=[\"'(\[]?[A-Z0-9])")
_WIKITEXT_TITLE = re.compile(r"^ ?= [^=].* = ?$")
_WIKITEXT_HEADING = re.compile(r"^ ?(= ){2,}.*( =){2,} ?$")
_WIKITEXT_JOINER = re.compile(r" @(.)@ ")  # WikiText's split-off "@-@", "@,@" and "@.@" joiners


@dataclasses.dataclass
class TokenizedCorpus:
    """Token ids of every sentence of every document, as flat arrays with offsets.

    Sentence s is `tokens[sentence_starts[s]:sentence_starts[s + 1]]`; document d holds sentences
    `document_starts[d]` to `document_starts[d + 1]`.
    """

    tokens: np.ndarray  # int32 [num_tokens]
    sentence_starts: np.ndarray  # int64 [num_sentences + 1]
    document_starts: np.ndarray  # int64 [num_documents + 1]
    source: str

    @property
    def num_documents(self) -> int:
        return len(self.document_starts) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_starts) - 1

    def sentences(self, document: int) -> list[np.ndarray]:
        first, last = self.document_starts[document], self.document_starts[document + 1]
        return [self.tokens[self.sentence_starts[s]:self.sentence_starts[s + 1]] for s in range(first, last)]

    def select(self, documents: Sequence[int]) -> TokenizedCorpus:
        """The corpus of only `documents` (in that order)."""
        return concatenate([_one_document(self, d) for d in documents], self.source)


def _one_document(corpus: TokenizedCorpus, document: int) -> TokenizedCorpus:
    first, last = corpus.document_starts[document], corpus.document_starts[document + 1]
    starts = corpus.sentence_starts[first:last + 1]
    return TokenizedCorpus(tokens=corpus.tokens[starts[0]:starts[-1]], sentence_starts=starts - starts[0],
                           document_starts=np.asarray([0, last - first], np.int64), source=corpus.source)


def concatenate(corpora: Sequence[TokenizedCorpus], source: str) -> TokenizedCorpus:
    """One corpus with the documents of all `corpora`, in order."""
    tokens, sentence_starts, document_starts = [], [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
    num_tokens = num_sentences = 0
    for corpus in corpora:
        tokens.append(corpus.tokens)
        sentence_starts.append(corpus.sentence_starts[1:] + num_tokens)
        document_starts.append(corpus.document_starts[1:] + num_sentences)
        num_tokens += len(corpus.tokens)
        num_sentences += corpus.num_sentences
    return TokenizedCorpus(
        tokens=np.concatenate(tokens).astype(np.int32) if tokens else np.zeros(0, np.int32),
        sentence_starts=np.concatenate(sentence_starts), document_starts=np.concatenate(document_starts),
        source=source)


def split_sentences(paragraph: str) -> list[str]:
    """A paragraph's sentences, by a regex on sentence-final punctuation."""
    parts = _SENTENCE_END.split(paragraph.strip())
    # split() interleaves the captured closing quotes: glue each back onto the sentence it ends.
    sentences = [parts[0]] + [parts[i + 1] for i in range(1, len(parts) - 1, 2)]
    closers = [parts[i] for i in range(1, len(parts), 2)] + [""]
    return [(s + c).strip() for s, c in zip(sentences, closers) if (s + c).strip()]


def detect_format(path: str | os.PathLike) -> str:
    """'wikitext' if the first non-blank line is a ` = Title = ` line, else 'plain'."""
    with open_text(path) as f:
        for line in f:
            if line.strip():
                return "wikitext" if _WIKITEXT_TITLE.match(line.rstrip("\n")) else "plain"
    return "plain"


def read_text_documents(path: str | os.PathLike, fmt: str = "auto", sentences: bool = True,
                        unk_token: str = "[UNK]") -> list[list[str]]:
    """The documents of a text file (any epath path), each a list of sentences (or of lines, if not
    `sentences`)."""
    path = epath.Path(path)
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown corpus format {fmt!r}; expected one of {FORMATS}")
    if not path.is_file():
        raise DataError(f"{path}: corpus file not found")
    if fmt == "auto":
        fmt = detect_format(path)
    documents: list[list[str]] = []
    current: list[str] = []

    def close() -> None:
        nonlocal current
        if current:
            documents.append(current)
        current = []

    try:
        with open_text(path) as f:
            for raw in f:
                line = raw.rstrip("\n")
                if fmt == "wikitext":
                    if _WIKITEXT_HEADING.match(line):
                        continue
                    if _WIKITEXT_TITLE.match(line):
                        close()
                        continue
                    line = _WIKITEXT_JOINER.sub(r"\1", line).replace("<unk>", unk_token)
                elif not line.strip():
                    close()
                    continue
                line = line.strip()
                if line:
                    current.extend(split_sentences(line) if sentences else [line])
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    close()
    return documents


def read_tfds_documents(name: str, split: str, data_dir: str | None, field: str = "text",
                        sentences: bool = True) -> list[list[str]]:
    """Documents of a prepared TFDS text dataset (never downloads): one example, one document,
    its text split into paragraphs at newlines and then into sentences."""
    from jaxmt.data.tfds_source import as_text, default_data_dir, iter_records, open_builder, open_split

    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataError(f"tfds:{name}: reading TFDS datasets needs `pip install tensorflow-datasets "
                        f"array-record` ({err})") from None
    builder = open_builder(tfds, name, data_dir or None)
    if field not in builder.info.features:
        raise DataError(f"tfds:{name}: no feature {field!r} (config.data.tfds_field); features: "
                        f"{sorted(builder.info.features)}")
    source = open_split(builder, name, split, data_dir or default_data_dir())
    documents = []
    for _, example in iter_records(source):
        paragraphs = [p.strip() for p in as_text(example[field], errors="replace").split("\n")]
        document = [s for p in paragraphs if p for s in (split_sentences(p) if sentences else [p])]
        if document:
            documents.append(document)
    return documents


def tokenize_documents(documents: Sequence[Sequence[str]], tokenizer: Any, source: str) -> TokenizedCorpus:
    """Token ids (no special tokens) of every sentence; sentences with no tokens and then empty documents
    are left out."""
    flat = [s for d in documents for s in d]
    ids: list[list[int]] = []
    for start in range(0, len(flat), _TOKENIZE_CHUNK):
        ids.extend(tokenizer(flat[start:start + _TOKENIZE_CHUNK], add_special_tokens=False,
                             return_attention_mask=False, return_token_type_ids=False)["input_ids"])
    lengths, document_sizes, position = [], [], 0
    for document in documents:
        kept = [len(ids[i]) for i in range(position, position + len(document)) if ids[i]]
        position += len(document)
        if kept:
            lengths.extend(kept)
            document_sizes.append(len(kept))
    tokens = np.fromiter((t for sentence in ids for t in sentence), np.int32)
    return TokenizedCorpus(tokens=tokens, sentence_starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                           document_starts=np.concatenate([[0], np.cumsum(document_sizes)]).astype(np.int64),
                           source=source)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of the fast tokenizer's whole definition (vocabulary, normalizer, pre-tokenizer)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def _file_digest(path: epath.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_key(source: dict, tokenizer_hash: str, settings: dict) -> str:
    payload = json.dumps({"source": source, "tokenizer": tokenizer_hash, "settings": settings,
                          "version": CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _read_shard(path: epath.Path, source: str) -> TokenizedCorpus:
    with path.open("rb") as f, np.load(f) as shard:
        return TokenizedCorpus(tokens=shard["tokens"], sentence_starts=shard["sentence_starts"],
                               document_starts=shard["document_starts"], source=source)


def _write_shard(path: epath.Path, corpus: TokenizedCorpus) -> None:
    """Written to a temporary file and renamed: a killed run never leaves a half shard behind. The archive is
    built in memory: zipfile seeks back in what it writes, which an object store's upload stream cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    archive = io.BytesIO()
    np.savez(archive, tokens=corpus.tokens, sentence_starts=corpus.sentence_starts,
             document_starts=corpus.document_starts)
    tmp.write_bytes(archive.getvalue())
    tmp.replace(path)


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    """Where a corpus comes from and how it is read (the `config.data` fields that matter here)."""

    source: str = "files"  # files | tfds
    files: tuple[str, ...] = ()
    format: str = "auto"
    split_sentences: bool = True
    tfds_name: str = ""
    tfds_split: str = "train"
    tfds_field: str = "text"
    tfds_data_dir: str = ""

    @classmethod
    def from_config(cls, data: Any) -> CorpusSpec:
        return cls(source=data.source, files=tuple(expand_path(f, "config.data.files") for f in data.files),
                   format=data.format, split_sentences=bool(data.split_sentences), tfds_name=data.tfds_name,
                   tfds_split=data.tfds_split, tfds_field=data.tfds_field,
                   tfds_data_dir=expand_path(data.tfds_data_dir, "config.data.tfds_data_dir"))


def check_corpus_spec(spec: CorpusSpec) -> None:
    """Errors about the corpus that need no reading: unknown source or format, missing files."""
    from jaxmt.errors import ConfigError

    if spec.source not in ("files", "tfds"):
        raise ConfigError(f"config.data.source = {spec.source!r}; expected 'files' or 'tfds'")
    if spec.format not in FORMATS:
        raise ConfigError(f"config.data.format = {spec.format!r}; expected one of {FORMATS}")
    if spec.source == "files":
        if not spec.files:
            raise ConfigError("config.data.files is empty: name at least one corpus text file")
        for name in spec.files:
            if not epath.Path(name).is_file():
                raise DataError(f"{name}: corpus file not found (config.data.files)")
    elif not spec.tfds_name:
        raise ConfigError("config.data.source = 'tfds' needs config.data.tfds_name (e.g. 'wikipedia/20230601.en')")


def _sources(spec: CorpusSpec) -> Iterable[tuple[str, dict, Any]]:
    """(name, identity for the cache key, reader) of each shard."""
    if spec.source == "files":
        for name in spec.files:
            path = epath.Path(name)
            if not path.is_file():
                raise DataError(f"{path}: corpus file not found (config.data.files)")
            identity = {"file": path.name, "sha256": _file_digest(path), "format": spec.format}
            yield str(path), identity, lambda tokenizer, path=path: read_text_documents(
                path, spec.format, spec.split_sentences, tokenizer.unk_token or "[UNK]")
    else:
        name = f"tfds:{spec.tfds_name}[{spec.tfds_split}]"
        identity = {"tfds": spec.tfds_name, "split": spec.tfds_split, "field": spec.tfds_field,
                    "data_dir": absolute(spec.tfds_data_dir) if spec.tfds_data_dir else ""}
        yield name, identity, lambda tokenizer: read_tfds_documents(
            spec.tfds_name, spec.tfds_split, spec.tfds_data_dir, spec.tfds_field, spec.split_sentences)


def load_corpus(spec: CorpusSpec, tokenizer: Any, cache_dir: str | os.PathLike | None) -> TokenizedCorpus:
    """The tokenized corpus of `spec`, from cached shards where present (tokenizing and caching the rest)."""
    tokenizer_hash = tokenizer_fingerprint(tokenizer)
    settings = {"split_sentences": spec.split_sentences}
    shards = []
    for name, identity, read in _sources(spec):
        shard_name = f"{shard_key(identity, tokenizer_hash, settings)}.npz"
        shard_path = (epath.Path(expand_path(str(cache_dir), "config.data.cache_dir")) / shard_name
                      if cache_dir else None)
        if shard_path is not None and shard_path.is_file():
            log.info("%s: tokenized shard from the cache %s", name, shard_path)
            shards.append(_read_shard(shard_path, name))
            continue
        documents = read(tokenizer)
        if not documents:
            raise DataError(f"{name}: the corpus holds no text (no non-blank lines)")
        corpus = tokenize_documents(documents, tokenizer, name)
        if corpus.num_documents == 0:
            raise DataError(f"{name}: no line of the corpus gives any token")
        log.info("%s: %d documents, %d sentences, %d tokens", name, corpus.num_documents, corpus.num_sentences,
                 len(corpus.tokens))
        if shard_path is not None:
            _write_shard(shard_path, corpus)
        shards.append(corpus)
    return concatenate(shards, ", ".join(s.source for s in shards))


def split_heldout(corpus: TokenizedCorpus, fraction: float, seed: int) -> tuple[TokenizedCorpus, TokenizedCorpus]:
    """(train, held-out) corpora: a seeded random `fraction` of the documents (at least 2) is held out."""
    if corpus.num_documents < 4:
        raise DataError(f"{corpus.source}: {corpus.num_documents} documents; pre-training needs at least 4 "
                        "(2 to train, 2 held out: a random-next pair takes its second segment from another document)")
    num_heldout = min(max(2, round(fraction * corpus.num_documents)), corpus.num_documents - 2)
    order = np.random.default_rng([seed, 0x5EED]).permutation(corpus.num_documents)
    return corpus.select(np.sort(order[num_heldout:])), corpus.select(np.sort(order[:num_heldout]))
