// {{name}}: break-the-glass on a patient with no encounter near the access (replace with your
// rule). Build with `npm install && node build.mjs app.js {{name}}.wasm`; try:
// phiwatch plugin test {{name}}.wasm --cases cases.toml
import { description, settings, finding } from './phiwatch-plugin.js';

const CATEGORY = '{{category}}';

export function describe() {
  return description('{{name}}', '0.1.0', [CATEGORY]);
}

export function configure(json) {
  settings(json, {});
}

export function detect(batch) {
  const out = [];
  for (const a of batch.accesses) {
    if (a.breakGlass && !a.encounterNear) {
      const user = batch.users[a.user];
      const patient = batch.patients[a.patient];
      out.push(finding(CATEGORY, 'medium',
        `User ${user.id} used break-the-glass on patient ${patient.id} with no encounter near the access.`,
        [a.id]));
    }
  }
  return out;
}
