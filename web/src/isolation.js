// Cross-origin isolation on any static host: onnxruntime-web runs several WebAssembly threads
// only in a cross-origin isolated page, which needs the COOP/COEP headers that most static hosts
// do not send. A page that is not isolated registers ../sw.js (which adds them to every response)
// and reloads once under its control; where that does not make it isolated (no service workers,
// a browser that refuses), it goes on with one thread and never reloads again in this tab.
const RELOADED = "ifan-isolation-reload";

// "isolated" (the page may use threads), "unsupported" (no service worker here: not a secure
// context, or a browser without them) or "failed" (registered and reloaded, still not isolated).
// Never returns while the page is being reloaded.
export async function isolate() {
  if (self.crossOriginIsolated) {
    sessionStorage.removeItem(RELOADED);  // a later visit that is not isolated may try again
    return "isolated";
  }
  if (!self.isSecureContext || !navigator.serviceWorker) return "unsupported";
  if (sessionStorage.getItem(RELOADED)) return "failed";  // reloaded once already: no loop
  try {
    await navigator.serviceWorker.register(new URL("../sw.js", import.meta.url));
    await navigator.serviceWorker.ready;
  } catch {
    return "failed";
  }
  sessionStorage.setItem(RELOADED, "1");
  location.reload();
  return new Promise(() => {});
}

// The number of WebAssembly threads: `?threads=N` when given, else every core the browser
// reports (at most 8); one where the page is not isolated.
export function threadCount(isolated, params = new URLSearchParams(location.search)) {
  if (!isolated) return 1;
  const asked = Number.parseInt(params.get("threads"), 10);
  const cores = navigator.hardwareConcurrency || 1;
  return Math.max(1, Math.min(Number.isFinite(asked) && asked > 0 ? asked : cores, 8));
}
