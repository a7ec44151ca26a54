"""One exception tree for the conversion pipeline: every refusal is a ConversionError with a clear message."""


class ConversionError(Exception):
    """Base class: the CLI prints the message and exits non-zero; nothing is published."""


class RecipeError(ConversionError):
    """The recipe file is missing, malformed or contradictory."""


class CheckpointError(ConversionError):
    """The checkpoint directory cannot be used (missing files, wrong kind)."""


class UnsafeCheckpointError(CheckpointError):
    """Pickled weights or remote code: refused, never loaded."""


class CorruptCheckpointError(CheckpointError):
    """A weights file is truncated or its header is inconsistent."""


class ParityError(ConversionError):
    """The exported graph disagrees with PyTorch beyond the recipe's tolerance."""


class ValidationGateError(ConversionError):
    """The artifact is past its accuracy budget; carries the report so the numbers can be printed."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class StoreError(ConversionError):
    """The model store has no such name/version, or a version's files do not match its manifest."""
