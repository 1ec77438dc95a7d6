// openapi.test.mjs - the served /openapi.yaml is a valid OpenAPI 3 document (swagger-parser's
// schema validation) and documents every route of the running server with its methods.
import assert from 'node:assert/strict';
import SwaggerParser from '@apidevtools/swagger-parser';
import yaml from 'js-yaml';
import { startServer } from './server.mjs';

const srv = await startServer();
let failed = 0;
try {
  const res = await fetch(`${srv.base}/openapi.yaml`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') || '', /yaml/);
  // validate() resolves every $ref and checks the document against the OpenAPI 3 schema.
  const doc = yaml.load(await res.text());
  const api = await SwaggerParser.validate(doc);
  assert.match(api.openapi, /^3\./);
  const want = {
    '/slices': ['get', 'post'],
    '/slices/{id}': ['get', 'delete'],
    '/slices/{id}/original': ['get'],
    '/slices/{id}/factors': ['get'],
    '/reconstruct': ['get'],
    '/quality': ['get'],
    '/backends': ['get'],
    '/healthz': ['get'],
    '/metrics': ['get'],
    '/': ['get'],
    '/openapi.yaml': ['get'],
  };
  for (const [path, methods] of Object.entries(want)) {
    assert.ok(api.paths[path], `openapi.yaml lacks ${path}`);
    for (const m of methods) assert.ok(api.paths[path][m], `openapi.yaml lacks ${m.toUpperCase()} ${path}`);
  }
  // Every documented path answers on the server (not 404 as a route), with a real id where needed.
  for (const path of Object.keys(api.paths)) {
    const url = srv.base + path.replace('{id}', 'nosuchslice');
    const r = await fetch(url);
    if (r.status === 404) {
      const body = await r.json();
      assert.match(body.error.message, /slice/, `${path} is documented but the server has no such route`);
    }
  }
  // The error responses documented for /reconstruct include the contract's codes.
  const rec = api.paths['/reconstruct'].get.responses;
  for (const code of ['200', '304', '400', '404', '503']) assert.ok(rec[code], `/reconstruct lacks response ${code}`);
  console.log(`openapi: valid OpenAPI ${api.openapi}, ${Object.keys(api.paths).length} paths checked`);
} catch (e) {
  failed = 1;
  console.error(e);
} finally {
  await srv.stop();
}
console.log(failed ? '0 passed, 1 failed' : '1 passed, 0 failed');
process.exit(failed);
