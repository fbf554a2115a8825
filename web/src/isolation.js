// Cross-origin isolation on any static host: onnxruntime-web runs several WebAssembly threads
// only in a cross-origin isolated page, which needs the COOP/COEP headers that most static hosts
// do not send. A page that is not isolated registers ../sw.js (which adds them to every response)
// and reloads once under its control; where that does not make it isolated (no service workers,
// a browser that refuses), it goes on with one thread and never reloads again in this tab.
const RELOADED = "ifan-isolation-reload";

// sessionStorage, or a stand-in where the browser refuses it (storage disabled): then a page that
// cannot be isolated is never reloaded.
function flags() {
  try {
    return window.sessionStorage;
  } catch {
    return { getItem: () => "1", setItem() {}, removeItem() {} };
  }
}

// "isolated" (the page may use threads), "unsupported" (no service worker here: not a secure
// context, or a browser without them) or "failed" (registered and reloaded, still not isolated).
// Never returns while the page is being reloaded.
export async function isolate() {
  if (self.crossOriginIsolated) {
    flags().removeItem(RELOADED);  // a later visit that is not isolated may try again
    return "isolated";
  }
  if (!self.isSecureContext || !navigator.serviceWorker) return "unsupported";
  if (flags().getItem(RELOADED)) return "failed";  // reloaded once already: no loop
  try {
    await navigator.serviceWorker.register(new URL("../sw.js", import.meta.url));
    await navigator.serviceWorker.ready;
  } catch {
    return "failed";
  }
  flags().setItem(RELOADED, "1");
  location.reload();
  return new Promise(() => {});
}

// The number of WebAssembly threads: `asked` (the page's `?threads=N`) when it is a positive
// integer, else every one of the `cores` the browser reports, at most 8; one where the page is not
// isolated.
export function threadCount(isolated, asked, cores) {
  if (!isolated) return 1;
  const n = Number.parseInt(asked, 10);
  return Math.max(1, Math.min(Number.isFinite(n) && n > 0 ? n : cores || 1, 8));
}
