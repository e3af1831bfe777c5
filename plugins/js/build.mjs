// Builds a JavaScript plugin into a component of the `detector` world with componentize-js:
//   node plugins/js/build.mjs plugins/js/department-spread/app.js out.wasm
// (PHIWATCH_COMPONENTIZE_JS names the node_modules holding @bytecodealliance/componentize-js;
// plugins/build-guests installs it pinned). HTTP and the fetch event are left out: the
// detector world imports no wasi:http, and the host offers none.
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const [source, out] = process.argv.slice(2);
if (!source || !out) {
  console.error('usage: node build.mjs APP.js OUT.wasm');
  process.exit(2);
}
const modules = process.env.PHIWATCH_COMPONENTIZE_JS ?? path.join(process.cwd(), 'node_modules');
const entry = path.join(modules, '@bytecodealliance', 'componentize-js', 'src', 'componentize.js');
const { componentize } = await import(pathToFileURL(entry).href);
const here = path.dirname(fileURLToPath(import.meta.url));
// A scaffolded plugin keeps its WIT beside its source; in phiwatch's tree it is plugins/wit.
const local = path.join(path.dirname(path.resolve(source)), 'wit');
const { component } = await componentize({
  sourcePath: path.resolve(source),
  witPath: existsSync(local) ? local : path.join(here, '..', 'wit'),
  worldName: 'detector',
  disableFeatures: ['http', 'fetch-event'],
});
writeFileSync(out, component);
console.log(`${out}: ${component.length} bytes`);
