"""The worker's local state directory is a cache of the changelogs, trusted only after a
clean stop.

faust writes a table change to RocksDB at once and to the table's changelog topic through
the producer's buffer. A worker killed in between (kill -9, OOM, a fail-fast exit) leaves
local state *ahead* of its changelog: keys no changelog record holds. On restart faust
replays the changelog from the offset RocksDB remembers, so those keys survive locally;
the re-delivered inputs then find them already set, change nothing, and never write them
to the changelog. Another worker that takes the partition over recovers without them, and
the two disagree. (quixstreams avoids this by keeping state and changelog offsets
together; faust does not.)

So a worker marks a clean stop in the state directory, and a worker that starts without
that mark discards its local state and recovers every table from the changelogs, which are
the truth. The mark is removed at start, so a crash during the run leaves none.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

CLEAN_MARK = ".clean-shutdown"


def prepare(state_dir: Path) -> bool:
    """Make ``state_dir`` safe to run on; True if local state was discarded."""
    state_dir.mkdir(parents=True, exist_ok=True)
    mark = state_dir / CLEAN_MARK
    contents = [p for p in state_dir.iterdir() if p.name != CLEAN_MARK]
    discard = bool(contents) and not mark.exists()
    if discard:
        log.warning(
            "the previous run did not stop cleanly: discarding local state in %s; every "
            "table recovers from its changelog",
            state_dir,
        )
        for path in contents:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    mark.unlink(missing_ok=True)
    return discard


def mark_clean(state_dir: Path) -> None:
    """Record that the worker stopped cleanly: its tables match their changelogs."""
    (state_dir / CLEAN_MARK).touch()
