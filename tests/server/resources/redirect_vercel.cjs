// Preloaded (node --require) into the real Vercel clients so that they talk to the test's
// `cachehook serve` instead of Vercel, with their own code unchanged:
//   - @vercel/sdk calls the global fetch with https://api.vercel.com/v8/...
//   - @vercel/remote (and so @vercel/remote-nx) calls https.request for https://vercel.com/api/v8/...
// Both are sent to CACHEHOOK_TEST_SERVER (http://127.0.0.1:<port>) with the same path below /v8.
// Any other https request fails: nothing leaves the machine.
"use strict";
const http = require("http");
const https = require("https");

const target = new URL(process.env.CACHEHOOK_TEST_SERVER);
const hosts = { "api.vercel.com": "", "vercel.com": "/api" };

function rewrite(url) {
  const prefix = hosts[url.hostname];
  if (prefix === undefined || !url.pathname.startsWith(prefix + "/v8/")) {
    throw new Error(`redirect_vercel: refusing to send ${url.href} off this machine`);
  }
  return new URL(url.pathname.slice(prefix.length) + url.search, target);
}

const originalFetch = globalThis.fetch;
globalThis.fetch = (input, init) => {
  if (input instanceof Request) {
    return originalFetch(new Request(rewrite(new URL(input.url)), input), init);
  }
  return originalFetch(rewrite(new URL(String(input))), init);
};

https.request = (options, callback) => {
  const url = new URL(`https://${options.hostname || options.host}${options.path || "/"}`);
  const moved = rewrite(url);
  const local = {
    ...options,
    protocol: "http:",
    host: moved.hostname,
    hostname: moved.hostname,
    port: moved.port,
    path: moved.pathname + moved.search,
    agent: undefined,
  };
  return http.request(local, callback);
};
