// need.mjs - the browser tests' tools, each missing one named with how to get it (and exit
// status 1) instead of a module-resolution stack trace.
import fs from 'node:fs';

function missing(what, how) {
  console.error(`browser test: ${what} is missing: ${how}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}

const major = Number(process.versions.node.split('.')[0]);
if (major < 18) missing(`Node.js 18 or newer (this is ${process.version})`, 'apt-get install nodejs');

/* Imports an npm package of tests/browser/package.json. */
export async function need(pkg) {
  try {
    return await import(pkg);
  } catch (e) {
    if (e.code !== 'ERR_MODULE_NOT_FOUND') throw e;
    return missing(`the npm package ${pkg}`, 'run `npm install` in tests/browser (scripts/test.sh does)');
  }
}

/* An executable the tests start, e.g. Chromium. */
export function needFile(path, how) {
  try {
    fs.accessSync(path, fs.constants.X_OK);
  } catch {
    missing(path, how);
  }
  return path;
}
