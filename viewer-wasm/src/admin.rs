//! The admin area: users and invitations (and those not yet used), role changes, passkey
//! resets (`passkey_resets`) and the directory's role tables (`role_mappings`) awaiting a second
//! admin, locks, devices (online, in a session, their
//! maintenance window) and agent enrolment tokens. Critical actions ask for a passkey step-up.

use leptos::prelude::*;
use serde::Deserialize;
use serde_json::json;

use crate::auth::with_step_up;
use crate::http;
use crate::widgets::{CopyButton, local_time};

const ROLES: [&str; 5] = ["operator", "senior_operator", "observer", "admin", "auditor"];

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct UserRow {
    id: String,
    name: String,
    roles: Vec<String>,
    #[serde(default)]
    passkeys: usize,
    /// The identity provider of a directory account.
    #[serde(default)]
    directory: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct RoleRequestRow {
    id: String,
    target_name: String,
    change: serde_json::Value,
    requested_by_name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct DeviceRow {
    id: String,
    name: String,
    segment: String,
    revoked: bool,
    /// Connected to a live relay node of the service.
    #[serde(default)]
    online: bool,
    /// The node it is connected to (R43).
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    in_session: bool,
    #[serde(default)]
    window_until_ms: Option<u64>,
}

impl DeviceRow {
    /// What the device is doing, in words.
    fn state(&self) -> String {
        if self.revoked {
            return "revoked".into();
        }
        let mut words = match (self.online, self.in_session) {
            (true, true) => "online, in a session".to_owned(),
            (true, false) => "online".to_owned(),
            (false, _) => "offline".to_owned(),
        };
        if let Some(until) = self.window_until_ms {
            words.push_str(&format!("; maintenance window open until {}", local_time(until)));
        }
        words
    }
}

/// An invitation or token not yet used.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct PendingRow {
    id: String,
    kind: String,
    subject: String,
    created_by: String,
    expires_ms: u64,
}

/// A one-time link or token just made, with its expiry, shown once.
#[derive(Debug, Clone, PartialEq)]
struct Issued {
    text: String,
    expires_ms: Option<u64>,
}

impl Issued {
    fn from(v: &serde_json::Value, field: &str) -> Option<Issued> {
        Some(Issued { text: v[field].as_str()?.to_owned(), expires_ms: v["expires_ms"].as_u64() })
    }
}

/// An issued link or token: the text, a copy button and until when it works.
fn issued_view(issued: Issued, label: &'static str, testid: &'static str) -> impl IntoView {
    view! {
        <p>
            {label}": " <code data-testid=testid>{issued.text.clone()}</code>" "
            <CopyButton text=issued.text.clone() what=label.to_lowercase()/>
            {issued.expires_ms.map(|ms| view! { <br/><span class="muted" data-testid=format!("{testid}-expiry")>{format!("Works once, until {}.", local_time(ms))}</span> })}
        </p>
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct LockRow {
    key: String,
    failures: u32,
}

fn describe_change(change: &serde_json::Value) -> String {
    if let Some(r) = change.get("grant").and_then(|r| r.as_str()) {
        format!("grant {r}")
    } else if let Some(r) = change.get("revoke").and_then(|r| r.as_str()) {
        format!("revoke {r}")
    } else {
        change.to_string()
    }
}

#[component]
pub fn AdminView() -> impl IntoView {
    let users = RwSignal::new(Vec::<UserRow>::new());
    let requests = RwSignal::new(Vec::<RoleRequestRow>::new());
    let devices = RwSignal::new(Vec::<DeviceRow>::new());
    let locks = RwSignal::new(Vec::<LockRow>::new());
    let message = RwSignal::new(None::<(bool, String)>);
    let invite_link = RwSignal::new(None::<Issued>);
    let agent_token = RwSignal::new(None::<Issued>);
    let pending = RwSignal::new(Vec::<PendingRow>::new());

    let reload = move || {
        leptos::task::spawn_local(async move {
            if let Ok(u) = http::get::<Vec<UserRow>>("/api/admin/users").await {
                users.set(u);
            }
            if let Ok(r) = http::get::<Vec<RoleRequestRow>>("/api/admin/role-requests").await {
                requests.set(r);
            }
            if let Ok(d) = http::get::<Vec<DeviceRow>>("/api/admin/devices").await {
                devices.set(d);
            }
            if let Ok(l) = http::get::<Vec<LockRow>>("/api/admin/locks").await {
                locks.set(l);
            }
            if let Ok(p) = http::get::<Vec<PendingRow>>("/api/admin/pending").await {
                pending.set(p);
            }
        });
    };
    reload();
    // Devices come and go: their state is read again every few seconds while the page is open.
    let refresh = set_interval_with_handle(
        move || {
            leptos::task::spawn_local(async move {
                if let Ok(d) = http::get::<Vec<DeviceRow>>("/api/admin/devices").await {
                    devices.set(d);
                }
            });
        },
        std::time::Duration::from_secs(5),
    )
    .ok();
    on_cleanup(move || {
        if let Some(handle) = refresh {
            handle.clear();
        }
    });
    // Directory accounts with a passkey: the ones whose passkey can be reset.
    let resettable = Signal::derive(move || {
        users.get().into_iter().filter(|u| u.directory.is_some() && u.passkeys > 0).map(|u| (u.id, u.name)).collect()
    });
    let report = move |result: Result<(), String>, ok: &str| {
        match result {
            Ok(()) => message.set(Some((true, ok.to_owned()))),
            Err(e) => message.set(Some((false, e))),
        }
        reload();
    };

    let invite_name = RwSignal::new(String::new());
    let invite_role = RwSignal::new("operator".to_owned());
    let invite = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = json!({ "name": invite_name.get_untracked(), "role": invite_role.get_untracked() });
        leptos::task::spawn_local(async move {
            match http::post::<_, serde_json::Value>("/api/admin/invitations", &body).await {
                Ok(v) => {
                    invite_link.set(Issued::from(&v, "link"));
                    report(Ok(()), "invitation created: send the link to the person");
                }
                Err(e) => report(Err(e.to_string()), ""),
            }
        });
    };

    let change_user = RwSignal::new(String::new());
    let change_kind = RwSignal::new("grant".to_owned());
    let change_role = RwSignal::new("operator".to_owned());
    let request_change = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = json!({ "user_id": change_user.get_untracked(), "change": { change_kind.get_untracked(): change_role.get_untracked() } });
        leptos::task::spawn_local(async move {
            let result = with_step_up(|| http::post::<_, serde_json::Value>("/api/admin/role-requests", &body))
                .await
                .map(|_| ());
            report(result, "role change requested: a second admin must approve it");
        });
    };

    let decide = move |id: String, approve: bool| {
        leptos::task::spawn_local(async move {
            let path = format!("/api/admin/role-requests/{id}/{}", if approve { "approve" } else { "refuse" });
            let empty = json!({});
            let result = with_step_up(|| http::post::<_, serde_json::Value>(&path, &empty)).await.map(|_| ());
            report(result, if approve { "role change approved" } else { "role change refused" });
        });
    };

    let segment = RwSignal::new("office".to_owned());
    let create_agent_token = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = json!({ "segment": segment.get_untracked() });
        leptos::task::spawn_local(async move {
            match http::post::<_, serde_json::Value>("/api/admin/agent-tokens", &body).await {
                Ok(v) => {
                    agent_token.set(Issued::from(&v, "token"));
                    report(Ok(()), "agent enrolment token created");
                }
                Err(e) => report(Err(e.to_string()), ""),
            }
        });
    };

    let post_action = move |path: String, ok: &'static str| {
        leptos::task::spawn_local(async move {
            let result =
                http::post::<_, serde_json::Value>(&path, &json!({})).await.map(|_| ()).map_err(|e| e.to_string());
            report(result, ok);
        });
    };
    // A token with which a reinstalled endpoint takes a new key for the same device (a step-up;
    // the change is the device's device.key_changed record).
    let rekey = move |id: String, name: String| {
        leptos::task::spawn_local(async move {
            let path = format!("/api/admin/devices/{id}/rekey-token");
            let empty = json!({});
            match with_step_up(|| http::post::<_, serde_json::Value>(&path, &empty)).await {
                Ok(v) => {
                    agent_token.set(Issued::from(&v, "token"));
                    report(Ok(()), &format!("token for a new key of {name} (agent enroll --token)"));
                }
                Err(e) => report(Err(e), ""),
            }
        });
    };
    // A maintenance window of 30 minutes from now (R3); the relay records exact start and end.
    let open_window = move |id: String| {
        leptos::task::spawn_local(async move {
            let now = js_sys::Date::now() as u64;
            let body = json!({ "start_ms": now, "end_ms": now + 30 * 60 * 1000 });
            let path = format!("/api/admin/devices/{id}/maintenance-window");
            let result = http::post::<_, serde_json::Value>(&path, &body).await.map(|_| ()).map_err(|e| e.to_string());
            report(result, "maintenance window open for 30 minutes");
        });
    };
    // Closes the device's open maintenance window early; running sessions on it end (R3).
    let close_window = move |id: String| {
        leptos::task::spawn_local(async move {
            let path = format!("/api/admin/devices/{id}/maintenance-window/close");
            let result = http::post::<_, serde_json::Value>(&path, &json!({})).await.map_err(|e| e.to_string());
            let closed = result.as_ref().is_ok_and(|v| v["closed"] == serde_json::Value::Bool(true));
            report(
                result.map(|_| ()),
                if closed { "maintenance window closed" } else { "no maintenance window was open" },
            );
        });
    };
    let unlock = move |key: String| {
        leptos::task::spawn_local(async move {
            let result = http::post::<_, serde_json::Value>("/api/admin/locks/unlock", &json!({ "key": key }))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            report(result, "unlocked");
        });
    };

    view! {
        <section class="admin" data-testid="admin-area">
            {move || message.get().map(|(ok, text)| view! {
                <p class=if ok { "notice" } else { "error" } data-testid="admin-message">{text}</p>
            })}
            <div class="card">
                <h2>"Users"</h2>
                <table data-testid="users">
                    <tr><th>"Name"</th><th>"Roles"</th><th>"Signs in"</th><th></th></tr>
                    <For each=move || users.get() key=|u| (u.id.clone(), u.roles.clone(), u.passkeys) let(u)>
                        <tr data-testid="user-row" data-user=u.name.clone()>
                            <td>{u.name.clone()}</td>
                            <td data-testid="user-roles">{u.roles.join(", ")}</td>
                            <td data-testid="user-sign-in">{match (&u.directory, u.passkeys) {
                                (Some(p), 0) => format!("through {p}; no passkey yet"),
                                (Some(p), _) => format!("through {p}, then passkey"),
                                (None, _) => "passkey (local account)".to_owned(),
                            }}</td>
                            <td><button on:click={
                                let id = u.id.clone();
                                move |_| post_action(format!("/api/admin/users/{id}/revoke-sessions"), "sessions revoked")
                            }>"Revoke sessions"</button></td>
                        </tr>
                    </For>
                </table>
                <form on:submit=invite data-testid="invite-form">
                    <h3>"Invite"</h3>
                    <label>"User name " <input name="invite-name" placeholder="user name" bind:value=invite_name/></label>
                    <label>"Role "
                        <select name="invite-role" on:change=move |ev| invite_role.set(event_target_value(&ev))>
                            {ROLES.iter().map(|r| view! { <option value=*r selected=*r == "operator">{*r}</option> }).collect_view()}
                        </select>
                    </label>
                    <button type="submit">"Create invitation"</button>
                </form>
                {move || invite_link.get().map(|l| issued_view(l, "Link", "invite-link"))}
                <h3>"Not yet used"</h3>
                <table data-testid="pending">
                    <tr><th>"What"</th><th>"For"</th><th>"By"</th><th>"Until"</th></tr>
                    <For each=move || pending.get() key=|p| p.id.clone() let(p)>
                        <tr data-testid="pending-row" data-kind=p.kind.clone()>
                            <td>{p.kind.clone()}</td>
                            <td>{p.subject.clone()}</td>
                            <td>{p.created_by.clone()}</td>
                            <td>{local_time(p.expires_ms)}</td>
                        </tr>
                    </For>
                </table>
            </div>
            <div class="card">
                <h2>"Role changes (need a second admin)"</h2>
                <form on:submit=request_change data-testid="role-change-form">
                    <label>"User "
                        <select name="change-user" on:change=move |ev| change_user.set(event_target_value(&ev))>
                            <option value="">"user…"</option>
                            <For each=move || users.get() key=|u| u.id.clone() let(u)>
                                <option value=u.id.clone()>{u.name.clone()}</option>
                            </For>
                        </select>
                    </label>
                    <label>"Change "
                        <select name="change-kind" on:change=move |ev| change_kind.set(event_target_value(&ev))>
                            <option value="grant">"grant"</option>
                            <option value="revoke">"revoke"</option>
                        </select>
                    </label>
                    <label>"Role "
                        <select name="change-role" on:change=move |ev| change_role.set(event_target_value(&ev))>
                            {ROLES.iter().map(|r| view! { <option value=*r>{*r}</option> }).collect_view()}
                        </select>
                    </label>
                    <button type="submit">"Request"</button>
                </form>
                <ul data-testid="role-requests">
                    <For each=move || requests.get() key=|r| r.id.clone() let(r)>
                        <li data-testid="role-request">
                            {format!("{} for {} (requested by {}) ", describe_change(&r.change), r.target_name, r.requested_by_name)}
                            <button on:click={ let id = r.id.clone(); move |_| decide(id.clone(), true) }>"Approve"</button>
                            <button on:click={ let id = r.id.clone(); move |_| decide(id.clone(), false) }>"Refuse"</button>
                        </li>
                    </For>
                </ul>
            </div>
            <div class="card">
                <crate::passkey_resets::PasskeyResets resettable=resettable changed=Callback::new(move |()| reload())/>
            </div>
            <crate::role_mappings::RoleMappings/>
            <div class="card">
                <h2>"Locked accounts and addresses"</h2>
                <ul data-testid="locks">
                    <For each=move || locks.get() key=|l| l.key.clone() let(l)>
                        <li data-testid="lock-row">
                            {format!("{} ({} failures) ", l.key, l.failures)}
                            <button on:click={ let k = l.key.clone(); move |_| unlock(k.clone()) }>"Unlock"</button>
                        </li>
                    </For>
                </ul>
            </div>
            <div class="card">
                <h2>"Devices"</h2>
                <table data-testid="devices">
                    <tr><th>"Name"</th><th>"Segment"</th><th>"State"</th><th>"Node"</th><th></th></tr>
                    <For each=move || devices.get() key=|d| (d.id.clone(), d.revoked, d.online, d.in_session, d.window_until_ms, d.node.clone()) let(d)>
                        <tr data-testid="device-row" data-device=d.name.clone()>
                            <td>{d.name.clone()}</td>
                            <td>{d.segment.clone()}</td>
                            <td data-testid="device-state" data-online=d.online.to_string()>{d.state()}</td>
                            <td data-testid="device-node">{d.node.clone().unwrap_or_default()}</td>
                            <td>
                                <button disabled=d.revoked on:click={
                                    let id = d.id.clone();
                                    move |_| open_window(id.clone())
                                }>"Open window 30 min"</button>
                                <button disabled=d.revoked on:click={
                                    let id = d.id.clone();
                                    move |_| close_window(id.clone())
                                }>"Close window"</button>
                                <button disabled=d.revoked on:click={
                                    let id = d.id.clone();
                                    move |_| post_action(format!("/api/admin/devices/{id}/revoke"), "device revoked")
                                }>"Revoke"</button>
                                <button disabled=d.revoked data-testid="device-rekey" on:click={
                                    let (id, name) = (d.id.clone(), d.name.clone());
                                    move |_| rekey(id.clone(), name.clone())
                                }>"New key"</button>
                            </td>
                        </tr>
                    </For>
                </table>
                <form on:submit=create_agent_token data-testid="agent-token-form">
                    <label>"Segment " <input name="segment" bind:value=segment/></label>
                    <button type="submit">"Create agent enrolment token"</button>
                </form>
                {move || agent_token.get().map(|t| issued_view(t, "Token", "agent-token"))}
                <crate::command_approvals::CommandApprovalForm/>
            </div>
        </section>
    }
}
