// department-spread: an access burst across many departments. A user who, within
// `window_minutes`, opens the records of patients whose encounters span at least
// `departments` distinct departments, with no care relationship to any of them, is browsing
// the hospital rather than working a list: one finding per burst, naming its accesses.
// Bursts are short, so the window lives in the instance's memory (a restart forgets at most
// one window).

import { description, settings, severity, finding, name, hasRelationship } from '../phiwatch-plugin.js';

const CATEGORY = 'department_spread';
let config = { departments: 4, window_minutes: 10, severity: 'medium' };
// user id -> { recent: [{ t, id, departments }], quietUntil }
const users = new Map();

export function describe() {
  const schema = JSON.stringify({
    type: 'object',
    properties: {
      departments: { type: 'integer', minimum: 2 },
      window_minutes: { type: 'integer', minimum: 1 },
      severity: { enum: ['low', 'medium', 'high', 'critical'] },
    },
    additionalProperties: false,
  });
  return description('department-spread', '0.1.0', [CATEGORY], schema);
}

export function configure(json) {
  const s = settings(json, config);
  if (!Number.isInteger(s.departments) || s.departments < 2) throw new Error('departments: at least 2');
  if (!Number.isInteger(s.window_minutes) || s.window_minutes < 1) throw new Error('window_minutes: at least 1');
  severity(s.severity);
  config = s;
}

export function detect(batch) {
  const out = [];
  const windowMs = config.window_minutes * 60000;
  for (const a of batch.accesses) {
    if (hasRelationship(a)) continue;
    const user = batch.users[a.user];
    const patient = batch.patients[a.patient];
    const t = Number(a.timeMs);
    const u = users.get(user.id) ?? { recent: [], quietUntil: -Infinity };
    users.set(user.id, u);
    u.recent = u.recent.filter((r) => t - r.t < windowMs);
    u.recent.push({ t, id: a.id, departments: patient.departments.map((d) => name(batch, d)) });
    if (t < u.quietUntil) continue;
    const spread = new Set(u.recent.flatMap((r) => r.departments).filter((d) => d !== ''));
    if (spread.size >= config.departments) {
      const role = name(batch, user.role) || 'unknown role';
      out.push(finding(
        CATEGORY,
        config.severity,
        `User ${user.id} (${role}) opened ${u.recent.length} records of patients in ${spread.size} departments (${[...spread].sort().join(', ')}) within ${config.window_minutes} minutes, with no care relationship to any of them.`,
        u.recent.map((r) => r.id),
      ));
      u.quietUntil = t + windowMs;
      u.recent = [];
    }
  }
  return out;
}
