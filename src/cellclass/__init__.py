"""cellclass: can a neural network classify my microscopy images as well as I can, reproducibly?"""

__version__ = "0.1.0"
