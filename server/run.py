"""Running the server: ``rag serve [--workers N]``.

With one worker the CLI process loads the pipeline (building the index if needed) and serves it.
With N > 1 workers:

1. a short-lived child process loads the model and builds or checks the index, once, so N
   workers never race to build the same index (and the supervisor never holds a model copy);
2. uvicorn's supervisor starts N worker processes (``multiprocessing`` spawn) that share the
   listening socket; each calls :func:`worker_app`, which loads its own pipeline (its own
   model copy) with ``auto_index=False``: a worker only loads what step 1 prepared, and
   reports a stale index through ``/readyz`` instead of rebuilding it.

Settings reach the spawned workers as ``RAG_*`` environment variables (:func:`settings_env`).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
import threading
from typing import Callable

from rag.config import Settings
from rag.errors import ConfigError, RagError

#: Import string of the app factory each worker process calls.
WORKER_FACTORY = "server.run:worker_app"


def settings_env(settings: Settings) -> dict[str, str]:
    """``RAG_<FIELD>`` values that rebuild ``settings`` through :meth:`Settings.from_env`.

    Fields that are None are given as empty strings, which ``from_env`` reads as unset.
    """
    env: dict[str, str] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        env[f"RAG_{f.name.upper()}"] = "" if value is None else str(value)
    return env


def default_pipeline(settings: Settings, auto_index: bool = True):
    """The production pipeline: the configured embedding model over the configured corpus."""
    from rag.pipeline import Pipeline

    return Pipeline(settings, auto_index=auto_index)


def worker_app():
    """App factory of one worker process (uvicorn ``factory=True``): settings from the
    environment, a pipeline that loads but never builds the index, warmed in the background."""
    from tqdm import tqdm

    from .app import create_app

    # tqdm (inside sentence-transformers) would create a multiprocessing lock, a POSIX semaphore;
    # uvicorn ends a worker by re-raising SIGTERM after its graceful shutdown, so the semaphore
    # is never released and the resource tracker warns about it. A thread lock is all a worker needs.
    tqdm.set_lock(threading.RLock())
    settings = Settings.from_env()
    return create_app(settings, pipeline=default_pipeline(settings, auto_index=False), warm=True)


def _prepare(settings: Settings, make_pipeline: Callable[..., object]) -> None:
    """Child process: load the model and build or check the index; exit with the error's code."""
    try:
        make_pipeline(settings, auto_index=True).warm_up()
    except RagError as err:
        print(f"error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"  fix: {err.hint}", file=sys.stderr)
        sys.exit(err.exit_code)


def prepare_index(settings: Settings, make_pipeline: Callable[..., object] = default_pipeline) -> int:
    """Build or check the index once, in a spawned child process, before workers start (so the
    supervisor never holds a model copy and N workers never build concurrently).

    Returns:
        The child's exit status (0 when the index is ready).
    """
    proc = multiprocessing.get_context("spawn").Process(target=_prepare, args=(settings, make_pipeline),
                                                        name="rag-prepare-index")
    proc.start()
    proc.join()
    return proc.exitcode if proc.exitcode is not None else 1


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int | None = None,
          log_level: str = "info", *, factory: str = WORKER_FACTORY,
          make_pipeline: Callable[..., object] = default_pipeline) -> int:
    """Serve the chat API, the source viewer and the web page until interrupted.

    Args:
        settings: All settings (``workers`` is used when the argument is None).
        host, port: Where to listen.
        workers: Processes (each loads its own model copy); >= 1.
        log_level: uvicorn log level.
        factory: Import string of the per-worker app factory, used when ``workers`` > 1 (tests
            and the load test pass one with a fake embedder).
        make_pipeline: ``(settings, auto_index) -> Pipeline`` for the single worker and for the
            index preparation (a module-level function: it is pickled for the spawned child).

    Returns:
        Exit status: 0 after a clean shutdown, else the index preparation's status.

    Raises:
        ConfigError: ``workers`` < 1, or > 1 on a Milvus Lite file.
        RagError: with one worker, the pipeline's loading errors (model, corpus, index).
    """
    import uvicorn

    workers = settings.workers if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}", hint="use --workers 1 or more")
    if workers > 1 and settings.uses_milvus_lite:
        raise ConfigError(f"--workers {workers} cannot share the Milvus Lite file {settings.resolved_milvus_uri}: "
                          "Milvus Lite serves one process",
                          hint="use --workers 1, or point RAG_MILVUS_URI at a Milvus server (http://host:19530)")
    if workers == 1:
        from .app import create_app

        pipeline = make_pipeline(settings, auto_index=True).warm_up()
        app = create_app(settings, pipeline=pipeline, warm=True)  # already loaded: ready at once
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return 0
    status = prepare_index(settings, make_pipeline)
    if status != 0:
        return status
    os.environ.update(settings_env(settings.replace(workers=workers)))
    uvicorn.run(factory, factory=True, host=host, port=port, workers=workers, log_level=log_level)
    return 0
