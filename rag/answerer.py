"""Compatibility names: the answerer lives in :mod:`rag.answer`; ``from rag.answerer import
Answerer, Candidate, ...`` keeps working."""

from .answer import *  # noqa: F401,F403
from .answer import __all__  # noqa: F401
