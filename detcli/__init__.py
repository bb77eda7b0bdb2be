"""detcli: a command-line object-detection toolbox (NanoDet-Plus, RetinaNet)."""

__version__ = "0.1.0"
