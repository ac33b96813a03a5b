#!/bin/sh
# Installs modelfleet into the venv /opt/modelfleet of an image, offline, in two steps that are two layers
# (the dependencies change with pyproject.toml, the project with every source change). hack/images.sh puts
# this script into each build context; the Dockerfiles bind-mount it with the wheels:
#
#   install-venv.sh deps             /wheels/requirements.txt (pinned, sha256), then /wheels/nodeps.txt
#                                    without their dependencies: ncnn's wheel declares opencv-python, tqdm,
#                                    requests and portalocker for its model zoo (200 MB that `import ncnn`
#                                    never loads), pnnx's declares torch for its Python side (the worker
#                                    runs only its binary)
#   install-venv.sh project EXTRAS   this project's wheel (/dist), also without dependencies, then checks
#                                    that modelfleet[EXTRAS] is satisfied and `pip check` names nothing but
#                                    the nodeps packages' own dependencies
#
# The venv has no pip or setuptools of its own (nothing installs at run time, and a later layer could not
# take back their 26 MB): pip runs from the wheel Debian's python3-venv ships.
set -eu
venv=/opt/modelfleet
PIP_WHEEL=$(ls /usr/share/python-wheels/pip-*.whl)
pip() { "$venv/bin/python" "$PIP_WHEEL/pip" --quiet --disable-pip-version-check --no-cache-dir "$@"; }

case ${1:-} in
deps)
    python3 -m venv --without-pip "$venv"
    pip install --no-index --find-links /wheels --require-hashes --only-binary=:all: -r /wheels/requirements.txt
    if [ -s /wheels/nodeps.txt ]; then
        pip install --no-index --find-links /wheels --no-deps --require-hashes --only-binary=:all: -r /wheels/nodeps.txt
    fi
    ;;
project)
    pip install --no-index --no-deps /dist/modelfleet-*.whl
    "$venv/bin/python" - "$2" "$PIP_WHEEL" <<'EOF'
import importlib.metadata as metadata
import re
import subprocess
import sys
from pathlib import Path

sys.path.append(sys.argv[2])  # pip's wheel: its vendored packaging parses requirements
from pip._vendor.packaging.requirements import Requirement  # noqa: E402

norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
extras = sys.argv[1].split(",")
nodeps_file = Path("/wheels/nodeps.txt")
nodeps = {norm(re.split(r"[=<>!~ ]", line, 1)[0]) for line in nodeps_file.read_text().splitlines()
          if line.strip()} if nodeps_file.exists() else set()
problems = []
for text in metadata.requires("modelfleet") or []:
    requirement = Requirement(text)
    if requirement.marker and not any(requirement.marker.evaluate({"extra": extra}) for extra in extras):
        continue
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        problems.append(f"modelfleet[{sys.argv[1]}] requires {requirement}, which is not installed")
        continue
    if not requirement.specifier.contains(version, prereleases=True):
        problems.append(f"modelfleet[{sys.argv[1]}] requires {requirement}, {requirement.name} {version} is installed")
check = subprocess.run([sys.executable, f"{sys.argv[2]}/pip", "check"], capture_output=True, text=True).stdout
for line in check.splitlines():
    if line.startswith("No broken requirements") or (norm(line.split()[0]) in nodeps and " requires " in line):
        continue
    problems.append(line)
if problems:
    sys.exit("\n".join(problems))
EOF
    ;;
*)
    echo "usage: install-venv.sh deps | project EXTRAS" >&2
    exit 2
    ;;
esac
