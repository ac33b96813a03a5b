"""Reading CompressedModel manifests from YAML files, with errors that name the field.

`env:NAME` instead of a path reads the manifest (YAML or JSON) from an environment variable:
that is how the operator hands a resource to its worker Jobs.
"""

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from modelfleet.api import CompressedModel
from modelfleet.errors import InvalidManifest


def load_manifest(path: Path) -> CompressedModel:
    try:
        documents = [d for d in yaml.safe_load_all(_read(path)) if d is not None]
    except OSError as e:
        raise InvalidManifest(f"{path}: cannot read manifest: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise InvalidManifest(f"{path}: not valid YAML: {e}") from e
    models = [d for d in documents if isinstance(d, dict) and d.get("kind") == "CompressedModel"]
    if len(models) != 1:
        raise InvalidManifest(f"{path}: expected exactly one CompressedModel document, found {len(models)}")
    try:
        return CompressedModel.model_validate(models[0])
    except ValidationError as e:
        raise InvalidManifest(f"{path}: invalid CompressedModel:\n{format_validation_error(e)}") from e


def manifest_dir(path: Path) -> Path:
    """Where relative file:// URIs in the manifest point: its directory, or the working directory."""
    return Path.cwd() if str(path).startswith("env:") else path.resolve().parent


def _read(path: Path) -> str:
    if str(path).startswith("env:"):
        name = str(path).removeprefix("env:")
        if name not in os.environ:
            raise InvalidManifest(f"{path}: environment variable {name} is not set")
        return os.environ[name]
    return path.read_text()


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(document)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)
