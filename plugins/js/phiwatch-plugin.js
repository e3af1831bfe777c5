// Helpers for phiwatch detection plugins written in JavaScript, the counterpart of the Rust
// SDK's surface where it makes sense: settings, state, logging, findings and names.
//
// A plugin is an ES module `app.js` exporting `describe`, `configure` and `detect`;
// `componentize-js` (npm, StarlingMonkey) turns it into a component of the `detector` world in
// plugins/wit/detector.wit (`plugins/build-guests` builds them). The engine is inside the
// component: the host gives it no file system, network, clock or environment, and the same
// time, memory and state limits as a Rust plugin. WIT's u64 and s64 arrive as BigInt
// (`access.id`, `access.timeMs`); enums as their names ('low', 'view'); flags as
// `{ encounter, careTeam, appointment }` booleans.

import { log as hostLog, stateGet, stateSet, stateDelete } from 'phiwatch:detector/host@0.1.0';

export function description(name, version, categories, configSchema = '{}', needs = []) {
  return { name, version, categories, configSchema, needs };
}

// The plugin's settings (a JSON object) over `defaults`; an unknown key or a value of another
// type than its default throws, which stops the plugin loading with that message.
export function settings(config, defaults) {
  const given = JSON.parse(config || '{}');
  if (given === null || typeof given !== 'object' || Array.isArray(given)) {
    throw new Error('settings must be a table');
  }
  const out = { ...defaults };
  for (const [key, value] of Object.entries(given)) {
    if (!(key in defaults)) {
      throw new Error(`unknown setting ${JSON.stringify(key)} (known: ${Object.keys(defaults).join(', ')})`);
    }
    if (typeof value !== typeof defaults[key]) {
      throw new Error(`setting ${JSON.stringify(key)}: expected a ${typeof defaults[key]}`);
    }
    out[key] = value;
  }
  return out;
}

const SEVERITIES = ['low', 'medium', 'high', 'critical'];

export function severity(name) {
  if (!SEVERITIES.includes(name)) {
    throw new Error(`unknown severity ${JSON.stringify(name)}: use ${SEVERITIES.join(', ')}`);
  }
  return name;
}

// One finding about the accesses `events` (ids from `access.id`, at least one).
export function finding(category, severity, explanation, events, score = undefined) {
  return { category, severity, explanation, events, score };
}

// A role or department name of the batch (empty when unknown).
export function name(batch, ix) {
  return batch.names[ix] ?? '';
}

export function hasRelationship(access) {
  const r = access.relationships;
  return r.encounter || r.careTeam || r.appointment;
}

// Written to the agent's log at debug level with the plugin's name (may hold PHI).
export function log(message, level = 'debug') {
  hostLog(level, message);
}

// The plugin's key/value state, kept by the host in the agent's store.
export const state = {
  get: (key) => stateGet(key),
  // false when the plugin's state quota would be exceeded (nothing is written).
  set: (key, bytes) => {
    try {
      stateSet(key, bytes);
      return true;
    } catch {
      return false;
    }
  },
  delete: (key) => stateDelete(key),
  getJson: (key, fallback = undefined) => {
    const raw = stateGet(key);
    return raw === undefined ? fallback : JSON.parse(new TextDecoder().decode(raw));
  },
  setJson: (key, value) => state.set(key, new TextEncoder().encode(JSON.stringify(value))),
};
