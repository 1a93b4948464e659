"""A method registered from outside gnbench's optimizer folders (here, a test) goes through the
validation, the run identity and the trainer without a line of gnbench/train naming it."""

import json

import ml_collections
import optax
import pytest

from gnbench.optim.checks import Checks
from gnbench.optim.registry import Optimizer, register, sections_read, unregister
from gnbench.train import train
from gnbench.train.identity import result_config
from gnbench.train.validation import ConfigError, validate_config


@pytest.fixture
def toy_method():
    """``toy_sgd``: plain SGD reading ``optimizer.toy.lr``, registered for the test only."""

    @register("toy_sgd", reads=("toy",), check=Checks(positive_floats=("toy.lr",)))
    def build_toy(cfg, ctx):
        del ctx
        tx = optax.with_extra_args_support(optax.sgd(cfg.toy.lr))
        return Optimizer(tx=tx, hparams=dict(name="toy_sgd", lr=cfg.toy.lr))

    yield "toy_sgd"
    unregister("toy_sgd")


def _with_toy(cfg, lr):
    with cfg.unlocked():
        cfg.optimizer.toy = ml_collections.ConfigDict(dict(lr=lr))
    return cfg


def test_a_toy_method_is_validated_identified_and_trained(toy_method, make_config, tmp_path):
    cfg = _with_toy(make_config(tmp_path / "toy", **{"train.steps": 4}), 0.05)
    cfg.optimizer.name = toy_method
    validate_config(cfg)  # Its own key passes its own check...
    cfg.optimizer.toy.lr = -1.0
    with pytest.raises(ConfigError, match=r"optimizer\.toy\.lr=-1\.0 must be a finite number > 0"):
        validate_config(cfg)  # ...and a bad value fails in one line naming it.
    cfg.optimizer.toy.lr = 0.05
    # The identity keeps the section it reads and drops the ones it does not (soap, gn, ...);
    # AdamW's identity drops the toy's section.
    assert sections_read(cfg.optimizer.to_dict()) == {"toy"}
    keys = result_config(cfg.to_dict())
    assert keys["optimizer.toy.lr"] == 0.05 and not any(
        k.startswith("optimizer.soap") for k in keys
    )
    adamw = _with_toy(make_config(tmp_path / "adamw"), 0.5)
    assert not any(k.startswith("optimizer.toy") for k in result_config(adamw.to_dict()))
    summary = train(cfg)
    assert summary["status"] == "finished"
    evals = [json.loads(line) for line in (tmp_path / "toy" / "metrics.jsonl").open()]
    losses = [r["val_loss"] for r in evals if r["kind"] == "eval"]
    assert losses[-1] < losses[0]
