"""Diagnostic (paper B): are NSP and bigram shift linearly decodable from all-MiniLM-L6-v2's layers, from the
[CLS] state or the token mean, on the pre-training batches? Run from the repository root:

    PYTHONPATH=. python docs/runs/paper_b/diagnostics/linear_probe_of_minilm_layers.py

Its output as measured on 2026-12-05: linear_probe_of_minilm_layers.txt.
"""

import numpy as np
from sklearn.linear_model import LogisticRegression
from transformers import FlaxBertModel

from configs import pretrain_minilm_hierarchical
from jaxmt.models.pretrained import resolve_model_dir
from jaxmt.pretraining.corpus import CorpusSpec, load_corpus, split_heldout
from jaxmt.pretraining.examples import PairStream, Vocabulary, make_batch
from jaxmt.pretraining.trainer import model_source

config = pretrain_minilm_hierarchical.get_config()
config.data.files = ("../shared/data/corpus/wikitext2-test.txt",)
_, _, tokenizer = model_source(config)
vocab = Vocabulary.from_tokenizer(tokenizer)
train, _ = split_heldout(load_corpus(CorpusSpec.from_config(config.data), tokenizer, None), 0.1, 0)
stream = PairStream(train, vocab, 64, config.data.short_seq_prob, 0)
model = FlaxBertModel.from_pretrained(resolve_model_dir("minilm"))
features, nsp, bigram = [], [], []
for step in range(40):  # 40 batches of 32 pairs, masked and shifted as the pre-training batches are
    batch = make_batch(stream.batch(step, 32), vocab, np.random.default_rng([0, step, 2]), 0.15, 20, True, "word")
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"], output_hidden_states=True)
    hidden = np.stack([np.asarray(h) for h in out.hidden_states])  # [7, B, L, H]
    mask = batch["attention_mask"][None, :, :, None]
    features.append(np.concatenate([hidden[:, :, 0], (hidden * mask).sum(2) / mask.sum(2)], -1))
    nsp.append(batch["nsp_labels"])
    bigram.append(batch["bigram_labels"])
x, nsp, bigram = np.concatenate(features, 1), np.concatenate(nsp), np.concatenate(bigram)
train_rows = np.arange(x.shape[1]) < int(0.75 * x.shape[1])
print("n", x.shape[1], "nsp mean", nsp.mean(), "bigram mean", bigram.mean())
for layer in range(7):
    for name, labels in (("nsp", nsp), ("bigram", bigram)):
        for kind, columns in (("cls", slice(0, 384)), ("mean", slice(384, 768))):
            probe = LogisticRegression(max_iter=2000, C=1.0).fit(x[layer, train_rows, columns], labels[train_rows])
            print(layer, name, kind, round(probe.score(x[layer, ~train_rows, columns], labels[~train_rows]), 3))
