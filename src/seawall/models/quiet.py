"""Keep transformers' own output (load reports, progress bars, tracer and deprecation warnings) out of the user's
way: routed to seawall's DEBUG log for the duration of a block."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

log = logging.getLogger("seawall.models")


class _ToDebug(logging.Handler):
    """Re-emits transformers' records at DEBUG on seawall's logger."""

    def emit(self, record: logging.LogRecord) -> None:
        log.debug("transformers: %s", record.getMessage())


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Route what transformers prints while loading, saving or tracing a model (load reports, weight-loading
    progress bars, tracer and deprecation warnings) to seawall's DEBUG log, for the duration of the block only."""
    from transformers.utils import logging as hf_logging

    hf_logger = hf_logging.get_logger()  # the library's root logger, "transformers"
    saved_handlers, saved_propagate = hf_logger.handlers[:], hf_logger.propagate
    bars = hf_logging.is_progress_bar_enabled()
    hf_logger.handlers, hf_logger.propagate = [_ToDebug()], False
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for warning in caught:
            log.debug("%s: %s", warning.category.__name__, warning.message)
    finally:
        hf_logger.handlers, hf_logger.propagate = saved_handlers, saved_propagate
        if bars:
            hf_logging.enable_progress_bar()
