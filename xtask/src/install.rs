//! Installs what the tasks need on a fresh Debian 12 machine, from package registries only:
//! apt packages, the wasm32 target, wasm-bindgen-cli pinned to Cargo.lock, and npm packages.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run::{cmd, status};

/// What the task at hand needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Build and run relay + agent + viewer.
    Demo,
    /// Everything, including browsers, X and Redis for tests.
    Test,
}

/// Packages for building (libvpx) and for running the agent (X11 source, consent window).
const APT_BUILD: &[&str] = &[
    "build-essential",
    "pkg-config",
    "libvpx-dev",
    "nodejs",
    "npm",
    "libgl1",
    "libegl1",
    "libgl1-mesa-dri",
    "libxkbcommon-x11-0",
    "libxcursor1",
    "libxi6",
    // age-keygen: the auditors' recording keys (the demo makes one; tests make one per worker).
    "age",
];
/// Packages the test suites use: browser, X server and tools, media tools, Redis, GUI runtime.
const APT_TEST: &[&str] = &[
    "chromium",
    "chromium-driver",
    "xvfb",
    "x11-utils",
    "x11-xserver-utils",
    "xdotool",
    // Which keys and buttons the X server has down (@R22: released when the relay is lost).
    "xinput",
    "imagemagick",
    "ffmpeg",
    "redis-server",
    // The load balancer in front of several relay nodes (@R43).
    "haproxy",
    // Scrapes the relay's metrics, and `promtool` checks their names (@R46).
    "prometheus",
    // The corporate proxy the agent goes through (@R1), and the network namespaces that leave
    // the agent no other way out.
    "tinyproxy-bin",
    "iproute2",
    // The TURN server operators without UDP relay through, and its test client (@R42).
    "coturn",
    "x11-apps",
    // A window to type into in the input tests (@R19, @R7).
    "xterm",
    "fonts-dejavu-core",
    // A window manager and its remote control: minimising and closing the session bar the way a
    // user does (@R8 active confirmation, @R5 closing the prompt).
    "openbox",
    "wmctrl",
    // `script` gives the agent a terminal in the headless-endpoint test.
    "bsdutils",
    // Load generator for `cargo xtask bench`.
    "wrk",
    // The SIEM the audit tests forward to (@R40): syslog over TCP, TLS (GnuTLS) and RELP.
    "rsyslog",
    "rsyslog-gnutls",
    "rsyslog-relp",
    // Test certificates for the TLS receiver.
    "openssl",
];

pub fn ensure_tools(root: &Path, need: Need) -> Result<()> {
    let mut packages: Vec<&str> = APT_BUILD.to_vec();
    if need == Need::Test {
        packages.extend(APT_TEST);
    }
    ensure_apt(&packages)?;
    ensure_wasm_target(root)?;
    ensure_wasm_bindgen(root)?;
    ensure_npm(root)?;
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn has_command(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn ensure_apt(packages: &[&str]) -> Result<()> {
    // Node may come from outside apt (a machine's own install); only ask apt for it when absent.
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .filter(|p| !matches!(*p, "nodejs" | "npm") || !has_command(if *p == "nodejs" { "node" } else { "npm" }))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing apt packages: {}", missing.join(" "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let run = |args: &[&str]| -> Result<()> {
        let mut all: Vec<&str> = sudo.to_vec();
        all.extend(args);
        let mut command = Command::new(all[0]);
        command.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        status(&mut command, "apt-get")
    };
    run(&["apt-get", "update", "-q"])?;
    let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    install.extend(&missing);
    run(&install)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn ensure_wasm_target(root: &Path) -> Result<()> {
    let out = cmd(root, "rustup").args(["target", "list", "--installed"]).output().context("rustup")?;
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "wasm32-unknown-unknown") {
        return Ok(());
    }
    status(cmd(root, "rustup").args(["target", "add", "wasm32-unknown-unknown"]), "rustup target add")
}

/// The wasm-bindgen version in Cargo.lock: the CLI must match it exactly.
pub fn locked_wasm_bindgen(root: &Path) -> Result<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\""
            && let Some(version) = lines.next().and_then(|l| l.trim().strip_prefix("version = \""))
        {
            return Ok(version.trim_end_matches('"').to_owned());
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

fn ensure_wasm_bindgen(root: &Path) -> Result<()> {
    let want = locked_wasm_bindgen(root)?;
    let have = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if have.as_deref().is_some_and(|v| v.split_whitespace().nth(1) == Some(want.as_str())) {
        return Ok(());
    }
    // Without --locked: the CLI's own lock file pins a webpki-roots the registry no longer has.
    status(
        cmd(root, env!("CARGO")).args(["install", "wasm-bindgen-cli", "--version", &want, "--force"]),
        "cargo install wasm-bindgen-cli",
    )
}

fn ensure_npm(root: &Path) -> Result<()> {
    let e2e = root.join("e2e");
    let stamp = e2e.join("node_modules/.package-lock.json");
    let fresh = match (std::fs::metadata(&stamp), std::fs::metadata(e2e.join("package-lock.json"))) {
        (Ok(installed), Ok(lock)) => installed.modified()? >= lock.modified()?,
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    // Playwright must never download a browser: the tests use Debian's Chromium.
    status(
        cmd(&e2e, "npm").args(["ci", "--no-audit", "--no-fund"]).env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
        "npm ci",
    )
}
