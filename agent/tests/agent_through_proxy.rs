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

/// tinyproxy on `address`, asking for Basic credentials and tunnelling only to `ports`.
struct Tinyproxy {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    fn start(address: &str, ports: &[u16]) -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        let listen = std::net::TcpListener::bind((address, 0)).unwrap();
        let own = listen.local_addr().unwrap().port();
        drop(listen);
        let config = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &config,
            format!(
                "Port {own}\nListen {address}\nTimeout 30\nMaxClients 20\nAllow 198.18.0.0/15\n\
                 BasicAuth {USER} {PASSWORD}\n{connect}LogLevel Info\n\
                 LogFile \"{log}\"\nPidFile \"{pid}\"\n",
                connect = ports.iter().map(|p| format!("ConnectPort {p}\n")).collect::<String>(),
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
    let proxy = Tinyproxy::start(&ns.outside, &[relay.addr.port()]);
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

/// Runs `work` on a thread that has entered `ns`'s network: the sockets it opens, and those of the
/// tasks and threads it starts, are inside the namespace.
fn in_namespace<F, Fut>(ns: &Namespace, work: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let netns = std::fs::File::open(format!("/var/run/netns/{}", ns.name)).expect("the namespace exists");
    std::thread::spawn(move || {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the namespace");
        drop(netns);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(work());
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_whose_only_way_out_is_the_proxy_sends_its_screen_through_it_and_the_record_says_so() {
    use sightline_agent::connection::{self, Route, RunConfig};
    use sightline_agent::proxy::{Proxy, ProxySettings};

    support::allow_defaults();
    let media_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let relay = support::start_relay_with(&[format!("--media-tcp-port={media_port}")]).await;
    let ns = Namespace::new();
    // The proxy tunnels to the relay's signaling port and its one ICE-TCP media port, nothing else.
    let proxy = Tinyproxy::start(&ns.outside, &[relay.addr.port(), media_port]);
    let token = relay.state.identity.create_agent_token("test", "office", None).await.unwrap();
    let url = connection::agent_socket_url(&format!("ws://{}", relay.addr).parse().unwrap()).unwrap();
    let dir = relay.dir.path().join("branch-9");
    let secrets = tempfile::tempdir().unwrap();
    let settings = ProxySettings {
        proxy: Some(proxy.url.clone()),
        credentials_file: Some(credentials(secrets.path(), PASSWORD).into()),
        no_proxy: None,
    };
    let route = Route { ca_cert: None, proxy: Some(Proxy::from_settings(&settings).unwrap().unwrap()) };
    let (device_tx, device_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = in_namespace(&ns, move || async move {
        let info =
            connection::enroll(&url, &token, "branch-9", &dir, &route, None).await.expect("enrols through the proxy");
        let _ = device_tx.send(info.device_id);
        let config = RunConfig {
            relay_urls: vec![url],
            device: std::sync::Arc::new(sightline_agent::device::Device::load(&dir).unwrap()),
            source: sightline_agent::capture::SourceKind::Synthetic,
            route,
            unattended: false,
            synthetic_size: (1280, 720),
            encoder: sightline_agent::encoder::EncoderConfig {
                width: 0,
                height: 0,
                fps: 30,
                bitrate_kbps: 2500,
                cpu_used: 12,
                threads: 2,
            },
        };
        let _ = connection::run(config, async {
            let _ = stop_rx.await;
        })
        .await;
    });
    let device = tokio::time::timeout(Duration::from_secs(20), device_rx).await.expect("enrolled in time").unwrap();

    let counters = tokio::time::timeout(Duration::from_secs(30), watch_frames(&relay, &device, 30))
        .await
        .expect("the viewer got frames within 30 s");
    assert!(counters.windows(2).all(|w| w[1] > w[0]), "frame counters advance: {counters:?}");

    // The session's record names the path: TCP, from where the proxy connects to the relay (its
    // loopback, here), not from the endpoint, whose own address the relay never sees.
    let paths = relay.events_of("session.media_path");
    assert_eq!(paths.len(), 1, "{paths:?}");
    let from: std::net::SocketAddr =
        paths[0].detail.rsplit(' ').next().unwrap().parse().expect("the detail ends with the address");
    assert_eq!(paths[0].detail, sightline_audit::events::media_path_detail("tcp", Some(from)));
    assert_eq!(paths[0].source, Some(from.ip()));
    assert!(from.ip().is_loopback(), "came from the proxy's side: {from}");

    let _ = stop_tx.send(());
    agent.join().unwrap();
}

/// Watches `device` as an operator and returns the counters of `wanted` decoded frames.
async fn watch_frames(relay: &support::TestRelay, device: &str, wanted: usize) -> Vec<u32> {
    let mut ws = support::operator_socket(relay, device).await;
    let support::Watching { peer, track, .. } = support::watch(&mut ws, device).await.expect("the relay answers");
    let mut assembler = sightline_peer::vp8::FrameAssembler::default();
    let mut decoder = sightline_agent::decoder::Vp8Decoder::new().unwrap();
    let mut counters = Vec::new();
    while counters.len() < wanted {
        let packet = track.read().await.expect("track ended early");
        let Some(frame) = assembler.push(&packet) else { continue };
        let Ok(pictures) = decoder.decode(&frame.data) else { continue };
        for luma in pictures {
            counters.push(sightline_core::framecode::read_luma_plane(&luma.y, luma.stride).unwrap().counter);
        }
    }
    peer.close().await;
    counters
}
