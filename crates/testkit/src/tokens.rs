//! Access tokens for tests, signed with a test key generated once per test process, plus the
//! deliberately bad tokens a verifier must refuse.
//!
//! ```ignore
//! let app = TestApp::spawn_with::<template::Template>(testkit::tokens::trust).await;
//! let ada = testkit::tokens::user(ADA).admin().mint();
//! let response = app.with_token(&ada).get("/api/template/v1/notes").await;
//! ```

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use identity::{Claims, SigningKey};
use kit::Settings;
use kit::config::AuthSettings;
use uuid::Uuid;

use crate::TestApp;

/// How long minted tokens are valid unless told otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);

static KEY: LazyLock<SigningKey> =
    LazyLock::new(|| SigningKey::generate("testkit").expect("generate the test signing key"));

/// The test signing key (`kid` = `testkit`).
pub fn signing_key() -> &'static SigningKey {
    &KEY
}

/// The test public key, base64: the value of `auth.public_key` that trusts minted tokens.
pub fn public_key() -> String {
    KEY.public_key().to_base64()
}

/// Makes a service under test trust tokens minted here (fixed public key, default issuer and
/// audience). Use as `TestApp::spawn_with(service, testkit::tokens::trust)`, or call it from
/// your own settings closure.
pub fn trust<A>(settings: &mut Settings<A>) {
    settings.auth.jwks_url = None;
    settings.auth.public_key = Some(public_key());
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A user token for `id`: a new session, email `<id>@users.test`, name `Test User`, no roles.
pub fn user(id: Uuid) -> Token {
    let defaults = AuthSettings::default();
    let iat = now();
    Token {
        claims: Claims {
            iss: defaults.issuer,
            aud: vec![defaults.audience],
            sub: id,
            sid: Some(Uuid::now_v7()),
            jti: Uuid::now_v7(),
            iat,
            exp: iat + DEFAULT_LIFETIME.as_secs() as i64,
            nbf: None,
            roles: Vec::new(),
            email: Some(format!("{id}@users.test")),
            name: Some("Test User".into()),
            email_verified: true,
            scope: None,
        },
    }
}

/// A service token for client `client`: `roles: ["service"]`, no session, no scope.
pub fn service(client: Uuid) -> Token {
    let mut token = user(client);
    token.claims.sid = None;
    token.claims.email = None;
    token.claims.name = None;
    token.claims.email_verified = false;
    token.claims.roles = vec![identity::SERVICE_ROLE.into()];
    token
}

/// `claims` signed with the test key.
pub fn mint(claims: &Claims) -> String {
    KEY.sign(claims).expect("sign a test token")
}

/// Claims being put together; finish with [`Token::mint`] (valid) or one of the bad forms.
#[derive(Debug, Clone)]
pub struct Token {
    pub claims: Claims,
}

impl Token {
    pub fn email(mut self, email: &str) -> Self {
        self.claims.email = Some(email.into());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.claims.name = Some(name.into());
        self
    }

    pub fn role(mut self, role: &str) -> Self {
        self.claims.roles.push(role.into());
        self
    }

    pub fn admin(self) -> Self {
        self.role(identity::ADMIN_ROLE)
    }

    pub fn session(mut self, sid: Uuid) -> Self {
        self.claims.sid = Some(sid);
        self
    }

    pub fn scope(mut self, scope: &str) -> Self {
        self.claims.scope = Some(scope.into());
        self
    }

    pub fn issuer(mut self, iss: &str) -> Self {
        self.claims.iss = iss.into();
        self
    }

    pub fn audience(mut self, aud: &str) -> Self {
        self.claims.aud = vec![aud.into()];
        self
    }

    /// Issued `ago` in the past (and valid for [`DEFAULT_LIFETIME`] from then).
    pub fn issued_ago(mut self, ago: Duration) -> Self {
        let lifetime = self.claims.exp - self.claims.iat;
        self.claims.iat = now() - ago.as_secs() as i64;
        self.claims.exp = self.claims.iat + lifetime;
        self
    }

    /// Expired `ago` in the past (issued a lifetime before that).
    pub fn expired_ago(mut self, ago: Duration) -> Self {
        self.claims.exp = now() - ago.as_secs() as i64;
        self.claims.iat = self.claims.exp - DEFAULT_LIFETIME.as_secs() as i64;
        self
    }

    /// Not valid before `ahead` from now.
    pub fn not_before_in(mut self, ahead: Duration) -> Self {
        self.claims.nbf = Some(now() + ahead.as_secs() as i64);
        self
    }

    /// Signed with the test key.
    pub fn mint(&self) -> String {
        mint(&self.claims)
    }

    /// Signed with another key (say, one served by a test JWKS, or one nobody trusts).
    pub fn signed_with(&self, key: &SigningKey) -> String {
        key.sign(&self.claims).expect("sign a test token")
    }

    /// `alg: none` with an empty signature: the classic forgery.
    pub fn unsigned(&self) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        format!("{header}.{}.", self.payload())
    }

    /// HS256 with the test *public* key as the HMAC secret: the algorithm-confusion forgery
    /// (anyone has the public key). `as_text` uses the base64 text of the key (as a verifier
    /// reading `auth.public_key` verbatim would), otherwise its 32 raw bytes.
    pub fn hs256_with_public_key(&self, as_text: bool) -> String {
        let public = KEY.public_key();
        let secret = if as_text {
            public.to_base64().into_bytes()
        } else {
            public.as_bytes().to_vec()
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(KEY.kid().to_owned());
        jsonwebtoken::encode(
            &header,
            &self.claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .expect("sign an HS256 token")
    }

    /// A validly signed token whose payload was then changed (`change` edits the claims), the
    /// signature left as it was.
    pub fn tampered(&self, change: impl FnOnce(&mut Claims)) -> String {
        let signed = self.mint();
        let mut parts = signed.split('.');
        let (Some(header), Some(_), Some(signature)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("a signed token has three parts: {signed}");
        };
        let mut claims = self.claims.clone();
        change(&mut claims);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims to JSON"));
        format!("{header}.{payload}.{signature}")
    }

    fn payload(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&self.claims).expect("claims to JSON"))
    }
}

/// Requests to a [`TestApp`] carrying `Authorization: Bearer <token>`.
pub struct Authed<'a> {
    app: &'a TestApp,
    token: String,
}

impl TestApp {
    /// Sends the following request with this bearer token: `app.with_token(&t).get(path)`.
    pub fn with_token(&self, token: &str) -> Authed<'_> {
        Authed {
            app: self,
            token: token.to_owned(),
        }
    }
}

impl Authed<'_> {
    /// A request to build further (headers, body) before sending.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.app
            .client
            .request(method, self.app.url(path))
            .bearer_auth(&self.token)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("GET")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn patch_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.request(reqwest::Method::PATCH, path)
            .json(body)
            .send()
            .await
            .expect("PATCH")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::DELETE, path)
            .send()
            .await
            .expect("DELETE")
    }
}
