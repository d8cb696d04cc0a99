"""Reading experiment configs: YAML with ``class_path``/``init_args`` objects, as LightningCLI uses.

Why not jsonargparse directly: the experiment runner builds each model many times with
different hyperparameters and data-derived sizes, and a bad key must produce ONE line naming the
key, the class and the keys it accepts. A 40-line recursive instantiation with signature checks
gives that; the same YAML shape keeps configs interchangeable with ``crossrec fit``.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import re
from pathlib import Path
from typing import Any

import yaml

from crossrec_lit.errors import CrossRecError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?::[A-Za-z_][A-Za-z0-9_.-]*)?)(?::-([^}]*))?\}")


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise CrossRecError(f"config file {path} does not exist", "check the path (configs live in configs/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise CrossRecError(f"config file {path} is not valid YAML ({first})", "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise CrossRecError(f"config file {path} does not contain a mapping", "write the config as key: value pairs")
    return data


def placeholders(value: Any) -> set[str]:
    """Names of the ``${...}`` placeholders anywhere in a nested config value."""
    if isinstance(value, dict):
        return set().union(*(placeholders(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value)) if value else set()
    return {m.group(1) for m in _ENV.finditer(value)} if isinstance(value, str) else set()


def substitute(value: Any, variables: dict[str, Any]) -> Any:
    """Replace ``${name}`` (from ``variables``, else the environment; ``${name:-default}``) in strings.

    Names may carry a qualifier, as the experiment runner's ``${pretrained:source_mf}`` and
    ``${baseline:TargetOnly}`` do.

    A string that is exactly one placeholder takes the variable's type (``seed: ${seed}`` stays an int).
    """
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match) -> Any:
        name, default = match.group(1), match.group(2)
        if name in variables:
            return variables[name]
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise CrossRecError(f"config uses ${{{name}}} but it is not set", f"set the environment variable {name} or give a default with ${{{name}:-value}}")

    whole = _ENV.fullmatch(value)
    if whole:
        return lookup(whole)
    return _ENV.sub(lambda m: str(lookup(m)), value)


def import_class(class_path: str):
    module_name, _, name = class_path.rpartition(".")
    if not module_name:
        raise CrossRecError(f"class_path {class_path!r} is not a dotted path", "write e.g. crossrec_lit.models.BPRMF")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, name)
    except (ImportError, AttributeError):
        raise CrossRecError(f"cannot import {class_path!r}", "check the class_path spelling (e.g. crossrec_lit.models.BPRMF)") from None


def instantiate(spec: Any, **extra) -> Any:
    """Build ``{"class_path": ..., "init_args": {...}}`` recursively; other values pass through."""
    if isinstance(spec, list):
        return [instantiate(v) for v in spec]
    if not (isinstance(spec, dict) and "class_path" in spec):
        return spec
    unknown = set(spec) - {"class_path", "init_args"}
    if unknown:
        raise CrossRecError(f"unknown key(s) {sorted(unknown)} next to class_path {spec['class_path']}", "put constructor arguments under init_args")
    cls = import_class(spec["class_path"])
    kwargs = {k: instantiate(v) for k, v in (spec.get("init_args") or {}).items()}
    kwargs.update(extra)
    check_arguments(cls, kwargs)
    return cls(**kwargs)


def accepted_arguments(cls) -> set[str]:
    """Constructor argument names of ``cls``, following ``**kwargs`` up to the parents that take them."""
    accepted = set()
    for klass in inspect.getmro(cls):
        if klass is object or "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        accepted |= {n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return accepted


def check_arguments(cls, kwargs: dict) -> None:
    """Refuse keys that ``cls`` does not accept, naming them and the accepted ones."""
    accepted = accepted_arguments(cls)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise CrossRecError(f"unknown key(s) {unknown} for {cls.__name__}", f"use only {sorted(accepted)}")


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` wins; nested mappings merge (lists are replaced, not concatenated), except
    that an object with a different ``class_path`` replaces the old one instead of merging into
    arguments that belong to another class."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and value.get("class_path", old.get("class_path")) != old.get("class_path"):
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(old, dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
