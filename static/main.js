// The viewer's entry point, a file rather than an inline script so the Content-Security-Policy
// can forbid inline scripts altogether.
import init from "/pkg/sightline_viewer.js";
init({ module_or_path: "/pkg/sightline_viewer_bg.wasm" });
