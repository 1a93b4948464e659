"""Every user mistake on ``gnbench train | data | sweep | report`` exits non-zero with one line on
stderr naming the problem (the key, option or file), no traceback, and nothing on disk changed.

One table (:data:`CASES`) drives every kind: a new kind is one line. docs/guarantees.md lists them.
"""

import hashlib
import json
import os
from pathlib import Path

import pytest

from gnbench.cli import config_help, main, parse_train_config
from gnbench.data import default_data_dir, ensure_prepared
from gnbench.sweep.spec import REPO_ROOT
from gnbench.train.identity import IDENTITY_FILE, make_identity
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
SWEEP = dict(  # A valid sweep on the tiny experiment; each sweep case breaks one field.
    name="s",
    base=TINY,
    overrides={"train.steps": 2, "data.seq_len": 16},
    methods={"adamw": {"grid": {"optimizer.learning_rate": [1e-3, 3e-3]}}, "soap": {}},
    seeds=[0, 1],
    target_loss=3.0,
)


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
        a_file=str(root / "a_file"),
        under_a_file=str(root / "a_file" / "run"),
    )


# Setups: write a case's own inputs into its tmp folder, before the disk is snapshotted.
def sweep_file(text=None, **fields):
    """A sweep file ``{tmp}/sweep.py``: ``text`` as is, else SWEEP with ``fields`` replaced."""

    def setup(tmp, argv):
        body = f"def get_sweep(quick=False):\n    return {dict(SWEEP, **fields)!r}\n"
        (tmp / "sweep.py").write_text(body if text is None else text)

    return setup


def sweep_with_cut_status(tmp, argv):
    """A valid sweep file whose output folder holds a cut ``status.json``."""
    sweep_file()(tmp, argv)
    (tmp / "out" / "s").mkdir(parents=True)
    (tmp / "out" / "s" / "status.json").write_text('{"runs": {')


def sweep_folder(plan=None, metrics=None, summary=None):
    """A finished-looking sweep folder ``{tmp}/sw`` with one run, one of its files replaced."""

    def setup(tmp, argv):
        run = tmp / "sw" / "runs" / "adamw-0"
        run.mkdir(parents=True)
        entry = dict(id="adamw-0", method="adamw", workdir="runs/adamw-0", setting={}, seed=0)
        default_plan = json.dumps(dict(name="sw", target_loss=3.0, runs=[entry]))
        (tmp / "sw" / "plan.json").write_text(default_plan if plan is None else plan)
        record = dict(kind="eval", step=2, val_loss=2.9, tokens=10)
        (run / "metrics.jsonl").write_text(metrics or json.dumps(record) + "\n")
        (run / "summary.json").write_text(summary or json.dumps(dict(status="finished")))

    return setup


def this_runs_workdir(setup_ckpt):
    """``{tmp}/run`` holding the run ``argv`` describes (its identity), plus ``setup_ckpt``."""

    def setup(tmp, argv):
        cfg = parse_train_config(argv)
        (tmp / "run").mkdir()
        (tmp / "run" / IDENTITY_FILE).write_text(json.dumps(make_identity(cfg)))
        setup_ckpt(tmp / "run" / "ckpt")

    return setup


def garbage_checkpoint(ckpt):
    (ckpt / "1" / "state").mkdir(parents=True)  # An earlier step folder, and the newest
    (ckpt / "2" / "state").mkdir(parents=True)  # one with a cut metadata file.
    (ckpt / "2" / "state" / "_METADATA").write_text('{"tree_metadata": ')


def sysfs(tmp, argv):
    """``/sys`` refuses folders to everyone: root passes the permission check and is refused at
    the first write (after the model is built), others at the check."""
    if not Path("/sys").is_dir():
        pytest.skip("no /sys on this system")


def read_only_parent(tmp, argv):
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder (workdir-refused-by-os covers root)")
    (tmp / "ro").mkdir(mode=0o555)


def outside_file(body):
    """``{tmp}/mine.py``: an outside builder whose body is ``body`` (a bad one)."""

    def setup(tmp, argv):
        (tmp / "mine.py").write_text(
            "import optax\nfrom gnbench.optim import outside_method\n\n"
            f"@outside_method(reads=())\ndef build(cfg, ctx):\n    {body}\n"
        )

    return setup


LION_CONFIG = str(REPO_ROOT / "examples" / "my_optimizers" / "lion_config.py")
LION = str(REPO_ROOT / "examples" / "my_optimizers" / "lion.py") + ":lion"


