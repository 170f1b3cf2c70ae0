"""converge: learned iterative image restoration.

Images are ``(B, C, H, W)`` float32 tensors in [0, 1]; noise levels are on the same scale
(``25 / 255`` for "sigma 25"). Importing the package stays light: heavy optional dependencies
(scikit-image, bm3d, matplotlib) are imported only by the functions that need them.
"""

__version__ = "0.1.0"
