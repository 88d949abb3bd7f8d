//! Sign-in, enrolment from a link, step-up, and keeping an active session alive.

use leptos::prelude::*;
use serde::Deserialize;
use serde_json::json;

use crate::http::{self, ApiError};
use crate::webauthn;

/// Who is signed in, as `/api/me` says.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Me {
    pub user: UserSummary,
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UserSummary {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
}

impl Me {
    pub fn can(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

#[derive(Deserialize)]
struct Ceremony {
    ceremony_id: String,
    options: serde_json::Value,
}

pub async fn me() -> Result<Me, ApiError> {
    http::get("/api/me").await
}

/// A passkey assertion: start (`{stage}/start` with `body`), sign in the browser, finish.
async fn assert_passkey(stage: &str, body: serde_json::Value) -> Result<(), String> {
    let ceremony: Ceremony = http::post(&format!("{stage}/start"), &body).await.map_err(|e| e.to_string())?;
    let credential = webauthn::get(&ceremony.options).await?;
    let finish = json!({ "ceremony_id": ceremony.ceremony_id, "credential": credential });
    let _: serde_json::Value = http::post(&format!("{stage}/finish"), &finish).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Passkey login for `name`.
pub async fn login(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("Type your user name first.".into());
    }
    // The relay answers an unknown name like a wrong passkey, so that nobody can probe which
    // accounts exist: the page says what either may mean instead of a bare "not signed in".
    let start: Ceremony = match http::post("/api/login/start", &json!({ "name": name })).await {
        Ok(ceremony) => ceremony,
        Err(e) if e.status == 401 => {
            return Err(format!(
                "Sign-in failed: there is no passkey for {name:?} here. Check the user name; if it is right, ask an admin for an invitation."
            ));
        }
        Err(e) => return Err(e.to_string()),
    };
    let credential = webauthn::get(&start.options).await?;
    let finish = json!({ "ceremony_id": start.ceremony_id, "credential": credential });
    let _: serde_json::Value = http::post("/api/login/finish", &finish).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Enrolment from a link: registers a passkey and signs in.
pub async fn enrol(token: &str, name: Option<&str>) -> Result<(), String> {
    let ceremony: Ceremony =
        http::post("/api/enrol/start", &json!({ "token": token, "name": name })).await.map_err(|e| e.to_string())?;
    let credential = webauthn::create(&ceremony.options).await?;
    let _: serde_json::Value = http::post(
        "/api/enrol/finish",
        &json!({ "token": token, "ceremony_id": ceremony.ceremony_id, "credential": credential }),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// A fresh passkey confirmation for a critical action (valid five minutes).
pub async fn step_up() -> Result<(), String> {
    assert_passkey("/api/step-up", json!({})).await
}

/// Runs a critical action; when the relay asks for step-up, confirms with the passkey and retries once.
pub async fn with_step_up<T, F, Fut>(action: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    match action().await {
        Err(e) if e.code == "step_up_required" => {
            step_up().await?;
            action().await.map_err(|e| e.to_string())
        }
        other => other.map_err(|e| e.to_string()),
    }
}

/// The identity providers the relay offers, and whether user name and passkey alone still work.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SsoOffer {
    pub providers: Vec<SsoProvider>,
    pub local_accounts: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SsoProvider {
    pub name: String,
    pub label: String,
}

#[derive(Deserialize)]
struct SsoCeremony {
    kind: String,
    ceremony_id: String,
    options: serde_json::Value,
}

/// After the provider vouched for the person: their passkey, enrolled the first time (bound to
/// the directory identity) and asserted every later time. Only this opens a session.
pub async fn sso_continue() -> Result<(), String> {
    let ceremony: SsoCeremony = http::post("/api/sso/continue", &json!({})).await.map_err(|e| match e.status {
        401 => "This sign-in has already been used or has expired. Start it again.".to_owned(),
        _ => e.to_string(),
    })?;
    let (credential, finish) = match ceremony.kind.as_str() {
        "enrol" => (webauthn::create(&ceremony.options).await?, "/api/sso/enrol/finish"),
        _ => (webauthn::get(&ceremony.options).await?, "/api/login/finish"),
    };
    let body = json!({ "ceremony_id": ceremony.ceremony_id, "credential": credential });
    let _: serde_json::Value = http::post(finish, &body).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Signs out of the relay. For a directory account whose provider offers it, the answer names
/// the provider's end-session page, where the browser goes next (RP-initiated logout).
pub async fn logout() -> Option<String> {
    let answer: serde_json::Value = http::post("/api/logout", &json!({})).await.ok()?;
    answer["continue_at"].as_str().map(str::to_owned)
}

#[component]
pub fn LoginForm(on_done: Callback<()>, #[prop(optional)] notice: Option<String>) -> impl IntoView {
    let name = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let offer = RwSignal::new(None::<SsoOffer>);
    leptos::task::spawn_local(async move {
        if let Ok(o) = http::get::<SsoOffer>("/api/sso/providers").await {
            offer.set(Some(o));
        }
    });
    let local = move || offer.get().is_none_or(|o| o.local_accounts);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        error.set(None);
        let n = name.get_untracked();
        leptos::task::spawn_local(async move {
            match login(&n).await {
                Ok(()) => on_done.run(()),
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    view! {
        <section class="card auth">
            <h2>"Sign in"</h2>
            {notice.map(|n| view! { <p class="muted" data-testid="login-notice">{n}</p> })}
            {move || offer.get().filter(|o| !o.providers.is_empty()).map(|o| view! {
                <ul class="sso-providers">
                    {o.providers.into_iter().map(|p| {
                        let href = format!("/api/sso/{}/start", p.name);
                        view! { <li><a class="button" href=href data-testid="sso-start">{format!("Sign in with {}", p.label)}</a></li> }
                    }).collect_view()}
                </ul>
                <p class="muted">"Your organisation's sign-in comes first, then your passkey."</p>
            })}
            <Show when=local>
                <form on:submit=submit>
                    <label>"User name " <input name="username" autocomplete="username webauthn" bind:value=name/></label>
                    <button type="submit" disabled=move || busy.get()>"Sign in with passkey"</button>
                </form>
            </Show>
            {move || error.get().map(|e| view! { <p class="error" data-testid="login-error">{e}</p> })}
            <BreakGlassForm on_done=on_done/>
        </section>
    }
}

/// Break-glass (R43): a named person's sealed one-time code, for when the normal sign-in cannot
/// work (the store or the identity provider is down). The relay refuses it otherwise, and what
/// it opens is view and chat with a user's consent.
#[component]
fn BreakGlassForm(on_done: Callback<()>) -> impl IntoView {
    let holder = RwSignal::new(String::new());
    let code = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        error.set(None);
        let body = json!({ "holder": holder.get_untracked(), "code": code.get_untracked() });
        leptos::task::spawn_local(async move {
            match http::post::<_, serde_json::Value>("/api/break-glass/login", &body).await {
                Ok(_) => on_done.run(()),
                Err(e) => error.set(Some(format!("Break-glass sign-in refused: {e}"))),
            }
            code.set(String::new());
            busy.set(false);
        });
    };
    view! {
        <details class="break-glass">
            <summary>"Break-glass sign-in"</summary>
            <p class="muted">"Only when the normal sign-in does not work. A sealed one-time code lets its holder view and chat with a device whose user agrees; everything is recorded as break-glass."</p>
            <form on:submit=submit>
                <label>"Holder " <input name="break-glass-holder" autocomplete="off" bind:value=holder/></label>
                <label>"Code " <input name="break-glass-code" autocomplete="off" spellcheck="false" bind:value=code/></label>
                <button type="submit" disabled=move || busy.get()>"Sign in with break-glass code"</button>
            </form>
            {move || error.get().map(|e| view! { <p class="error" data-testid="break-glass-error">{e}</p> })}
        </details>
    }
}

#[component]
pub fn EnrolForm(token: String, on_done: Callback<()>) -> impl IntoView {
    let name = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        error.set(None);
        let (token, n) = (token.clone(), name.get_untracked());
        leptos::task::spawn_local(async move {
            let chosen = (!n.trim().is_empty()).then_some(n);
            match enrol(&token, chosen.as_deref()).await {
                Ok(()) => on_done.run(()),
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    view! {
        <section class="card auth">
            <h2>"Enrol your passkey"</h2>
            <p class="muted">"This one-time link creates your account. Your device will ask you to verify (PIN, fingerprint or face)."</p>
            <form on:submit=submit>
                <label>"User name " <input name="enrol-name" autocomplete="username" aria-describedby="enrol-name-hint" bind:value=name/></label>
                <p class="muted" id="enrol-name-hint">"An invitation already names you: leave this empty. Setting up the first administrator: choose your user name."</p>
                <button type="submit" disabled=move || busy.get()>"Create passkey"</button>
            </form>
            {move || error.get().map(|e| view! { <p class="error" data-testid="enrol-error">{e}</p> })}
        </section>
    }
}

/// Back from the identity provider: the person confirms with their passkey (or creates it, the
/// first time). Starts only on a click, since browsers ask for a gesture before a passkey.
#[component]
pub fn SsoPasskey(on_done: Callback<()>, on_failed: Callback<String>) -> impl IntoView {
    let busy = RwSignal::new(false);
    let go = move |_| {
        busy.set(true);
        leptos::task::spawn_local(async move {
            match sso_continue().await {
                Ok(()) => on_done.run(()),
                Err(e) => {
                    let _ = leptos::prelude::window().location().set_hash("");
                    on_failed.run(format!("Sign-in not completed: {e}"));
                }
            }
            busy.set(false);
        });
    };
    view! {
        <section class="card auth">
            <h2>"Confirm it is you"</h2>
            <p class="muted">"Your organisation has signed you in. Sightline also checks your passkey: the first time, you create it now; after that, your device asks you to verify (PIN, fingerprint or face)."</p>
            <button data-testid="sso-passkey" on:click=go disabled=move || busy.get()>"Continue with passkey"</button>
        </section>
    }
}
