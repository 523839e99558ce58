"""Shared base config: multitask fine-tuning of MiniLM on sst, para and sts, losses summed.

Every other config starts from this one. Any field can be overridden on the command line,
e.g. `--config.data.source=csv --config.num_steps=2000`.
"""

from ml_collections import ConfigDict


def task(kind: str, pair: bool, num_classes: int = 1, files: tuple[str, str, str] = ("", "", ""),
         tfds_name: str = "", tfds_fields: tuple[str, str, str] = ("", "", ""), batch_size: int = 16) -> ConfigDict:
    """One `config.tasks.<name>` block; a config file adds a task with it (docs/api.md, "Adding a task")."""
    return ConfigDict(dict(
        kind=kind,  # classification (softmax, accuracy) | binary (one logit, accuracy) | regression (Pearson r)
        pair=pair,  # True: sentence-pair task (text_a, text_b)
        num_classes=num_classes,  # classification only: number of classes
        label_min=0.0,  # regression only: lowest score
        label_max=5.0,  # regression only: highest score
        # linear: a linear layer over the features (siamese pairs as [u; v; |u-v|; u*v]) | cosine: regression pairs
        # encoded each sentence alone (pair_mode siamese or triplet), score = label_min + range * cos(u, v), no
        # parameters, MSE on the label scale (Sentence-BERT's cos-vs-label/5 objective, times range^2); predictions
        # clipped to the range
        head="linear",
        pair_mode="",  # pair tasks: cross | siamese | triplet for this task alone ('' = model.pair_mode)
        weight=1.0,  # this task's loss weight (loss.combination='weighted')
        batch_size=batch_size,  # examples of this task per training step (global, over all devices)
        files=dict(train=files[0], dev=files[1], test=files[2]),  # data.source='csv': file names in data.csv_dir
        # data.source='csv': several training files, read in order and their rows concatenated (each checked on its
        # own), e.g. ('quora-train.csv', 'quora-train-extra.csv'); replaces files.train when not empty
        train_files=(),
        tfds=dict(
            name=tfds_name,  # data.source='tfds': the TFDS dataset, e.g. glue/sst2
            splits=dict(train="train", dev="validation", test="test"),  # our split -> the dataset's split
            fields=dict(text_a=tfds_fields[0], text_b=tfds_fields[1], label=tfds_fields[2]),  # '' = built-in mapping
        ),
    ))


