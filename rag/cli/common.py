"""What the command modules share: the usage error, the Settings a command's flags make, the question check."""
from __future__ import annotations

import argparse
import logging

from rag.config import Settings

#: The attribute of the parsed arguments that maps each flag's dest to the Settings field it sets (declared
#: by the parser beside each such flag: rag.cli.parser._setting).
SETTINGS = "settings_fields"
#: The same for `rag train-reader`'s flags and the TrainConfig fields they set (rag.cli.parser._train_field).
TRAIN_CONFIG = "train_config_fields"


class UsageError(Exception):
    """A bad argument value, reported like argparse's own errors."""


def refuse_without(args: argparse.Namespace, parent: str, parent_flag: str, **flags: str) -> None:
    """A usage error when a flag that only acts with another (dest `parent`) is given without it, rather
    than ignoring it silently; `flags` maps each dependent flag's dest to its name on the command line."""
    given = [flag for dest, flag in flags.items() if getattr(args, dest, None) is not None]
    if given and not getattr(args, parent, None):
        raise UsageError(f"{', '.join(given)} only act{'s' if len(given) == 1 else ''} with {parent_flag}")


def mapped(args: argparse.Namespace, attribute: str) -> dict[str, object]:
    """field -> value of the flags given (not None) that the parser declared under `attribute`."""
    values = {field: getattr(args, dest) for dest, field in getattr(args, attribute).items()}
    return {field: value for field, value in values.items() if value is not None}


def settings_from(args: argparse.Namespace) -> Settings:
    """The default Settings with the fields the command's flags set, where they were given."""
    return Settings().with_overrides(**mapped(args, SETTINGS))


def check_question(text: str, settings: Settings) -> str:
    """The question as it will be answered (rag.text.checked_question, with the settings' limit), or a usage error."""
    from rag.errors import QuestionError
    from rag.text import checked_question

    try:
        return checked_question(text or "", settings.max_question_chars)
    except QuestionError as err:
        raise UsageError(str(err)) from None


def _quiet_model_loading() -> None:
    """No weight-loading progress bars or load reports: the models are local and known. Through the
    environment, which transformers reads when (and only if) it is imported: importing it here would cost
    a one-shot `rag ask` most of a second."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def configure_logging(verbose: bool, command: str) -> None:
    """The command's logging: warnings (everything with -v), escaped, the libraries' chatter quiet, and the
    long commands' progress (rag's INFO). Also what `rag serve --workers`' preparing child process runs."""
    from rag.console import SafeFormatter

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(SafeFormatter("%(levelname)s: %(message)s"))
    _quiet_model_loading()
    for noisy in ("httpx", "sentence_transformers", "bm25s", "transformers", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
    if command in ("train-reader", "calibrate-reader", "serve"):
        logging.getLogger("rag").setLevel(logging.INFO)
