//! One client session: authentication, its subscriptions and the service callbacks around
//! them, event by event, as socketshark's `Session`/`Subscription`/`events` do. Events of one
//! session are handled one after the other (a slow callback delays that session's next event,
//! never another session, and never the delivery of published messages).
//!
//! A session authenticated with a token (`method: jwt`) lasts as long as the token: at its
//! `exp`, or as soon as auth announces it revoked, the session becomes anonymous again and every
//! subscription that needed the authentication ends with an unsubscribe push (`Token expired.`,
//! `Session revoked.`). Before `exp` the client may present a newer token of the same user. A
//! role taken away ends the subscriptions its `role:` rule allowed (`Unauthorized.`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use identity::revocation::Notice;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::Broker;
use crate::callbacks::is_ok;
use crate::delivery::{DeliveryOptions, Publication, Slot, expected_values};
use crate::jwt;
use crate::logins::SessionNotice;
use crate::metrics::Metrics;
use crate::outbound::{OutFrame, Outbound};
use crate::protocol::{self, ClientEvent, Event, Reply};
use crate::rules::ServiceRules;

/// Longest subscription name accepted (ours: socketshark has none).
pub const MAX_SUBSCRIPTION_LEN: usize = 256;

/// An event's failure: the `error` (and optional `data`) of the error reply.
struct EventError {
    error: Value,
    data: Option<Value>,
}

impl From<&str> for EventError {
    fn from(error: &str) -> Self {
        EventError {
            error: error.into(),
            data: None,
        }
    }
}

struct Subscription {
    slot: Arc<Slot>,
    service: Arc<ServiceRules>,
    extra: Map<String, Value>,
    /// Fields of the authorizer's answer passed to later callbacks.
    authorizer_data: Option<Map<String, Value>>,
    /// Distinguishes this subscription from a later one with the same name (for timers).
    generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Reauthorize,
    Heartbeat,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    due: Instant,
    generation: u64,
    kind: TimerKind,
    name: Arc<str>,
}

/// The token a session authenticated with (`method: jwt`).
struct Grant {
    /// Kept to look the token up again after the revocation channel was down.
    claims: identity::Claims,
    /// The token's `exp` on this process's clock.
    expires: Instant,
}

impl Grant {
    fn new(claims: identity::Claims) -> Grant {
        let exp = UNIX_EPOCH + Duration::from_secs(u64::try_from(claims.exp).unwrap_or(0));
        let left = exp
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Grant {
            claims,
            expires: Instant::now() + left,
        }
    }

    /// Whether auth's notice revokes this token.
    fn revoked_by(&self, notice: &Notice) -> bool {
        match notice {
            Notice::Session { sid } => self.claims.sid == Some(*sid),
            Notice::Subject { sub, before } => self.claims.sub == *sub && self.claims.iat < *before,
            Notice::Roles { .. } => false,
        }
    }
}

pub struct Session {
    broker: Arc<Broker>,
    out: Arc<Outbound>,
    id: u64,
    /// The id of the upgrade request, sent on every callback this session makes.
    request_id: String,
    /// Auth fields (socketshark's `auth_info`); empty = anonymous.
    auth: Map<String, Value>,
    /// Set while the auth fields come from a token (boxed: most sessions have none).
    grant: Option<Box<Grant>>,
    subscriptions: Subscriptions,
    timers: BinaryHeap<Reverse<Timer>>,
    generation: u64,
}

impl Session {
    pub fn new(broker: Arc<Broker>, out: Arc<Outbound>, id: u64, request_id: String) -> Session {
        Session {
            broker,
            out,
            id,
            request_id,
            auth: Map::new(),
            grant: None,
            subscriptions: Subscriptions::default(),
            timers: BinaryHeap::new(),
            generation: 0,
        }
    }

    fn send(&self, text: String) {
        self.out.push(OutFrame::reply(text), &self.broker.metrics);
    }

