//! A relay serving TLS (rustls, a self-signed certificate for localhost): an agent that trusts
//! the certificate's CA enrols and connects over wss://; one that does not is refused at the
//! handshake, and plain ws:// to the TLS port gets nowhere.

use std::time::Duration;

use sightline_agent::connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_enrols_over_wss_only_with_a_trusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = sightline_relay::config::Config {
        listen: addr,
        static_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../static").into(),
        media_ip: "127.0.0.1".parse().unwrap(),
        public_url: Some(format!("https://localhost:{}/", addr.port()).parse().unwrap()),
        data_dir: dir.path().join("relay"),
        redis: None,
        token_ttl_s: 600,
        node: Some("test".into()),
        audit_dir: None,
        audit_checkpoint_records: 1000,
        audit_checkpoint_ms: 1000,
        siem: Vec::new(),
        siem_format: sightline_relay::audit::siem::Payload::Json,
        siem_ca: None,
        policy: concat!(env!("CARGO_MANIFEST_DIR"), "/../relay/policy-sample.toml").into(),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key),
    };
    config.validate().unwrap();
    let state =
        sightline_relay::server::build(&config, std::sync::Arc::new(sightline_relay::events::MemorySink::default()))
            .await
            .unwrap();
    let token = state.identity.create_agent_token("test", "office", None).await.unwrap();
    tokio::spawn(sightline_relay::server::serve(listener, state, config, std::future::pending()));

    let wss = connection::agent_socket_url(&format!("wss://localhost:{}", addr.port()).parse().unwrap()).unwrap();
    let untrusted = connection::enroll(&wss, &token, "desk", &dir.path().join("a1"), None).await.unwrap_err();
    assert!(format!("{untrusted:#}").contains("certificate"), "{untrusted:#}");

    let plain = connection::agent_socket_url(&format!("ws://localhost:{}", addr.port()).parse().unwrap()).unwrap();
    let cleartext = tokio::time::timeout(
        Duration::from_secs(15),
        connection::enroll(&plain, &token, "desk", &dir.path().join("a2"), None),
    )
    .await
    .expect("a cleartext client is not left hanging");
    assert!(cleartext.is_err(), "plain ws to a TLS port must fail");

    let info = connection::enroll(&wss, &token, "desk", &dir.path().join("a3"), Some(&cert)).await.unwrap();
    assert_eq!(info.segment, "office");
}
