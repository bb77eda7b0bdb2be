"""Packaging glue that pyproject.toml cannot express: the top-level presets/ folder ships inside
the wheel as the package ``detcli.presets``, so preset names resolve after ``pip install .`` too."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["detcli", "detcli.*"]) + ["detcli.presets"],
    package_dir={"detcli.presets": "presets"},
    package_data={"detcli.presets": ["*.yaml"]},
)
