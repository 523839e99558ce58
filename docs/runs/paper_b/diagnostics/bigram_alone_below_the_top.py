"""Diagnostic: one pre-training task alone below MiniLM's top layer (layers above it get no loss and, their
output unused, are compiled away), which jaxmt.pretrain refuses for real runs (the every-layer check).

Made the bigram-shift sizing runs of 2026-12-05 (docs/pretraining.md), from the repository root:

    python docs/runs/paper_b/diagnostics/bigram_alone_below_the_top.py \\
        --config=configs/pretrain_minilm_hierarchical.py --workdir=runs/diag_bigram_l2_clean \\
        --config.task_names="('bigram_shift',)" --config.tasks.mlm.mask_rate=0.001 --config.num_steps=2000 \\
        --config.eval_every=100 --config.log_every=50 --config.checkpoint_every=100000 --config.transfer=none

(mask_rate 0.001 masks one token a pair: nearly uncorrupted input; the default 0.15 gives BERT's corruption.)
The token-head runs of the next session (bigram_alone_layer2_token_scores, _token_labels) dropped the mask_rate
override and added `--config.tasks.bigram_shift.head=token_scores` (or `token_labels`), with --config.eval_every=250.
"""
import jaxmt.pretraining.trainer as trainer

trainer.check_every_layer_trained = lambda *args: None  # the diagnostic's only change to the trainer
from jaxmt.pretrain import run  # noqa: E402

run()