def get_config() -> ConfigDict:
    config = ConfigDict()
    config.seed = 0  # seeds init, dropout, data order and PCGrad's task orders
    config.task_names = ("sst", "para", "sts")  # tasks trained, each defined in config.tasks
    config.tasks = ConfigDict(dict(  # one block a task: its kind, data files and batch size (see task above)
        sst=task("classification", False, 5, ("ids-sst-train.csv", "ids-sst-dev.csv", "ids-sst-test-student.csv")),
        para=task("binary", True, 1, ("quora-train.csv", "quora-dev.csv", "quora-test-student.csv")),
        sts=task("regression", True, 1, ("sts-train.csv", "sts-dev.csv", "sts-test-student.csv")),
    ))

    config.data = ConfigDict()
    config.data.source = "demo"  # demo (embedded, generated) | csv (CS224N files) | tfds (TFDS by name) | sick
    config.data.csv_dir = "../shared/data/cs224n"  # source=csv: folder of the CS224N files
    config.data.tfds_data_dir = ""  # source=tfds: TFDS data_dir with prepared datasets ('' = TFDS default)
    config.data.sick_file = "../shared/data/sick/SICK.txt"  # source=sick: the SICK corpus (pair tasks only)
    config.data.sick_split = (0.8, 0.1, 0.1)  # source=sick: train/dev/test shares, fixed by a hash of pair_ID
    config.data.buckets = (32, 64, 128)  # padded lengths (packing off); a batch pads to the smallest that fits
    # Packing: each task's tasks.<t>.batch_size examples a step fill fixed [rows, pack_length] arrays (a segment per
    # sequence, attention within it), in row groups, a whole number per data-parallel device (jaxmt.data.packing).
    config.data.packing = True  # False: pad each step's batches to a common bucket instead
    # Which examples a step trains on, and so its losses, depend on the row-group count, not on the devices: fix it
    # (e.g. 8) to train the same losses on every device count that divides it.
    config.data.pack_groups = 0  # row groups a step (x accumulation_steps), a multiple of the devices; 0 = one a device
    config.data.pack_length = 128  # tokens a packed row (>= max_length)
    # A group's rows are the fewest with which the examples a draw cannot place, carried to the next, overflow
    # at most this share of a task's examples (simulated on its lengths): fewer rows, less padding, some dropped.
    config.data.pack_max_dropped = 0.05  # 0 = rows for every simulated draw (almost nothing dropped, more padding)
    config.data.max_length = 128  # truncation length (tokens, special tokens included)
    config.data.on_bad_row = "skip"  # error: stop at a bad row | skip: leave it out, count and report it
    config.data.max_train_examples = -1  # keep only the first N training rows per task (-1 = all)
    config.data.max_eval_examples = -1  # keep only the first N dev/test rows per task (-1 = all)
    config.data.prefetch = 2  # training batches built this many steps ahead on a thread (jaxmt.data.prefetch; 0 = off)

    config.model = ConfigDict()
    config.model.name = "minilm"  # model alias (minilm) or a local Hugging Face BERT directory
    config.model.pooling = "mean"  # sentence embedding: mean (sentence-transformers) | cls
    # cross: [CLS] a [SEP] b [SEP] jointly | siamese: each alone, [u; v; |u-v|; u*v] | triplet: both alone and jointly
    config.model.pair_mode = "cross"  # how pairs are encoded (triplet: paper A's triplet architecture, a reading)
    config.model.shared_layers = 0  # dense+GELU layers shared by all tasks between encoder and heads
    config.model.shared_dim = 0  # width of the shared layers (0 = the encoder's hidden size)
    config.model.dropout = 0.1  # dropout before the shared layers and the heads
    # Compute dtype: auto (bfloat16 on GPU and TPU, float32 on CPU) | float32 | bfloat16. Params, optimizer state,
    # losses and metrics stay float32 whatever it is.
    config.model.dtype = "auto"  # compute dtype, see above
    config.model.remat = False  # jax.checkpoint each encoder layer: less activation memory, ~1/3 more compute
    # remat on: what a layer keeps for the backward pass: full (its input only) | dots_saveable (matmul outputs too)
    # | dots_with_no_batch_dims_saveable (weight matmuls' outputs too, not attention's)
    config.model.remat_policy = "full"  # remat policy, see above
    # jax.nn.dot_product_attention's implementation: default (JAX picks) | xla | cudnn (NVIDIA GPU, bf16; fused
    # flash attention). Training with attention dropout > 0 takes a written-out softmax on every backend
    # (docs/performance.md, the attention path table).
    config.model.attention_implementation = "default"  # default | xla | cudnn, see above

    config.optim = ConfigDict()
    config.optim.learning_rate = 5e-5  # AdamW peak learning rate
    config.optim.warmup_fraction = 0.1  # linear warm-up over this fraction of num_steps, then linear decay
    config.optim.weight_decay = 0.01  # AdamW decoupled weight decay (not on biases and LayerNorm)
    config.optim.clip_norm = 1.0  # clip the (combined) gradient to this global norm (0 = off)
    # k > 1: each step's batch runs as k micro-batches (forward and backward one at a time, so activations for 1/k of
    # it), their gradients summed into one update equal to the whole batch's (jaxmt.core.accumulation); batch sizes
    # (packed: rows) must split into k equal parts on every data-parallel device.
    config.optim.accumulation_steps = 1  # micro-batches a step (k), see above
    config.optim.gradient_surgery = "none"  # none | pcgrad (per-task gradients, projected, then combined)
    config.optim.surgery_scope = "shared"  # pcgrad on: all params | shared (heads pass through)
    config.optim.surgery_reduction = "sum"  # pcgrad: combine projected gradients by sum | mean
    # pcgrad: loss pairing, e.g. (("sst",), ("para", "sts")): a group's (weighted) losses are summed into one
    # gradient before the surgery, which then projects between groups; every task in exactly one group.
    # () = each task its own group. Metrics name a group by its tasks joined with '+' (pcgrad/cos/para+sts-sst).
    config.optim.surgery_groups = ()  # loss pairing (paper A, a reading): task groups, see above
    # Everything outside the encoder (shared layers, heads) may take its own peak LR, with the same warm-up and
    # decay shape; learning_rate then drives the encoder alone.
    config.optim.head_learning_rate = 0.0  # peak LR of heads and shared layers (0 = learning_rate for all params)

    config.loss = ConfigDict()
    config.loss.combination = "sum"  # sum | weighted (each task's loss times tasks.<name>.weight)
    config.sampling = "all"  # tasks per step: all | round_robin | proportional (to training set size)

    config.num_steps = 200  # training steps
    # > 0: train this many epochs of the largest task instead (num_steps is then set from it), an epoch counted as
    # eval_every_epochs counts it, so num_epochs=3 with eval_every_epochs=1 evaluates 3 times; results.json: steps.
    config.num_epochs = 0.0  # epochs of the largest task (0 = num_steps decides), see above
    config.log_every = 10  # steps between training-metric logs
    config.eval_every = 100  # steps between dev evaluations (and best-checkpoint updates); 0 = at the end only
    # An epoch = ceil(train size / batch size) steps of the largest task (packed or not: a packed step trains its
    # draw of batch-size examples), as sampling='all' sees it; results.json holds the step interval.
    config.eval_every_epochs = 0.0  # > 0: evaluate every this many epochs instead of every eval_every steps
    config.eval_batch_size = 64  # evaluation batch (global)
    config.checkpoint_every = 100  # steps between checkpoints for resumption
    config.keep_checkpoints = 2  # latest checkpoints kept (the best one is kept apart)
    config.on_nonfinite = "stop"  # NaN/Inf loss or gradient: stop (exit 3, last good checkpoint kept) | skip the step
    # Resuming a workdir whose config.json differs in more than the intervals, keep_checkpoints, on_nonfinite or
    # placement (jaxmt.checkpointing.workdir.RESUMABLE_FIELDS) is an error; True accepts the change and records it
    # in WORKDIR/config_changes.jsonl (e.g. a longer num_steps, knowing that it stretches the LR schedule).
    config.allow_config_change = False  # True: resume with a changed config, recorded
    add_run_options(config)  # compilation cache and profiling (below)

    config.mesh, config.parallel = mesh_config(), parallel_config()  # device mesh and parallel path (below)
    config.lock()  # a misspelt field is an error, not a silently ignored new one
    return config


