"""``gnbench train | data | sweep | ladder | report``: the command line.

Examples:
  gnbench data prepare --source shakespeare --tokenizer byte
  gnbench train --config experiments/tiny.py --config.optimizer.name=soap --config.train.steps=20
  gnbench sweep experiments/compare_tiny.py --executor local
  gnbench ladder --method examples/my_optimizers/lion.py:lion \
      --config examples/my_optimizers/lion_config.py --quick
  gnbench report runs/compare_tiny
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

USAGE = """usage: gnbench {train,data,sweep,ladder,report} ...

  train   --config FILE [--config.KEY=VALUE ...]   train one run (keys: gnbench train --help)
  data    prepare|info ...                         tokenize a corpus / inspect a token file
  sweep   SWEEP_FILE [--executor ...]              run a hyperparameter sweep, then report
  ladder  --method ENTRY [--config FILE] [--grid K=V1,V2] [--quick]
                                                   an outside optimizer on the ladder: its row
  report  SWEEP_DIR [SWEEP_DIR ...]                tables and plots of finished sweeps
"""


TRAIN_USAGE = "usage: gnbench train --config FILE[:ARG] [--config.KEY=VALUE ...]"

# Top-level modules of the `bench` extra (pyproject.toml): the command line needs them, the Optax
# transforms (`import gnbench.optim`) do not.
BENCH_MODULES = (
    "absl",
    "flax",
    "grain",
    "matplotlib",
    "ml_collections",
    "orbax",
    "tiktoken",
    "tokenizers",
    "tqdm",
    "wandb",
)
BENCH_HINT = "pip install 'gnbench[bench]'"


def _fail(message: str):
    from gnbench.train.validation import ConfigError

    return ConfigError(message)


def load_experiment(spec: str):
    """The ConfigDict of ``--config FILE[:ARG]`` (``get_config()``, or ``get_config(ARG)``).

    Raises:
      ConfigError: a missing or broken file, no callable ``get_config``, or an ARG it does not
        take; one line naming the fix.
    """
    import importlib.util
    import inspect

    import ml_collections

    path, sep, arg = spec.partition(":")
    file = Path(path)
    if not file.is_file():
        raise _fail(
            f"config file {path!r} not found; give an experiment file, e.g. "
            "--config experiments/tiny.py"
        )
    if file.suffix != ".py":
        raise _fail(f"config file {path!r} is not a .py file; give an experiment file")
    try:
        module_spec = importlib.util.spec_from_file_location(f"_gnbench_cli_{file.stem}", file)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise _fail(f"{path}: line {e.lineno}: {e.msg}; fix the file") from None
    except Exception as e:
        raise _fail(f"{path} failed to import ({type(e).__name__}: {e}); fix the file") from None
    fn = getattr(module, "get_config", None)
    if fn is None or not callable(fn):
        what = "has no get_config()" if fn is None else "has a get_config that is not a function"
        raise _fail(
            f"{path} {what}; an experiment file defines get_config() returning a ConfigDict "
            "(see experiments/tiny.py)"
        )
    args = [arg] if sep else []
    try:
        inspect.signature(fn).bind(*args)
    except TypeError:
        if args:
            raise _fail(
                f"{spec}: {path}'s get_config() takes no argument, and the text after ':' is "
                f"passed to it; use --config {path}"
            ) from None
        raise _fail(f"{path}'s get_config() needs an argument: --config {path}:ARG") from None
    except ValueError:
        pass  # No signature to check (a builtin): calling it tells.
    try:
        cfg = fn(*args)
    except Exception as e:
        raise _fail(f"{spec}: get_config() failed ({type(e).__name__}: {e})") from None
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise _fail(f"{spec}: get_config() returned {type(cfg).__name__}, not a ConfigDict")
    return cfg


def _config_keys(cfg, prefix: str = "") -> dict[str, object]:
    """Every leaf key of ``cfg``, dotted, with its value (sections excluded)."""
    out: dict[str, object] = {}
    for key, value in cfg.items():
        if hasattr(value, "items"):
            out.update(_config_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _sections(cfg, prefix: str = "") -> set[str]:
    out = set()
    for key, value in cfg.items():
        if hasattr(value, "items"):
            out |= {f"{prefix}{key}"} | _sections(value, f"{prefix}{key}.")
    return out


def _split_train_argv(argv: list[str]) -> tuple[str | None, list[tuple[str, str | None]]]:
    """``(config spec, [(key, value text or None), ...])``; fails on anything else."""
    spec, overrides, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise _fail("--config needs a file: --config experiments/tiny.py")
            spec, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            spec, i = arg[len("--config=") :], i + 1
            continue
        if arg.startswith("--config."):
            key, eq, value = arg[len("--config.") :].partition("=")
            overrides.append((key, value if eq else None))
            i += 1
            if not eq and i < len(argv) and not argv[i].startswith("--"):
                overrides[-1] = (key, argv[i])
                i += 1
            continue
        raise _fail(f"unexpected argument {arg!r}; {TRAIN_USAGE} (every key: gnbench train --help)")
    return spec, overrides


def _type_name(value: object) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__
    )


def parse_train_config(argv: list[str]):
    """Parses ``--config FILE --config.a.b=v ...`` into a locked ConfigDict.

    Raises:
      ConfigError: a missing or broken config file, an unknown key (with the closest known one),
        a section set as a value, a missing or ill-typed value, or a stray argument; one line.
    """
    from absl import flags
    from ml_collections import config_flags

    from gnbench.train.validation import suggestion

    spec, overrides = _split_train_argv(argv)
    if spec is None:
        raise _fail("--config FILE is required (e.g. --config experiments/tiny.py)")
    base = load_experiment(spec)
    keys, sections = _config_keys(base), _sections(base)
    for key, value in overrides:
        if key in sections:
            own = [k[len(key) + 1 :] for k in keys if k.startswith(key + ".")]
            leaves = [k for k in own if "." not in k]
            subs = sorted({k.split(".")[0] + ".*" for k in own if "." in k})
            raise _fail(
                f"--config.{key} is a section, not a key; set one of its keys, "
                f"--config.{key}.KEY=VALUE with KEY one of: {', '.join(leaves + subs)} "
                "(every key: gnbench train --help)"
            )
        if key not in keys:
            raise _fail(
                f"unknown config key {key!r}{suggestion(key, list(keys))}; "
                "every key: gnbench train --help"
            )
        if value is None and not isinstance(keys[key], bool):
            raise _fail(f"--config.{key} needs a value: --config.{key}=VALUE")

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "experiment config file", flag_values=fv, lock_config=True
    )
    full_argv, saved = ["gnbench train", *argv], sys.argv
    sys.argv = full_argv  # config_flags reads the overrides from sys.argv
    try:
        fv(full_argv)
        cfg = fv.config
        cfg.keys()  # A config that failed to load raises only when used.
    except Exception as e:  # What the checks above let through: an ill-typed value.
        text = " ".join(str(e).split())
        named = [(k, v) for k, v in reversed(overrides) if f"--config.{k}" in text]
        named.sort(key=lambda kv: f"{kv[1]}" not in text)  # The value the error shows first.
        for key, value in named:
            if f"--config.{key}=" in text or f"--config.{key} " in text + " ":
                default = keys[key]
                raise _fail(
                    f"--config.{key}={value}: {key} takes {_type_name(default)} "
                    f"(default {default!r})"
                ) from None
        raise _fail(f"bad config flag: {text[:300]}") from None
    finally:
        sys.argv = saved
    return cfg


def config_help(base_file: str | os.PathLike | None = None) -> str:
    """Every key of ``experiments/base.py`` with its default and comment, read from its source.

    A key's comment is the one at the end of its line, else the comment lines just above it.

    Example:
      >>> "train.steps = 40" in config_help()
      True
    """
    import ast
    import io
    import tokenize

    if base_file is None:
        import importlib.util

        found = importlib.util.find_spec("experiments.base")
        if found is None or not found.origin:
            return "(experiments/base.py not found: every key is declared there)"
        base_file = found.origin
    source = Path(base_file).read_text()
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target, parts = node.targets[0], []
        while isinstance(target, ast.Attribute):
            parts.append(target.attr)
            target = target.value
        if not (isinstance(target, ast.Name) and target.id == "c" and parts):
            continue
        key = ".".join(reversed(parts))
        comment = comments.get(node.lineno)
        if comment is None or not lines[node.lineno - 1].split("#")[0].strip():
            above, n = [], node.lineno - 1
            while n in comments and not lines[n - 1].split("#")[0].strip():
                above.insert(0, comments[n])
                n -= 1
            comment = " ".join(above)
        value = ast.get_source_segment(source, node.value) or ""
        if value.endswith("ConfigDict()"):
            out.append((node.lineno, f"\n{key}:" + (f"  {comment}" if comment else "")))
        else:
            out.append((node.lineno, f"  {key} = {value}" + (f"  # {comment}" if comment else "")))
    return "\n".join(text for _, text in sorted(out)).lstrip("\n")


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


def _on_sigterm(signum, frame) -> None:
    """SIGTERM (scancel, a sweep stopping): release the workdir lock, then die as before."""
    from gnbench.train.workdir import release_held_locks

    release_held_locks()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def train_main(argv: list[str]) -> int:
    """``gnbench train``: 0 when the run finished or diverged; 2 (one line on stderr) for a user
    mistake, before any workdir is created."""
    from gnbench.train.validation import ConfigError

    if any(a in ("-h", "--help") for a in argv):
        print(
            f"{TRAIN_USAGE}\n\nTrains one run (resumed when its workdir holds it). Every key, "
            "with its default and meaning (experiments/base.py):\n\n" + config_help()
        )
        return 0
    try:
        cfg = parse_train_config(argv)
        from gnbench.train.validation import validate_config

        validate_config(cfg)  # Before any JAX start-up: every process fails alike, at once.
        from gnbench.distributed import initialize_from_environment

        try:  # Before any other JAX call: multi-process start-up, if any.
            initialize_from_environment()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        use_compilation_cache()
        from gnbench.train import train

        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
        try:
            summary = train(cfg)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
    except ConfigError as e:
        print(f"gnbench train: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0 if summary["status"] in ("finished", "diverged") else 1


def main(argv: list[str] | None = None) -> int:
    """The ``gnbench`` console script; without the ``bench`` extra, one line naming the install.

    Example:
      >>> main(["--help"])  # doctest: +ELLIPSIS
      usage: gnbench {train,data,sweep,ladder,report} ...
      ...
      0
    """
    try:
        return _dispatch(sys.argv[1:] if argv is None else argv)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing not in BENCH_MODULES:
            raise
        print(
            f"gnbench: the command line needs the bench extra (module {missing!r} is not "
            f"installed): {BENCH_HINT}",
            file=sys.stderr,
        )
        return 2


def _dispatch(argv: list[str]) -> int:
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
    if command == "ladder":
        from gnbench.sweep.ladder import main as ladder_main

        return ladder_main(rest)
    if command == "report":
        from gnbench.report.cli import report_main

        return report_main(rest)
    print(
        f"gnbench: unknown command {command!r}; valid: train, data, sweep, ladder, report\n\n"
        f"{USAGE}",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
