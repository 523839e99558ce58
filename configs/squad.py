"""Extractive QA (SQuAD v1.1 format; v2 unanswerables optional) fine-tuned from any pre-trained encoder.

    python -m jaxmt.qa --config=configs/squad.py --workdir=runs/squad \\
        --config.data.train_file=train-v1.1.json --config.data.dev_file=dev-v1.1.json \\
        --config.model.name=WORKDIR/hf_model          # or minilm, or any local HF BERT dir
"""

from ml_collections import ConfigDict

from . import default


def get_config() -> ConfigDict:
    base = default.get_config()
    config = ConfigDict()
    config.seed = 0  # seeds init, dropout and the data order

    config.model = ConfigDict()
    config.model.name = "minilm"  # model alias (minilm) or a local Hugging Face BERT directory
    # Compute options, as in configs/default.py: dtype auto (bfloat16 on GPU and TPU, float32 on CPU) | float32 |
    # bfloat16 (params and logits stay float32); remat, its policy, and the attention implementation.
    config.model.dtype = "auto"
    config.model.remat = base.model.remat
    config.model.remat_policy = base.model.remat_policy
    config.model.attention_implementation = base.model.attention_implementation

    config.data = ConfigDict()
    config.data.train_file = ""  # SQuAD-format JSON for training
    config.data.dev_file = ""  # SQuAD-format JSON scored with exact match and F1
    config.data.version_2_with_negative = False  # True: accept unanswerable questions and predict "" for them
    config.data.max_length = 384  # window length in tokens (question + context + 3 special tokens)
    config.data.stride = 128  # tokens of context shared by consecutive windows of one question
    config.data.max_query_length = 64  # questions are cut to this many tokens
    config.data.max_train_examples = -1  # keep only the first N training questions (-1 = all)
    config.data.max_eval_examples = -1  # keep only the first N dev questions (-1 = all)
    config.data.prefetch = 2  # training batches built this many steps ahead on a thread (jaxmt.data.prefetch; 0 = off)

    config.decode = ConfigDict()
    config.decode.n_best = 20  # start and end candidates per window (top-k by logit)
    config.decode.max_answer_length = 30  # longest answer in tokens
    config.decode.null_threshold = 0.0  # v2: answer "" when null score - best span score exceeds this

    config.optim = base.optim  # AdamW, warm-up + linear decay, clipping (jaxmt.training.optimizer)
    config.optim.learning_rate = 5e-5
    config.batch_size = 32  # windows per step (global, over all devices)
    config.eval_batch_size = 64
    config.num_steps = 2000
    config.log_every = 20
    config.eval_every = 500  # steps between dev evaluations (and best-checkpoint updates); 0 = at the end only
    config.checkpoint_every = 500
    config.keep_checkpoints = 2
    config.on_nonfinite = "stop"  # NaN/Inf loss or gradient: stop | skip the step (the update is never applied)
    # Resuming a workdir whose config.json differs in more than the intervals, keep_checkpoints, on_nonfinite or
    # placement (jaxmt.checkpointing.workdir.RESUMABLE_FIELDS) is an error; True accepts the change and records it
    # in WORKDIR/config_changes.jsonl (e.g. a longer num_steps, knowing that it stretches the LR schedule).
    config.allow_config_change = False  # True: resume with a changed config, recorded
    default.add_run_options(config)  # compilation cache and profiling
    config.mesh, config.parallel = default.mesh_config(), default.parallel_config()  # as the fine-tuning configs
    config.lock()
    return config
