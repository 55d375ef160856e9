//! Posting an Experiment's verdict to a cohort leaderboard (`spec.leaderboard`) as the
//! verification of one student's submission: what is owed (pure), the post (the leaderboard's
//! own client and wire types), and the line the status keeps.
//!
//! The post is owed once the Experiment has a result. The server stores one verification per
//! submission (a second post replaces the first), so a post repeated after a crash is harmless.
//! A refusal (401, 403, 404, 409, 422, ...) is final and said in the status; an unreachable or
//! failing server (5xx, 429, a timeout) and a missing token Secret are retried.

use crate::experiment::{Experiment, ExperimentStatus, FAILED, LeaderboardTarget, SUCCEEDED};
use hyper::{Method, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use observatory_leaderboard_server::client::{self, ClientError};
use observatory_leaderboard_server::wire::{Verification, Verified};
use observatory_stats::RatioInterval;

/// How long a post may take before it counts as not made.
pub const POST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The status line of a post still to be made (a later reconcile tries again).
pub const NOT_YET: &str = "not posted yet";

/// What a reconcile of a finished Experiment owes its leaderboard.
#[derive(Clone, Debug, PartialEq)]
pub enum Owed {
    /// No leaderboard, or the post is settled.
    Nothing,
    /// Post this verification.
    Post(Verification),
    /// Nothing to post, and the status should say why (once).
    Note(String),
}

/// What `e` (with its recorded status) owes its leaderboard now.
pub fn owed(e: &Experiment) -> Owed {
    let (Some(_), Some(status)) = (&e.spec.leaderboard, &e.status) else {
        return Owed::Nothing;
    };
    if status.observed_generation != e.metadata.generation {
        return Owed::Nothing;
    }
    let settled = status
        .leaderboard
        .as_deref()
        .is_some_and(|l| !l.starts_with(NOT_YET));
    if settled {
        return Owed::Nothing;
    }
    match (status.phase.as_str(), &status.result) {
        (SUCCEEDED, Some(r)) => Owed::Post(Verification {
            passed: r.passed,
            ratio: Some(RatioInterval {
                ratio: r.ratio,
                low: r.low,
                high: r.high,
            }),
            machine: machine(e),
        }),
        (FAILED, _) => Owed::Note(format!(
            "not posted: the Experiment failed before its verdict ({})",
            status.message
        )),
        _ => Owed::Nothing,
    }
}

/// How the board names where the re-run happened.
fn machine(e: &Experiment) -> String {
    let name = format!(
        "Experiment {}/{}",
        e.namespace().unwrap_or_default(),
        e.name_any()
    );
    // The server takes at most 200 bytes (names are at most 253 + 63).
    name.chars().take(200).collect()
}

/// How a post ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Posted {
    /// Settled: the status line (`posted: ...` or `refused: ...`).
    Done { line: String, refused: bool },
    /// Not now: why (the status says `not posted yet: why`).
    Retry(String),
}

impl Posted {
    pub fn line(&self) -> String {
        match self {
            Posted::Done { line, .. } => line.clone(),
            Posted::Retry(why) => format!("{NOT_YET}: {why}; retrying"),
        }
    }
}

/// What the server's answer to a post means for the Experiment.
pub fn outcome(answer: Result<Verified, ClientError>) -> Posted {
    match answer {
        Ok(v) if v.flagged => Posted::Done {
            line: "posted: FLAGGED: the re-run disagrees with the self-reported ratio beyond both intervals".into(),
            refused: false,
        },
        Ok(v) => Posted::Done {
            line: format!(
                "posted: {}",
                if v.agrees {
                    "agrees with the self-reported ratio"
                } else {
                    "recorded"
                }
            ),
            refused: false,
        },
        Err(ClientError::Status { status, message })
            if status.is_client_error()
                && status != StatusCode::TOO_MANY_REQUESTS
                && status != StatusCode::REQUEST_TIMEOUT =>
        {
            Posted::Done {
                line: format!("refused: {status}: {}", short(&message)),
                refused: true,
            }
        }
        Err(e) => Posted::Retry(short(&e.to_string())),
    }
}

/// A server's message, bounded (a status is no place for a page of text).
fn short(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= 300 {
        return s.to_string();
    }
    let mut out: String = s.chars().take(300).collect();
    out.push('…');
    out
}

/// The label a Secret must carry for its `token` to be posted to a leaderboard. Whoever may
/// create an Experiment names the Secret and the URL: without it, any Secret with a `token`
/// key in the namespace (a ServiceAccount's, say) could be sent to a server of their choosing.
pub const TOKEN_LABEL: &str = "observatory.dev/leaderboard-token";

/// The instructor's token from the target's Secret (key `token`), in the Experiment's
/// namespace; only from a Secret labelled [`TOKEN_LABEL`]`=true`, never a ServiceAccount's.
async fn token(client: &Client, ns: &str, t: &LeaderboardTarget) -> Result<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = &t.token_secret;
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| format!("reading Secret {ns}/{name}: {e}"))?
        .ok_or_else(|| format!("Secret {ns}/{name} does not exist"))?;
    let marked = secret.labels().get(TOKEN_LABEL).map(String::as_str) == Some("true");
    let service_account = secret.type_.as_deref() == Some("kubernetes.io/service-account-token");
    if !marked || service_account {
        return Err(format!(
            "Secret {ns}/{name} is not a leaderboard token: it must carry the label {TOKEN_LABEL}=true (and not be a ServiceAccount's)"
        ));
    }
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .ok_or_else(|| format!("Secret {ns}/{name} has no key `token`"))?;
    let token = String::from_utf8(bytes.0.clone())
        .map_err(|_| format!("Secret {ns}/{name}: `token` is not UTF-8"))?;
    Ok(token.trim().to_string())
}

