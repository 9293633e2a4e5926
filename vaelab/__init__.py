"""vaelab: variational autoencoders on PyTorch Lightning.

From Python: ``vaelab.train(...)`` and ``vaelab.load_run(path)`` (:mod:`vaelab.api`,
docs/python-api.md), imported on first use so that ``python -m vaelab.fit`` starts no slower.
"""

_API = ("train", "load_run", "Run", "Model", "Metrics")

__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        from vaelab import api

        return getattr(api, name)
    raise AttributeError(f"module 'vaelab' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
