//! The admin's approval of one command on a relay node's host (`relay recording export`,
//! `relay unlock`, `relay agent-token create`), where the node's policy asks for one: a passkey
//! step-up, then the relay records the approval and shows its one-time code here, once, for the
//! admin to hand to the person at the host.

use leptos::prelude::*;
use serde_json::json;

use crate::auth::with_step_up;
use crate::http;
use crate::widgets::local_time;

/// What the relay answered: the code, and where and until when it is good.
#[derive(Clone, Debug)]
struct Issued {
    id: String,
    code: String,
    expires: String,
    node: Option<String>,
}

#[component]
pub fn CommandApprovalForm() -> impl IntoView {
    let command = RwSignal::new("recording.export".to_owned());
    let target = RwSignal::new(String::new());
    let reason = RwSignal::new(String::new());
    let minutes = RwSignal::new("60".to_owned());
    let issued = RwSignal::new(None::<Issued>);
    let error = RwSignal::new(None::<String>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Ok(valid_minutes) = minutes.get_untracked().trim().parse::<u64>() else {
            error.set(Some("Valid for: a number of minutes (1 to 1440)".into()));
            return;
        };
        let body = json!({
            "command": command.get_untracked(),
            "target": target.get_untracked(),
            "reason": reason.get_untracked(),
            "valid_minutes": valid_minutes,
        });
        issued.set(None);
        error.set(None);
        leptos::task::spawn_local(async move {
            match with_step_up(|| http::post::<_, serde_json::Value>("/api/admin/command-approvals", &body)).await {
                Ok(v) => issued.set(Some(Issued {
                    id: v["id"].as_str().unwrap_or_default().to_owned(),
                    code: v["code"].as_str().unwrap_or_default().to_owned(),
                    expires: local_time(v["expires_ms"].as_u64().unwrap_or_default()),
                    node: v["node"].as_str().map(str::to_owned),
                })),
                Err(e) => error.set(Some(format!("not approved: {e}"))),
            }
        });
    };
    view! {
        <h3>"Approve a command on the node"</h3>
        <p class="muted">
            "Where the policy asks for it, a command on the relay's host (exporting a recording, lifting a lock, \
             creating an agent token) runs only with the code of an approval for that command and target. \
             The approval is recorded with your name before the code is shown."
        </p>
        <form on:submit=submit data-testid="command-approval-form" class="stacked">
            <label>"Command "
                <select bind:value=command>
                    <option value="recording.export">"Export a recording (relay recording export)"</option>
                    <option value="unlock">"Lift a login lock (relay unlock)"</option>
                    <option value="agent_token.create">"Create an agent token (relay agent-token create)"</option>
                </select>
            </label>
            <label>"Target "
                <input name="target" bind:value=target required
                    placeholder="recording id, account:NAME or address:IP, or segment"/>
            </label>
            <label>"Reason " <input name="reason" bind:value=reason required/></label>
            <label>"Valid for (minutes) " <input name="minutes" type="number" min="1" max="1440" bind:value=minutes/></label>
            <button type="submit">"Approve (passkey)"</button>
        </form>
        {move || error.get().map(|e| view! { <p class="error" role="alert" data-testid="command-approval-error">{e}</p> })}
        {move || issued.get().map(|i| view! {
            <div data-testid="command-approval" data-id=i.id.clone()>
                <p>"Approval " {i.id.clone()} ": give this code to the person at the host. It works once, until "
                    {i.expires.clone()}
                    {i.node.clone().map(|n| format!(", on node {n} only"))} "."</p>
                <p><code data-testid="command-approval-code">{i.code.clone()}</code></p>
            </div>
        })}
    }
}
