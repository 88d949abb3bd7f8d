//! The audit page (R45, R39): search the relay's audit log, and verify what it serves here, in
//! the browser, with sightline-core: each record's inclusion proof against the newest checkpoint,
//! and the checkpoint's Ed25519 signature against the key the auditor pinned (kept in this
//! browser's storage), never against the key the relay sends with the page: whoever serves the
//! page could send any. A record the checkpoint covers must come with its proof; only records
//! after the checkpoint may lack one, and they are shown as not verified.

use leptos::prelude::*;
use serde::Deserialize;
use sightline_core::audit::{Checkpoint, Hash, InclusionProof, Record};

use crate::http;

#[derive(Debug, Clone, Deserialize)]
struct ProvedRecord {
    line: String,
    proof: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
struct AuditPage {
    node: String,
    verifier_key: String,
    checkpoint: Option<String>,
    records: Vec<ProvedRecord>,
    truncated: bool,
}

/// One row as shown: the record (if it parses) and what the browser found.
#[derive(Debug, Clone)]
struct Row {
    record: Option<Record>,
    status: Status,
}

#[derive(Debug, Clone, PartialEq)]
enum Status {
    Verified,
    /// Written after the newest checkpoint: covered by the chain only, for now.
    NotYetCheckpointed,
    Failed(String),
}

/// What the page establishes about the whole answer.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    None,
    /// No key pinned for the node: nothing is verified (the relay's own key is only shown).
    Unpinned {
        served_key: String,
    },
    Verified {
        size: u64,
        root: String,
        key: String,
        records: usize,
    },
    Failed(String),
}

/// Where the auditor's pinned verifier keys are kept (one per line, one per node).
const PINNED_KEYS: &str = "sightline.audit.trusted-keys";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// Keeps `keys` as the auditor's pinned keys (this browser's storage).
pub(crate) fn pin_keys(keys: &str) {
    if let Some(storage) = storage() {
        let _ = storage.set_item(PINNED_KEYS, keys.trim());
    }
}

pub(crate) fn pinned_keys() -> String {
    storage().and_then(|s| s.get_item(PINNED_KEYS).ok().flatten()).unwrap_or_default()
}

/// The pinned key named for `node`'s log (signed-note key names are `sightline.audit/<node>`).
pub(crate) fn pinned_for(node: &str, keys: &str) -> Option<String> {
    let name = sightline_core::audit::origin_for_node(node);
    keys.lines().map(str::trim).find(|k| k.split('+').next() == Some(name.as_str())).map(str::to_owned)
}

/// Verifies a served page with the pinned `keys`: the checkpoint's signature, then every
/// record's proof.
fn verify(page: &AuditPage, keys: &str) -> (Verdict, Vec<Row>) {
    let Some(key) = pinned_for(&page.node, keys) else {
        return (Verdict::Unpinned { served_key: page.verifier_key.clone() }, Vec::new());
    };
    let checkpoint = match &page.checkpoint {
        Some(note) => match Checkpoint::open(note, &key) {
            Ok(cp) => Some((note.clone(), cp)),
            Err(e) => return (Verdict::Failed(format!("checkpoint: {e}")), Vec::new()),
        },
        None => None,
    };
    let mut failures = Vec::new();
    let mut verified = 0;
    let rows: Vec<Row> = page
        .records
        .iter()
        .map(|r| {
            let record = Record::from_canonical(r.line.as_bytes()).ok();
            let status = match (&r.proof, &checkpoint, &record) {
                (_, _, None) => Status::Failed("not a canonical audit record".into()),
                // Inside the verified checkpoint a record must be proved: dropping its proof
                // must not turn an altered record into one merely "not yet" covered.
                (None, Some((_, cp)), Some(record)) if record.seq < cp.size => {
                    Status::Failed(format!("no proof, though the checkpoint covers records 0 to {}", cp.size - 1))
                }
                (None, _, Some(_)) => Status::NotYetCheckpointed,
                (Some(_), None, Some(_)) => Status::Failed("a proof without a checkpoint".into()),
                (Some(hashes), Some((note, _)), Some(record)) => {
                    let hashes: Result<Vec<Hash>, _> = hashes.iter().map(|h| Hash::parse_hash(h)).collect();
                    match hashes {
                        Err(_) => Status::Failed("malformed proof".into()),
                        Ok(hashes) => {
                            let proof = InclusionProof { index: record.seq, hashes, checkpoint: note.clone() };
                            match proof.verify(r.line.as_bytes(), &key) {
                                Ok(_) => Status::Verified,
                                Err(e) => Status::Failed(e.to_string()),
                            }
                        }
                    }
                }
            };
            match &status {
                Status::Verified => verified += 1,
                Status::Failed(why) => failures.push(format!("record {}: {why}", record.as_ref().map_or(0, |r| r.seq))),
                Status::NotYetCheckpointed => {}
            }
            Row { record, status }
        })
        .collect();
    let verdict = match (failures.first(), &checkpoint) {
        (Some(first), _) => {
            Verdict::Failed(format!("{} of {} records fail; first: {first}", failures.len(), rows.len()))
        }
        (None, Some((_, cp))) => Verdict::Verified { size: cp.size, root: cp.root.to_string(), key, records: verified },
        (None, None) => Verdict::None,
    };
    (verdict, rows)
}