# (case id, command and arguments with {placeholders}, text the line must hold[, setup]).
# `train` cases get a fast valid run's arguments first; an argument "@FILE" replaces --config.
# Placeholders: the `files` fixture's keys, {tmp} (the case's own folder) and {long} (a name too
# long for any file system).
CASES = [
    # gnbench train: names and numbers of the config.
    ("unknown-optimizer", ["train", "--config.optimizer.name=lion"], "unknown optimizer 'lion'"),
    ("optimizer-typo", ["train", "--config.optimizer.name=adamww"], "did you mean 'adamw'"),
    ("unknown-model", ["train", "--config.model.name=gpt5"], "unknown model 'gpt5'; known"),
    ("key-typo", ["train", "--config.train.stpes=3"], "unknown config key 'train.stpes' (did"),
    ("wrong-type", ["train", "--config.train.steps=many"], "steps=many: train.steps takes an"),
    ("bool-type", ["train", "--config.train.progress=maybe"], "progress=maybe: train.progress"),
    ("section-as-key", ["train", "--config.optimizer=3"], "--config.optimizer is a section"),
    ("subsection-as-key", ["train", "--config.optimizer.gn=3"], "KEY one of: boundary_off"),
    ("missing-value", ["train", "--config.train.init_from"], "needs a value"),
    ("stray-argument", ["train", "--stpes=3"], "unexpected argument '--stpes=3'"),
    ("no-config", ["train", "@"], "--config FILE is required"),
    ("bad-config-path", ["train", "@experiments/nope.py"], "'experiments/nope.py' not found"),
    ("not-python", ["train", "@README.md"], "is not a .py file"),
    ("config-arg", ["train", "@" + TINY + ":foo"], "get_config() takes no argument"),
    ("no-get-config", ["train", "@{no_get_config}"], "has no get_config()"),
    ("get-config-not-callable", ["train", "@{not_callable}"], "get_config that is not a"),
    ("steps-zero", ["train", "--config.train.steps=0"], "train.steps=0 must be an integer >= 1"),
    ("micro-batch-zero", ["train", "--config.data.micro_batch=0"], "data.micro_batch=0 must"),
    ("micro-batches-negative", ["train", "--config.data.micro_batches=-1"], "micro_batches=-1"),
    ("seq-len-zero", ["train", "--config.data.seq_len=0"], "data.seq_len=0 must be"),
    ("seq-len-over-context", ["train", "--config.data.seq_len=200"], "longer than the context"),
    ("seed-negative", ["train", "--config.seed=-1"], "seed=-1 must be an integer >= 0"),
    ("target-zero", ["train", "--config.train.target_loss=0"], "target_loss=0.0 must be a fini"),
    ("target-inf", ["train", "--config.train.target_loss=inf"], "target_loss=inf must be a fin"),
    ("lr-zero", ["train", "--config.optimizer.learning_rate=0"], "learning_rate=0.0 must be"),
    ("lr-nan", ["train", "--config.optimizer.learning_rate=nan"], "learning_rate=nan must be"),
    ("inner-lr-negative", ["train", "--config.optimizer.gn.inner_learning_rate=-1"], "inner_le"),
    ("eval-every-zero", ["train", "--config.train.eval_every=0"], "train.eval_every=0 must be"),
    ("unknown-schedule", ["train", "--config.optimizer.schedule=cosine"], "schedule 'cosine'"),
    ("val-below-batch", ["train", "--config.data.val_sequences=4"], "val_sequences=4 is fewer"),
    ("batch-vs-devices", ["train", "--config.data.micro_batch=12"], "not divisible by the 8 d"),
    # gnbench train: an optimizer from outside gnbench (gnbench/optim/outside.py).
    ("outside-module", ["train", "--config.optimizer.name=no_pkg.opt:build"], "module 'no_pkg.o"),
    ("outside-file", ["train", "--config.optimizer.name={tmp}/nope.py:b"], "{tmp}/nope.py not f"),
    ("outside-attr", ["train", "--config.optimizer.name=optax:lino"], "(did you mean 'lion'?)"),
    ("outside-not-callable", ["train", "--config.optimizer.name=optax:tree_utils"], "not call"),
    (
        "outside-signature",
        ["train", "--config.optimizer.name=optax:GradientTransformation"],
        "is neither contract",
    ),
    ("outside-raises", ["train", "--config.optimizer.name={tmp}/mine.py:build"], "builder raised")
    + (outside_file("raise KeyError('b1')"),),
    ("outside-returns", ["train", "--config.optimizer.name={tmp}/mine.py:build"], "returned Grad")
    + (outside_file("return optax.sgd(0.1)"),),
    (
        "outside-own-key",
        [
            "train",
            "@" + LION_CONFIG,
            f"--config.optimizer.name={LION}",
            "--config.optimizer.lion.b1=1.5",
        ],
        "optimizer.lion.b1=1.5 must be in",
    ),
    # gnbench train: data, checkpoints and workdirs.
    ("short-corpus", ["train", "--config.data.source={short}"], "is too long for the train"),
    ("corrupt-token-file", ["train", "--config.data.source={broken}"], "header.json is corrupt"),
    ("init-from-nothing", ["train", "--config.train.init_from={root}"], "has no checkpoint"),
    ("workdir-under-a-file", ["train", "--config.train.workdir={under_a_file}"], "is a file, n"),
    ("workdir-name-too-long", ["train", "--config.train.workdir={tmp}/{long}"], "is longer th"),
    ("workdir-read-only", ["train", "--config.train.workdir={tmp}/ro/run"], "is not writable")
    + (read_only_parent,),
    (
        "workdir-refused-by-os",
        ["train", "--config.train.workdir=/sys/gnbench-test/run"],
        "workdir='/sys/gnbench-test/run'",
    )
    + (sysfs,),
    ("corrupt-checkpoint", ["train"], "the checkpoint {tmp}/run/ckpt/2 cannot be read")
    + (this_runs_workdir(garbage_checkpoint),),
    # gnbench data.
    ("max-documents-zero", ["data", "prepare", "--max-documents", "0", "--out", "{tmp}/t"], "--m"),
    ("val-fraction-one", ["data", "prepare", "--val-fraction", "1", "--out", "{tmp}/t"], "[0, 1)"),
    ("info-not-tokens", ["data", "info", "{root}"], "{root}"),
    # gnbench sweep: the file, each field, the options; checked before any folder exists.
    ("sweep-missing", ["sweep", "{tmp}/nope.py"], "{tmp}/nope.py does not exist"),
    ("sweep-syntax", ["sweep", "{tmp}/sweep.py"], "{tmp}/sweep.py:2: syntax error")
    + (sweep_file("def get_sweep():\n    return {\n"),),
    ("sweep-import-fails", ["sweep", "{tmp}/sweep.py"], "sweep.py failed to import: ZeroDiv")
    + (sweep_file("1 / 0\n"),),
    ("sweep-no-function", ["sweep", "{tmp}/sweep.py"], "sweep.py has no get_sweep() function")
    + (sweep_file("get_sweep = {}\n"),),
    ("sweep-returns-none", ["sweep", "{tmp}/sweep.py"], "get_sweep() returned NoneType, not a")
    + (sweep_file("def get_sweep():\n    pass\n"),),
    ("sweep-raises", ["sweep", "{tmp}/sweep.py"], "sweep.py: get_sweep() failed: KeyError")
    + (sweep_file("def get_sweep():\n    return {}['name']\n"),),
    ("sweep-unknown-method", ["sweep", "{tmp}/sweep.py"], "method 'lion': unknown optimizer")
    + (sweep_file(methods={"adamw": {}, "lion": {}}),),
    ("sweep-entry-as-name", ["sweep", "{tmp}/sweep.py"], "'optax:lion' names its runs' fold")
    + (sweep_file(methods={"adamw": {}, "optax:lion": {}}),),
    ("sweep-outside-method", ["sweep", "{tmp}/sweep.py"], "method 'lion': optimizer 'optax:lin")
    + (sweep_file(methods={"lion": {"overrides": {"optimizer.name": "optax:lino"}}}),),
    # gnbench ladder: the entry and the options, before any folder exists.
    ("ladder-entry", ["ladder", "--method", "nopkg:f", "--out", "{tmp}/o"], "module 'nopkg' not"),
    (
        "ladder-grid",
        ["ladder", "--method", "optax:lion", "--grid", "x", "--out", "{tmp}/o"],
        "--grid 'x' is not KEY=V1,V2",
    ),
    ("sweep-baseline", ["sweep", "{tmp}/sweep.py"], "sweep.py: baseline='muon' is not one of")
    + (sweep_file(baseline="muon"),),
    ("sweep-full-gn", ["sweep", "{tmp}/sweep.py"], "sweep.py: full_gn='gauss_newtn' is not one")
    + (sweep_file(full_gn="gauss_newtn"),),
    ("sweep-grid-value", ["sweep", "{tmp}/sweep.py"], "optimizer.learning_rate=0.0 must be")
    + (sweep_file(methods={"adamw": {"grid": {"optimizer.learning_rate": [1e-3, 0.0]}}}),),
    ("sweep-scan-value", ["sweep", "{tmp}/sweep.py"], "at data.micro_batches=0 with optimizer")
    + (sweep_file(scan={"key": "data.micro_batches", "values": [2, 0]}),),
    (
        "sweep-target-negative",
        ["sweep", "{tmp}/sweep.py"],
        "shared by every run): train.target_loss=-1.0 must",
    )
    + (sweep_file(target_loss=-1),),
    ("sweep-budget-zero", ["sweep", "{tmp}/sweep.py"], "train.steps=0 must be an integer")
    + (sweep_file(overrides={"train.steps": 0}),),
    ("sweep-seq-len", ["sweep", "{tmp}/sweep.py"], "data.seq_len=4096 is longer than the cont")
    + (sweep_file(overrides={"data.seq_len": 4096}),),
    ("sweep-seed-negative", ["sweep", "{tmp}/sweep.py"], "sweep.py: seeds: seed -1 is not an")
    + (sweep_file(seeds=[-1]),),
    ("sweep-warmup", ["sweep", "{tmp}/sweep.py"], "sweep.py: warmup must be {{'steps'")
    + (sweep_file(warmup={"step": 3}),),
    ("sweep-parallel", ["sweep", "{tmp}/sweep.py", "--parallel", "-1"], "--parallel -1 must be")
    + (sweep_file(),),
    ("sweep-nodes", ["sweep", "{tmp}/sweep.py", "--executor", "slurm", "--nodes", "0"], "--nod")
    + (sweep_file(),),
    ("sweep-executor", ["sweep", "{tmp}/sweep.py", "--executor", "nope"], "unknown executor")
    + (sweep_file(),),
    ("sweep-out-a-file", ["sweep", "{tmp}/sweep.py", "--out", "{a_file}"], "is a file, not a")
    + (sweep_file(),),
    ("sweep-status-cut", ["sweep", "{tmp}/sweep.py", "--out", "{tmp}/out"], "s/status.json can")
    + (sweep_with_cut_status,),
    # gnbench report: every file it reads is named when it cannot be read.
    ("report-not-a-sweep", ["report", "{root}"], "{root} has no plan.json"),
    ("report-plan-not-json", ["report", "{tmp}/sw"], "{tmp}/sw/plan.json cannot be read")
    + (sweep_folder(plan="{not json"),),
    ("report-plan-corrupt", ["report", "{tmp}/sw"], "{tmp}/sw/plan.json is corrupt (runs=")
    + (sweep_folder(plan='{"runs": 3}'),),
    ("report-metrics-corrupt", ["report", "{tmp}/sw"], "metrics.jsonl line 2 is not a metrics")
    + (sweep_folder(metrics='{"kind": "eval", "step": 0, "val_loss": 3.5}\n{"step": "two"}'),),
    ("report-summary-corrupt", ["report", "{tmp}/sw"], "adamw-0/summary.json cannot be read")
    + (sweep_folder(summary="[1,"),),
]


