//! Helpers for the relay's tests: real servers on free loopback ports.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A redis-server on a free loopback port, killed on drop. Needs `redis-server` on PATH
/// (`cargo xtask test` installs it).
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        RedisServer::start_with(&["--appendonly", "no"]).await
    }

    /// A server that syncs every write to its disk before answering (`appendfsync always`).
    pub async fn start_durable() -> RedisServer {
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).await
    }

    async fn start_with(durability: &[&str]) -> RedisServer {
        for _ in 0..10 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
                .args(durability)
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (cargo xtask test installs it)");
            let mut server = RedisServer { child, port, _dir: dir };
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return server;
                }
                if let Ok(Some(_)) = server.child.try_wait() {
                    break; // port taken in the meantime: try another
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = server.child.kill();
        }
        panic!("could not start redis-server on a free port");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
