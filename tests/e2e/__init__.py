"""Runs through the CLI or a whole training / evaluation / prediction / export."""
