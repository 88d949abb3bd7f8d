//! Running commands, and the demo's process supervision.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A command with its working directory set.
///
/// `cargo run` gives xtask the package variables of xtask itself (`CARGO_PKG_NAME`, ...). A
/// nested cargo would pass them on to build scripts, whose fingerprints then change and rebuild
/// half the dependency tree; so they are removed here.
pub fn cmd(dir: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command.current_dir(dir);
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            command.env_remove(key);
        }
    }
    command
}

/// Runs a command to completion; a non-zero exit is an error naming the step.
pub fn status(command: &mut Command, what: &str) -> Result<()> {
    eprintln!("xtask: {what}: {command:?}");
    let status = command.status().with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs `cargo ARGS` in the project root.
pub fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let mut command = cmd(root, env!("CARGO"));
    command.args(args);
    status(&mut command, &format!("cargo {}", args.first().copied().unwrap_or_default()))
}

/// Kills child processes when dropped, so an error or Ctrl-C in xtask leaves nothing behind.
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (name, child) in &mut self.0 {
            // SIGTERM first so the relay and agent shut down cleanly, then make sure.
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
            eprintln!("xtask: stopped {name}");
        }
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn wait_healthy(addr: &str, relay: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = relay.try_wait()? {
            bail!("relay exited during start-up ({status})");
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("relay did not listen on {addr} within 20 s")
}

/// Runs relay + agent (synthetic screen) until Ctrl-C. State lives in `demo-data/` so the
/// admin's passkey and the enrolled agent survive restarts of the demo.
pub fn demo(root: &Path, bin: &Path) -> Result<()> {
    let port = match std::env::var("SIGHTLINE_DEMO_PORT").ok().and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None if std::net::TcpListener::bind("127.0.0.1:8080").is_ok() => 8080,
        None => free_port()?,
    };
    let addr = format!("127.0.0.1:{port}");
    let public_url = format!("http://localhost:{port}/");
    let data = root.join("demo-data");
    let (relay_data, agent_data) = (data.join("relay"), data.join("agent"));
    // The demo's auditor: recordings are encrypted to this key, which the relay never holds.
    let auditor = data.join("auditor.key");
    let recipient = demo_auditor(root, &auditor)?;
    let relay_args = |extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--data-dir".into(),
            relay_data.clone().into(),
            "--public-url".into(),
            public_url.clone().into(),
            "--policy".into(),
            root.join("relay/policy-sample.toml").into(),
            "--recording-recipient".into(),
            recipient.clone().into(),
        ];
        args.extend(extra.iter().map(Into::into));
        args
    };

    // The agent enrols once (again if it enrolled before agents pinned the relay's key); the
    // token is made before the relay holds the embedded store.
    let enrol_token = if agent_data.join("device.key").exists() && agent_data.join("relay-keys").exists() {
        None
    } else {
        let out = cmd(root, bin.join("relay"))
            .args(relay_args(&["agent-token", "create", "--segment", "demo"]))
            .output()
            .context("creating an agent token")?;
        if !out.status.success() {
            bail!("relay agent-token create failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };

    let mut children = Children(Vec::new());
    let mut relay = cmd(root, bin.join("relay"))
        .args(relay_args(&["--listen", &addr, "--static-dir"]))
        .arg(root.join("static"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting relay")?;
    // The relay's output goes on to this terminal; the bootstrap link, if it prints one (only
    // while nobody has enrolled), is noted so the instructions below say the truth.
    let (link_tx, link_rx) = std::sync::mpsc::channel();
    if let Some(out) = relay.stdout.take() {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                println!("{line}");
                if let Some(link) = line.split_whitespace().find(|w| w.contains("/#/enrol/")) {
                    let _ = link_tx.send(link.to_owned());
                }
            }
        });
    }
    children.0.push(("relay".into(), relay));
    wait_healthy(&addr, &mut children.0[0].1)?;
    // The link is printed before the relay serves; give its line a moment to be read.
    let bootstrap_link = link_rx.recv_timeout(Duration::from_millis(500)).ok();
    let relay_url = format!("ws://{addr}");
    if let Some(token) = enrol_token {
        status(
            cmd(root, bin.join("agent"))
                .args(["enroll", "--relay-url", &relay_url, "--name", "demo-endpoint", "--data-dir"])
                .arg(&agent_data)
                .arg(format!("--token={token}")),
            "agent enroll",
        )?;
    }
    // The agent keeps this terminal's stdin: without a display (DISPLAY unset) it asks for
    // consent here, on the terminal; with one, its window appears on that display.
    let agent = cmd(root, bin.join("agent"))
        .args(["run", "--relay-url", &relay_url, "--source", "synthetic", "--data-dir"])
        .arg(&agent_data)
        .spawn()
        .context("starting agent")?;
    children.0.push(("agent".into(), agent));

    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc_channel(tx)?;
    println!();
    println!("  Sightline demo is running.");
    println!("  Viewer:  {public_url}");
    match &bootstrap_link {
        Some(link) => {
            println!("  First run: open the one-time admin enrolment link, create your passkey, invite an");
            println!("  operator from the Admin tab, and view `demo-endpoint` as that operator:");
            println!("  {link}");
        }
        None => {
            println!("  Sign in with the passkey you enrolled on the first run (no enrolment link this time:");
            println!("  someone has enrolled). To start over, stop the demo and delete {}.", data.display());
        }
    }
    println!("  The endpoint's user answers the request in the consent window (with a display) or here,");
    println!("  on this terminal: type allow, deny, or levels such as view,control.");
    println!("  Recordings open only with the auditor's key, {} (an auditor pastes its", auditor.display());
    println!("  AGE-SECRET-KEY line into the Recordings tab; the relay holds only its public key).");
    println!("  State is kept in {}; delete it to start over. Ctrl-C stops relay and agent.", data.display());
    println!();
    loop {
        if rx.recv_timeout(Duration::from_millis(500)).is_ok() {
            break;
        }
        for (name, child) in &mut children.0 {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited unexpectedly ({status})");
            }
        }
    }
    Ok(())
}

/// The demo auditor's age identity in `path` (made with `age-keygen` on first use); returns its
/// public key, the recipient the relay encrypts recordings to.
fn demo_auditor(root: &Path, path: &Path) -> Result<String> {
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        status(cmd(root, "age-keygen").arg("-o").arg(path), "age-keygen")?;
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .map(|k| k.trim().to_owned())
        .with_context(|| format!("{} names no public key", path.display()))
}

/// Turns Ctrl-C into a message so that `Children` stops relay and agent in order. (The terminal
/// also sends SIGINT to the children, which shut down by themselves; the drop handles the rest.)
fn ctrlc_channel(tx: std::sync::mpsc::Sender<()>) -> Result<()> {
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing Ctrl-C handler")
}
