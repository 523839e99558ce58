"""Paper B, downstream: extractive QA on SQuAD v1.1, ~7.7 idle minutes a run on a 2-core CPU.

Fine-tunes one encoder on the first half of the official dev set (part1: 4,961 questions, as the shared
data's README suggests) and scores exact match / F1 (the official v1.1 metric, best over every gold answer)
on questions of the other half (part2, no article shared). launch/paper_b.sh runs it for three encoders
(minilm and the two continued pre-trainings' WORKDIR/hf_model) and seeds 0, 1, 2:

    python -m jaxmt.qa --config=configs/paper_b_squad.py --workdir=runs/paper_b/qa/minilm/seed0 \\
        --config.model.name=minilm --config.seed=0

Sizing, measured (docs/runs/paper_b/timings.tsv): a run takes ~7.7 minutes on the idle 2-core CPU, ~2.3 s a
training step and ~75 s to score the first 1,500 part2 questions (1,717 windows). 150 steps are 2,400 training
windows, ~42% of part1's 5,708: a short fine-tuning that compares how well each encoder learns QA, not a
converged SQuAD score. (It was 60 steps until the first pre-training ran at 0.55x the time estimated for it;
raised before any SQuAD run.) One epoch of part1 (357 steps) and all 5,609 part2 questions: ~19 minutes a run.
"""

from ml_collections import ConfigDict

from . import squad


def get_config() -> ConfigDict:
    config = squad.get_config()
    config.seed = 0  # seeds the span head, dropout and which windows each step draws (launch/paper_b.sh: 0, 1, 2)
    config.model.name = "minilm"  # the encoder: minilm, or a pre-training run's WORKDIR/hf_model
    config.data.train_file = "../shared/data/squad/squad-v1.1-dev-part1.json"  # fine-tune on part1
    config.data.dev_file = "../shared/data/squad/squad-v1.1-dev-part2.json"  # score part2 (no article shared)
    config.data.max_length = 256  # window tokens: 5,708 part1 windows, none skipped (384 pads most of them)
    config.data.stride = 96  # context tokens shared by consecutive windows of one question
    config.data.max_eval_examples = 1500  # score part2's first 1,500 questions (file order: its first 6 articles)
    config.optim.learning_rate = 1e-4  # peak LR, high for a short run of a small encoder; 10% warm-up, linear decay
    config.batch_size = 16  # windows a step
    config.eval_batch_size = 64  # windows a scoring batch
    config.num_steps = 150  # 2,400 windows, ~7.7 idle minutes with scoring (docstring)
    config.log_every = 10  # steps between training-loss logs
    config.eval_every = 0  # score once, at the end: no model selection on the scored questions
    config.checkpoint_every = 150  # checkpoint at the end only (a killed run restarts; it is short)
    return config
