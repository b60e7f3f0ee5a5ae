"""Run the ``wsipipe`` CLI and SIGKILL it at an exact commit point: just before the n-th rename onto a name.

Usage: ``python tests/reliability/_killpoint.py PATTERN N wsipipe-args...``. Every finished
output is committed by renaming a temporary file over its final name (``os.replace``), so the
moments just before those renames are where a kill is most likely to expose two files that
must change together. This process counts the renames whose destination's file name matches
the glob ``PATTERN`` and kills itself with SIGKILL, exactly like ``kill -9``, before the n-th
one takes effect. Only this process is instrumented (not the Dask worker processes).
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
from typing import Any


def main() -> int:
    pattern, nth, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    real_replace = os.replace
    seen = 0

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal seen
        if fnmatch.fnmatch(os.path.basename(os.fspath(dst)), pattern):
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *args, **kwargs)

    os.replace = replace  # Path.replace and zarr's LocalStore call os.replace too

    from wsipipe.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
