"""``python -m rag`` is the same as the ``rag`` command."""

from .cli import main

raise SystemExit(main())
