"""Which S3 client a tiling run loads: with obstore (``wsipipe.storage.s3_client``) no s3fs, aiobotocore or botocore."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from wsipipe.synth import SlideInfo

_TILE_TWICE = """
import json, sys
from wsipipe.tiling import TileParams, tile_slides
for _ in range(2):  # made, then found complete (resume)
    tile_slides([sys.argv[1]], sys.argv[2], TileParams(), scheduler="threads", workers=2).raise_for_failures()
from wsipipe.store import find_stores, read_tiles
print(json.dumps({
    "tiles": int(read_tiles(find_stores([sys.argv[2]])[0]).shape[0]),
    "loaded": sorted({m.split(".")[0] for m in sys.modules} & {"s3fs", "botocore", "aiobotocore", "aiohttp"}),
}))
"""


@pytest.mark.parametrize("client", ["obstore", "s3fs"])
def test_tiling_from_and_to_s3_with_obstore_loads_no_s3fs_nor_botocore(
    s3_bucket: str, tumor_slide: SlideInfo, client: str
) -> None:
    from wsipipe.storage import S3_CLIENT_ENV, url_fs

    fs, key = url_fs(f"{s3_bucket}/slides/t.tif")
    fs.put_file(str(tumor_slide.path), key)
    env = {**os.environ, S3_CLIENT_ENV: "auto" if client == "obstore" else "s3fs", "WSIPIPE_PROGRESS": "0"}
    done = subprocess.run(
        [sys.executable, "-c", _TILE_TWICE, f"{s3_bucket}/slides/", f"{s3_bucket}/run"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["tiles"] > 0
    if client == "obstore":
        assert figures["loaded"] == []  # a HEAD, GETs, LISTs and PUTs, all through obstore
    else:
        assert {"s3fs", "botocore"} <= set(figures["loaded"])
