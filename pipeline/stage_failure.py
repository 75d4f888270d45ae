"""How a stage that meets an unexpected error ends the process: at once, uncommitted.

Its own module so that a process running only the ingest stage (``omnistitch ingest``)
does not import faust to use it.
"""

from __future__ import annotations

import logging
import os
from typing import NoReturn

log = logging.getLogger(__name__)

#: Exit status of a worker stopped by an unexpected error in a stage (EX_SOFTWARE).
EXIT_STAGE_FAILED = 70


def stage_failed(stage: str) -> NoReturn:
    """End the worker at once, without committing, after ``stage`` met an unexpected error
    (call it from the ``except`` block: the traceback is logged)."""
    log.critical("stage %s failed; exiting without committing", stage, exc_info=True)
    logging.shutdown()
    os._exit(EXIT_STAGE_FAILED)
