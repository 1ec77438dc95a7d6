// prism.cjs - runs Stoplight Prism's CLI (same arguments) with two transport fixes, so its
// validating proxy can carry what svdslice serves. Neither touches validation:
//  1. Prism reads every request body as UTF-8 text and forwards that text, so the bytes of a PNG
//     upload arrive mangled (stoplightio/prism#1321, #2475). Bodies are carried as text whose
//     characters are the bytes (latin1) and turned back into the same bytes when forwarded.
//  2. Prism parses a JSON Content-Type response as JSON even for HEAD, which has no body, and
//     fails; a HEAD response body is read as empty.
//  3. Prism decodes an application/x-www-form-urlencoded body as a form (curl --data-binary's
//     default type, here around a PNG); on a malformed %-escape its error handler decodes again,
//     throws, and the process dies. A malformed escape is left as it is instead.
'use strict';
const http = require('http');
const path = require('path');

const MARK = 'x-prism-latin1-body';
const prismDir = path.join(__dirname, 'node_modules', '@stoplight', 'prism-cli');
// node-fetch as Prism's forwarder requires it (the copy under prism-http, else the hoisted one).
const fetchModule = require(require.resolve('node-fetch', {
  paths: [require.resolve('@stoplight/prism-http', { paths: [prismDir] })],
}));

// 1a. Incoming: each body byte becomes the UTF-8 of the character with that code, which Prism's
// UTF-8 reading turns into exactly that character. The length changes: while Prism reads, the
// request says chunked (so nothing checks the length); once read, its Content-Length is back, as
// Prism's validation looks at it (a body's media type is only checked when the length is not 0).
const serverEmit = http.Server.prototype.emit;
http.Server.prototype.emit = function (event, req, ...rest) {
  if (event === 'request' && req.headers['content-length'] && req.headers['content-length'] !== '0') {
    delete req.headers['content-length'];
    req.headers['transfer-encoding'] = 'chunked';
    req.headers[MARK] = '1';
    let length = 0;
    const reqEmit = req.emit;
    req.emit = function (ev, chunk, ...more) {
      if (ev === 'data' && Buffer.isBuffer(chunk)) {
        chunk = Buffer.from(chunk.toString('latin1'), 'utf8');
        length += chunk.length;
      } else if (ev === 'end') {
        delete this.headers['transfer-encoding'];
        this.headers['content-length'] = String(length);
      }
      return reqEmit.call(this, ev, chunk, ...more);
    };
  }
  return serverEmit.call(this, event, req, ...rest);
};

// 1b, 2. Outgoing: the text back to its bytes with their real length; HEAD bodies empty.
const fetch = fetchModule.default;
fetchModule.default = async (url, opts = {}) => {
  const headers = { ...(opts.headers || {}) };
  let body = opts.body;
  if (headers[MARK]) {
    delete headers[MARK];
    delete headers['transfer-encoding'];
    body = Buffer.from(typeof body === 'string' ? body : '', 'latin1');
    headers['content-length'] = String(body.length);
  }
  const res = await fetch(url, { ...opts, headers, body });
  if (String(opts.method).toUpperCase() === 'HEAD') {
    res.json = async () => null;
    res.text = async () => '';
  }
  return res;
};

// 3.
const decode = globalThis.decodeURIComponent;
globalThis.decodeURIComponent = (s) => {
  try {
    return decode(s);
  } catch (e) {
    if (e instanceof URIError) return String(s);
    throw e;
  }
};

require(path.join(prismDir, 'dist', 'index.js'));
