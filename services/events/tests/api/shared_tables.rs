//! The tables this service shares with every other (users, idempotency, outbox, inbox) are the
//! ones their crates define, not copies.

#[tokio::test]
async fn the_shared_tables_are_their_crates_definitions() {
    testkit::schema::assert_shared_tables::<events::Events>(&[]).await;
}
