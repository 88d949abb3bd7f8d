//! Audit log benchmark (`cargo xtask bench` runs it pinned to one core): durable appends per
//! second with group commit, the latency an event adds to an acknowledgement, full-log
//! verification rate, inclusion proof checks, and the SIEM forwarding rate into a real rsyslog
//! (RELP). Prints a summary and writes JSON to the file given as the first argument.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sightline_audit::commands::NodeLog;
use sightline_audit::events::{Event, EventKind, Outcome, SessionFacts};
use sightline_audit::siem::{Destination, Payload, SiemSettings};
use sightline_audit::{AuditLog, AuditSettings};
use sightline_core::audit::{Checkpoint, InclusionProof, LogVerifier};

/// A consent event as the relay writes it: facts plus a device-signed receipt (~1.1 KB record).
fn event(i: u64) -> Event {
    Event {
        ts_ms: 1_780_000_000_000 + i,
        kind: EventKind::ConsentAllowed,
        outcome: Outcome::Success,
        actor: "user@front-desk-0042".into(),
        subject: Some(format!(
            "session:{i:024x} device:dev-0042 (front-desk-0042) user:anna ticket:INC-4711 reason:incident operator:olga"
        )),
        source: Some("10.20.30.40".parse().unwrap()),
        detail: format!(
            "levels: view, control; receipt signed at 1780000000000 by the device key: {{\"kind\":\"session\",\"session_id\":\"{i:024x}\",\"device_id\":\"dev-0042\",\"operator\":\"olga\",\"ticket\":\"INC-4711\",\"endpoint_user\":\"anna\",\"decision\":\"allow\",\"levels\":[\"view\",\"control\"],\"time_ms\":1780000000000,\"signature\":\"{}\"}}",
            "A".repeat(86)
        ),
        session: Some(SessionFacts {
            session_id: format!("{i:024x}"),
            ticket: "INC-4711".into(),
            reason: "incident".into(),
            device_id: "dev-0042".into(),
            device: "front-desk-0042".into(),
            endpoint_user: "anna".into(),
            operator: "olga".into(),
            levels: vec![sightline_proto::Level::View, sightline_proto::Level::Control],
            unattended: false,
        }),
    }
}

fn settings(dir: &Path) -> AuditSettings {
    AuditSettings {
        dir: dir.to_owned(),
        node: "bench".into(),
        checkpoint_records: 1000,
        checkpoint_interval: Duration::from_secs(1),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn p95(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[(v.len() * 95 / 100).min(v.len() - 1)]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "bench-results/audit.json".into());
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("audit");
    const N: u64 = 200_000;

    // 1. Throughput: 64 callers, each appending and waiting for its commit, like request handlers.
    let log = Arc::new(AuditLog::open(&settings(&dir))?);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..N / 64 {
                log.append(event(t * (N / 64) + i));
                log.committed().await.expect("durable");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let appended = (N / 64) * 64;
    let append_rate = appended as f64 / start.elapsed().as_secs_f64();
    let record_bytes = std::fs::metadata(dir.join("log.jsonl"))?.len() / appended;

    // 2. Latency one event adds to an acknowledgement, on an otherwise idle log.
    let mut latency = Vec::new();
    for i in 0..500 {
        let t = Instant::now();
        log.append(event(N + i));
        log.committed().await?;
        latency.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    log.close();
    drop(log);

    // 3. Verifying the whole log offline (parse, canonical check, chain, tree, checkpoints).
    let bytes = std::fs::read(dir.join("log.jsonl"))?;
    let notes: Vec<String> = std::fs::read_to_string(dir.join("checkpoints.jsonl"))?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let key = std::fs::read_to_string(dir.join("audit.pub"))?.trim().to_owned();
    let t = Instant::now();
    let (report, _) = LogVerifier::verify_file(&bytes, &notes, &key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let verify_rate = report.records as f64 / t.elapsed().as_secs_f64();

    // 4. Inclusion proofs: checking one (record, proof, key), as an auditor or the browser does.
    let key = std::fs::read_to_string(dir.join("audit.pub"))?;
    let node = NodeLog::load(&dir, &sightline_audit::commands::TrustedKeys::new([key.clone()]))?;
    let note = node.newest_checkpoint().unwrap().clone();
    let cp = Checkpoint::open(&note, &key)?;
    let mut proof_us = Vec::new();
    for i in (0..cp.size).step_by((cp.size / 1000).max(1) as usize).take(1000) {
        let proof =
            InclusionProof { index: i, hashes: node.tree.inclusion_proof(i, cp.size)?, checkpoint: note.clone() };
        let text = proof.to_text();
        let t = Instant::now();
        InclusionProof::parse(&text)?.verify(&node.lines[i as usize], &key)?;
        proof_us.push(t.elapsed().as_secs_f64() * 1e6);
    }

    // 5. Forwarding the whole log to a real rsyslog over RELP.
    let siem_rate = siem_rate(&dir, report.records).await?;

    let summary = serde_json::json!({
        "records": report.records,
        "record_bytes": record_bytes,
        "durable_appends_per_s_64_callers": append_rate.round(),
        "ack_latency_ms_p50": median(&mut latency),
        "ack_latency_ms_p95": p95(&mut latency),
        "verify_records_per_s": verify_rate.round(),
        "inclusion_proof_verify_us_p50": median(&mut proof_us),
        "inclusion_proof_verify_us_p95": p95(&mut proof_us),
        "siem_relp_records_per_s": siem_rate.map(f64::round),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(parent) = Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&summary)?)?;
    Ok(())
}

/// Starts rsyslogd (RELP in, a file out) and forwards the log; records per second until the
/// cursor has passed every record. `None` when rsyslogd is not installed.
async fn siem_rate(dir: &Path, records: u64) -> anyhow::Result<Option<f64>> {
    if std::process::Command::new("rsyslogd").arg("-v").output().is_err() {
        return Ok(None);
    }
    let work = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let conf = work.path().join("rsyslog.conf");
    std::fs::create_dir_all(work.path().join("w"))?;
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{w}/w\")\nmodule(load=\"imrelp\")\ntemplate(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\nruleset(name=\"r\") {{ action(type=\"omfile\" file=\"{w}/out.log\" template=\"raw\") }}\ninput(type=\"imrelp\" port=\"{port}\" address=\"127.0.0.1\" ruleset=\"r\")\n",
            w = work.path().display()
        ),
    )?;
    let mut rsyslog = std::process::Command::new("rsyslogd")
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(work.path().join("pid"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "rsyslogd did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = AuditLog::open(&settings(dir))?;
    let destination: Destination = format!("relp://127.0.0.1:{port}").parse().map_err(anyhow::Error::msg)?;
    let cursor = dir.join(format!("siem-{}.cursor", destination.name()));
    let start = Instant::now();
    let forwarders = sightline_audit::siem::spawn(
        SiemSettings {
            destinations: vec![destination],
            payload: Payload::Json,
            ca_cert: None,
            dir: dir.to_owned(),
            node: "bench".into(),
        },
        log.subscribe(),
    )?;
    loop {
        let sent = std::fs::read(&cursor).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        if sent.and_then(|v| v["records"].as_u64()).unwrap_or(0) >= records {
            break;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(600), "forwarding did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = records as f64 / start.elapsed().as_secs_f64();
    for f in forwarders {
        f.abort();
    }
    log.close();
    let _ = rsyslog.kill();
    let _ = rsyslog.wait();
    Ok(Some(rate))
}
