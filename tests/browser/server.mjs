// server.mjs - starts the real `svdslice serve` on a free loopback port with a temp data dir
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const LISTEN_RE = /^svdslice listening on (http:\/\/\S+?)\/?\s*$/m;
const START_TIMEOUT_MS = 30000; // sanitizer builds on two busy cores start slowly
const KEEP_ENV = new Set(['SVDSLICE_BIN', 'SVDSLICE_TEST_DATA', 'SVDSLICE_SOURCE_DIR', 'SVDSLICE_ARTIFACTS']);

/* Starts `svdslice serve --port 0 --data TMP ...args` and resolves to
 * {base, stop(), log()} once it prints its address. stop() ends it and removes
 * the data dir. */
export async function startServer(args = []) {
  const bin = process.env.SVDSLICE_BIN;
  if (!bin) throw new Error('SVDSLICE_BIN is not set (run through ctest)');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'svdslice-web-'));
  // A stray SVDSLICE_* flag variable in the caller's environment would change the server.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SVDSLICE_') || KEEP_ENV.has(k)));
  const proc = spawn(bin, ['serve', '--bind', '127.0.0.1', '--port', '0', '--data', dataDir, ...args],
                     { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { out += d; });
  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), START_TIMEOUT_MS);
    const check = () => {
      const m = LISTEN_RE.exec(out);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    };
    proc.stdout.on('data', check);
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited with ${code}:\n${out}`)); });
  });
  proc.removeAllListeners('exit');
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  return {
    base,
    log: () => out,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 10000);
        await exited;
        clearTimeout(t);
      }
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
