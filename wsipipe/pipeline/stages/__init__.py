"""Built-in pipeline stages, one module each (``Params`` + ``run``), listed in ``registry.BUILTIN_STAGES``."""

__all__: list[str] = []
