"""Loading :class:`TrainParams` from YAML files (``yaml.safe_load``) or mappings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsipipe.config import parse_config
from wsipipe.errors import ConfigError
from wsipipe.training.stage import TrainParams
from wsipipe.types import PathLike

__all__ = ["load_train_params"]


def load_train_params(source: PathLike | Mapping[str, Any]) -> TrainParams:
    """Parse a training config: a YAML file path or an already-loaded mapping.

    Relative paths (``data.root``) are relative to the working directory, as on the command line.

    Raises
    ------
    ConfigError
        Missing/unreadable file, invalid YAML, or an invalid key or value (named with the file
        and the dotted key, with a "did you mean" suggestion for unknown keys).
    """
    if isinstance(source, Mapping):
        return parse_config(TrainParams, source)
    import yaml

    path = Path(source)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the training config ({err.strerror or err})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    return parse_config(TrainParams, data, source=str(path))
