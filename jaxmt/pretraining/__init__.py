"""Hierarchical multitask BERT pre-training (Aksoy et al.): masked LM, NSP and bigram shift, each at its own
encoder layer, with NSP's representation passed on to the MLM task. See docs/pretraining.md."""
