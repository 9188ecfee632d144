//! Which open connections hold a token of which user, so that what auth announces on its
//! revocation channel (`identity::revocation`: a session or a user's older tokens revoked, a
//! user's roles changed) reaches them within a moment. The registry is only an index: each
//! connection's session decides from its own current token whether a notice concerns it (it may
//! have re-authenticated since).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use identity::revocation::Notice;
use uuid::Uuid;

use crate::outbound::Outbound;

/// What a session is told from outside its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionNotice {
    /// Auth revoked tokens or changed roles.
    Auth(Notice),
    /// The revocation channel was down for a while: notices may have been missed, look the
    /// token up in Redis again.
    Recheck,
}

struct Login {
    connection: u64,
    sid: Option<Uuid>,
    out: Arc<Outbound>,
}

/// How long revocations are remembered for connections that register after them: a token
/// checked in Redis a moment before its revocation was written registers a moment after the
/// notice went by.
const REMEMBER_FOR: Duration = Duration::from_secs(10);
/// At most this many remembered revocations (a burst beyond only shortens the memory).
const REMEMBER_AT_MOST: usize = 10_000;

#[derive(Default)]
struct Index {
    /// Recent revocations (not role changes), newest last.
    recent: VecDeque<(Instant, Notice)>,
    by_user: HashMap<Uuid, Vec<Login>>,
    /// A session id's user (a session belongs to one user).
    by_session: HashMap<Uuid, Uuid>,
    /// A connection's user.
    by_connection: HashMap<u64, Uuid>,
}

#[derive(Default)]
pub struct Logins {
    index: Mutex<Index>,
}

impl Logins {
    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connection `connection` now holds a token of `user` (replacing what it held before).
    pub fn register(&self, connection: u64, user: Uuid, sid: Option<Uuid>, out: &Arc<Outbound>) {
        let mut index = self.lock();
        remove(&mut index, connection);
        if let Some(sid) = sid {
            index.by_session.insert(sid, user);
        }
        index.by_connection.insert(connection, user);
        index.by_user.entry(user).or_default().push(Login {
            connection,
            sid,
            out: out.clone(),
        });
        // Revoked while it was being checked: the session learns it now (it compares the
        // notice with its own token, `iat` included).
        for (_, notice) in &index.recent {
            let concerned = match notice {
                Notice::Session { sid: revoked } => sid == Some(*revoked),
                Notice::Subject { sub, .. } => *sub == user,
                Notice::Roles { .. } => false,
            };
            if concerned {
                out.notify(SessionNotice::Auth(notice.clone()));
            }
        }
    }

    /// Connection `connection` holds no token any more (expired, revoked, closed).
    pub fn unregister(&self, connection: u64) {
        remove(&mut self.lock(), connection);
    }

    /// Hands a notice from auth to every connection it may concern.
    pub fn notify(&self, notice: Notice) {
        let mut index = self.lock();
        if !matches!(notice, Notice::Roles { .. }) {
            let now = Instant::now();
            while index.recent.len() >= REMEMBER_AT_MOST
                || index
                    .recent
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > REMEMBER_FOR)
            {
                index.recent.pop_front();
            }
            index.recent.push_back((now, notice.clone()));
        }
        let (user, sid) = match &notice {
            Notice::Session { sid } => match index.by_session.get(sid) {
                Some(user) => (*user, Some(*sid)),
                None => return,
            },
            Notice::Subject { sub, .. } | Notice::Roles { sub, .. } => (*sub, None),
        };
        let Some(logins) = index.by_user.get(&user) else {
            return;
        };
        for login in logins {
            if sid.is_none() || login.sid == sid {
                login.out.notify(SessionNotice::Auth(notice.clone()));
            }
        }
    }

    /// Every connection holding a token looks it up again.
    pub fn recheck_all(&self) {
        let index = self.lock();
        for login in index.by_user.values().flatten() {
            login.out.notify(SessionNotice::Recheck);
        }
    }

    /// Connections holding a token.
    pub fn count(&self) -> usize {
        self.lock().by_user.values().map(Vec::len).sum()
    }
}

/// Forgets a connection; a user or session id left with no connection goes too.
fn remove(index: &mut Index, connection: u64) {
    let Some(user) = index.by_connection.remove(&connection) else {
        return;
    };
    let Some(logins) = index.by_user.get_mut(&user) else {
        return;
    };
    let Some(at) = logins.iter().position(|l| l.connection == connection) else {
        return;
    };
    let login = logins.swap_remove(at);
    let sid_unused = login
        .sid
        .filter(|sid| !logins.iter().any(|l| l.sid == Some(*sid)));
    if logins.is_empty() {
        index.by_user.remove(&user);
    }
    if let Some(sid) = sid_unused {
        index.by_session.remove(&sid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SlowClient;

    #[test]
    fn a_revocation_reaches_a_connection_registered_just_after_it() {
        let logins = Logins::default();
        let (user, sid, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        logins.notify(Notice::Session { sid });
        logins.notify(Notice::Roles {
            sub: user,
            roles: Vec::new(),
        });
        let late = Arc::new(Outbound::new(8, SlowClient::Disconnect));
        logins.register(1, user, Some(sid), &late);
        assert_eq!(
            late.take_notice(),
            Some(SessionNotice::Auth(Notice::Session { sid }))
        );
        assert_eq!(late.take_notice(), None, "role changes are not replayed");
        let unrelated = Arc::new(Outbound::new(8, SlowClient::Disconnect));
        logins.register(2, other, Some(Uuid::now_v7()), &unrelated);
        assert_eq!(unrelated.take_notice(), None);

        // Registered ones get notices as they come; unregistered ones no more.
        logins.notify(Notice::Subject {
            sub: other,
            before: 1,
        });
        assert!(matches!(
            unrelated.take_notice(),
            Some(SessionNotice::Auth(Notice::Subject { .. }))
        ));
        logins.unregister(2);
        logins.notify(Notice::Subject {
            sub: other,
            before: 2,
        });
        assert_eq!(unrelated.take_notice(), None);
        assert_eq!(logins.count(), 1);
    }
}