/// Post `v` to `e`'s leaderboard.
pub async fn post(client: &Client, e: &Experiment, v: &Verification) -> Posted {
    let Some(t) = &e.spec.leaderboard else {
        return Posted::Retry("no spec.leaderboard".into());
    };
    let ns = e.namespace().unwrap_or_default();
    let token = match token(client, &ns, t).await {
        Ok(token) => token,
        Err(why) => return Posted::Retry(why),
    };
    let path = format!(
        "/api/cohorts/{}/submissions/{}/verification",
        t.cohort, t.submission
    );
    let mut leaderboard = client::Client::new(&t.url, Some(&token));
    // A reconcile does not wait long, nor read much: the answer is two booleans.
    leaderboard.timeout = POST_TIMEOUT;
    leaderboard.max_body = 64 * 1024;
    let answer = leaderboard
        .send::<_, Verified>(Method::POST, &path, v)
        .await
        .map(|(_, v)| v);
    outcome(answer)
}

/// The status with the post's line.
pub fn with_line(status: &ExperimentStatus, line: String) -> ExperimentStatus {
    ExperimentStatus {
        leaderboard: Some(line),
        ..status.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{ExperimentResult, RUNNING};
    use crate::fixtures::experiment;

    fn finished(phase: &str, line: Option<&str>) -> Experiment {
        let mut e = experiment();
        e.spec.leaderboard = Some(LeaderboardTarget {
            url: "http://leaderboard.observatory.svc:8088".into(),
            cohort: "c".into(),
            submission: "s".into(),
            token_secret: "t".into(),
        });
        e.status = Some(ExperimentStatus {
            observed_generation: e.metadata.generation,
            phase: phase.into(),
            message: "why".into(),
            result: (phase == SUCCEEDED).then(|| ExperimentResult {
                ratio: 0.5,
                low: 0.45,
                high: 0.55,
                passed: true,
                ..Default::default()
            }),
            leaderboard: line.map(str::to_string),
            ..Default::default()
        });
        e
    }

    #[test]
    fn a_post_is_owed_once_there_is_a_verdict_and_until_it_is_settled() {
        match owed(&finished(SUCCEEDED, None)) {
            Owed::Post(v) => {
                assert!(v.passed);
                let r = v.ratio.unwrap();
                assert_eq!((r.ratio, r.low, r.high), (0.5, 0.45, 0.55));
                assert_eq!(v.machine, "Experiment observatory/lab-02-batching");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            owed(&finished(SUCCEEDED, Some("not posted yet: x; retrying"))),
            Owed::Post(_)
        ));
        for settled in [
            "posted: agrees with the self-reported ratio",
            "refused: 404 Not Found: x",
        ] {
            assert_eq!(owed(&finished(SUCCEEDED, Some(settled))), Owed::Nothing);
        }
        assert_eq!(owed(&finished(RUNNING, None)), Owed::Nothing);
        assert!(matches!(owed(&finished(FAILED, None)), Owed::Note(n) if n.contains("why")));
        assert_eq!(
            owed(&finished(FAILED, Some("not posted: x"))),
            Owed::Nothing
        );
        let mut none = finished(SUCCEEDED, None);
        none.spec.leaderboard = None;
        assert_eq!(owed(&none), Owed::Nothing, "no leaderboard, nothing owed");
        let mut stale = finished(SUCCEEDED, None);
        stale.metadata.generation = Some(2);
        assert_eq!(
            owed(&stale),
            Owed::Nothing,
            "a verdict of an older spec is not posted"
        );
    }

    #[test]
    fn the_servers_answer_decides_between_settled_and_retried() {
        let status = |code: u16, message: &str| {
            outcome(Err(ClientError::Status {
                status: StatusCode::from_u16(code).unwrap(),
                message: message.into(),
            }))
        };
        for code in [400, 401, 403, 404, 409, 413, 422] {
            assert!(
                matches!(status(code, "no"), Posted::Done { refused: true, ref line } if line.starts_with("refused: ")),
                "{code} is final"
            );
        }
        for code in [408, 429, 500, 502, 503] {
            assert!(
                matches!(status(code, "later"), Posted::Retry(_)),
                "{code} is retried"
            );
        }
        let flagged = outcome(Ok(Verified {
            agrees: false,
            flagged: true,
        }));
        assert!(flagged.line().starts_with("posted: FLAGGED"), "{flagged:?}");
        let agrees = outcome(Ok(Verified {
            agrees: true,
            flagged: false,
        }));
        assert_eq!(agrees.line(), "posted: agrees with the self-reported ratio");
        // A hostile server's page of text is cut in the status.
        let long = status(422, &"x".repeat(10_000)).line();
        assert!(long.chars().count() < 400, "{}", long.len());
        assert!(Posted::Retry("down".into()).line().starts_with(NOT_YET));
    }
}