    /// Handles one text frame from the client.
    pub async fn handle(&mut self, text: &str) {
        match ClientEvent::parse(text) {
            ClientEvent::Invalid => {
                self.send(protocol::invalid_event());
                Metrics::client_event("invalid", false);
            }
            ClientEvent::Unknown(name) => {
                self.send(Reply::error(&name, protocol::ERR_EVENT_NOT_FOUND).into_text());
                Metrics::client_event("unknown", false);
            }
            ClientEvent::Known(event, data) => {
                let ok = match event {
                    Event::Ping => {
                        self.send(protocol::pong(data.get("data")));
                        true
                    }
                    Event::Auth => match self.authenticate(&data).await {
                        Ok(()) => {
                            self.send(Reply::ok("auth").into_text());
                            // The new auth fields may carry fewer roles (or another user).
                            self.recheck_rules(protocol::ERR_UNAUTHORIZED).await;
                            true
                        }
                        Err(err) => {
                            self.send(Reply::error("auth", err.error).data(err.data).into_text());
                            false
                        }
                    },
                    Event::Subscribe | Event::Message | Event::Unsubscribe => {
                        self.subscription_event(event, &data).await
                    }
                };
                Metrics::client_event(event.name(), ok);
            }
        }
    }

    async fn authenticate(&mut self, data: &Map<String, Value>) -> Result<(), EventError> {
        let method = match data.get("method") {
            None => protocol::DEFAULT_AUTH_METHOD,
            Some(Value::String(method)) => method.as_str(),
            Some(_) => return Err(protocol::ERR_AUTH_UNSUPPORTED.into()),
        };
        let broker = self.broker.clone();
        let auth = match method {
            "ticket" => {
                let Some(ticket_auth) = &broker.config.authentication.ticket else {
                    return Err(protocol::ERR_AUTH_UNSUPPORTED.into());
                };
                let ticket = data.get("ticket");
                if protocol::is_falsy(ticket) {
                    return Err(protocol::ERR_NEEDS_TICKET.into());
                }
                let mut body = Map::new();
                body.insert("ticket".into(), ticket.cloned().unwrap_or(Value::Null));
                let answer = broker
                    .callbacks
                    .post_as(
                        &ticket_auth.validation_url,
                        &Value::Object(body),
                        &self.request_id,
                        broker.service_token.as_ref(),
                    )
                    .await;
                if !is_ok(&answer) {
                    return Err(EventError {
                        error: answer
                            .get("error")
                            .cloned()
                            .unwrap_or_else(|| protocol::ERR_AUTH_FAILED.into()),
                        data: None,
                    });
                }
                ticket_auth
                    .auth_fields
                    .iter()
                    .filter_map(|field| Some((field.clone(), answer.get(field)?.clone())))
                    .collect()
            }
            "jwt" => {
                let Some(verifier) = &broker.jwt else {
                    return Err(protocol::ERR_AUTH_UNSUPPORTED.into());
                };
                let token = data.get("token");
                let Some(Value::String(token)) = token.filter(|t| !protocol::is_falsy(Some(t)))
                else {
                    return Err(protocol::ERR_NEEDS_TOKEN.into());
                };
                let claims = verifier
                    .authenticate(token)
                    .await
                    .map_err(EventError::from)?;
                // A refresh extends the session; it never turns it into another user's.
                if let Some(grant) = &self.grant
                    && grant.claims.sub != claims.sub
                {
                    return Err(protocol::ERR_OTHER_USER.into());
                }
                let auth = jwt::auth_fields(&claims);
                self.auth = auth;
                self.set_grant(Some(Box::new(Grant::new(claims))));
                self.auth_changed();
                return Ok(());
            }
            _ => return Err(protocol::ERR_AUTH_UNSUPPORTED.into()),
        };
        self.auth = auth;
        self.set_grant(None);
        self.auth_changed();
        Ok(())
    }

    /// Filter fields taken from auth fields follow the new ones.
    fn auth_changed(&self) {
        tracing::debug!(session = self.id, auth = ?self.auth, "authenticated");
        for sub in self.subscriptions.values() {
            let config = &sub.service.config;
            sub.slot.set_expected(expected_values(
                &config.filter_fields,
                &config.extra_fields,
                &sub.extra,
                &self.auth,
            ));
        }
    }

    /// Keeps the registry of token holders in line with the session's token.
    fn set_grant(&mut self, grant: Option<Box<Grant>>) {
        let logins = &self.broker.logins;
        match &grant {
            Some(grant) => {
                logins.register(self.id, grant.claims.sub, grant.claims.sid, &self.out);
            }
            None if self.grant.is_some() => logins.unregister(self.id),
            None => {}
        }
        self.grant = grant;
    }

