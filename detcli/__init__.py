"""detcli: a command-line object-detection toolbox (NanoDet-Plus, RTMDet, RetinaNet, DeFCN)."""

__version__ = "0.1.0"
