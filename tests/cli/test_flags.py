"""The command line's wiring, without models: every flag that claims to set a Settings or TrainConfig field
names a real one (so renaming a flag or a field fails here, instead of the flag silently setting nothing),
and the flags given make the Settings and the TrainConfig they should."""
import argparse
import dataclasses
from pathlib import Path

import pytest

from rag.cli import UsageError, build_parser
from rag.cli.common import SETTINGS, TRAIN_CONFIG, settings_from
from rag.cli.offline import train_config
from rag.config import PACKAGED_READER_DIR, Settings
from rag.offline.training import TrainConfig

SETTINGS_FIELDS = {f.name for f in dataclasses.fields(Settings)}
TRAIN_CONFIG_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """'ask', 'bench serve', … -> the parser of every command and subcommand."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + name] = sub
                found.update(_commands(sub, f"{prefix}{name} "))
    return found


def _dests(parser: argparse.ArgumentParser) -> set[str]:
    return {action.dest for action in parser._actions}


def test_every_flag_that_sets_a_setting_names_a_settings_field():
    commands = _commands(build_parser())
    mapped = {name: p.get_default(SETTINGS) or {} for name, p in commands.items()}
    assert {name for name, fields in mapped.items() if fields} == {"index", "show", "search", "ask", "eval", "serve", "mcp",
                                                                  "keys add", "keys list", "keys revoke", "feedback export", "feedback stats"}
    for name, fields in mapped.items():
        assert set(fields) <= _dests(commands[name]), f"rag {name}: a mapped dest is no flag of the command"
        unknown = set(fields.values()) - SETTINGS_FIELDS
        assert not unknown, f"rag {name}: flags claim to set {unknown}, which Settings does not have"


def test_every_train_reader_flag_that_sets_a_field_names_a_train_config_field():
    commands = _commands(build_parser())
    assert [name for name, p in commands.items() if p.get_default(TRAIN_CONFIG)] == ["train-reader"]
    parser = commands["train-reader"]
    fields = parser.get_default(TRAIN_CONFIG)
    assert all(dest == field for dest, field in fields.items())  # each flag's dest is the field's name
    assert set(fields) <= _dests(parser)
    unknown = set(fields.values()) - TRAIN_CONFIG_FIELDS
    assert not unknown, f"rag train-reader: flags claim to set {unknown}, which TrainConfig does not have"
    # a flag named like a field but not declared as setting it would be silently ignored
    assert _dests(parser) & TRAIN_CONFIG_FIELDS == set(fields)
    assert len(fields) == 27


def test_flags_override_their_settings(tmp_path):
    args = build_parser().parse_args([
        "ask", "q", "--docs", str(tmp_path / "d"), "--index", str(tmp_path / "i"), "--store", "postgresql://u@h/db",
        "--follow-links", "--top-k", "3", "--mode", "bm25", "--reader", "r", "--reader-backend", "onnx"])
    assert settings_from(args) == dataclasses.replace(
        Settings(), docs_dir=tmp_path / "d", index_dir=tmp_path / "i", store="postgresql://u@h/db", follow_links=True,
        top_k=3, retrieval_mode="bm25", reader_model="r", reader_backend="onnx")
    assert settings_from(build_parser().parse_args(["serve"])) == Settings()  # flags not given change nothing


def test_train_reader_flags_make_the_train_config():
    parse = build_parser().parse_args
    config = train_config(parse(["train-reader", "--train", "t.json", "--output", "out", "--init", "--epochs", "2",
                                 "--extra-sources", "a", "b", "--bf16", "--no-fresh-extra", "--max-windows", "0"]))
    assert config == TrainConfig(train_file="t.json", output="out", init=str(PACKAGED_READER_DIR), epochs=2.0,
                                 extra_sources=["a", "b"], bf16=True, fresh_extra=False, max_windows=0)
    assert train_config(parse(["train-reader", "--train", "t.json", "--output", "out", "--init", "r"])).init == str(Path("r"))
    with pytest.raises(UsageError, match="--train and --output are required"):
        train_config(parse(["train-reader", "--train", "t.json"]))


def test_a_flag_that_acts_only_with_another_is_refused_without_it(tmp_path):
    """--group-size and friends without --shared-norm, --removed-share without --extra and --keep-float
    without --static used to be ignored silently; each is now a one-line usage error, before any work."""
    from rag.cli.offline import cmd_calibrate_reader, cmd_export_reader

    parse = build_parser().parse_args
    base = ["train-reader", "--train", "t.json", "--output", "out"]
    with pytest.raises(UsageError, match=r"^--group-size, --alone-fraction only act with --shared-norm$"):
        train_config(parse([*base, "--group-size", "3", "--alone-fraction", "0.3"]))
    assert train_config(parse([*base, "--shared-norm", "--group-size", "3"])).group_size == 3
    with pytest.raises(UsageError, match=r"^--removed-share only acts with --extra$"):
        cmd_calibrate_reader(parse(["calibrate-reader", "--model", str(tmp_path), "--train", "t.json",
                                    "--removed-share", "0.3"]))
    with pytest.raises(UsageError, match=r"^--keep-float only acts with --static$"):
        cmd_export_reader(parse(["export-reader", "--model", str(tmp_path), "--keep-float", "2"]))
