"""Command line: python -m jaxmt.sweep --config=configs/acgan.py --workdir=DIR --fractions=0.05,0.2,1.0
    [--seeds=0,1,2] [--methods=acgan,ganbert,paper,baseline] [--baseline_steps=equal,reference] [--epochs=1]

Trains AC-GAN-BERT (Odena's layout or its authors' form), GAN-BERT and the fine-tuned baseline (as many
steps as the GAN runs, or the reference GAN-BERT's count) at each labeled fraction and seed on the
same labeled subset (one a seed) and writes DIR/results.csv, results.md (mean ± std over seeds) and
accuracy.png (see `jaxmt.gan.fractions`).
"""

from __future__ import annotations

from absl import app, flags

from jaxmt.cli import check_run_inputs, define_config_flag, parse_flags, setup_logging


def define_flags() -> None:
    define_config_flag("configs/acgan.py")
    flags.DEFINE_string("workdir", "runs/acgan_sweep", "Directory for the runs and the table.")
    flags.DEFINE_list("fractions", ["0.05", "0.2", "1.0"], "Labeled fractions, comma separated.")
    flags.DEFINE_list("methods", ["acgan", "ganbert", "baseline"],
                      "Methods to run at each fraction and seed, in this order: acgan (Odena's layout) | paper (the "
                      "AC-GAN-BERT authors' form) | ganbert | baseline.")
    flags.DEFINE_list("baseline_steps", ["equal"], "The baseline(s) that `baseline` in --methods trains: equal "
                      "(as many steps as the GAN runs) | reference (len(labeled) / batch x --epochs steps, the "
                      "reference GAN-BERT's; in fraction_F/baseline_reference).")
    flags.DEFINE_list("seeds", [], "Seeds, comma separated: each draws its own labeled subset, shared by the "
                      "methods ('' = config.seed).")
    flags.DEFINE_float("reference_epochs", 0.0, "> 0: the reference-style baseline's passes over its labeled rows "
                       "(0 = --epochs); it costs little, so it can keep the reference's 3 when --epochs is cut.",
                       lower_bound=0.0)
    flags.DEFINE_string("archive", "", "A directory (e.g. docs/runs/NAME) that keeps each finished run's records "
                        "(no checkpoints) and the tables; a run archived there is not trained again, so a later "
                        "session continues from it with a fresh --workdir.")
    flags.DEFINE_float("epochs", 0.0, "> 0: each run trains this many passes over the whole training file at "
                       "the task's batch size (its num_steps); 0 = config.num_steps.", lower_bound=0.0)
    flags.DEFINE_string("compilation_cache", "", "Overrides config.compilation_cache, the persistent XLA "
                        "compilation cache ('' = the config's, 'off' = none, else a folder): a method's runs at "
                        "different fractions compile the same programs.")


def parse_fractions(items: list[str]) -> list[float]:
    """--fractions as numbers in (0, 1]; anything else is a one-line ConfigError (exit 2)."""
    from jaxmt.errors import ConfigError

    try:
        fractions = [float(item) for item in items]
    except ValueError:
        fractions = []
    if not fractions or not all(0.0 < value <= 1.0 for value in fractions):
        raise ConfigError(f"--fractions={','.join(items)}: give labeled fractions in (0, 1], comma separated")
    return fractions


def parse_seeds(items: list[str]) -> list[int]:
    """--seeds as distinct integers >= 0; anything else is a one-line ConfigError (exit 2)."""
    from jaxmt.errors import ConfigError

    try:
        seeds = [int(item) for item in items]
    except ValueError:
        seeds = [-1]
    if any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds={','.join(items)}: give distinct integer seeds >= 0, comma separated")
    return seeds


def expand_baselines(methods: list[str], baseline_steps: list[str]) -> tuple[str, ...]:
    """--methods with `baseline` replaced by the sweep methods of --baseline_steps (`BASELINE_STEPS`), in place;
    anything unknown is a one-line ConfigError (exit 2)."""
    from jaxmt.errors import ConfigError
    from jaxmt.gan.fractions import BASELINE_STEPS

    unknown = [v for v in baseline_steps if v not in BASELINE_STEPS]
    if unknown or not baseline_steps:
        raise ConfigError(f"--baseline_steps={','.join(baseline_steps)}: give {' and/or '.join(BASELINE_STEPS)}, "
                          "comma separated")
    if "baseline_reference" in methods:
        raise ConfigError("--methods: ask for the reference-style baseline with baseline and "
                          "--baseline_steps=reference")
    expanded = []
    for method in methods:
        expanded += [BASELINE_STEPS[v] for v in baseline_steps] if method == "baseline" else [method]
    return tuple(expanded)


def main(argv: list[str]) -> None:
    del argv
    setup_logging()
    from jaxmt.training.faults import user_facing_errors

    f = flags.FLAGS
    with user_facing_errors():
        fractions = parse_fractions(f.fractions)
        seeds = parse_seeds(f.seeds)
        check_run_inputs(f.config, f.workdir)
        from jaxmt.compilation_cache import AUTO, persistent_compilation_cache
        from jaxmt.gan.fractions import markdown_table, run_sweep

        methods = expand_baselines(list(f.methods), list(f.baseline_steps))
        cache = {"": f.config.get("compilation_cache", AUTO), "off": ""}.get(f.compilation_cache, f.compilation_cache)
        with persistent_compilation_cache(cache):
            rows = run_sweep(f.config, f.workdir, fractions, methods, seeds, f.epochs, f.archive, f.reference_epochs)
    print(markdown_table(rows))


def run() -> None:
    """The `jaxmt-sweep` console script (and `python -m jaxmt.sweep`)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
