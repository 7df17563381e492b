"""The deployment files agree with the code: compose registers the contract's search attributes and runs the
real entry points; the image copies every package the code imports. (No Docker engine runs here.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from workflows.search_attributes import cli_flags

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_registers_every_contract_search_attribute() -> None:
    command = compose()["services"]["temporal"]["command"]
    registered = {arg.split("=", 1)[1] for arg in command if arg.startswith("--search-attribute=")}
    flags = cli_flags()
    expected = {flags[i + 1] for i in range(0, len(flags), 2)}
    assert registered == expected


def test_compose_services_run_existing_entry_points() -> None:
    services = compose()["services"]
    assert services["worker"]["command"] == ["python", "worker.py"]
    assert services["starter"]["command"] == ["python", "starter.py", "serve"]
    for name in ("worker", "starter"):
        assert services[name]["build"] == "."
        assert services[name]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert (ROOT / "worker.py").exists() and (ROOT / "starter.py").exists()


def test_image_copies_every_top_level_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile, flags=re.MULTILINE))
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages <= copied, f"Dockerfile misses {sorted(packages - copied)}"
    assert "runbooks" in copied
