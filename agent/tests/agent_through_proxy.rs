//! R1: an endpoint whose only way out is an authenticating HTTP proxy. The agent runs in a network
//! namespace the test creates, joined to this one by a veth pair on 198.18.0.0/15 where nothing
//! but tinyproxy listens (with Basic authentication, tunnels allowed to the relay's port only);
//! the relay listens on this namespace's loopback, which the agent's own loopback is not. So the
//! agent reaches the relay only through the proxy, and the control shows it: without the proxy,
//! the same command cannot connect.
//!
//! The refusals are the proxy's own answers, read by the agent and named: 407 without
//! credentials and with a wrong password, 403 for a port the proxy does not tunnel to, and a proxy
//! that is not there.

mod support;

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_agent");
const USER: &str = "teller";
const PASSWORD: &str = "correct-horse";

/// A network namespace with one veth link to this one: `outside` here, `inside` there (a /30 of
/// 198.18.0.0/15 for each test). Removed on drop.
struct Namespace {
    name: String,
    outside: String,
}

impl Namespace {
    fn new() -> Namespace {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() * 7 + NEXT.fetch_add(1, Ordering::Relaxed)) % 16_000;
        let (third, fourth) = (n / 64, (n % 64) * 4);
        let name = format!("sl-px-{n}");
        let (host, peer) = (format!("sl-px{n}a"), format!("sl-px{n}b"));
        let outside = format!("198.18.{third}.{}", fourth + 1);
        let inside = format!("198.18.{third}.{}", fourth + 2);
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        for args in [
            vec!["netns", "add", &name],
            vec!["link", "add", &host, "type", "veth", "peer", "name", &peer, "netns", &name],
            vec!["addr", "add", &format!("{outside}/30"), "dev", &host],
            vec!["link", "set", &host, "up"],
            vec!["-n", &name, "addr", "add", &format!("{inside}/30"), "dev", &peer],
            vec!["-n", &name, "link", "set", &peer, "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let status = Command::new("ip").args(&args).status().expect("ip (iproute2) runs");
            assert!(status.success(), "ip {args:?} failed (the test needs root for network namespaces)");
        }
        Namespace { name, outside }
    }

    /// `agent ARGS` inside the namespace, with `env` added.
    fn agent<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, AGENT]).args(args);
        // Nothing from this machine's environment decides the route.
        for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"] {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// tinyproxy on `address`, asking for Basic credentials and tunnelling only to `port`.
struct Tinyproxy {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    fn start(address: &str, port: u16) -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        let listen = std::net::TcpListener::bind((address, 0)).unwrap();
        let own = listen.local_addr().unwrap().port();
        drop(listen);
        let config = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &config,
            format!(
                "Port {own}\nListen {address}\nTimeout 30\nMaxClients 20\nAllow 198.18.0.0/15\n\
                 BasicAuth {USER} {PASSWORD}\nConnectPort {port}\nLogLevel Info\n\
                 LogFile \"{log}\"\nPidFile \"{pid}\"\n",
                log = dir.path().join("tinyproxy.log").display(),
                pid = dir.path().join("tinyproxy.pid").display(),
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .args(["-d", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy runs (Debian: tinyproxy-bin; `cargo xtask test` installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((address, own)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tinyproxy { child, url: format!("http://{address}:{own}"), _dir: dir }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn credentials(dir: &std::path::Path, password: &str) -> String {
    let path = dir.join(format!("proxy-{}", password.len()));
    std::fs::write(&path, format!("{USER}:{password}\n")).unwrap();
    path.display().to_string()
}

/// What the command printed, for assertions and failure messages.
fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_only_way_out_is_the_proxy_enrols_and_comes_online_through_it_and_names_each_refusal() {
    let relay = support::start_relay().await;
    let ns = Namespace::new();
    let proxy = Tinyproxy::start(&ns.outside, relay.addr.port());
    let url = format!("ws://127.0.0.1:{}", relay.addr.port());
    let token = relay.state.identity.create_agent_token("test", "office", None).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("agent");
    let dir = dir.to_str().unwrap();
    let enrol = |extra: &[&str]| {
        let args = ["enroll", "--relay-url", &url, "--token", &token, "--name", "branch-7", "--data-dir", dir];
        args.iter().chain(extra).map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let run = |command: &mut Command| command.output().expect("the agent runs");

    // The control: from inside, the relay cannot be reached without the proxy.
    let direct = run(&mut ns.agent(&enrol(&[]), &[]));
    assert!(!direct.status.success());
    assert!(said(&direct).contains(&format!("cannot connect to {url}")), "{}", said(&direct));

    // The proxy's refusals, each named.
    let anonymous = run(&mut ns.agent(&enrol(&["--proxy", &proxy.url]), &[]));
    assert!(!anonymous.status.success());
    assert!(
        said(&anonymous).contains("asks for authentication (Basic; ")
            && said(&anonymous).contains("the agent has no proxy credentials"),
        "{}",
        said(&anonymous)
    );
    let wrong = credentials(data.path(), "battery staple");
    let refused = run(&mut ns.agent(&enrol(&["--proxy", &proxy.url, "--proxy-credentials", &wrong]), &[]));
    assert!(!refused.status.success());
    assert!(
        said(&refused).contains(&format!("the proxy {} refused the credentials of \"{USER}\" (40", &proxy.url[7..])),
        "{}",
        said(&refused)
    );
    let right = credentials(data.path(), PASSWORD);
    let other_port = format!("ws://127.0.0.1:{}", relay.addr.port() - 1);
    let forbidden = run(&mut ns.agent(
        &[
            "enroll",
            "--relay-url",
            &other_port,
            "--token",
            &token,
            "--data-dir",
            dir,
            "--proxy",
            &proxy.url,
            "--proxy-credentials",
            &right,
        ],
        &[],
    ));
    assert!(!forbidden.status.success());
    assert!(
        said(&forbidden).contains(&format!("does not allow a tunnel to 127.0.0.1:{} (403", relay.addr.port() - 1)),
        "{}",
        said(&forbidden)
    );
    let absent = format!("http://{}:1", ns.outside);
    let unreachable = run(&mut ns.agent(&enrol(&["--proxy", &absent, "--proxy-credentials", &right]), &[]));
    assert!(!unreachable.status.success());
    assert!(said(&unreachable).contains(&format!("cannot reach the proxy {}:1", ns.outside)), "{}", said(&unreachable));
    assert!(relay.state.identity.devices().await.unwrap().is_empty(), "no refused attempt reached the relay");

    // With the right password the agent enrols through the tunnel...
    let enrolled = run(&mut ns.agent(&enrol(&["--proxy", &proxy.url, "--proxy-credentials", &right]), &[]));
    assert!(enrolled.status.success(), "{}", said(&enrolled));
    let devices = relay.state.identity.devices().await.unwrap();
    assert_eq!(devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["branch-7"]);

    // ...and runs through it, configured the usual way: HTTPS_PROXY and credentials from the
    // environment; the operators' list shows it online.
    let mut agent = ns
        .agent(
            &["run", "--relay-url", &url, "--data-dir", dir, "--source", "synthetic"],
            &[("HTTPS_PROXY", &proxy.url), ("SIGHTLINE_PROXY_USER", USER), ("SIGHTLINE_PROXY_PASSWORD", PASSWORD)],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let online = tokio::time::timeout(Duration::from_secs(20), support::operator_socket(&relay, &devices[0].id)).await;
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(online.is_ok(), "the agent came online through the proxy");
}
