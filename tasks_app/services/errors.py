"""The domain errors that entry points turn into HTTP answers and messages."""

from __future__ import annotations


class OrchestratorError(Exception):
    code = "error"


class InvalidTransition(OrchestratorError):
    """The signature's current status forbids the action (HTTP 409)."""

    code = "invalid_transition"


class SpecError(OrchestratorError):
    """A spec or its input is invalid (HTTP 400); ``errors`` maps each bad field to its problem."""

    code = "invalid"

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {problem}" for field, problem in errors.items()))


class PayloadTooLarge(OrchestratorError):
    """An input exceeds a size limit (HTTP 413)."""

    code = "too_large"
