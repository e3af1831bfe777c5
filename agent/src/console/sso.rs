//! Single sign-on with OpenID Connect: the authorization code flow with PKCE, as a relying
//! party of the organisation's identity provider (Entra ID, Okta, Ping, Keycloak, ...).
//!
//! The `openidconnect` crate does the protocol (discovery, PKCE, the code exchange, the ID
//! token's signature through the provider's JWKS, `iss`, `aud`, `exp`, `nonce`); this module
//! holds what is phiwatch's: the pending sign-ins (each `state` usable once, from the
//! browser that started it), the bounds on `iat`, the key rotation (an unknown signing key
//! re-reads the JWKS once), and the mapping from the provider's groups to a console role.

use super::authz::Role;
use super::fleet::Pool;
use super::sso_pending::{Ledger, Pending};
use crate::config::OidcConfig;
use openidconnect::core::{CoreAuthenticationFlow, CoreGenderClaim, CoreJsonWebKeySet};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken, IdTokenClaims, IssuerUrl,
    LogoutRequest, Nonce, PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl,
    ProviderMetadataWithLogout, RedirectUrl, Scope, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Discovery is read again after this long (new endpoints, new keys).
const METADATA_FOR: Duration = Duration::from_secs(3600);
/// The JWKS is re-read for an unknown key at most this often.
const JWKS_REFRESH_GAP: Duration = Duration::from_secs(10);
/// An ID token from the code exchange is fresh: one issued longer ago than this (plus the
/// skew) is refused.
const IAT_MAX_AGE: Duration = Duration::from_secs(600);
/// The event a back-channel logout token carries.
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

#[derive(Debug, Error)]
pub enum SsoError {
    #[error("the identity provider cannot be reached: {0}")]
    Discovery(String),
    #[error("this sign-in expired or was already used; please sign in again")]
    UnknownState,
    #[error("this sign-in was started in another browser; please sign in again")]
    OtherBrowser,
    #[error("too many sign-ins are in progress; try again in a minute")]
    Busy,
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the identity provider's token answer was refused: {0}")]
    Exchange(String),
    #[error("the identity provider's ID token was refused: {0}")]
    Token(String),
    #[error("the ID token has no {0:?} claim")]
    MissingClaim(String),
    #[error("{0} is not in any group that has a phiwatch role")]
    NoRole(String),
    #[error("the client secret's environment variable {0} is not set")]
    NoSecret(String),
    /// The fleet's database, where console nodes keep sign-ins in progress (logged in full).
    #[error("single sign-on cannot reach the fleet's database; try again shortly")]
    Store,
}

/// Who signed in, as the provider vouches for them.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The console user name (the `name_claim`).
    pub name: String,
    pub role: Role,
    pub staff_id: Option<String>,
    /// The ID token's expiry, in ms since the epoch.
    pub expires_ms: i64,
    /// The provider's subject and session id (for back-channel logout).
    pub sub: String,
    pub sid: Option<String>,
    /// Where to go after sign-in.
    pub next: String,
}

/// Every claim of the ID token, whatever the provider calls them: the role and staff id
/// claims are named in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AnyClaims {
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}
impl AdditionalClaims for AnyClaims {}

type Token = IdToken<
    AnyClaims,
    CoreGenderClaim,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJwsSigningAlgorithm,
>;
type Claims = IdTokenClaims<AnyClaims, CoreGenderClaim>;
type Rp = openidconnect::core::CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

struct Provider {
    metadata: ProviderMetadataWithLogout,
    read: Instant,
    jwks_read: Instant,
}

pub struct Sso {
    cfg: OidcConfig,
    secret: Option<String>,
    roles: Vec<(String, Role)>,
    http: reqwest::Client,
    provider: tokio::sync::Mutex<Option<Provider>>,
    /// Sign-ins in progress and logout tokens taken (each works once).
    ledger: Ledger,
}

