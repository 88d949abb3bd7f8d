//! The user's "Request help" button (`agent help --window`, R2): a small window for endpoints with
//! a display, typically started from a desktop shortcut. One click asks the relay for a help
//! request, signed with the device key exactly as `agent help` does, and the window then shows the
//! one-time code in large digits for the user to read to the service desk, with when it expires.
//! Nothing here grants anything: the session that follows still asks the user in the consent
//! window.
//!
//! Like the consent window, it logs what it shows and where its button and content are to stderr
//! (`help-ui layout ...`, `help-ui code: ...`, `help-ui error: ...`): the end-to-end tests click
//! the real button with xdotool, and support staff can tell what the user was shown.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eframe::egui;

/// The window title; tests and window managers find the window by it.
pub const TITLE: &str = "Sightline: ask for help";
/// How long the window waits for the relay before it says so and offers the button again.
const ASK_TIMEOUT: Duration = Duration::from_secs(20);
/// The widest the window becomes (its text wraps there); it is as large as its content.
const WIDTH: f32 = 420.0;

/// One help request to the relay: the code and when it expires (Unix ms).
pub type Ask = Box<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<(String, u64)>> + Send>> + Send>;

#[derive(Debug, Clone, PartialEq)]
enum State {
    Ready,
    Asking,
    Code { code: String, expires_ms: u64 },
    Failed(String),
}

/// Runs the window until the user closes it; requests run on `runtime`.
pub fn run(runtime: tokio::runtime::Handle, ask: Ask) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(TITLE)
            .with_inner_size([WIDTH, 260.0])
            .with_position([60.0, 60.0])
            .with_resizable(false),
        ..Default::default()
    };
    let window = HelpWindow {
        runtime,
        ask,
        state: Arc::new(Mutex::new(State::Ready)),
        logged: String::new(),
        fit: Default::default(),
    };
    eframe::run_native("sightline-help", options, Box::new(move |_| Ok(Box::new(window))))
        .map_err(|e| anyhow::anyhow!("cannot open the help window: {e}"))
}

struct HelpWindow {
    runtime: tokio::runtime::Handle,
    ask: Ask,
    state: Arc<Mutex<State>>,
    /// The last layout and state logged, so each is logged once per change.
    logged: String,
    fit: crate::window_fit::FitToContent,
}

impl HelpWindow {
    fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn request(&self, ctx: &egui::Context) {
        set(&self.state, State::Asking);
        let (state, ctx, asked) = (self.state.clone(), ctx.clone(), (self.ask)());
        self.runtime.spawn(async move {
            let next = match tokio::time::timeout(ASK_TIMEOUT, asked).await {
                Ok(Ok((code, expires_ms))) => State::Code { code: sightline_core::help::spoken(&code), expires_ms },
                Ok(Err(e)) => State::Failed(format!("{e:#}")),
                Err(_) => State::Failed(format!("the relay did not answer within {} s", ASK_TIMEOUT.as_secs())),
            };
            set(&state, next);
            ctx.request_repaint();
        });
    }
}

impl eframe::App for HelpWindow {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        let mut state = self.state();
        // An expired code is of no use to anyone: offer a new request.
        if let State::Code { expires_ms, .. } = state
            && crate::now_ms() >= expires_ms
        {
            state = State::Failed("the code has expired; request help again for a new one".into());
        }
        let mut clicked = false;
        let mut button = None;
        let ((), content) = self.fit.show(ui, WIDTH, |ui| {
            ui.heading("Ask IT for help");
            ui.label(
                "The service desk gets a one-time code that finds this computer. Nobody connects \
                 without your consent: you still decide what they may do.",
            );
            ui.add_space(8.0);
            let enabled = !matches!(state, State::Asking | State::Code { .. });
            let response = ui.add_enabled(enabled, egui::Button::new("Request help").min_size(egui::vec2(160.0, 36.0)));
            clicked = response.clicked();
            button = Some(response.rect);
            ui.add_space(8.0);
            match &state {
                State::Ready => {}
                State::Asking => {
                    ui.label("Asking the service desk...");
                }
                State::Code { code, expires_ms } => {
                    ui.label("Read this code to the service desk:");
                    ui.label(egui::RichText::new(code).size(36.0).monospace().strong());
                    ui.label(format!("Valid once, until {}.", expires_at(*expires_ms)));
                }
                State::Failed(why) => {
                    ui.colored_label(egui::Color32::from_rgb(0xb0, 0x1c, 0x1c), format!("No code: {why}"));
                }
            }
        });
        if clicked {
            self.request(&ctx);
        }
        self.log(&state, button, content);
        // The expiry needs frames without input.
        ctx.request_repaint_after(Duration::from_millis(500));
    }
}

impl HelpWindow {
    fn log(&mut self, state: &State, button: Option<egui::Rect>, content: egui::Rect) {
        use crate::window_fit::logged;
        let button = button.map(|r| format!("request={} ", logged(r))).unwrap_or_default();
        let layout = format!("{button}content={}", logged(content));
        let line = format!("{layout} {state:?}");
        if line == self.logged {
            return;
        }
        self.logged = line;
        eprintln!("help-ui layout {layout}");
        match state {
            State::Code { code, expires_ms } => eprintln!("help-ui code: {code} (expires {expires_ms})"),
            State::Failed(why) => eprintln!("help-ui error: {why}"),
            State::Ready | State::Asking => {}
        }
    }
}

fn set(state: &Mutex<State>, next: State) {
    *state.lock().unwrap_or_else(|e| e.into_inner()) = next;
}

/// When a code expires, as the user reads it.
fn expires_at(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| "soon".to_owned(), |t| format!("{} UTC", t.strftime("%H:%M:%S")))
}
