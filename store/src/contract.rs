//! The contract every backend passes: the same assertions against the embedded store and a real
//! redis-server started on a free loopback port.

use std::sync::Arc;
use std::time::Duration;

use super::{Backend, Collection, Store};
use crate::embedded::Embedded;
use crate::redis::RedisBackend;
use crate::test_support::RedisServer;

async fn contract(backend: Arc<dyn Backend>) {
    let b = backend.as_ref();
    let users = Collection::Users;

    // get / put / overwrite
    assert_eq!(b.get(users, "u1").await.unwrap(), None);
    b.put(users, "u1", b"one").await.unwrap();
    assert_eq!(b.get(users, "u1").await.unwrap().as_deref(), Some(&b"one"[..]));
    b.put(users, "u1", b"uno").await.unwrap();
    assert_eq!(b.get(users, "u1").await.unwrap().as_deref(), Some(&b"uno"[..]));

    // collections are separate namespaces
    assert_eq!(b.get(Collection::Devices, "u1").await.unwrap(), None);

    // insert_new never overwrites
    assert!(b.insert_new(users, "u2", b"two").await.unwrap());
    assert!(!b.insert_new(users, "u2", b"other").await.unwrap());
    assert_eq!(b.get(users, "u2").await.unwrap().as_deref(), Some(&b"two"[..]));

    // compare_and_swap
    assert!(!b.compare_and_swap(users, "u3", Some(b"x"), b"y").await.unwrap(), "absent is not Some");
    assert!(b.compare_and_swap(users, "u3", None, b"three").await.unwrap());
    assert!(!b.compare_and_swap(users, "u3", None, b"again").await.unwrap(), "present is not None");
    assert!(!b.compare_and_swap(users, "u3", Some(b"wrong"), b"y").await.unwrap());
    assert!(b.compare_and_swap(users, "u3", Some(b"three"), b"3").await.unwrap());
    assert_eq!(b.get(users, "u3").await.unwrap().as_deref(), Some(&b"3"[..]));

    // list
    let mut keys: Vec<String> = b.list(users).await.unwrap().into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(keys, ["u1", "u2", "u3"]);

    // delete
    assert!(b.delete(users, "u2").await.unwrap());
    assert!(!b.delete(users, "u2").await.unwrap());

    // take: a one-time token is taken exactly once, even by racing takers
    b.put(Collection::EnrolmentTokens, "t", b"token").await.unwrap();
    let takers = (0..8).map(|_| {
        let backend = backend.clone();
        tokio::spawn(async move { backend.take(Collection::EnrolmentTokens, "t").await.unwrap() })
    });
    let mut won = 0;
    for taker in takers {
        if let Some(v) = taker.await.unwrap() {
            assert_eq!(v, b"token");
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one taker wins");

    // ephemeral records: take once, and expire
    b.put_ephemeral("ceremony:1", b"state", Duration::from_secs(30)).await.unwrap();
    assert_eq!(b.get_ephemeral("ceremony:1").await.unwrap().as_deref(), Some(&b"state"[..]));
    assert_eq!(b.take_ephemeral("ceremony:1").await.unwrap().as_deref(), Some(&b"state"[..]));
    assert_eq!(b.take_ephemeral("ceremony:1").await.unwrap(), None);
    b.put_ephemeral("short", b"x", Duration::from_millis(150)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.get_ephemeral("short").await.unwrap(), None, "expired");
    assert_eq!(b.take_ephemeral("short").await.unwrap(), None, "expired");

    // lasting records: read and taken like ephemeral ones, and expire the same way
    b.put_lasting("session:1", b"alive", Duration::from_secs(60)).await.unwrap();
    b.put_lasting("session:2", b"ended", Duration::from_secs(60)).await.unwrap();
    assert_eq!(b.get_ephemeral("session:1").await.unwrap().as_deref(), Some(&b"alive"[..]));
    assert_eq!(b.take_ephemeral("session:2").await.unwrap().as_deref(), Some(&b"ended"[..]));
    assert_eq!(b.get_ephemeral("session:2").await.unwrap(), None);
    b.put_lasting("session:short", b"x", Duration::from_millis(150)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.get_ephemeral("session:short").await.unwrap(), None, "expired");
    // Replaced only while it exists: a logout's take is not undone by a late activity note.
    assert!(!b.replace_lasting("session:absent", b"x", Duration::from_secs(60)).await.unwrap());
    assert_eq!(b.get_ephemeral("session:absent").await.unwrap(), None);
    assert!(b.replace_lasting("session:1", b"touched", Duration::from_secs(60)).await.unwrap());
    assert_eq!(b.get_ephemeral("session:1").await.unwrap().as_deref(), Some(&b"touched"[..]));
    b.put_lasting("session:4", b"out", Duration::from_secs(60)).await.unwrap();
    assert!(b.take_ephemeral("session:4").await.unwrap().is_some());
    assert!(!b.replace_lasting("session:4", b"back?", Duration::from_secs(60)).await.unwrap());
    assert_eq!(b.get_ephemeral("session:4").await.unwrap(), None);
    // A key written lasting and then plain is plain from then on.
    b.put_lasting("session:3", b"lasting", Duration::from_secs(60)).await.unwrap();
    b.put_ephemeral("session:3", b"plain", Duration::from_secs(60)).await.unwrap();
    assert_eq!(b.get_ephemeral("session:3").await.unwrap().as_deref(), Some(&b"plain"[..]));

    // events reach subscribers (Redis subscribes in the background: publish until heard)
    let mut events = b.subscribe();
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            b.publish(b"revoked:42").await.unwrap();
            if let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
                return event;
            }
        }
    })
    .await
    .expect("event delivered within 5 s");
    assert_eq!(heard, b"revoked:42");

    // typed optimistic updates do not lose writes under contention
    let store = Store::new(backend.clone());
    let workers = (0..6).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..5 {
                store.update::<u32, _>(Collection::Lockouts, "counter", |n| Some(n.unwrap_or(0) + 1)).await.unwrap();
            }
        })
    });
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(store.get::<u32>(Collection::Lockouts, "counter").await.unwrap(), Some(30));

    // a corrupt record is an error, not a default
    b.put(users, "bad", b"not json").await.unwrap();
    assert!(store.get::<u32>(users, "bad").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend_passes_the_contract_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    contract(Arc::new(Embedded::open(dir.path()).unwrap())).await;
    // Durable records survive a restart; ephemeral ones do not. Lasting ones do until they
    // expire, and one taken (a logout) or overwritten as plain does not come back.
    let reopened = Embedded::open(dir.path()).unwrap();
    assert_eq!(reopened.get(Collection::Users, "u1").await.unwrap().as_deref(), Some(&b"uno"[..]));
    assert_eq!(reopened.get_ephemeral("ceremony:1").await.unwrap(), None);
    assert_eq!(reopened.get_ephemeral("session:1").await.unwrap().as_deref(), Some(&b"touched"[..]));
    for gone in ["session:2", "session:short", "session:3", "session:4", "session:absent"] {
        assert_eq!(reopened.get_ephemeral(gone).await.unwrap(), None, "{gone}");
    }
    // Taken after the restart, it is gone after the next one too.
    assert_eq!(reopened.take_ephemeral("session:1").await.unwrap().as_deref(), Some(&b"touched"[..]));
    drop(reopened);
    let again = Embedded::open(dir.path()).unwrap();
    assert_eq!(again.get_ephemeral("session:1").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_passes_the_contract_and_is_shared_between_nodes() {
    let server = RedisServer::start().await;
    contract(Arc::new(RedisBackend::connect(&server.url()).await.unwrap())).await;
    // A second node sees the first node's records and events.
    let node_a = RedisBackend::connect(&server.url()).await.unwrap();
    let node_b = RedisBackend::connect(&server.url()).await.unwrap();
    node_a.put(Collection::Devices, "d1", b"key").await.unwrap();
    assert_eq!(node_b.get(Collection::Devices, "d1").await.unwrap().as_deref(), Some(&b"key"[..]));
    let mut on_b = node_b.subscribe();
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            node_a.publish(b"from-a").await.unwrap();
            if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(200), on_b.recv()).await {
                return e;
            }
        }
    })
    .await
    .expect("node B hears node A");
    assert_eq!(heard, b"from-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_is_a_clear_error_not_a_hang() {
    let server = RedisServer::start().await;
    let backend = RedisBackend::connect(&server.url()).await.unwrap();
    backend.put(Collection::Users, "u", b"v").await.unwrap();
    drop(server);
    let started = std::time::Instant::now();
    let result = backend.get(Collection::Users, "u").await;
    assert!(matches!(result, Err(super::StoreError::Unavailable(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "fails within its timeouts");
}
