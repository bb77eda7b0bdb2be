"""Speed: latency and throughput of detcli (and the official code where given)."""
