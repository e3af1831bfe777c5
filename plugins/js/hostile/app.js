// A hostile JavaScript plugin for the sandbox's tests: with {"mode": "loop"} it never
// returns, with {"mode": "bomb"} it allocates until the host's memory limit stops it.

import { description, settings } from '../phiwatch-plugin.js';

let mode = 'none';

export function describe() {
  return description('hostile-js', '0.1.0', ['hostile']);
}

export function configure(json) {
  mode = settings(json, { mode: 'none' }).mode;
}

export function detect(batch) {
  if (mode === 'loop') {
    let n = 0;
    for (;;) n += 1;
  }
  if (mode === 'bomb') {
    const hoard = [];
    for (;;) hoard.push(new Uint8Array(16 << 20).fill(batch.accesses.length));
  }
  return [];
}
