//! The local users table kept from `auth.user.*` events and token claims, against a fresh
//! database with identity's `users` table.

use chrono::{DateTime, Duration, Utc};
use identity::users::{self, NewUser, UserDeleted, UserRegistered, UserRestored, UserUpdated};
use sqlx::PgPool;
use uuid::Uuid;

async fn database() -> (testkit::TestDb, PgPool) {
    let db = testkit::TestDb::create().await;
    let pool = db.pool().await;
    identity::SCHEMA
        .apply(&pool)
        .await
        .expect("the users table");
    (db, pool)
}

fn registered(id: Uuid, name: &str) -> UserRegistered {
    UserRegistered {
        user: id,
        email: format!("{name}@hatchery.test").to_lowercase(),
        name: name.into(),
        roles: vec![],
    }
}

fn updated(id: Uuid, name: &str, is_active: bool) -> UserUpdated {
    UserUpdated {
        user: id,
        email: format!("{name}@hatchery.test").to_lowercase(),
        name: name.into(),
        roles: vec!["admin".into()],
        is_active,
    }
}

fn at(minutes_ago: i64) -> DateTime<Utc> {
    Utc::now() - Duration::minutes(minutes_ago)
}

#[tokio::test]
async fn events_apply_once_and_never_roll_a_user_back() {
    let (_db, pool) = database().await;
    let mut conn = pool.acquire().await.unwrap();
    let id = Uuid::now_v7();

    let first = users::apply_registered(&mut conn, &registered(id, "Erin"), at(10))
        .await
        .unwrap();
    let again = users::apply_registered(&mut conn, &registered(id, "Erin"), at(10))
        .await
        .unwrap();
    assert_eq!(first.id, again.id, "redelivery changes nothing");

    let newer = users::apply_updated(&mut conn, &updated(id, "Erin B", true), at(5))
        .await
        .unwrap();
    assert_eq!(
        (newer.name.as_str(), newer.roles.clone()),
        ("Erin B", vec!["admin".to_owned()])
    );
    // An update that happened earlier but arrives late is ignored.
    let late = users::apply_updated(&mut conn, &updated(id, "Erin A", false), at(7))
        .await
        .unwrap();
    assert_eq!((late.name.as_str(), late.is_active), ("Erin B", true));

    let disabled = users::apply_updated(&mut conn, &updated(id, "Erin B", false), at(4))
        .await
        .unwrap();
    assert!(!disabled.is_active);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn deletion_and_restoration_follow_event_time_even_out_of_order() {
    let (_db, pool) = database().await;
    let mut conn = pool.acquire().await.unwrap();
    let id = Uuid::now_v7();

    // The deletion overtakes the registration: the late registration does not revive the user.
    let deleted = users::apply_deleted(&mut conn, &UserDeleted { user: id }, at(5))
        .await
        .unwrap();
    assert!(deleted.is_deleted());
    let late = users::apply_registered(&mut conn, &registered(id, "Finn"), at(9))
        .await
        .unwrap();
    assert!(late.is_deleted());
    assert_eq!(
        users::local_id(&pool, id).await.unwrap(),
        None,
        "deleted users have no live key"
    );

    let restored = users::apply_restored(&mut conn, &UserRestored { user: id }, at(3))
        .await
        .unwrap();
    assert!(!restored.unwrap().is_deleted());
    assert_eq!(
        users::local_id(&pool, id).await.unwrap(),
        Some(deleted.id),
        "the same row is back"
    );
    // A stale deletion arriving now leaves the restored user alone.
    let stale = users::apply_deleted(&mut conn, &UserDeleted { user: id }, at(4))
        .await
        .unwrap();
    assert!(!stale.is_deleted());

    let unknown = users::apply_restored(
        &mut conn,
        &UserRestored {
            user: Uuid::now_v7(),
        },
        at(1),
    )
    .await
    .unwrap();
    assert_eq!(unknown, None);
}

#[tokio::test]
async fn seed_users_are_got_or_created_without_changes() {
    let (_db, pool) = database().await;
    let mut conn = pool.acquire().await.unwrap();
    let id = Uuid::now_v7();
    let roles = vec!["admin".to_owned()];
    let seed = NewUser {
        uuid: id,
        email: "gus@hatchery.test",
        name: "Gus",
        roles: &roles,
    };
    let (local, created) = users::get_or_create(&mut conn, &seed).await.unwrap();
    assert!(created);
    let renamed = NewUser {
        name: "Gus Renamed",
        ..seed.clone()
    };
    assert_eq!(
        users::get_or_create(&mut conn, &renamed).await.unwrap(),
        (local, false)
    );
    let row = users::find(&pool, id).await.unwrap().unwrap();
    assert_eq!((row.name.as_str(), row.roles), ("Gus", roles));
}

#[tokio::test]
async fn a_user_named_by_another_service_is_filled_in_by_the_first_event() {
    let (_db, pool) = database().await;
    let mut conn = pool.acquire().await.unwrap();
    let id = Uuid::now_v7();
    let placeholder = users::get_or_create_by_uuid(&mut conn, id).await.unwrap();
    assert_eq!(
        (placeholder.email.as_str(), placeholder.name.as_str()),
        ("", "")
    );
    let again = users::get_or_create_by_uuid(&mut conn, id).await.unwrap();
    assert_eq!(again.id, placeholder.id, "one row per user");

    // Any real data is newer than the placeholder, even an event from long ago.
    let filled = users::apply_registered(&mut conn, &registered(id, "Hal"), at(60 * 24))
        .await
        .unwrap();
    assert_eq!((filled.id, filled.name.as_str()), (placeholder.id, "Hal"));
    let kept = users::get_or_create_by_uuid(&mut conn, id).await.unwrap();
    assert_eq!(kept.name, "Hal", "an existing row is returned as it is");
}
