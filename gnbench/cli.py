"""``gnbench train | data | sweep | report``: the command line.

Examples:
  gnbench data prepare --source shakespeare --tokenizer byte
  gnbench train --config experiments/tiny.py --config.optimizer.name=soap --config.train.steps=20
  gnbench sweep experiments/compare_tiny.py --executor local
  gnbench report runs/compare_tiny
"""

from __future__ import annotations

import sys

USAGE = """usage: gnbench {train,data,sweep,report} ...

  train   --config FILE [--config.KEY=VALUE ...]   train one run (keys: experiments/base.py)
  data    prepare|info ...                         tokenize a corpus / inspect a token file
  sweep   SWEEP_FILE [--executor ...]              run a hyperparameter sweep, then report
  report  SWEEP_DIR [SWEEP_DIR ...]                tables and plots of finished sweeps
"""


def parse_train_config(argv: list[str]):
    """Parses ``--config FILE --config.a.b=v ...`` into a locked ConfigDict.

    Unknown keys and ill-typed values fail with ml_collections' message naming the key.
    """
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "experiment config file", flag_values=fv, lock_config=True
    )
    full_argv, saved = ["gnbench train", *argv], sys.argv
    sys.argv = full_argv  # config_flags reads the overrides from sys.argv
    try:
        fv(full_argv)
    except (flags.Error, KeyError, AttributeError) as e:
        raise SystemExit(f"gnbench train: bad config flag: {e}") from None
    finally:
        sys.argv = saved
    if fv.config is None:
        raise SystemExit("gnbench train: --config FILE is required (e.g. experiments/tiny.py)")
    return fv.config


def use_compilation_cache() -> None:
    """JAX's persistent compilation cache (``$JAX_COMPILATION_CACHE_DIR``, default
    ``~/.cache/gnbench/jax``): the runs of a sweep share shapes, so all but the first skip
    compilation."""
    import os

    import jax

    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "gnbench", "jax"
    )
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def train_main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(
            "usage: gnbench train --config FILE [--config.KEY=VALUE ...]\n"
            "Every key, with its meaning, is in experiments/base.py."
        )
        return 0
    from gnbench.distributed import initialize_from_environment

    initialize_from_environment()  # Before any other JAX call: multi-process start-up, if any.
    cfg = parse_train_config(argv)
    use_compilation_cache()
    from gnbench.train import train

    summary = train(cfg)
    return 0 if summary["status"] in ("finished", "diverged") else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        return train_main(rest)
    if command == "data":
        from gnbench.data.cli import main as data_main

        return data_main(rest)
    if command == "sweep":
        from gnbench.sweep.cli import main as sweep_main

        return sweep_main(rest)
    if command == "report":
        from gnbench.report.cli import report_main

        return report_main(rest)
    print(
        f"gnbench: unknown command {command!r}; valid: train, data, sweep, report\n\n{USAGE}",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
