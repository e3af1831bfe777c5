"""Helpers for phiwatch detection plugins written in Python, the counterpart of the Rust SDK's
surface where it makes sense: settings, state, logging, findings and names.

A plugin is a module `app.py` defining `class WitWorld(wit_world.WitWorld)` with `describe`,
`configure` and `detect`; `componentize-py` (PyPI) turns it and this module into a component
of the `detector` world in `plugins/wit/detector.wit`. `plugins/build-guests` builds them.
The interpreter is inside the component: the host gives it no file system, network, clock or
environment, and the same time, memory and state limits as a Rust plugin.
"""

import json

from componentize_py_types import Err
from wit_world.imports import host, types

Severity = types.Severity
Action = types.Action
Relationships = types.Relationships


def description(name, version, categories, config_schema="{}", needs=()):
    """What `describe` returns: every category the plugin may report."""
    return types.Description(
        name=name,
        version=version,
        categories=list(categories),
        config_schema=config_schema,
        needs=list(needs),
    )


def settings(config, defaults):
    """The plugin's settings (a JSON object) over `defaults`; an unknown key or a value of
    another type than its default stops the plugin loading with a message naming it."""
    given = json.loads(config or "{}")
    if not isinstance(given, dict):
        raise Err("settings must be a table")
    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise Err("unknown setting %r (known: %s)" % (key, ", ".join(sorted(defaults))))
        if not isinstance(value, type(defaults[key])):
            raise Err("setting %r: expected %s" % (key, type(defaults[key]).__name__))
        out[key] = value
    return out


def severity(name):
    """A severity from its name in settings: low, medium, high, critical."""
    try:
        return Severity[name.upper()]
    except KeyError:
        raise Err("unknown severity %r: use low, medium, high or critical" % name)


def finding(category, severity, explanation, events, score=None):
    """One finding about the accesses `events` (ids from `access.id`, at least one)."""
    return types.Finding(
        category=category,
        severity=severity,
        explanation=explanation,
        events=list(events),
        score=score,
    )


def name(batch, ix):
    """A role or department name of the batch (empty when unknown)."""
    return batch.names[ix] if 0 <= ix < len(batch.names) else ""


def log(message, level=host.Level.DEBUG):
    """Written to the agent's log at debug level with the plugin's name (may hold PHI)."""
    host.log(level, message)


class State:
    """The plugin's key/value state, kept by the host in the agent's store (it survives
    restarts and is written with the batch). Values are bytes; `*_json` store JSON."""

    @staticmethod
    def get(key):
        return host.state_get(key)

    @staticmethod
    def set(key, value):
        """False when the plugin's state quota would be exceeded (nothing is written)."""
        try:
            host.state_set(key, value)
            return True
        except Err:
            return False

    @staticmethod
    def delete(key):
        host.state_delete(key)

    @staticmethod
    def get_json(key, default=None):
        raw = host.state_get(key)
        return default if raw is None else json.loads(raw)

    @staticmethod
    def set_json(key, value):
        return State.set(key, json.dumps(value, separators=(",", ":")).encode())


state = State()
