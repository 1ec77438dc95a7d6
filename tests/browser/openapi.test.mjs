// openapi.test.mjs - the served /openapi.yaml is a valid OpenAPI 3 document (swagger-parser's
// schema validation), the same as /openapi.json, in the plain mode and with the key, --auth-reads
// and CORS (security and preflight headers are generated per mode), and it documents every route
// of the running server with its methods.
import assert from 'node:assert/strict';
import { startServer } from './server.mjs';
import { need } from './need.mjs';

const { default: SwaggerParser } = await need('@apidevtools/swagger-parser');
const { default: yaml } = await need('js-yaml');

const MODES = [[], ['--api-key', 'k', '--auth-reads', '--cors-origin', 'https://viewer.example']];

async function check(args) {
  const srv = await startServer(args);
  try {
    const res = await fetch(`${srv.base}/openapi.yaml`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') || '', /yaml/);
    const doc = yaml.load(await res.text());
    const json = await (await fetch(`${srv.base}/openapi.json`)).json();
    assert.deepEqual(doc, json, '/openapi.yaml and /openapi.json differ');
    // validate() resolves every $ref and checks the document against the OpenAPI 3 schema.
    const api = await SwaggerParser.validate(structuredClone(doc));
    assert.match(api.openapi, /^3\./);
    const want = {
      '/slices': ['get', 'head', 'post', 'options'],
      '/slices/{id}': ['get', 'head', 'delete', 'options'],
      '/slices/{id}/original': ['get', 'head', 'options'],
      '/slices/{id}/factors': ['get', 'head', 'options'],
      '/reconstruct': ['get', 'head', 'options'],
      '/quality': ['get', 'head', 'options'],
      '/backends': ['get', 'head', 'options'],
      '/healthz': ['get', 'head', 'options'],
      '/metrics': ['get', 'head', 'options'],
      '/': ['get', 'head', 'options'],
      '/openapi.yaml': ['get', 'head', 'options'],
      '/openapi.json': ['get', 'head', 'options'],
    };
    for (const [path, methods] of Object.entries(want)) {
      assert.ok(api.paths[path], `openapi.yaml lacks ${path}`);
      for (const m of methods) assert.ok(api.paths[path][m], `openapi.yaml lacks ${m.toUpperCase()} ${path}`);
    }
    // Every documented path answers on the server (not 404 as a route), with a real id where needed.
    for (const path of Object.keys(api.paths)) {
      const url = srv.base + path.replace('{id}', 'nosuchslice');
      const r = await fetch(url, { headers: { Authorization: 'Bearer k' } });
      if (r.status === 404) {
        const body = await r.json();
        assert.match(body.error.message, /slice/, `${path} is documented but the server has no such route`);
      }
    }
    // The error responses documented for /reconstruct include the contract's codes.
    const rec = api.paths['/reconstruct'].get.responses;
    for (const code of ['200', '304', '400', '404', '405', '503', 'default']) {
      assert.ok(rec[code], `/reconstruct lacks response ${code}`);
    }
    const secured = Boolean(api.paths['/reconstruct'].get.security);
    assert.equal(secured, args.includes('--auth-reads'), 'security on reads follows --auth-reads');
    console.log(`openapi ${args.join(' ') || '(no flags)'}: valid OpenAPI ${api.openapi}, ` +
                `${Object.keys(api.paths).length} paths checked`);
  } finally {
    await srv.stop();
  }
}

let failed = 0;
for (const args of MODES) {
  try {
    await check(args);
  } catch (e) {
    failed++;
    console.error(e);
  }
}
console.log(`${MODES.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
