"""What the command modules share: the usage error, the Settings a command's flags make, the question check."""
from __future__ import annotations

import argparse

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
    """The question as the API would take it (AskRequest's checks and cleaning), or a usage error."""
    from rag.errors import QuestionError
    from rag.schema import checked_question

    if len(text or "") > settings.max_question_chars:
        raise UsageError(f"the question is {len(text)} characters long; the limit is {settings.max_question_chars}")
    try:
        return checked_question(text)
    except QuestionError as err:
        raise UsageError(str(err)) from None
