//! Which open connections hold a token of which user, so that what auth announces on its
//! revocation channel (`identity::revocation`: a session or a user's older tokens revoked, a
//! user's roles changed) reaches them within a moment. The registry is only an index: each
//! connection's session decides from its own current token whether a notice concerns it (it may
//! have re-authenticated since).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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

#[derive(Default)]
struct Index {
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
    }

    /// Connection `connection` holds no token any more (expired, revoked, closed).
    pub fn unregister(&self, connection: u64) {
        remove(&mut self.lock(), connection);
    }

    /// Hands a notice from auth to every connection it may concern.
    pub fn notify(&self, notice: Notice) {
        let index = self.lock();
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
