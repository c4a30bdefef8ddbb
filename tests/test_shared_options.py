"""What the commands and the examples share: one rule (and one message) per option value, options
declared as config dataclasses (``refsnn.commands.config``), library code instead of another
command's entry point."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from refsnn.commands.config import build_parser, check_run_dir_options, option, parse
from refsnn.commands.ec import ECConfig
from refsnn.commands.nas import NASConfig
from refsnn.commands.training import TrainConfig
from refsnn.ec.strategy import ECStrategy, ESStrategy, RNNStrategy, check_hyperparameters

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _message(fn) -> str:
    with pytest.raises((ValueError, TypeError)) as e:
        fn()
    return str(e.value)


def test_one_option_takes_several_values_with_nargs():
    @dataclasses.dataclass
    class Opts:
        seeds: list[int] = option([0, 1], "seeds", nargs="+")
        kinds: list[str] = option(["a"], "kinds", choices=("a", "b"), nargs="+")

    assert parse(Opts, ["--seeds", "3", "4", "5"]) == Opts(seeds=[3, 4, 5])
    a, b = parse(Opts, []), parse(Opts, [])
    assert a == Opts() and a.seeds is not b.seeds   # the default is copied per instance
    assert parse(Opts, ["--kinds", "b", "a"]).kinds == ["b", "a"]
    with pytest.raises(SystemExit):
        parse(Opts, ["--kinds", "c"])
    assert "(default: 0 1)" in build_parser(Opts).format_help()


@pytest.mark.parametrize("config", [TrainConfig, NASConfig, ECConfig])
def test_the_run_directory_options_have_one_rule(config, tmp_path):
    """train, nas and ec refuse --resume with --overwrite and an empty --out with the same message."""
    want = _message(lambda: check_run_dir_options("x", True, True))
    assert want.startswith("overwrite:")
    assert _message(lambda: config(out=str(tmp_path), resume=True, overwrite=True)) == want
    assert _message(lambda: config(out="  ")) == _message(lambda: check_run_dir_options("  ", False, False))
    assert config(out=tmp_path).out == str(tmp_path)


@pytest.mark.parametrize("method, kw", [
    ("es", dict(population=5)), ("es-gru", dict(population=7)), ("es", dict(sigma=0.0)),
    ("ec", dict(eps=0.7)), ("ec", dict(gradient="fisher")), ("ec", dict(population=1)),
    ("ec", dict(neurons=1)), ("es", dict(weight_decay=-1.0)), ("ec", dict(rank_ties="dense")),
])
def test_a_strategy_value_is_checked_once_with_the_option_name(method, kw):
    """ECConfig and the strategy raise the same error for a bad value (the library's check, named as
    the command's option)."""
    want = _message(lambda: check_hyperparameters(method, **kw))
    assert want.startswith(next(iter(kw)) + ":")
    assert _message(lambda: ECConfig(method=method, **kw)) == want
    if method == "ec":
        strategy = lambda: ECStrategy(3, 1, **kw)  # noqa: E731
    elif method == "es":
        strategy = lambda: ESStrategy(3, 1, **kw)  # noqa: E731
    else:
        strategy = lambda: RNNStrategy(method, 3, 1, **kw)  # noqa: E731
    assert _message(strategy) == want


def test_check_hyperparameters_refuses_unknown_names():
    with pytest.raises(TypeError, match="hparams"):
        check_hyperparameters("ec", populaton=4)
    assert check_hyperparameters("es", population=6, sigma=0.5) == {"population": 6, "sigma": 0.5}


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except SystemExit:   # an optional dependency (torch, norse, ...) is missing
        pytest.skip(f"{path.name}: optional dependency missing")
    return mod


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.stem)
def test_every_example_declares_its_options_as_a_config(path):
    """Each example's options are an ``Options`` dataclass of ``option()`` fields (no argparse of its
    own), so ``--help`` lists them with their defaults."""
    assert "argparse" not in path.read_text()
    mod = _load(path)
    assert dataclasses.is_dataclass(mod.Options)
    assert build_parser(mod.Options, prog=path.name).format_help().startswith(f"usage: {path.name}")
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
