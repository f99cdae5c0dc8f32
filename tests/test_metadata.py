"""Package metadata agrees with what is tested: the torch range, extras, package data."""

from __future__ import annotations

from pathlib import Path

import tomllib
import torch
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(names: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in names]
    return {r.name: r for r in reqs}


def test_torch_range_admits_the_tested_torch_and_has_an_upper_bound():
    torch_req = _requirements(PROJECT["dependencies"])["torch"]
    tested = Version(torch.__version__.split("+")[0])
    assert torch_req.specifier.contains(tested), (torch_req, tested)
    # private torch APIs are used: the range must stop before the next minor release
    nxt = Version(f"{tested.major}.{tested.minor + 1}.0")
    assert not torch_req.specifier.contains(nxt), torch_req


def test_demo_and_bench_tools_are_extras_not_dependencies():
    deps = _requirements(PROJECT["dependencies"])
    assert not {"matplotlib", "tqdm"} & set(deps)
    extras = PROJECT["optional-dependencies"]
    assert {"matplotlib", "tqdm"} <= set(_requirements(extras["demo"]))


def test_word_list_is_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "words.txt" in data["package-data"]["attnkern.demo"]
    assert (ROOT / "attnkern" / "demo" / "words.txt").is_file()
