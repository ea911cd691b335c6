"""Errors of the archive domain. They know nothing about HTTP; ``api`` maps them to responses.

LeadArchiveError
├── ConfigurationError        settings that cannot work (bad URL, bad office hours, ...)
├── SchemaError               the tables cannot be archived between safely
│   ├── MissingTableError     vicidial_list or vicidial_list_archive does not exist
│   └── SchemaMismatchError   the archive's columns differ from the live table's
└── BatchError                a batch could not be carried out
    └── ConcurrentChangeError a row changed between the batch's check and its statement
"""

from __future__ import annotations


class LeadArchiveError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(LeadArchiveError):
    """The settings cannot work."""


class SchemaError(LeadArchiveError):
    """The live and archive tables cannot be archived between safely."""


class MissingTableError(SchemaError):
    """A table the batch needs does not exist."""


class SchemaMismatchError(SchemaError):
    """The archive table's columns differ from the live table's; ``differences`` names each one."""

    def __init__(self, differences: list[str]) -> None:
        self.differences = differences
        super().__init__(
            "vicidial_list_archive does not match vicidial_list: " + "; ".join(differences)
        )


class BatchError(LeadArchiveError):
    """A batch could not be carried out."""


class ConcurrentChangeError(BatchError):
    """A statement touched other rows than the batch's locked check predicted.

    Nothing unsafe happened (every statement is guarded on its own); the chunk is retried.
    """
