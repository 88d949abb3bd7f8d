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
    #[serde(default)]
    next_before: Option<u64>,
    #[serde(default)]
    folded: Vec<Folded>,
    #[serde(default)]
    kinds: Vec<String>,
}

/// Records of a folded kind, counted per session instead of listed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Folded {
    kind: String,
    session: Option<String>,
    count: u64,
    first_seq: u64,
    last_seq: u64,
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

/// Records per page.
const PAGE_SIZE: usize = 50;

/// A `datetime-local` value (the browser's local time) as Unix ms; `None` when empty.
fn local_input_ms(value: &str, what: &str) -> Result<Option<u64>, String> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    let ms = js_sys::Date::new(&wasm_bindgen::JsValue::from_str(value.trim())).get_time();
    if ms.is_nan() || ms < 0.0 {
        return Err(format!("{what}: {value:?} is not a date and time"));
    }
    Ok(Some(ms as u64))
}

/// A record's detail, as a person reads it: JSON details (approvals, starts) as their fields.
fn readable_detail(detail: &str) -> String {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(detail) {
        Ok(fields) => fields
            .iter()
            .map(|(k, v)| {
                format!("{}: {}", k.replace('_', " "), v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => detail.to_owned(),
    }
}

/// The raw record, indented, for the one click away.
fn raw(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| line.to_owned())
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
    let fold_chunks = RwSignal::new(true);
    let rows = RwSignal::new(Vec::<(String, Row)>::new());
    let folded = RwSignal::new(Vec::<Folded>::new());
    let kinds = RwSignal::new(Vec::<String>::new());
    let verdict = RwSignal::new(Verdict::None);
    let node = RwSignal::new(String::new());
    let notice = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let keys = RwSignal::new(pinned_keys());
    // The page shown: where it starts (`None`: the newest) and where the next one would.
    let before = RwSignal::new(None::<u64>);
    let next_before = RwSignal::new(None::<u64>);
    let earlier_pages = RwSignal::new(Vec::<Option<u64>>::new());

    let load = move |page_start: Option<u64>| {
        let times = local_input_ms(&from.get_untracked(), "From")
            .and_then(|f| local_input_ms(&to.get_untracked(), "To").map(|t| (f, t)));
        let (from_ms, to_ms) = match times {
            Ok((Some(f), Some(t))) if t <= f => {
                error.set(Some("To must be later than From: no record can lie between them.".into()));
                return;
            }
            Ok(times) => times,
            Err(e) => {
                error.set(Some(e));
                return;
            }
        };
        let mut query = vec![format!("limit={PAGE_SIZE}")];
        for (name, value) in
            [("kind", kind), ("session", session), ("ticket", ticket), ("operator", operator), ("device", device)]
        {
            let v = value.get_untracked();
            if !v.trim().is_empty() {
                query.push(format!("{name}={}", http::encode_component(v.trim())));
            }
        }
        query.extend(from_ms.map(|ms| format!("from={ms}")));
        query.extend(to_ms.map(|ms| format!("to={ms}")));
        query.extend(page_start.map(|b| format!("before={b}")));
        if fold_chunks.get_untracked() && kind.get_untracked() != "recording.chunk" {
            query.push("fold=recording.chunk".into());
        }
        leptos::task::spawn_local(async move {
            match http::get::<AuditPage>(&format!("/api/audit/records?{}", query.join("&"))).await {
                Ok(page) => {
                    let (v, r) = verify(&page, &keys.get_untracked());
                    node.set(page.node.clone());
                    notice.set(if page.truncated {
                        "The search stopped early: use relay audit export for the rest.".into()
                    } else {
                        String::new()
                    });
                    error.set(None);
                    verdict.set(v);
                    rows.set(page.records.iter().map(|p| p.line.clone()).zip(r).collect());
                    folded.set(page.folded.clone());
                    if !page.kinds.is_empty() {
                        kinds.set(page.kinds.clone());
                    }
                    before.set(page_start);
                    next_before.set(page.next_before);
                }
                Err(e) => error.set(Some(format!("The audit log was not searched: {e}"))),
            }
        });
    };
    let search = move || {
        earlier_pages.set(Vec::new());
        load(None);
    };
    search();
    let pin = move |_| {
        pin_keys(&keys.get_untracked());
        search();
    };
    let older = move |_| {
        earlier_pages.update(|p| p.push(before.get_untracked()));
        load(next_before.get_untracked());
    };
    let newer = move |_| {
        let mut pages = earlier_pages.get_untracked();
        let start = pages.pop().flatten();
        earlier_pages.set(pages);
        load(start);
    };

    let field = move |name: &'static str, label: &'static str, signal: RwSignal<String>| {
        view! {
            <label>{label}" "<input name=name bind:value=signal on:keydown=move |ev| if ev.key() == "Enter" { search() }/></label>
        }
    };
    let when = move |name: &'static str, label: &'static str, signal: RwSignal<String>| {
        view! { <label>{label}" "<input name=name type="datetime-local" step="1" bind:value=signal/></label> }
    };
    view! {
        <section class="audit" data-testid="audit-page">
            <h2>"Audit log"</h2>
            <form class="filters" on:submit=move |ev: leptos::ev::SubmitEvent| { ev.prevent_default(); search() }>
                <label>"Event "
                    <select name="audit-kind" bind:value=kind>
                        <option value="">"any"</option>
                        <For each=move || kinds.get() key=|k| k.clone() let(k)>
                            <option value=k.clone()>{k.clone()}</option>
                        </For>
                    </select>
                </label>
                {field("audit-session", "Session", session)}
                {field("audit-ticket", "Ticket", ticket)}
                {field("audit-operator", "Operator", operator)}
                {field("audit-device", "Device", device)}
                {when("audit-from", "From", from)}
                {when("audit-to", "To", to)}
                <label class="check"><input type="checkbox" name="audit-fold" bind:checked=fold_chunks/>" Fold recording chunks"</label>
                <button type="submit" data-testid="audit-search">"Search"</button>
            </form>
            <div class="filters">
                <label>"Trusted node keys (one per line, from the node's operator) "
                    <textarea name="audit-keys" rows="2" cols="60" bind:value=keys></textarea></label>
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
            {move || error.get().map(|e| view! { <p class="error" role="alert" data-testid="audit-error">{e}</p> })}
            <p class="muted" data-testid="audit-message">{move || notice.get()}</p>
            <ul class="folded" data-testid="audit-folded">
                <For each=move || folded.get() key=|f| (f.session.clone(), f.first_seq) let(f)>
                    <li data-testid="audit-folded-row" data-count=f.count>
                        {format!(
                            "{} records of {} folded (#{} to #{}); choose Event {} to list them.",
                            f.count,
                            f.session.as_ref().map_or_else(|| "no session".to_owned(), |s| format!("session {s}")),
                            f.first_seq,
                            f.last_seq,
                            f.kind
                        )}
                    </li>
                </For>
            </ul>
            <table data-testid="audit-records" class="audit-records">
                <thead><tr><th class="seq">"#"</th><th class="time">"Time (UTC)"</th><th>"Event"</th><th>"Who"</th><th>"Session"</th><th class="detail">"Detail"</th><th>"Proof"</th></tr></thead>
                <tbody>
                    <For each=move || rows.get().into_iter().enumerate() key=|(i, (_, r))| (*i, r.record.as_ref().map_or(0, |r| r.seq)) let((_, (line, row)))>
                        {
                            let status = match &row.status {
                                Status::Verified => ("verified", "✓ verified".to_owned()),
                                Status::NotYetCheckpointed => ("pending", "not yet under a checkpoint".to_owned()),
                                Status::Failed(why) => ("failed", format!("✗ {why}")),
                            };
                            let r = row.record.clone();
                            let outcome = r.as_ref().map(|r| format!("{:?}", r.outcome).to_lowercase()).unwrap_or_default();
                            view! {
                                <tr data-testid="audit-row" data-kind=r.as_ref().map(|r| r.kind.clone()).unwrap_or_default() data-seq=r.as_ref().map(|r| r.seq) data-proof=status.0>
                                    <td>{r.as_ref().map(|r| r.seq.to_string())}</td>
                                    <td>{r.as_ref().map(|r| r.time_utc().replace('T', " ").trim_end_matches('Z').to_owned())}</td>
                                    <td>{r.as_ref().map(|r| r.kind.clone())}<br/><span class=format!("outcome {outcome}")>{outcome.clone()}</span></td>
                                    <td>{r.as_ref().map(|r| r.actor.clone())}<br/><span class="muted">{r.as_ref().and_then(|r| r.source.clone())}</span></td>
                                    <td>{r.as_ref().and_then(|r| r.session.as_ref().map(|s| format!("{} (ticket {}); {} / {}", s.session_id, s.ticket, s.device, s.endpoint_user)))}</td>
                                    <td class="detail">
                                        {r.as_ref().and_then(|r| r.subject.clone()).map(|s| view! { <span class="subject">{s}</span><br/> })}
                                        {r.as_ref().map(|r| readable_detail(&r.detail))}
                                        <details><summary>"Raw record"</summary><pre data-testid="audit-raw">{raw(&line)}</pre></details>
                                    </td>
                                    <td>{status.1}</td>
                                </tr>
                            }
                        }
                    </For>
                </tbody>
            </table>
            <div class="pager">
                <button data-testid="audit-newer" disabled=move || earlier_pages.get().is_empty() on:click=newer>"Newer records"</button>
                <button data-testid="audit-older" disabled=move || next_before.get().is_none() on:click=older>"Older records"</button>
            </div>
        </section>
    }
}