def add_run_options(config: ConfigDict) -> None:
    """Fields of every trainer's config that change how a run executes, never what it computes."""
    # Persistent XLA compilation cache (jaxmt.compilation_cache): a restart loads its compiled steps instead of
    # compiling them again. auto = $XDG_CACHE_HOME/jaxmt/xla, else ~/.cache/jaxmt/xla
    config.compilation_cache = "auto"  # auto | a folder (gs:// too) | '' = off
    # A jax.profiler trace of those steps (numbered as in metrics.jsonl) in WORKDIR/profile, for TensorBoard's
    # profiler or Perfetto (docs/performance.md, "Profiling a run")
    config.profile_steps = (0, 0)  # (first step, number of steps); (0, 0) = off


def mesh_config() -> ConfigDict:
    """The device mesh, shared by every trainer's config."""
    mesh = ConfigDict()
    mesh.axes = ("data", "fsdp", "tensor")  # batch over data and fsdp; params sharded over fsdp and tensor
    mesh.shape = (-1, 1, 1)  # devices along each axis (-1 = all the rest), e.g. (2, 2, 2) on 8 devices
    return mesh


def parallel_config() -> ConfigDict:
    """The step's parallel path and multi-process set-up, shared by every trainer's config."""
    parallel = ConfigDict()
    parallel.mode = "jit"  # jit: one sharded SPMD step over the mesh | pmap: jax.pmap, data parallel only
    parallel.distributed = "auto"  # auto: multi-process when flags, env or a TPU pod/SLURM job say so | on | off
    parallel.coordinator_address = ""  # multi-process: host:port of process 0 ('' = env or cluster detection)
    parallel.num_processes = 0  # multi-process: number of processes (0 = env or cluster detection)
    parallel.process_id = -1  # multi-process: this process's index (-1 = env or cluster detection)
    return parallel
