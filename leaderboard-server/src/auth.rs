//! Tokens: 32 random bytes, shown once, stored as their sha256; who holds one (the server's
//! admin, a cohort's instructor, or a student) and what they may do. A missing, unknown or
//! revoked token is 401; a valid token on a route that is not its holder's is 403.

use crate::db::{Db, DbError};
use base64::Engine;

/// A new token (`obs_` and 43 base64url characters).
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "obs_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// What the server stores of a token.
pub fn digest(token: &str) -> String {
    observatory_leaderboard::sha256_hex(token.as_bytes())
}

/// The holder of a valid token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Instructor { cohort: String },
    Student { cohort: String, student: String },
}

/// Why a request is not allowed.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("no token: send `Authorization: Bearer TOKEN`")]
    Missing,
    #[error("unknown token")]
    Unknown,
    #[error("this token was revoked: ask your instructor for a new one")]
    Revoked,
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The token a request carries: `Authorization: Bearer TOKEN`, or the web page's cookie.
pub fn token_of(headers: &http::HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        return v
            .strip_prefix("Bearer ")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
    }
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == crate::COOKIE)
        .map(|(_, v)| v.to_string())
        .find(|t| !t.is_empty())
}

/// Who holds `token`.
pub async fn caller(db: &Db, admin_sha256: &str, token: &str) -> Result<Caller, Denied> {
    let sha = digest(token);
    if sha == admin_sha256 {
        return Ok(Caller::Admin);
    }
    let row = db.token(&sha).await?.ok_or(Denied::Unknown)?;
    if row.revoked {
        return Err(Denied::Revoked);
    }
    Ok(if row.student.is_empty() {
        Caller::Instructor { cohort: row.cohort }
    } else {
        Caller::Student {
            cohort: row.cohort,
            student: row.student,
        }
    })
}

impl Caller {
    /// The cohort's instructor (or the server's admin).
    pub fn instructor_of(&self, cohort: &str) -> Result<(), Denied> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Instructor { cohort: c } if c == cohort => Ok(()),
            Caller::Instructor { .. } => Err(Denied::Forbidden(format!(
                "this instructor token is not for cohort {cohort}"
            ))),
            Caller::Student { .. } => Err(Denied::Forbidden(
                "a student token cannot do this: it needs the cohort's instructor token".into(),
            )),
        }
    }

    /// A student of the cohort: their id.
    pub fn student_of(&self, cohort: &str) -> Result<&str, Denied> {
        match self {
            Caller::Student { cohort: c, student } if c == cohort => Ok(student),
            Caller::Student { .. } => Err(Denied::Forbidden(format!(
                "this student token is not for cohort {cohort}"
            ))),
            _ => Err(Denied::Forbidden(
                "only a student uploads a submission, with their own token".into(),
            )),
        }
    }

    /// The key the rate limit counts by.
    pub fn key(&self) -> String {
        match self {
            Caller::Admin => "admin".into(),
            Caller::Instructor { cohort } => format!("i/{cohort}"),
            Caller::Student { cohort, student } => format!("s/{cohort}/{student}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_stored_as_digests() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 43);
        assert_eq!(digest(&a).len(), 64);
        assert_ne!(digest(&a), digest(&b));
        assert!(!digest(&a).contains(&a[4..]));
    }

    #[test]
    fn the_token_comes_from_the_header_or_the_cookie() {
        let mut h = http::HeaderMap::new();
        assert_eq!(token_of(&h), None);
        h.insert(
            http::header::COOKIE,
            "a=b; observatory_token=obs_x".parse().unwrap(),
        );
        assert_eq!(token_of(&h).as_deref(), Some("obs_x"));
        h.insert(http::header::AUTHORIZATION, "Bearer obs_y".parse().unwrap());
        assert_eq!(token_of(&h).as_deref(), Some("obs_y"));
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(
            token_of(&h),
            None,
            "a header that is not a bearer token is no token"
        );
    }

    #[test]
    fn a_student_is_not_an_instructor_and_cohorts_do_not_mix() {
        let s = Caller::Student {
            cohort: "c1".into(),
            student: "ada".into(),
        };
        assert!(s.instructor_of("c1").is_err());
        assert_eq!(s.student_of("c1").unwrap(), "ada");
        assert!(s.student_of("c2").is_err());
        let i = Caller::Instructor {
            cohort: "c1".into(),
        };
        assert!(i.instructor_of("c1").is_ok());
        assert!(i.instructor_of("c2").is_err());
        assert!(i.student_of("c1").is_err());
        assert!(Caller::Admin.instructor_of("any").is_ok());
    }
}
