//! A relay serving TLS (rustls, a self-signed certificate for localhost): an agent that trusts
//! the certificate's CA enrols and connects over wss://; one that does not is refused at the
//! handshake, and plain ws:// to the TLS port gets nowhere. TLS 1.0 and 1.1 clients are refused
//! (R42).

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
    let config = <sightline_relay::config::Config as clap::Parser>::parse_from([
        "relay".to_owned(),
        format!("--listen={addr}"),
        concat!("--static-dir=", env!("CARGO_MANIFEST_DIR"), "/../static").to_owned(),
        format!("--public-url=https://localhost:{}/", addr.port()),
        format!("--data-dir={}", dir.path().join("relay").display()),
        "--node=test".to_owned(),
        concat!("--policy=", env!("CARGO_MANIFEST_DIR"), "/../relay/policy-sample.toml").to_owned(),
        format!("--tls-cert={}", cert.display()),
        format!("--tls-key={}", key.display()),
        format!("--recording-recipient={}", age::x25519::Identity::generate().to_public()),
    ]);
    config.validate().unwrap();
    let state =
        sightline_relay::server::build(&config, std::sync::Arc::new(sightline_audit::events::MemorySink::default()))
            .await
            .unwrap();
    let token = state.identity.create_agent_token("test", "office", None).await.unwrap();
    tokio::spawn(sightline_relay::server::serve(listener, state, config, std::future::pending()));

    let wss = connection::agent_socket_url(&format!("wss://localhost:{}", addr.port()).parse().unwrap()).unwrap();
    let untrusted =
        connection::enroll(&wss, &token, "desk", &dir.path().join("a1"), &Default::default(), None).await.unwrap_err();
    assert!(format!("{untrusted:#}").contains("certificate"), "{untrusted:#}");

    let plain = connection::agent_socket_url(&format!("ws://localhost:{}", addr.port()).parse().unwrap()).unwrap();
    let cleartext = tokio::time::timeout(
        Duration::from_secs(15),
        connection::enroll(&plain, &token, "desk", &dir.path().join("a2"), &Default::default(), None),
    )
    .await
    .expect("a cleartext client is not left hanging");
    assert!(cleartext.is_err(), "plain ws to a TLS port must fail");

    let info = connection::enroll(
        &wss,
        &token,
        "desk",
        &dir.path().join("a3"),
        &connection::Route { ca_cert: Some(cert.clone()), proxy: None },
        None,
    )
    .await
    .unwrap();
    assert_eq!(info.segment, "office");

    // R42: TLS 1.0 and 1.1 are refused by the relay. The probe is OpenSSL's own client with old
    // protocols allowed on its side (security level 0), so a refusal is the server's; TLS 1.2
    // and 1.3 from the same client are the control that the probe works.
    let port = addr.port();
    let probe = move |version: &'static str| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &format!("127.0.0.1:{port}"),
                    version,
                    "-cipher",
                    "DEFAULT:@SECLEVEL=0",
                    "-brief",
                ])
                .stdin(std::process::Stdio::null())
                .output()
                .expect("openssl s_client runs");
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        })
    };
    for (version, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = probe(version).await.unwrap();
        assert!(out.contains(&format!("Protocol version: {name}")), "{version} must connect: {out}");
    }
    for version in ["-tls1_1", "-tls1"] {
        let out = probe(version).await.unwrap();
        assert!(!out.contains("CONNECTION ESTABLISHED"), "{version} must be refused: {out}");
        assert!(
            out.contains("alert") || out.contains("unsupported protocol") || out.contains("wrong version"),
            "{version}: {out}"
        );
    }
}
