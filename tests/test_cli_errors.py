"""Every user mistake on ``gnbench train`` (and ``gnbench data prepare --out``) exits non-zero
with one line on stderr naming the problem, no traceback, and no workdir or file left behind."""

import json
from pathlib import Path

import pytest

from gnbench.cli import config_help, main
from gnbench.data import default_data_dir, ensure_prepared
from gnbench.sweep.spec import REPO_ROOT
from tests.english_corpus import write_corpus

TINY = str(REPO_ROOT / "experiments" / "tiny.py")
FAST = [  # A fast valid run; each case breaks one thing.
    "--config.data.seq_len=16",
    "--config.data.micro_batch=8",
    "--config.data.micro_batches=2",
    "--config.data.val_sequences=16",
    "--config.train.steps=2",
    "--config.wandb.mode=disabled",
    "--config.train.progress=false",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs shared by the cases: a corpus, a too-short corpus (prepared), a corrupt token
    folder, config files without get_config, a file in the way of a workdir."""
    root = tmp_path_factory.mktemp("cli_errors")
    (root / "corpus").mkdir()
    corpus = write_corpus(root / "corpus")
    data = root / "data"
    ensure_prepared(str(corpus), tokenizer="byte", base=data)
    short = root / "short.txt"
    short.write_text("To be, or not to be.\n\nThat is the question.\n")
    ensure_prepared(str(short), tokenizer="byte", base=data)
    broken = root / "broken.txt"
    broken.write_text("some text\n")
    bad = default_data_dir(str(broken), "byte", base=data)
    bad.mkdir(parents=True)
    (bad / "header.json").write_text("{not json")
    (root / "no_get_config.py").write_text("X = 1\n")
    (root / "not_callable.py").write_text("get_config = 3\n")
    (root / "a_file").write_text("")
    return dict(
        root=root,
        data=str(data),
        corpus=str(corpus),
        short=str(short),
        broken=str(broken),
        no_get_config=str(root / "no_get_config.py"),
        not_callable=str(root / "not_callable.py"),
        under_a_file=str(root / "a_file" / "run"),
    )


# (case id, arguments after `gnbench train` with {placeholders}, text the line must hold)
CASES = [
    ("unknown-optimizer", ["--config.optimizer.name=lion"], "unknown optimizer 'lion'"),
    ("optimizer-typo", ["--config.optimizer.name=adamww"], "did you mean 'adamw'"),
    ("unknown-model", ["--config.model.name=gpt5"], "unknown model 'gpt5'; known models: tiny"),
    ("key-typo", ["--config.train.stpes=3"], "unknown config key 'train.stpes' (did you mean"),
    ("wrong-type", ["--config.train.steps=many"], "train.steps takes an integer"),
    ("bool-type", ["--config.train.progress=maybe"], "takes true or false"),
    ("section-as-key", ["--config.optimizer=3"], "--config.optimizer is a section"),
    ("missing-value", ["--config.train.init_from"], "needs a value"),
    ("stray-argument", ["--stpes=3"], "unexpected argument '--stpes=3'"),
    ("no-config", None, "--config FILE is required"),
    ("bad-config-path", ["@experiments/nope.py"], "config file 'experiments/nope.py' not found"),
    ("not-python", ["@README.md"], "is not a .py file"),
    ("config-arg", ["@" + TINY + ":foo"], "get_config() takes no argument"),
    ("no-get-config", ["@{no_get_config}"], "has no get_config()"),
    ("get-config-not-callable", ["@{not_callable}"], "get_config that is not a function"),
    ("steps-zero", ["--config.train.steps=0"], "train.steps=0 must be an integer >= 1"),
    ("micro-batch-zero", ["--config.data.micro_batch=0"], "data.micro_batch=0 must be"),
    ("micro-batches-negative", ["--config.data.micro_batches=-1"], "data.micro_batches=-1"),
    ("seq-len-zero", ["--config.data.seq_len=0"], "data.seq_len=0 must be"),
    ("lr-zero", ["--config.optimizer.learning_rate=0"], "learning_rate=0.0 must be a finite"),
    ("lr-nan", ["--config.optimizer.learning_rate=nan"], "learning_rate=nan must be a finite"),
    ("inner-lr-negative", ["--config.optimizer.gn.inner_learning_rate=-1"], "inner_learning"),
    ("eval-every-zero", ["--config.train.eval_every=0"], "train.eval_every=0 must be"),
    ("unknown-schedule", ["--config.optimizer.schedule=cosine"], "unknown schedule 'cosine'"),
    ("val-below-batch", ["--config.data.val_sequences=4"], "data.val_sequences=4 is fewer"),
    ("short-corpus", ["--config.data.source={short}"], "is too long for the train split"),
    ("corrupt-token-file", ["--config.data.source={broken}"], "header.json is corrupt"),
    ("workdir-under-a-file", ["--config.train.workdir={under_a_file}"], "is a file, not a"),
    ("init-from-nothing", ["--config.train.init_from={root}"], "has no checkpoint"),
    ("batch-vs-devices", ["--config.data.micro_batch=12"], "not divisible by the 8 devices"),
]


@pytest.mark.parametrize("args, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(files, tmp_path, capsys, args, expected):
    workdir = tmp_path / "run"
    spec = ["--config", TINY]
    overrides = [
        *FAST,
        f"--config.data.source={files['corpus']}",
        f"--config.data.dir={files['data']}",
        f"--config.train.workdir={workdir}",
    ]
    for a in args or []:  # The case's arguments come last: they win.
        a = a.format(**files)
        if a.startswith("@"):
            spec = ["--config", a[1:]]
        else:
            overrides.append(a)
    argv = overrides if args is None else spec + overrides
    before = sorted(p for p in Path(files["root"]).rglob("*"))
    assert main(["train", *argv]) != 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("gnbench train: ") and expected in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not workdir.exists() and not list(tmp_path.iterdir())
    assert sorted(p for p in Path(files["root"]).rglob("*")) == before


def test_help_lists_every_key_with_default_and_comment(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "  train.steps = 40  # Outer iterations (the budget)." in out
    assert "  train.overwrite = False  # A workdir holding another config's run" in out
    assert '  wandb.mode = "auto"  # auto: $WANDB_MODE if set' in out  # Comment above the key.
    from experiments import base
    from gnbench.train.identity import flatten

    for key in flatten(base.get_config()):
        assert f"  {key} = " in config_help(), key


def test_data_prepare_refuses_a_non_empty_out(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    corpus = write_corpus(tmp_path / "corpus")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    prepare = ["data", "prepare", "--source", str(corpus), "--tokenizer", "byte", "--out"]
    for extra in ([], ["--overwrite"]):  # Not a token folder: refused even with --overwrite.
        assert main([*prepare, str(mine), *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "never replaces a folder it did not prepare" in err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    out = tmp_path / "tokens"
    assert main([*prepare, str(out)]) == 0
    assert main([*prepare, str(out)]) == 0  # The same preparation: nothing to do.
    assert "already holds this corpus prepared the same way" in capsys.readouterr().out
    assert main([*prepare, str(out), "--seed", "1"]) == 1  # Other settings: refused...
    assert "add --overwrite to replace it" in capsys.readouterr().err
    assert main([*prepare, str(out), "--seed", "1", "--overwrite"]) == 0  # ...unless asked.
    assert json.loads((out / "header.json").read_text())["seed"] == 1
