"""converge: learned iterative image restoration.

Images are ``(B, C, H, W)`` float32 tensors in [0, 1]; noise levels are on the same scale
(``25 / 255`` for "sigma 25"). Importing the package stays light: heavy optional dependencies
(scikit-image, bm3d, matplotlib) are imported only by the functions that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load", "restore"]


def __getattr__(name: str) -> object:
    """``converge.load`` and ``converge.restore`` (:mod:`converge.api`), imported on first use so that
    ``import converge`` stays light."""
    if name in ("load", "restore"):
        from converge import api

        return getattr(api, name)
    raise AttributeError(f"module 'converge' has no attribute {name!r}")
