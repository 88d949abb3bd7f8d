//! Building the viewer: cargo for wasm32, wasm-bindgen for the JS glue, wasm-opt from npm's
//! binaryen (Debian's binaryen 108 emits wasm that Chromium rejects), into `static/pkg/`.

use std::path::Path;

use anyhow::Result;

use crate::run::{cargo, cmd, status};

const TARGET: &str = "wasm32-unknown-unknown";

/// Lints the viewer for the target it runs on (on the host it is an empty crate). In the release
/// profile, like its build: the proc macros and build scripts (Leptos has many) are then built
/// once for both.
pub fn lint(root: &Path) -> Result<()> {
    cargo(root, &["clippy", "-p", "sightline-viewer", "--target", TARGET, "--release", "--", "-D", "warnings"])
}

/// Where the built viewer notes the wasm it was made from (`built_from`).
const STAMP: &str = ".built-from";

/// A fingerprint of the compiler's output: when it has not changed, neither has the viewer, and
/// the slow steps (wasm-bindgen, and above all wasm-opt) are skipped.
fn built_from(wasm: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    wasm.hash(&mut hasher);
    format!("{:016x} {}", hasher.finish(), wasm.len())
}

pub fn build(root: &Path) -> Result<()> {
    cargo(root, &["build", "-p", "sightline-viewer", "--target", TARGET, "--release"])?;
    let wasm = crate::target_dir(root)?.join(TARGET).join("release").join("sightline_viewer.wasm");
    let out = root.join("static").join("pkg");
    std::fs::create_dir_all(&out)?;
    let stamp = built_from(&std::fs::read(&wasm)?);
    let current = ["sightline_viewer.js", "sightline_viewer_bg.wasm"].iter().all(|f| out.join(f).is_file())
        && std::fs::read_to_string(out.join(STAMP)).is_ok_and(|s| s == stamp);
    if current {
        return Ok(());
    }
    // Gone while the files are being replaced: a run that fails half-way leaves no stamp.
    let _ = std::fs::remove_file(out.join(STAMP));
    status(
        cmd(root, "wasm-bindgen")
            .arg("--target")
            .arg("web")
            .arg("--no-typescript")
            .arg("--out-dir")
            .arg(&out)
            .arg(&wasm),
        "wasm-bindgen",
    )?;
    let bg = out.join("sightline_viewer_bg.wasm");
    status(
        cmd(root, root.join("e2e/node_modules/.bin/wasm-opt"))
            .arg("-Oz")
            // The features rustc enables by default for wasm32 since 1.82; wasm-opt must accept them.
            .args([
                "--enable-bulk-memory",
                "--enable-nontrapping-float-to-int",
                "--enable-sign-ext",
                "--enable-mutable-globals",
                "--enable-reference-types",
                "--enable-multivalue",
            ])
            .arg("-o")
            .arg(&bg)
            .arg(&bg),
        "wasm-opt",
    )?;
    std::fs::write(out.join(STAMP), stamp)?;
    Ok(())
}
