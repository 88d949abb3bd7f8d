//! Where the user is asked: the window (`agent consent-ui` child process) when there is a display,
//! the terminal when the agent runs on one, and nobody otherwise - in which case every request is
//! refused, because consent that nobody gave is a deny.

use std::io::IsTerminal;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use sightline_proto::{Decision, Level};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::prompt::{UiCommand, UiReport, consent_lines, parse_tty_answer};

/// What a front end tells the session.
#[derive(Debug, Clone, PartialEq)]
pub enum FrontendEvent {
    Report(UiReport),
    /// The window closed or crashed, or the terminal hung up.
    Gone,
}

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("no display (DISPLAY is unset) and no terminal: nobody at this endpoint can be asked")]
    NobodyToAsk,
    #[error("cannot start the consent window: {0}")]
    Spawn(std::io::Error),
}

/// The front end of one session.
pub enum Frontend {
    Window { stdin: Option<tokio::process::ChildStdin>, child: Box<tokio::process::Child> },
    Terminal { state: Arc<Mutex<TtyState>> },
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Frontend::Window { .. } => "Frontend::Window",
            Frontend::Terminal { .. } => "Frontend::Terminal",
        })
    }
}

/// What the terminal is waiting for.
#[derive(Debug, Default)]
pub struct TtyState {
    asking: Option<Vec<Level>>,
    elevation: Option<Vec<Level>>,
    running: bool,
}

impl Frontend {
    /// Opens the window (with a display) or the terminal prompt; events arrive on `events`.
    pub fn open(events: mpsc::Sender<FrontendEvent>) -> Result<Frontend, FrontendError> {
        #[cfg(feature = "test-consent")]
        if let Some(answer) = scripted::answer() {
            return Ok(scripted::open(events, answer));
        }
        if std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty()) {
            return Self::window(events);
        }
        if std::io::stdin().is_terminal() {
            return Ok(Self::terminal(events));
        }
        Err(FrontendError::NobodyToAsk)
    }

    fn window(events: mpsc::Sender<FrontendEvent>) -> Result<Frontend, FrontendError> {
        let exe = std::env::current_exe().map_err(FrontendError::Spawn)?;
        let mut child = tokio::process::Command::new(exe)
            .arg("consent-ui")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(FrontendError::Spawn)?;
        let stdin = child.stdin.take();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<UiReport>(&line) {
                        Ok(report) => {
                            if events.send(FrontendEvent::Report(report)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "bad line from the consent window"),
                    }
                }
                let _ = events.send(FrontendEvent::Gone).await;
            });
        }
        Ok(Frontend::Window { stdin, child: Box::new(child) })
    }

    fn terminal(events: mpsc::Sender<FrontendEvent>) -> Frontend {
        let state = Arc::new(Mutex::new(TtyState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                let report = {
                    let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
                    tty_report(&mut st, &line)
                };
                match report {
                    Some(report) => {
                        if events.blocking_send(FrontendEvent::Report(report)).is_err() {
                            return;
                        }
                    }
                    None => println!(
                        "? answer allow, deny, or levels (view,control); in a session: pause, resume, end, chat TEXT"
                    ),
                }
            }
            let _ = events.blocking_send(FrontendEvent::Gone);
        });
        Frontend::Terminal { state }
    }

    /// Shows something to the user. A window that cannot be written to is reported as gone by
    /// its reader, so errors are only logged here.
    pub async fn send(&mut self, cmd: &UiCommand) {
        match self {
            Frontend::Window { stdin: Some(stdin), .. } => {
                let mut line = serde_json::to_vec(cmd).unwrap_or_default();
                line.push(b'\n');
                if let Err(e) = stdin.write_all(&line).await {
                    tracing::warn!(error = %e, "cannot write to the consent window");
                }
            }
            Frontend::Window { stdin: None, .. } => {}
            Frontend::Terminal { state } => {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                print_tty(&mut st, cmd);
            }
        }
    }

    /// Lets the front end show its last words for a moment, then closes it.
    pub fn finish(self) {
        if let Frontend::Window { stdin, mut child } = self {
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(6)).await;
                drop(stdin);
                let _ = child.kill().await;
            });
        }
    }
}

fn print_tty(st: &mut TtyState, cmd: &UiCommand) {
    match cmd {
        UiCommand::Ask { request } => {
            println!("\n=== Remote support request ===");
            for line in consent_lines(request) {
                println!("  {line}");
            }
            println!("Allow? [allow / deny / levels, e.g. view,control] (no answer = deny)");
            st.asking = Some(request.levels.clone());
        }
        UiCommand::Elevate { levels } => {
            println!("The operator asks for more access: {}. [allow / deny]", sightline_proto::levels_text(levels));
            st.elevation = Some(levels.clone());
        }
        UiCommand::Status { granted, observers, paused_by, recording } => {
            st.asking = None;
            st.running = true;
            println!(
                "[session] granted: {}; observers: {}; {}recording {}",
                sightline_proto::levels_text(granted),
                if observers.is_empty() { "none".to_owned() } else { observers.join(", ") },
                if paused_by.is_some() { "PAUSED; " } else { "" },
                if *recording { "on" } else { "off" },
            );
        }
        UiCommand::Chat { from, text } => println!("[chat] {from}: {text}"),
        UiCommand::Ended { reason } => {
            println!("[session ended] {reason}");
            *st = TtyState::default();
        }
    }
}

fn tty_report(st: &mut TtyState, line: &str) -> Option<UiReport> {
    if let Some(asked) = st.asking.clone() {
        let (decision, levels) = parse_tty_answer(line, &asked)?;
        st.asking = None;
        return Some(UiReport::Decision { decision, levels });
    }
    if let Some(levels) = st.elevation.clone() {
        let (decision, levels) = parse_tty_answer(line, &levels)?;
        st.elevation = None;
        let levels = if decision == Decision::Allow { levels } else { Vec::new() };
        return Some(UiReport::ElevationDecision { decision, levels });
    }
    if !st.running {
        return None;
    }
    let line = line.trim();
    match line {
        "pause" => Some(UiReport::Pause),
        "resume" => Some(UiReport::Resume),
        "end" => Some(UiReport::End),
        _ => line.strip_prefix("chat ").map(|text| UiReport::Chat { text: text.to_owned() }),
    }
}

/// A consent driver for in-process integration tests only: it exists solely with the
/// `test-consent` cargo feature, which no binary, demo or package enables (the tests that need it
/// declare `required-features`).
#[cfg(feature = "test-consent")]
pub mod scripted {
    use super::*;

    static ANSWER: std::sync::OnceLock<(Decision, Vec<Level>)> = std::sync::OnceLock::new();

    /// Every later consent request in this process is answered with `decision` and `levels`.
    pub fn answer_every_request(decision: Decision, levels: Vec<Level>) {
        let _ = ANSWER.set((decision, levels));
    }

    pub(super) fn answer() -> Option<(Decision, Vec<Level>)> {
        ANSWER.get().cloned()
    }

    pub(super) fn open(events: mpsc::Sender<FrontendEvent>, (decision, levels): (Decision, Vec<Level>)) -> Frontend {
        tokio::spawn(async move {
            let _ = events.send(FrontendEvent::Report(UiReport::Decision { decision, levels })).await;
        });
        Frontend::Terminal { state: Arc::new(Mutex::new(TtyState::default())) }
    }
}
