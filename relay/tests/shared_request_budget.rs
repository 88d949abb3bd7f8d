//! With several nodes on one Redis, an operator has one session request budget for the service,
//! not one per node (R43); while Redis is down each node still limits on its own.

use std::num::NonZeroU32;

use sightline_relay::request_limits::RequestLimits;
use sightline_store::Store;
use sightline_store::redis::RedisBackend;

async fn node(redis: &str) -> RequestLimits {
    let store = Store::new(std::sync::Arc::new(RedisBackend::connect(redis).await.expect("redis")));
    let three = NonZeroU32::new(3).unwrap();
    RequestLimits::new(three, three).shared_through(store, three)
}

#[tokio::test]
async fn an_operator_has_one_budget_across_nodes_and_each_node_limits_while_the_store_is_down() {
    let redis = sightline_store::test_support::RedisServer::start().await;
    let (a, b) = (node(&redis.url()).await, node(&redis.url()).await);
    // Two requests through node A and one through node B spend the operator's burst of three.
    assert_eq!(a.operator("olga").await, Ok(()));
    assert_eq!(a.operator("olga").await, Ok(()));
    assert_eq!(b.operator("olga").await, Ok(()));
    // The fourth is refused on either node, with the wait until the next (one each 20 s).
    for n in [&a, &b] {
        let wait = n.operator("olga").await.unwrap_err();
        assert!(wait.as_secs() >= 19 && wait.as_secs() <= 20, "{wait:?}");
    }
    // Control: another operator's budget is untouched.
    assert_eq!(b.operator("oscar").await, Ok(()));

    // Redis goes away: node B still limits, on its own bucket (three, then refused).
    drop(redis);
    for _ in 0..3 {
        assert_eq!(b.operator("olga").await, Ok(()));
    }
    assert!(b.operator("olga").await.is_err());
}
