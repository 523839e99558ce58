"""Command line: python -m jaxmt.sweep --config=configs/acgan.py --workdir=DIR --fractions=0.05,0.2,1.0

Trains AC-GAN-BERT and the fine-tuned baseline at each labeled fraction on the same labeled subset
and writes DIR/results.csv, results.md and accuracy.png (see `jaxmt.gan.fractions`).
"""

from __future__ import annotations

import os

from absl import app, flags

from jaxmt.cli import check_run_inputs, define_config_flag, parse_flags, setup_logging


def define_flags() -> None:
    define_config_flag("configs/acgan.py")
    flags.DEFINE_string("workdir", "runs/acgan_sweep", "Directory for the runs and the table.")
    flags.DEFINE_list("fractions", ["0.05", "0.2", "1.0"], "Labeled fractions, comma separated.")
    flags.DEFINE_list("methods", ["acgan", "baseline"], "Methods to run at each fraction.")
    flags.DEFINE_string("compilation_cache", "", "Persistent XLA compilation cache ('' = WORKDIR/xla_cache, "
                        "'off' = none): a method's runs at different fractions compile the same programs.")


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


def main(argv: list[str]) -> None:
    del argv
    setup_logging()
    from jaxmt.training.faults import user_facing_errors

    f = flags.FLAGS
    with user_facing_errors():
        fractions = parse_fractions(f.fractions)
        check_run_inputs(f.config, f.workdir)
        if f.compilation_cache != "off":
            import jax

            jax.config.update("jax_compilation_cache_dir", f.compilation_cache or os.path.join(f.workdir, "xla_cache"))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
        from jaxmt.gan.fractions import markdown_table, run_sweep

        rows = run_sweep(f.config, f.workdir, fractions, tuple(f.methods))
    print(markdown_table(rows))


def run() -> None:
    """The `jaxmt-sweep` console script (and `python -m jaxmt.sweep`)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