impl Sso {
    /// The relying party for `cfg`; reads the client secret from its environment variable.
    pub fn new(cfg: &OidcConfig) -> Result<Self, SsoError> {
        let secret = match &cfg.client_secret_env {
            Some(var) => Some(
                std::env::var(var)
                    .ok()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| SsoError::NoSecret(var.clone()))?,
            ),
            None => None,
        };
        let roles = cfg
            .roles
            .iter()
            .filter_map(|r| Some((r.claim.clone(), Role::parse(&r.role)?)))
            .collect();
        // No redirects: a provider's endpoint that redirects elsewhere is not followed with
        // the client's secret or a user's code (the crate's advice against SSRF).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SsoError::Discovery(e.to_string()))?;
        Ok(Sso {
            cfg: cfg.clone(),
            secret,
            roles,
            http,
            provider: tokio::sync::Mutex::new(None),
            ledger: Ledger::memory(),
        })
    }

    /// Keeps sign-ins in progress and logout tokens taken in the fleet's database, shared
    /// by every console node.
    pub fn on_fleet(mut self, pool: Arc<Pool>) -> Self {
        self.ledger = Ledger::Fleet(pool);
        self
    }

    pub fn button(&self) -> &str {
        &self.cfg.button
    }

    /// Reads the provider's discovery document and keys (for `phiwatch check` and start-up).
    pub async fn discover(&self) -> Result<String, SsoError> {
        let mut p = self.provider.lock().await;
        self.fresh(&mut p, false).await?;
        let m = &p.as_ref().expect("just read").metadata;
        Ok(format!(
            "{} ({} signing key(s))",
            m.issuer().as_str(),
            m.jwks().keys().len()
        ))
    }

    async fn fresh(&self, p: &mut Option<Provider>, force: bool) -> Result<(), SsoError> {
        if !force && p.as_ref().is_some_and(|p| p.read.elapsed() < METADATA_FOR) {
            return Ok(());
        }
        let issuer = IssuerUrl::new(self.cfg.issuer.clone())
            .map_err(|e| SsoError::Discovery(e.to_string()))?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| SsoError::Discovery(crate::errors::chain(&e)))?;
        *p = Some(Provider {
            metadata,
            read: Instant::now(),
            jwks_read: Instant::now(),
        });
        Ok(())
    }

    /// Re-reads the JWKS alone (the provider rotated its keys).
    async fn refresh_keys(&self, p: &mut Provider) -> Result<bool, SsoError> {
        if p.jwks_read.elapsed() < JWKS_REFRESH_GAP {
            return Ok(false);
        }
        let keys = CoreJsonWebKeySet::fetch_async(p.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| SsoError::Discovery(crate::errors::chain(&e)))?;
        p.metadata = p.metadata.clone().set_jwks(keys);
        p.jwks_read = Instant::now();
        Ok(true)
    }

    fn client(&self, p: &Provider) -> Result<Rp, SsoError> {
        let redirect = RedirectUrl::new(self.cfg.redirect_url.clone())
            .map_err(|e| SsoError::Discovery(format!("redirect_url: {e}")))?;
        Ok(Rp::from_provider_metadata(
            p.metadata.clone(),
            ClientId::new(self.cfg.client_id.clone()),
            self.secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    /// Starts a sign-in: the provider's URL to send the browser to, with a fresh `state`,
    /// `nonce` and PKCE challenge. `browser` is the value of the cookie that binds the
    /// sign-in to this browser.
    pub async fn begin(&self, browser: &str, next: &str, from: &str) -> Result<String, SsoError> {
        let mut guard = self.provider.lock().await;
        self.fresh(&mut guard, false).await?;
        let p = guard.as_ref().expect("just read");
        let client = self.client(p)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in &self.cfg.scopes {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        drop(guard);
        let pending = Pending {
            browser: super::session::digest(browser),
            client: from.to_owned(),
            verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
            next: next.to_owned(),
            started_ms: crate::time::now_ms(),
        };
        self.ledger.hold(state.secret(), pending).await?;
        Ok(url.to_string())
    }

    /// Finishes a sign-in from the provider's redirect: the `state` is taken (a second use
    /// fails), the code exchanged with the PKCE verifier, the ID token checked, the role
    /// mapped.
    pub async fn finish(
        &self,
        browser: &str,
        state: &str,
        code: &str,
        iss: Option<&str>,
    ) -> Result<Identity, SsoError> {
        let Some(pending) = self.ledger.take(state).await? else {
            return Err(SsoError::UnknownState);
        };
        let nonce = Nonce::new(pending.nonce);
        if !super::session::same(&pending.browser, &super::session::digest(browser)) {
            return Err(SsoError::OtherBrowser);
        }
        let mut guard = self.provider.lock().await;
        self.fresh(&mut guard, false).await?;
        let p = guard.as_mut().expect("just read");
        // RFC 9207: a provider that names itself in the answer must name itself (a code
        // from another provider is not sent to this one's token endpoint).
        if let Some(i) = iss.filter(|i| *i != p.metadata.issuer().as_str()) {
            return Err(SsoError::Refused(format!(
                "the answer comes from another issuer ({i})"
            )));
        }
        let raw = {
            let client = self.client(p)?;
            let answer = client
                .exchange_code(AuthorizationCode::new(code.to_owned()))
                .map_err(|e| SsoError::Exchange(e.to_string()))?
                .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
                .request_async(&self.http)
                .await
                .map_err(|e| SsoError::Exchange(crate::errors::chain(&e)))?;
            answer
                .id_token()
                .ok_or_else(|| SsoError::Exchange("no id_token in the answer".into()))?
                .to_string()
        };
        let token: Token = raw
            .parse()
            .map_err(|e: serde_json::Error| SsoError::Token(e.to_string()))?;
        let claims = match self.verify(p, &token, &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(_))
                if self.refresh_keys(p).await? =>
            {
                self.verify(p, &token, &nonce)
            }
            other => other,
        }
        .map_err(|e| SsoError::Token(e.to_string()))?;
        self.identity(&claims, pending.next)
    }

    fn verify(
        &self,
        p: &Provider,
        token: &Token,
        nonce: &Nonce,
    ) -> Result<Claims, ClaimsVerificationError> {
        let skew = chrono::Duration::seconds(self.cfg.clock_skew_seconds as i64);
        let oldest = chrono::Duration::from_std(IAT_MAX_AGE).unwrap_or_default() + skew;
        let client = self
            .client(p)
            .map_err(|e| ClaimsVerificationError::Other(e.to_string()))?;
        let verifier = client
            .id_token_verifier()
            .set_time_fn(move || chrono::Utc::now() - skew)
            .set_issue_time_verifier_fn(move |iat| {
                iat_within(iat, skew, oldest).map_err(|e| e.to_string())
            });
        token.claims(&verifier, nonce).cloned()
    }

    fn identity(&self, claims: &Claims, next: String) -> Result<Identity, SsoError> {
        let all = serde_json::to_value(claims).unwrap_or(Value::Null);
        let name = claim_values(&all, &self.cfg.name_claim)
            .into_iter()
            .next()
            .ok_or_else(|| SsoError::MissingClaim(self.cfg.name_claim.clone()))?;
        let groups = claim_values(&all, &self.cfg.roles_claim);
        let role = self
            .roles
            .iter()
            .find(|(claim, _)| groups.iter().any(|g| g == claim))
            .map(|(_, role)| *role)
            .ok_or_else(|| SsoError::NoRole(name.clone()))?;
        let staff_id = match &self.cfg.staff_id_claim {
            Some(c) => Some(
                claim_values(&all, c)
                    .into_iter()
                    .next()
                    .ok_or_else(|| SsoError::MissingClaim(c.clone()))?,
            ),
            None => None,
        };
        Ok(Identity {
            name,
            role,
            staff_id,
            expires_ms: claims.expiration().timestamp_millis(),
            sub: claims.subject().as_str().to_owned(),
            sid: claim_values(&all, "sid").into_iter().next(),
            next,
        })
    }

    /// Checks a back-channel logout token (OpenID Connect Back-Channel Logout 1.0, 2.6): the
    /// provider's signature by a published key, `iss`, `aud`, `iat` (and `exp` if given),
    /// the logout event, no `nonce`, a `sub` or `sid`, and a `jti` not seen before. Answers
    /// the subject and session id.
    ///
    /// The crate's ID token verifier refuses the token's own `typ` (`logout+jwt`), so the
    /// claims are checked here; the signature is still the crate's, through the JWKS.
    pub async fn logout_token(
        &self,
        raw: &str,
    ) -> Result<(Option<String>, Option<String>), SsoError> {
        let mut guard = self.provider.lock().await;
        self.fresh(&mut guard, false).await?;
        let p = guard.as_mut().expect("just read");
        let claims = match self.verify_logout(p, raw) {
            Err(LogoutCheck::Key(_)) if self.refresh_keys(p).await? => self.verify_logout(p, raw),
            other => other,
        }
        .map_err(|e| SsoError::Token(e.to_string()))?;
        drop(guard);
        let jti = claim_values(&claims, "jti")
            .into_iter()
            .next()
            .ok_or_else(|| SsoError::MissingClaim("jti".into()))?;
        if !self.ledger.first_logout(&jti).await? {
            return Err(SsoError::Token("this logout token was already used".into()));
        }
        let sub = claim_values(&claims, "sub").into_iter().next();
        let sid = claim_values(&claims, "sid").into_iter().next();
        Ok((sub, sid))
    }

    fn verify_logout(&self, p: &Provider, raw: &str) -> Result<Value, LogoutCheck> {
        use base64::Engine as _;
        use openidconnect::{JsonWebKey as _, JsonWebKeyUse as _, JwsSigningAlgorithm as _};
        let bad = |m: &str| LogoutCheck::Bad(m.to_owned());
        let parts: Vec<&str> = raw.split('.').collect();
        let [head, body, sig] = parts[..] else {
            return Err(bad("not a signed JWT"));
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let json = |part: &str| -> Result<Value, LogoutCheck> {
            let bytes = b64.decode(part).map_err(|_| bad("not base64url"))?;
            serde_json::from_slice(&bytes).map_err(|_| bad("not JSON"))
        };
        let header = json(head)?;
        if let Some(t) = header.get("typ").and_then(Value::as_str) {
            if !t.eq_ignore_ascii_case("logout+jwt") && !t.eq_ignore_ascii_case("jwt") {
                return Err(LogoutCheck::Bad(format!("JWT type {t:?}")));
            }
        }
        let alg: openidconnect::core::CoreJwsSigningAlgorithm =
            serde_json::from_value(header.get("alg").cloned().unwrap_or(Value::Null))
                .map_err(|_| bad("unknown signing algorithm"))?;
        // A shared-secret (HS*) or unsigned token is not the provider's signature.
        if alg.uses_shared_secret() || alg == openidconnect::core::CoreJwsSigningAlgorithm::None {
            return Err(bad("the token is not signed with the provider's key"));
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let signature = b64
            .decode(sig)
            .map_err(|_| bad("signature not base64url"))?;
        let message = format!("{head}.{body}");
        let verified = p.metadata.jwks().keys().iter().any(|k| {
            kid.is_none_or(|kid| k.key_id().is_some_and(|id| id.as_str() == kid))
                && k.key_use().is_none_or(|u| u.allows_signature())
                && k.verify_signature(&alg, message.as_bytes(), &signature)
                    .is_ok()
        });
        if !verified {
            return Err(LogoutCheck::Key(
                "no published key verifies the signature".into(),
            ));
        }
        let claims = json(body)?;
        if claims.get("iss").and_then(Value::as_str) != Some(p.metadata.issuer().as_str()) {
            return Err(bad("issued by another issuer"));
        }
        if !claim_values(&claims, "aud").contains(&self.cfg.client_id) {
            return Err(bad("issued to another client"));
        }
        let skew = chrono::Duration::seconds(self.cfg.clock_skew_seconds as i64);
        let oldest = chrono::Duration::from_std(IAT_MAX_AGE).unwrap_or_default() + skew;
        let at = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_i64)
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        };
        let iat = at("iat").ok_or_else(|| bad("no iat"))?;
        iat_within(iat, skew, oldest).map_err(|e| LogoutCheck::Bad(e.to_string()))?;
        if at("exp").is_some_and(|exp| exp + skew < chrono::Utc::now()) {
            return Err(bad("expired"));
        }
        if claims.get("nonce").is_some() {
            return Err(bad("a logout token carries no nonce"));
        }
        let event = claims
            .get("events")
            .and_then(|e| e.get(BACKCHANNEL_EVENT))
            .is_some_and(Value::is_object);
        if !event {
            return Err(bad("not a logout token (no logout event)"));
        }
        if claims.get("sub").is_none() && claims.get("sid").is_none() {
            return Err(bad("names neither a subject nor a session"));
        }
        Ok(claims)
    }

    /// The provider's end-session URL for RP-initiated logout, when it has one: the browser
    /// comes back to the console's sign-in page.
    pub async fn logout_url(&self) -> Option<String> {
        let guard = self.provider.lock().await;
        let p = guard.as_ref()?;
        let end = p
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        let mut back = reqwest::Url::parse(&self.cfg.redirect_url).ok()?;
        back.set_path("/login");
        let mut req =
            LogoutRequest::from(end).set_client_id(ClientId::new(self.cfg.client_id.clone()));
        if let Ok(b) = PostLogoutRedirectUrl::new(back.to_string()) {
            req = req.set_post_logout_redirect_uri(b);
        }
        Some(req.http_get_url().to_string())
    }
}

/// Why a logout token was refused; `Key` may be cured by re-reading the provider's keys.
#[derive(Debug, Error)]
enum LogoutCheck {
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Bad(String),
}

/// `iat` is neither in the future nor older than `oldest` (both beyond the skew).
fn iat_within(
    iat: chrono::DateTime<chrono::Utc>,
    skew: chrono::Duration,
    oldest: chrono::Duration,
) -> Result<(), IatError> {
    let now = chrono::Utc::now();
    if iat > now + skew {
        Err(IatError::Future(iat))
    } else if iat < now - oldest {
        Err(IatError::Old(iat))
    } else {
        Ok(())
    }
}

#[derive(Debug, Error)]
enum IatError {
    #[error("issued in the future ({0})")]
    Future(chrono::DateTime<chrono::Utc>),
    #[error("issued too long ago ({0})")]
    Old(chrono::DateTime<chrono::Utc>),
}

/// A claim's values: a string, a number, or a list of them.
fn claim_values(all: &Value, name: &str) -> Vec<String> {
    let one = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match all.get(name) {
        Some(Value::Array(a)) => a.iter().filter_map(one).collect(),
        Some(v) => one(v).into_iter().collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_strings_numbers_or_lists() {
        let v = serde_json::json!({"groups": ["a", "", 7], "emp": 12345, "name": "olivia"});
        assert_eq!(claim_values(&v, "groups"), ["a", "7"]);
        assert_eq!(claim_values(&v, "emp"), ["12345"]);
        assert_eq!(claim_values(&v, "name"), ["olivia"]);
        assert!(claim_values(&v, "missing").is_empty());
    }

    #[test]
    fn config_roles_are_the_console_roles() {
        let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, crate::config::CONSOLE_ROLES);
    }
}
