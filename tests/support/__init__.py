"""Helpers the tests (and a few benchmarks) share; no tests here."""