    /// The token expired or was revoked: the session is anonymous from now on, and every
    /// subscription that needed the authentication ends with `error`.
    async fn end_authentication(&mut self, error: &str) {
        tracing::info!(session = self.id, error, "token no longer valid");
        self.set_grant(None);
        self.auth = Map::new();
        let ending: Vec<Arc<str>> = self
            .subscriptions
            .iter()
            .filter(|(name, sub)| {
                sub.service.config.require_authentication
                    || !allowed_by_rule(name, &sub.service, &self.auth)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in ending {
            self.unsubscribe_forced(&name, error.into()).await;
        }
        self.auth_changed();
    }

    /// Ends the subscriptions whose built-in rule no longer allows the session's auth fields.
    async fn recheck_rules(&mut self, error: &str) {
        let failing: Vec<Arc<str>> = self
            .subscriptions
            .iter()
            .filter(|(name, sub)| !allowed_by_rule(name, &sub.service, &self.auth))
            .map(|(name, _)| name.clone())
            .collect();
        for name in failing {
            tracing::info!(session = self.id, subscription = %name, "rule no longer holds");
            self.unsubscribe_forced(&name, error.into()).await;
        }
    }

    /// Something happened to the session's token elsewhere (see [`SessionNotice`]).
    pub async fn notice(&mut self, notice: SessionNotice) {
        let Some(grant) = &self.grant else {
            return;
        };
        match notice {
            SessionNotice::Auth(notice) if grant.revoked_by(&notice) => {
                self.end_authentication(protocol::ERR_SESSION_REVOKED).await;
            }
            SessionNotice::Auth(Notice::Roles { sub, roles }) if grant.claims.sub == sub => {
                // Only what was taken away counts here: a role added reaches the session with
                // its next token, as it does for HTTP requests.
                if let Some(Value::Array(held)) = self.auth.get_mut("roles") {
                    held.retain(|role| role.as_str().is_some_and(|r| roles.iter().any(|k| k == r)));
                }
                self.auth_changed();
                self.recheck_rules(protocol::ERR_UNAUTHORIZED).await;
            }
            SessionNotice::Auth(_) => {}
            SessionNotice::Recheck => {
                let claims = grant.claims.clone();
                let revoked = match &self.broker.jwt {
                    Some(verifier) => verifier.is_revoked(&claims).await,
                    None => false,
                };
                if revoked {
                    self.end_authentication(protocol::ERR_SESSION_REVOKED).await;
                }
            }
        }
    }

    /// `subscribe`, `message` and `unsubscribe`; true on success.
    async fn subscription_event(&mut self, event: Event, data: &Map<String, Value>) -> bool {
        let raw_name = data.get("subscription");
        let name_value = (!protocol::is_falsy(raw_name))
            .then(|| raw_name.cloned())
            .flatten();
        let name = name_value.as_ref().and_then(Value::as_str);
        // An existing subscription keeps the extra fields it was made with.
        let (service, extra) = match name.and_then(|n| self.subscriptions.get(n)) {
            Some(sub) => (Some(sub.service.clone()), sub.extra.clone()),
            None => {
                let service = name
                    .and_then(|n| n.split_once('.'))
                    .and_then(|(service, _)| self.broker.services.get(service))
                    .cloned();
                let extra = service
                    .as_ref()
                    .map(|s| pick(data, &s.config.extra_fields))
                    .unwrap_or_default();
                (service, extra)
            }
        };
        let mut context = extra.clone();
        if let Some(value) = &name_value {
            context.insert("subscription".into(), value.clone());
        }
        let outcome = match validate_name(name, service.as_ref()) {
            Err(err) => Err(err),
            Ok((name, service)) => match event {
                Event::Subscribe => self.subscribe(name, service, extra).await,
                Event::Message => self.message(name, data, &context).await,
                _ => self.unsubscribe(name, &context).await,
            },
        };
        match outcome {
            Ok(()) => true,
            Err(err) => {
                self.send(
                    Reply::error(event.name(), err.error)
                        .data(err.data)
                        .extend(&context)
                        .into_text(),
                );
                false
            }
        }
    }

    async fn subscribe(
        &mut self,
        name: &str,
        service: Arc<ServiceRules>,
        extra: Map<String, Value>,
    ) -> Result<(), EventError> {
        let config = &service.config;
        if config.require_authentication && self.auth.is_empty() {
            return Err(protocol::ERR_AUTH_REQUIRED.into());
        }
        if self.subscriptions.contains_key(name) {
            return Err(protocol::ERR_ALREADY_SUBSCRIBED.into());
        }
        if self.subscriptions.len() >= self.broker.config.limits.max_subscriptions {
            return Err(protocol::ERR_TOO_MANY_SUBSCRIPTIONS.into());
        }
        let topic = &name[service.name.len() + 1..];
        if let Some(rule) = &service.rule
            && !rule.allows(&self.auth, topic)
        {
            return Err(protocol::ERR_UNAUTHORIZED.into());
        }
        let authorizer_data = self.authorize(name, &service, &extra, None).await?;

        let name: Arc<str> = Arc::from(name);
        let slot = Arc::new(Slot::new(
            name.clone(),
            self.id,
            self.out.clone(),
            self.broker.metrics.clone(),
            &extra,
            expected_values(
                &config.filter_fields,
                &config.extra_fields,
                &extra,
                &self.auth,
            ),
        ));
        // Listening before `before_subscribe` runs, so nothing published from here on is missed
        // (it waits in the slot until the `ok` is out).
        if let Some(confirmed) = self.broker.hub.add(slot.clone()) {
            let limit = self.broker.config.redis.subscribe_timeout;
            if tokio::time::timeout(limit, confirmed).await.is_err() {
                tracing::warn!(subscription = %name, "Redis did not confirm the subscription in time");
            }
        }
        let subscription = Subscription {
            slot: slot.clone(),
            service: service.clone(),
            extra,
            authorizer_data,
            generation: self.next_generation(),
        };
        let answer = match self
            .callback(
                config.before_subscribe.as_deref(),
                &name,
                &subscription,
                None,
                true,
                None,
            )
            .await
        {
            Ok(answer) => answer,
            Err(err) => {
                self.broker.hub.remove(&slot);
                return Err(err);
            }
        };
        // The answer goes through the subscription's filters, order and throttle like a
        // message: socketshark then sends the `ok` only if it passes.
        let answer_data = answer.get("data").cloned();
        let admitted = {
            let as_publication = Arc::new(Publication::new(
                name.to_string(),
                &answer_data.clone().unwrap_or(Value::Null).to_string(),
                DeliveryOptions::parse(answer.get("options")),
                config
                    .filter_fields
                    .iter()
                    .filter_map(|f| Some((f.clone().into_boxed_str(), answer.get(f)?.clone())))
                    .collect(),
                0,
            ));
            slot.admit_answer(&as_publication)
        };
        if admitted {
            self.send(
                Reply::ok("subscribe")
                    .data(answer_data)
                    .extend(&subscription.extra)
                    .field("subscription", Value::String(name.to_string()))
                    .into_text(),
            );
        }
        slot.confirm();
        self.broker.metrics.subscriptions.increment(1.0);
        let generation = subscription.generation;
        self.schedule_timers(&name, &service, generation, true);
        // `on_subscribe`'s answer does not matter.
        let _ = self
            .callback(
                config.on_subscribe.as_deref(),
                &name,
                &subscription,
                None,
                false,
                None,
            )
            .await;
        self.subscriptions.insert(name, subscription);
        Ok(())
    }

    async fn message(
        &mut self,
        name: &str,
        data: &Map<String, Value>,
        context: &Map<String, Value>,
    ) -> Result<(), EventError> {
        let Some(subscription) = self.subscriptions.get(name) else {
            return Err(protocol::ERR_SUBSCRIPTION_NOT_FOUND.into());
        };
        let url = subscription.service.config.on_message.clone();
        let message = data.get("data").cloned().unwrap_or(Value::Null);
        let answer = self
            .callback(
                url.as_deref(),
                name,
                subscription,
                Some(message),
                true,
                None,
            )
            .await?;
        if answer.contains_key("data") {
            self.send(
                Reply::ok("message")
                    .data(answer.get("data").cloned())
                    .extend(context)
                    .into_text(),
            );
        }
        Ok(())
    }

    async fn unsubscribe(
        &mut self,
        name: &str,
        context: &Map<String, Value>,
    ) -> Result<(), EventError> {
        let Some(subscription) = self.subscriptions.get(name) else {
            return Err(protocol::ERR_SUBSCRIPTION_NOT_FOUND.into());
        };
        let config = &subscription.service.config;
        let answer = self
            .callback(
                config.before_unsubscribe.as_deref(),
                name,
                subscription,
                None,
                true,
                None,
            )
            .await?;
        let Some(subscription) = self.subscriptions.remove(name) else {
            return Err(protocol::ERR_SUBSCRIPTION_NOT_FOUND.into());
        };
        self.broker.hub.remove(&subscription.slot);
        self.broker.metrics.subscriptions.decrement(1.0);
        self.send(
            Reply::ok("unsubscribe")
                .data(answer.get("data").cloned())
                .extend(context)
                .into_text(),
        );
        let on_unsubscribe = subscription.service.config.on_unsubscribe.clone();
        let _ = self
            .callback(
                on_unsubscribe.as_deref(),
                name,
                &subscription,
                None,
                false,
                None,
            )
            .await;
        Ok(())
    }

    /// The broker ends a subscription itself (re-authorization refused) and tells the client.
    async fn unsubscribe_forced(&mut self, name: &str, error: Value) {
        let Some(subscription) = self.subscriptions.remove(name) else {
            return;
        };
        self.broker.hub.remove(&subscription.slot);
        self.broker.metrics.subscriptions.decrement(1.0);
        let config = subscription.service.config.clone();
        let answer = self
            .callback(
                config.before_unsubscribe.as_deref(),
                name,
                &subscription,
                None,
                false,
                None,
            )
            .await
            .unwrap_or_default();
        let _ = self
            .callback(
                config.on_unsubscribe.as_deref(),
                name,
                &subscription,
                None,
                false,
                None,
            )
            .await;
        self.send(protocol::forced_unsubscribe(
            name,
            error,
            answer.get("data").cloned(),
            &subscription.extra,
        ));
    }

    /// The connection ended: every subscription goes, with its unsubscribe callbacks.
    pub async fn close(&mut self) {
        self.set_grant(None);
        let subscriptions = self.subscriptions.drain();
        for (_, subscription) in &subscriptions {
            self.broker.hub.remove(&subscription.slot);
            self.broker.metrics.subscriptions.decrement(1.0);
        }
        for (name, subscription) in &subscriptions {
            let config = &subscription.service.config;
            if config.before_unsubscribe.is_none() && config.on_unsubscribe.is_none() {
                continue;
            }
            let _ = self
                .callback(
                    config.before_unsubscribe.as_deref(),
                    name,
                    subscription,
                    None,
                    false,
                    None,
                )
                .await;
            let _ = self
                .callback(
                    config.on_unsubscribe.as_deref(),
                    name,
                    subscription,
                    None,
                    false,
                    None,
                )
                .await;
        }
        self.timers.clear();
    }

    /// Asks the service's authorizer (if any); the answer's `authorizer_fields` are kept.
    async fn authorize(
        &self,
        name: &str,
        service: &ServiceRules,
        extra: &Map<String, Value>,
        previous: Option<&Map<String, Value>>,
    ) -> Result<Option<Map<String, Value>>, EventError> {
        let Some(url) = service.config.authorizer.as_deref() else {
            return Ok(None);
        };
        let body = self.request_body(name, extra, previous, None);
        let answer = self
            .broker
            .callbacks
            .post(url, &body, &self.request_id)
            .await;
        if !is_ok(&answer) {
            return Err(error_of(&answer, protocol::ERR_UNAUTHORIZED));
        }
        Ok(Some(pick(&answer, &service.config.authorizer_fields)))
    }

    /// Calls one of a service's callbacks (`url` unset = an implicit `{"status":"ok"}`). With
    /// `raise`, a failed answer becomes the event's error (`default_error` or
    /// `Unhandled exception.`).
    async fn callback(
        &self,
        url: Option<&str>,
        name: &str,
        subscription: &Subscription,
        message: Option<Value>,
        raise: bool,
        default_error: Option<&str>,
    ) -> Result<Map<String, Value>, EventError> {
        let Some(url) = url else {
            let mut ok = Map::new();
            ok.insert("status".into(), "ok".into());
            return Ok(ok);
        };
        let body = self.request_body(
            name,
            &subscription.extra,
            subscription.authorizer_data.as_ref(),
            message,
        );
        let answer = self
            .broker
            .callbacks
            .post(url, &body, &self.request_id)
            .await;
        if raise && !is_ok(&answer) {
            return Err(error_of(
                &answer,
                default_error.unwrap_or(protocol::ERR_UNHANDLED_EXCEPTION),
            ));
        }
        Ok(answer)
    }

    /// `{"subscription": name}` + extra fields + authorizer fields + auth fields (+ `data`).
    fn request_body(
        &self,
        name: &str,
        extra: &Map<String, Value>,
        authorizer_data: Option<&Map<String, Value>>,
        message: Option<Value>,
    ) -> Value {
        let mut body = Map::new();
        body.insert("subscription".into(), name.into());
        body.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(fields) = authorizer_data {
            body.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        body.extend(self.auth.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(message) = message {
            body.insert("data".into(), message);
        }
        Value::Object(body)
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    fn schedule_timers(
        &mut self,
        name: &Arc<str>,
        service: &ServiceRules,
        generation: u64,
        first: bool,
    ) {
        let config = &service.config;
        let now = Instant::now();
        if config.authorizer.is_some()
            && let Some(period) = config.authorization_renewal_period
        {
            let jitter = config.authorization_renewal_jitter.unwrap_or_default();
            let early = jitter.mul_f64(crate::random_fraction()).min(period);
            self.timers.push(Reverse(Timer {
                due: now + (period - early),
                generation,
                kind: TimerKind::Reauthorize,
                name: name.clone(),
            }));
        }
        if first
            && config.on_heartbeat.is_some()
            && let Some(period) = config.heartbeat_period
        {
            // Spread the first heartbeats so a redeploy does not send them all at once.
            self.timers.push(Reverse(Timer {
                due: now + period.mul_f64(crate::random_fraction()),
                generation,
                kind: TimerKind::Heartbeat,
                name: name.clone(),
            }));
        }
    }

    /// When the next re-authorization, heartbeat or token expiry is due.
    pub fn next_timer(&self) -> Option<Instant> {
        let next = self.timers.peek().map(|Reverse(timer)| timer.due);
        match (&self.grant, next) {
            (Some(grant), Some(next)) => Some(grant.expires.min(next)),
            (Some(grant), None) => Some(grant.expires),
            (None, next) => next,
        }
    }

    /// Ends an expired token's authentication, then runs the re-authorizations and heartbeats
    /// that are due.
    pub async fn run_timers(&mut self) {
        let now = Instant::now();
        if self
            .grant
            .as_ref()
            .is_some_and(|grant| grant.expires <= now)
        {
            self.end_authentication(protocol::ERR_TOKEN_EXPIRED).await;
        }
        while let Some(Reverse(timer)) = self.timers.peek() {
            if timer.due > now {
                break;
            }
            let Some(Reverse(timer)) = self.timers.pop() else {
                break;
            };
            let current = self
                .subscriptions
                .get(&timer.name)
                .is_some_and(|sub| sub.generation == timer.generation);
            if !current {
                continue;
            }
            match timer.kind {
                TimerKind::Reauthorize => self.reauthorize(&timer.name, timer.generation).await,
                TimerKind::Heartbeat => self.heartbeat(&timer.name, timer.generation).await,
            }
        }
    }

    async fn reauthorize(&mut self, name: &Arc<str>, generation: u64) {
        let Some(sub) = self.subscriptions.get(name) else {
            return;
        };
        let service = sub.service.clone();
        let previous = sub.authorizer_data.clone();
        let extra = sub.extra.clone();
        match self
            .authorize(name, &service, &extra, previous.as_ref())
            .await
        {
            Ok(fields) => {
                let changed = previous.is_some() && fields != previous;
                if let Some(sub) = self.subscriptions.get_mut(name) {
                    sub.authorizer_data = fields;
                }
                if changed && let Some(sub) = self.subscriptions.get(name) {
                    let _ = self
                        .callback(
                            service.config.on_authorization_change.as_deref(),
                            name,
                            sub,
                            None,
                            false,
                            None,
                        )
                        .await;
                }
                self.schedule_timers(name, &service, generation, false);
            }
            Err(err) => {
                tracing::info!(session = self.id, subscription = %name, error = %err.error, "authorization expired");
                self.unsubscribe_forced(name, err.error).await;
            }
        }
    }

    async fn heartbeat(&mut self, name: &Arc<str>, generation: u64) {
        let Some(sub) = self.subscriptions.get(name) else {
            return;
        };
        let service = sub.service.clone();
        if let Err(err) = self
            .callback(
                service.config.on_heartbeat.as_deref(),
                name,
                sub,
                None,
                true,
                None,
            )
            .await
        {
            tracing::warn!(subscription = %name, error = %err.error, "heartbeat failed");
        }
        if let Some(period) = service.config.heartbeat_period {
            self.timers.push(Reverse(Timer {
                due: Instant::now() + period,
                generation,
                kind: TimerKind::Heartbeat,
                name: name.clone(),
            }));
        }
    }
}

/// The answer's `error` (or `default`), with its `data` when that is truthy.
fn error_of(answer: &Map<String, Value>, default: &str) -> EventError {
    EventError {
        error: answer
            .get("error")
            .cloned()
            .unwrap_or_else(|| default.into()),
        data: answer
            .get("data")
            .filter(|d| !protocol::is_falsy(Some(d)))
            .cloned(),
    }
}

/// A session's subscriptions by name. A list, not a hash map: sessions hold few (at most
/// `limits.max_subscriptions`), and an idle connection's map of one would cost four buckets.
#[derive(Default)]
struct Subscriptions(Vec<(Arc<str>, Subscription)>);

impl Subscriptions {
    fn position(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|(n, _)| **n == *name)
    }

    fn get(&self, name: &str) -> Option<&Subscription> {
        self.position(name).map(|at| &self.0[at].1)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Subscription> {
        self.position(name).map(|at| &mut self.0[at].1)
    }

    fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds (or replaces) a subscription.
    fn insert(&mut self, name: Arc<str>, subscription: Subscription) {
        match self.position(&name) {
            Some(at) => self.0[at].1 = subscription,
            None => {
                // Most sessions hold one or two: no room for four from the first push.
                if self.0.len() < 4 {
                    self.0.reserve_exact(1);
                }
                self.0.push((name, subscription));
            }
        }
    }

    fn remove(&mut self, name: &str) -> Option<Subscription> {
        let at = self.position(name)?;
        let (_, subscription) = self.0.swap_remove(at);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(subscription)
    }

    fn drain(&mut self) -> Vec<(Arc<str>, Subscription)> {
        std::mem::take(&mut self.0)
    }

    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Subscription)> {
        self.0.iter().map(|(name, sub)| (name, sub))
    }

    fn values(&self) -> impl Iterator<Item = &Subscription> {
        self.0.iter().map(|(_, sub)| sub)
    }
}

/// Whether the subscription's built-in rule (if any) allows a session with `auth` fields.
fn allowed_by_rule(name: &str, service: &ServiceRules, auth: &Map<String, Value>) -> bool {
    let topic = name.get(service.name.len() + 1..).unwrap_or_default();
    service
        .rule
        .as_ref()
        .is_none_or(|rule| rule.allows(auth, topic))
}

/// The listed fields present in `source`.
fn pick(source: &Map<String, Value>, fields: &[String]) -> Map<String, Value> {
    fields
        .iter()
        .filter_map(|field| Some((field.clone(), source.get(field)?.clone())))
        .collect()
}

/// `<service>.<topic>` with both parts non-empty, for a configured service.
fn validate_name<'a>(
    name: Option<&'a str>,
    service: Option<&Arc<ServiceRules>>,
) -> Result<(&'a str, Arc<ServiceRules>), EventError> {
    let Some(name) = name else {
        return Err(protocol::ERR_INVALID_SUBSCRIPTION_FORMAT.into());
    };
    match name.split_once('.') {
        Some((service, topic))
            if !service.is_empty()
                && !topic.is_empty()
                && name.chars().count() <= MAX_SUBSCRIPTION_LEN => {}
        _ => return Err(protocol::ERR_INVALID_SUBSCRIPTION_FORMAT.into()),
    }
    match service {
        Some(service) => Ok((name, service.clone())),
        None => Err(protocol::ERR_INVALID_SERVICE.into()),
    }
}