def snapshot(*roots):
    """Every path under ``roots`` with its kind, size, mtime and content hash."""
    out = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            out[str(p)] = (p.is_dir(), st.st_size, st.st_mtime_ns, digest)
    return out


# Cases whose message names the device count: the multidevice tier's 8 fake devices.
MULTIDEVICE_CASES = {"batch-vs-devices"}
PARAMS = [
    pytest.param(c, id=c[0], marks=[pytest.mark.multidevice] if c[0] in MULTIDEVICE_CASES else [])
    for c in CASES
]


@pytest.mark.parametrize("case", PARAMS)
def test_bad_input_is_one_line_and_changes_nothing(files, tmp_path, capsys, case):
    _, (command, *args), expected, *setup = case
    tmp = tmp_path / "case"
    tmp.mkdir()
    fill = dict(files, tmp=tmp, long="x" * 300)
    argv = [a.format(**fill) for a in args]
    if command == "train":
        spec = ["--config", TINY]
        overrides = [
            *FAST,
            f"--config.data.source={files['corpus']}",
            f"--config.data.dir={files['data']}",
            f"--config.train.workdir={tmp / 'run'}",
        ]
        for a in argv:  # The case's arguments come last: they win.
            if a.startswith("@"):
                spec = ["--config", a[1:]] if a[1:] else []
            else:
                overrides.append(a)
        argv = spec + overrides
    if setup:
        setup[0](tmp, argv)
    before = snapshot(files["root"], tmp_path)
    code = main([command, *argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code != 0
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"gnbench {command}"), lines[0]
    assert expected.format(**fill) in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert snapshot(files["root"], tmp_path) == before


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