#[component]
pub fn AuditView() -> impl IntoView {
    let kind = RwSignal::new(String::new());
    let session = RwSignal::new(String::new());
    let ticket = RwSignal::new(String::new());
    let operator = RwSignal::new(String::new());
    let device = RwSignal::new(String::new());
    let from = RwSignal::new(String::new());
    let to = RwSignal::new(String::new());
    let rows = RwSignal::new(Vec::<Row>::new());
    let verdict = RwSignal::new(Verdict::None);
    let node = RwSignal::new(String::new());
    let message = RwSignal::new(String::new());
    let keys = RwSignal::new(pinned_keys());

    let search = move || {
        let mut query = Vec::new();
        for (name, value) in [
            ("kind", kind),
            ("session", session),
            ("ticket", ticket),
            ("operator", operator),
            ("device", device),
            ("from", from),
            ("to", to),
        ] {
            let v = value.get_untracked();
            if !v.trim().is_empty() {
                query.push(format!("{name}={}", http::encode_component(v.trim())));
            }
        }
        leptos::task::spawn_local(async move {
            match http::get::<AuditPage>(&format!("/api/audit/records?{}", query.join("&"))).await {
                Ok(page) => {
                    let (v, r) = verify(&page, &keys.get_untracked());
                    node.set(page.node.clone());
                    message.set(if page.truncated {
                        "the search stopped early; use relay audit export for the rest".into()
                    } else {
                        String::new()
                    });
                    verdict.set(v);
                    rows.set(r);
                }
                Err(e) => message.set(format!("cannot read the audit log: {e}")),
            }
        });
    };
    search();
    let pin = move |_| {
        pin_keys(&keys.get_untracked());
        search();
    };

    let field = move |name: &'static str, label: &'static str, signal: RwSignal<String>| {
        view! {
            <label>{label}" "<input name=name bind:value=signal on:keydown=move |ev| if ev.key() == "Enter" { search() }/></label>
        }
    };
    view! {
        <section class="audit" data-testid="audit-page">
            <h2>"Audit log"</h2>
            <div class="filters">
                {field("audit-kind", "Event", kind)}
                {field("audit-session", "Session", session)}
                {field("audit-ticket", "Ticket", ticket)}
                {field("audit-operator", "Operator", operator)}
                {field("audit-device", "Device", device)}
                {field("audit-from", "From", from)}
                {field("audit-to", "To", to)}
                <button data-testid="audit-search" on:click=move |_| search()>"Search"</button>
            </div>
            <div class="filters">
                <label>"Trusted node keys (one per line, from the node's operator) "
                    <textarea name="audit-keys" rows="2" cols="80" bind:value=keys></textarea></label>
                <button data-testid="audit-pin" on:click=pin>"Pin and verify"</button>
            </div>
            <p class="verification" data-testid="audit-verification"
                data-state=move || match verdict.get() { Verdict::None => "none", Verdict::Unpinned { .. } => "unpinned", Verdict::Verified { .. } => "verified", Verdict::Failed(_) => "failed" }>
                {move || match verdict.get() {
                    Verdict::None => "No checkpoint yet: nothing to verify against.".to_owned(),
                    Verdict::Unpinned { served_key } => format!(
                        "NOT VERIFIED: no key is pinned for node {}. The relay sends {served_key}; compare it with the key the node's operator gave you, then pin that one.",
                        node.get()
                    ),
                    Verdict::Verified { size, root, key, records } => format!(
                        "Verified in this browser: {records} records are in the log of node {} at checkpoint size {size} (root {root}), signed by key {key}.",
                        node.get()
                    ),
                    Verdict::Failed(why) => format!("VERIFICATION FAILED: {why}"),
                }}
            </p>
            <p class="muted" data-testid="audit-message">{move || message.get()}</p>
            <table data-testid="audit-records">
                <thead><tr><th>"#"</th><th>"Time (UTC)"</th><th>"Event"</th><th>"Outcome"</th><th>"Actor"</th><th>"Source"</th><th>"Session / ticket"</th><th>"Device / user"</th><th>"Detail"</th><th>"Proof"</th></tr></thead>
                <tbody>
                    <For each=move || rows.get().into_iter().enumerate() key=|(i, r)| (*i, r.record.as_ref().map_or(0, |r| r.seq)) let((_, row))>
                        {
                            let status = match &row.status {
                                Status::Verified => ("verified", "✓ verified".to_owned()),
                                Status::NotYetCheckpointed => ("pending", "not yet checkpointed".to_owned()),
                                Status::Failed(why) => ("failed", format!("✗ {why}")),
                            };
                            let r = row.record.clone();
                            view! {
                                <tr data-testid="audit-row" data-kind=r.as_ref().map(|r| r.kind.clone()).unwrap_or_default() data-proof=status.0>
                                    <td>{r.as_ref().map(|r| r.seq.to_string())}</td>
                                    <td>{r.as_ref().map(|r| r.time_utc())}</td>
                                    <td>{r.as_ref().map(|r| r.kind.clone())}</td>
                                    <td>{r.as_ref().map(|r| format!("{:?}", r.outcome).to_lowercase())}</td>
                                    <td>{r.as_ref().map(|r| r.actor.clone())}</td>
                                    <td>{r.as_ref().and_then(|r| r.source.clone())}</td>
                                    <td>{r.as_ref().and_then(|r| r.session.as_ref().map(|s| format!("{} / {}", s.session_id, s.ticket)))}</td>
                                    <td>{r.as_ref().and_then(|r| r.session.as_ref().map(|s| format!("{} / {}", s.device, s.endpoint_user)))}</td>
                                    <td class="detail">{r.as_ref().map(|r| r.detail.chars().take(160).collect::<String>())}</td>
                                    <td>{status.1}</td>
                                </tr>
                            }
                        }
                    </For>
                </tbody>
            </table>
        </section>
    }
}
