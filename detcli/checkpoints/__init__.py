"""detcli checkpoints: the typed record (record.py), safe reading and atomic writing (io.py), the checks a crafted
file meets before and after torch reads it (checks.py, safe_numpy.py)."""
