"""Standard BERT pre-training (the baseline): masked LM and NSP both at the last encoder layer.

A small BERT trained from scratch with MiniLM's vocabulary on WikiText-2 (the test file; the valid file
is left for probing), 5000 steps: about half an hour on 2 CPU cores. Continue from a checkpoint instead
with `--config.model.init_from=minilm` (the model sizes then come from the checkpoint, so set the task
layers for its 6 layers). Run:
`python -m jaxmt.pretrain --config=configs/pretrain_bert.py --workdir=runs/pretrain_bert`.
"""

from ml_collections import ConfigDict

from . import default


def get_config() -> ConfigDict:
    config = ConfigDict()
    config.seed = 0  # seeds init, dropout, pair building, masking, bigram swaps and the held-out split
    config.task_names = ("mlm", "nsp")  # tasks trained (of mlm, nsp, bigram_shift), each configured in config.tasks
    config.tasks = ConfigDict()
    config.tasks.mlm = ConfigDict(dict(
        layer=4,  # encoder layer (1-based) whose hidden states the MLM head reads
        weight=1.0,  # weight of the MLM loss in the summed loss
        mask_rate=0.15,  # fraction of each example's ordinary tokens chosen for prediction
        max_predictions=10,  # at most this many predicted tokens per example (the gathered slots)
    ))
    config.tasks.nsp = ConfigDict(dict(
        layer=4,  # encoder layer (1-based) whose sentence vector (config.pooling) the NSP head reads
        weight=1.0,  # weight of the NSP loss
    ))
    config.tasks.bigram_shift = ConfigDict(dict(
        layer=2,  # encoder layer (1-based) whose hidden states the bigram-shift head reads
        weight=1.0,  # weight of the bigram-shift loss
        unit="word",  # what is swapped: two adjacent whole words (WordPieces kept together) | token
        # sentence (a classifier on config.pooling's vector) | token_scores (a score per token, their log-sum-exp the
        # example's logit) | token_labels (per-token scores also trained on which tokens moved; their max the logit)
        head="sentence",
    ))
    config.pooling = "cls"  # sentence vector of NSP and bigram shift: cls ([CLS], BERT) | mean | max (over tokens)
    config.transfer = "none"  # NSP -> MLM transfer: none | add_cls | add_all | concat (see docs/pretraining.md)

    config.data = ConfigDict()
    config.data.source = "files"  # files (local text files) | tfds (a prepared TFDS text dataset)
    # source=files: the corpus files. WikiText-2 test only: the valid file stays unseen text for probing
    # (jaxmt.probe's default corpus), so probe accuracies are on sentences neither model trained on.
    config.data.files = ("../shared/data/corpus/wikitext2-test.txt",)
    config.data.format = "auto"  # auto | plain (blank line between documents) | wikitext (= Title = articles)
    config.data.split_sentences = True  # split lines (paragraphs) into sentences with a regex
    config.data.tfds_name = ""  # source=tfds: the dataset, e.g. wikipedia/20230601.en (one example a document)
    config.data.tfds_split = "train"  # source=tfds: the split read
    config.data.tfds_field = "text"  # source=tfds: the text feature
    config.data.tfds_data_dir = ""  # source=tfds: the TFDS data_dir ('' = TFDS default)
    config.data.cache_dir = "runs/cache/pretraining"  # tokenized shards (.npz), reused by later runs ('' = off)
    config.data.max_length = 64  # tokens per pair, [CLS] and two [SEP] included (BERT: 128, then 512)
    config.data.short_seq_prob = 0.1  # probability of a shorter random target length (as BERT)
    config.data.heldout_fraction = 0.05  # fraction of documents held out for evaluation (at least 2)
    config.data.max_eval_examples = 512  # held-out pairs evaluated (-1 = all)
    config.data.prefetch = 2  # training batches built this many steps ahead on a thread (jaxmt.data.prefetch; 0 = off)

    config.model = ConfigDict()
    config.model.init_from = ""  # '' = from scratch | minilm | a Hugging Face BERT directory to continue from
    config.model.tokenizer = "minilm"  # from scratch: the alias or BERT directory whose tokenizer is used
    config.model.hidden_size = 128  # from scratch: hidden width
    config.model.num_layers = 4  # from scratch: encoder layers
    config.model.num_heads = 4  # from scratch: attention heads
    config.model.intermediate_size = 512  # from scratch: MLP width
    config.model.dropout = 0.1  # from scratch: hidden and attention dropout
    # Compute dtype: auto (bfloat16 on GPU and TPU, float32 on CPU) | float32 | bfloat16. Params, optimizer state,
    # losses and metrics stay float32 whatever it is.
    config.model.dtype = "auto"
    config.model.remat = False  # jax.checkpoint each layer: less activation memory (length 512), ~1/3 more compute
    # remat on: what a layer keeps for the backward pass: full (its input only) | dots_saveable (matmul outputs too)
    # | dots_with_no_batch_dims_saveable (weight matmuls' outputs too, not attention's)
    config.model.remat_policy = "full"
    # jax.nn.dot_product_attention's implementation: default (JAX picks) | xla | cudnn (NVIDIA GPU, bf16; fused
    # flash attention). Training with attention dropout > 0 takes a written-out softmax on every backend
    # (docs/performance.md, the attention path table).
    config.model.attention_implementation = "default"

    config.optim = ConfigDict()
    config.optim.learning_rate = 1e-3  # AdamW peak learning rate (5e-5 to 1e-4 when continuing from a checkpoint)
    config.optim.head_learning_rate = 0.0  # peak LR of the new heads and the pooler (0 = optim.learning_rate)
    config.optim.warmup_fraction = 0.1  # linear warm-up over this fraction of num_steps, then linear decay
    config.optim.weight_decay = 0.01  # AdamW decoupled weight decay (not on biases and LayerNorm)
    config.optim.clip_norm = 1.0  # clip the gradient to this global norm (0 = off)
    # k > 1: each step's batch runs as k micro-batches, their gradients summed into one update equal to the whole
    # batch's (jaxmt.core.accumulation); batch_size must split into k equal parts on every data-parallel device.
    config.optim.accumulation_steps = 1
    config.optim.gradient_surgery = "none"  # pre-training sums the task losses: only 'none'

    config.batch_size = 32  # pairs per training step (global, over all devices)
    config.num_steps = 5000  # training steps
    config.log_every = 50  # steps between training-metric logs
    config.eval_every = 500  # steps between held-out evaluations (0 = at the end only)
    config.eval_batch_size = 64  # held-out evaluation batch (global)
    config.checkpoint_every = 500  # steps between checkpoints for resumption
    config.keep_checkpoints = 2  # latest checkpoints kept
    config.on_nonfinite = "stop"  # NaN/Inf loss or gradient: stop (exit 3) | skip the step
    # Resuming a workdir whose config.json differs in more than the intervals, keep_checkpoints, on_nonfinite or
    # placement (jaxmt.checkpointing.workdir.RESUMABLE_FIELDS) is an error; True accepts the change and records it
    # in WORKDIR/config_changes.jsonl (e.g. a longer num_steps, knowing that it stretches the LR schedule).
    config.allow_config_change = False  # True: resume with a changed config, recorded
    default.add_run_options(config)  # compilation cache and profiling

    config.mesh, config.parallel = default.mesh_config(), default.parallel_config()  # as the fine-tuning configs
    config.lock()  # a misspelt field is an error, not a silently ignored new one
    return config
