"""Static checks of the Docker files (no Docker engine runs on the CI machine)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_dockerfile_copies_existing_paths_and_installs_wsipipe(name: str) -> None:
    text = (ROOT / "docker" / name).read_text()
    assert text.startswith("#") or text.lstrip().startswith("FROM")
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.MULTILINE)
    assert copies
    for sources in copies:
        for src in sources.split():
            assert (ROOT / src).exists(), f"{name}: COPY source {src} does not exist"
    assert re.search(r"pip install .*torch", text)
    assert re.search(r"^RUN pip install \.$", text, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["wsipipe"]' in text


def test_compose_starts_scheduler_workers_and_a_pipeline_against_them() -> None:
    doc = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = doc["services"]
    assert services["scheduler"]["entrypoint"][:2] == ["dask", "scheduler"]
    assert services["worker"]["entrypoint"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
    run = services["pipeline"]["command"]
    assert run[0] == "run"
    assert (ROOT / run[1]).is_file()
    assert run[run.index("--scheduler") + 1] == "tcp://scheduler:8786"
    dockerfile = services["scheduler"]["build"]["dockerfile"]
    assert (ROOT / dockerfile).is_file()


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_images_give_dask_workers_the_stages_malloc_settings(name: str) -> None:
    """The image's Dask configuration carries the worker environment that the local cluster uses."""
    from wsipipe.inference._cluster import WORKER_MALLOC_ENV

    assert "COPY docker/dask.yaml /etc/dask/wsipipe.yaml" in (ROOT / "docker" / name).read_text()
    config = yaml.safe_load((ROOT / "docker" / "dask.yaml").read_text())
    assert config["distributed"]["nanny"]["pre-spawn-environ"] == WORKER_MALLOC_ENV
