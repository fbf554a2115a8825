// The page's service worker: it makes the page cross-origin isolated on a static host that sends
// no headers (python -m http.server, GitHub Pages, a static Space), so onnxruntime-web may run
// several WebAssembly threads (SharedArrayBuffer needs isolation). It answers every request of
// the page's own origin with the server's response plus
//   Cross-Origin-Opener-Policy: same-origin, Cross-Origin-Embedder-Policy: require-corp,
//   Cross-Origin-Resource-Policy: same-origin
// and leaves any other request alone (the page makes none). src/isolation.js registers it.
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (new URL(request.url).origin !== self.location.origin) return;
  if (request.cache === "only-if-cached" && request.mode !== "same-origin") return;
  event.respondWith(fetch(request).then((response) => {
    if (response.status === 0) return response;  // opaque: nothing to add headers to
    const headers = new Headers(response.headers);
    headers.set("Cross-Origin-Opener-Policy", "same-origin");
    headers.set("Cross-Origin-Embedder-Policy", "require-corp");
    headers.set("Cross-Origin-Resource-Policy", "same-origin");
    return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
  }));
});
