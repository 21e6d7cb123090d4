//! Redaction of credentials before anything reaches a log, an error or JSON output.
//!
//! The URLs crossdock is given carry their secret in different places: a PostgreSQL
//! URL in its password (`postgres://user:pass@host/db`), a Slack-style webhook in its
//! path (`https://hooks.example/services/T0/B0/TOKEN`), a signed URL in its query. One
//! rule covers them all: keep what says *where* (scheme, user name, host, port) and
//! drop everything else. Anything that does not parse as `scheme://authority…` is
//! replaced whole — if we cannot tell where the secret is, we cannot keep any of it.

use std::fmt;

/// What replaces a secret.
pub const REDACTED: &str = "REDACTED";

/// `url` with its password, path, query and fragment removed:
/// `postgres://app:REDACTED@db:5432/…`, `https://hooks.example/…`.
/// Input that is not a `scheme://…` URL (a libpq `key=value` string, a bare token)
/// becomes [`REDACTED`].
pub fn url(url: &str) -> String {
    let Some(p) = Parts::parse(url) else {
        return REDACTED.into();
    };
    let mut out = String::with_capacity(url.len().min(128));
    out.push_str(p.scheme);
    out.push_str("://");
    match p.userinfo {
        // A password, or a user part we cannot split safely (a `/` belongs in neither a
        // user name nor a host: it is most likely an unescaped password).
        Some(u) if u.contains('/') => {
            out.push_str(REDACTED);
            out.push('@');
        }
        Some(u) => {
            let (user, password) = match u.split_once(':') {
                Some((user, _)) => (user, true),
                None => (u, false),
            };
            out.push_str(user);
            if password {
                out.push(':');
                out.push_str(REDACTED);
            }
            out.push('@');
        }
        None => {}
    }
    out.push_str(p.host);
    if !p.rest.is_empty() {
        out.push_str("/…");
    }
    out
}

/// `text` (an error message from a library that was handed `url`) with every secret
/// part of `url` replaced: the whole URL by [`url()`], then its password and its
/// path-and-query wherever they still appear, raw or percent-decoded. For messages we
/// do not build ourselves (database drivers, HTTP clients) and so cannot keep clean.
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &self::url(url));
    for secret in secrets(url) {
        out = out.replace(&secret, REDACTED);
    }
    out
}

/// The substrings of `url` that must not be shown, longest first (so a longer secret
/// is not half-replaced through a shorter one it contains).
fn secrets(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    match Parts::parse(url) {
        None => found.push(url.to_string()),
        Some(p) => {
            if let Some(u) = p.userinfo {
                // Same rule as `url()`: with a `/` in it we cannot be sure where the
                // user name ends, so all of it; and the password on its own in any case.
                if u.contains('/') {
                    found.push(u.to_string());
                }
                found.extend(u.split_once(':').map(|(_, password)| password.to_string()));
            }
            // The path is only secret past its first segment for some services and
            // wholly for others; the rule is the same as for `url()`: all of it.
            let rest = p.rest.trim_start_matches('/');
            if !rest.is_empty() {
                found.push(rest.to_string());
            }
        }
    }
    let decoded: Vec<String> = found.iter().filter_map(|s| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|d| d.into_owned())).collect();
    found.extend(decoded);
    // Shorter than this, a "secret" is indistinguishable from ordinary words in the
    // message and replacing it would make the message unreadable without protecting
    // anything worth the name.
    found.retain(|s| s.chars().count() >= 4);
    found.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    found.dedup();
    found
}

/// A URL split at the points redaction cares about. Borrowed from the input.
struct Parts<'a> {
    scheme: &'a str,
    /// Between `://` and the last `@` before the path's query/fragment, if any.
    userinfo: Option<&'a str>,
    /// Host and optional port.
    host: &'a str,
    /// From the first `/`, `?` or `#` after the host to the end.
    rest: &'a str,
}

impl<'a> Parts<'a> {
    fn parse(s: &'a str) -> Option<Parts<'a>> {
        let (scheme, after) = s.split_once("://")?;
        let mut chars = scheme.chars();
        if !chars.next().is_some_and(|c| c.is_ascii_alphabetic()) || !chars.all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)) {
            return None;
        }
        // Userinfo ends at the *last* `@` before any query or fragment, so an
        // unescaped `@` or `/` inside a password still counts as userinfo (and is
        // redacted) instead of spilling into the host.
        let end = after.find(['?', '#']).unwrap_or(after.len());
        let (userinfo, hostpart) = match after[..end].rfind('@') {
            Some(at) => (Some(&after[..at]), &after[at + 1..]),
            None => (None, after),
        };
        let host_end = hostpart.find(['/', '?', '#']).unwrap_or(hostpart.len());
        let (host, rest) = hostpart.split_at(host_end);
        // Hosts are names, IPv4 or bracketed IPv6 addresses, with an optional port.
        if !host.chars().all(|c| c.is_ascii_alphanumeric() || "-._:[]%".contains(c)) {
            return None;
        }
        Some(Parts { scheme, userinfo, host, rest })
    }
}

/// Displays a URL through [`url()`]: `tracing::warn!(url = %Redacted(&url), …)`,
/// `format!("… {}", Redacted(&url))`. Its `Debug` is the same, so `?` fields and
/// derived `Debug`s that hold one are safe too.
#[derive(Clone, Copy)]
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&url(self.0))
    }
}

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", url(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_where_drops_secrets() {
        let cases = [
            ("postgres://app:s3cr3t@db.internal:5432/orders?sslmode=require", "postgres://app:REDACTED@db.internal:5432/…"),
            ("postgres://postgres@127.0.0.1:1/x", "postgres://postgres@127.0.0.1:1/…"),
            ("postgresql://app:@db", "postgresql://app:REDACTED@db"),
            ("https://hooks.slack.com/services/T000/B000/SECRETTOKEN", "https://hooks.slack.com/…"),
            ("http://127.0.0.1:1/services/T000/B000/SECRETTOKEN", "http://127.0.0.1:1/…"),
            ("https://chat.example/hook?token=SECRET", "https://chat.example/…"),
            ("https://chat.example#SECRET", "https://chat.example/…"),
            ("http://[::1]:8080/x", "http://[::1]:8080/…"),
            ("https://example.com", "https://example.com"),
            // Unescaped `@` and `/` in the password stay inside the userinfo.
            ("postgres://app:p@ss@db/x", "postgres://app:REDACTED@db/…"),
            ("postgres://app:pa/ss@db/x", "postgres://REDACTED@db/…"),
            // Not a URL: nothing can be kept.
            ("host=db user=app password=s3cr3t", "REDACTED"),
            ("SECRETTOKEN", "REDACTED"),
            ("", "REDACTED"),
            ("1http://x/y", "REDACTED"),
            ("http://bad host/y", "REDACTED"),
        ];
        for (input, want) in cases {
            assert_eq!(url(input), want, "{input}");
            assert_eq!(Redacted(input).to_string(), want, "{input}");
        }
        assert_eq!(format!("{:?}", Redacted("https://h/SECRET")), "\"https://h/…\"");
    }

    #[test]
    fn scrub_removes_every_trace_of_the_url() {
        let u = "postgres://app:s3cr%40t@db:5432/orders";
        let msg = format!("cannot connect to {u}: password \"s3cr@t\" rejected; raw s3cr%40t; db orders");
        let s = scrub(&msg, u);
        assert!(!s.contains("s3cr"), "{s}");
        assert!(!s.contains("orders"), "{s}");
        assert!(s.contains("postgres://app:REDACTED@db:5432/…"), "{s}");

        let hook = "https://hooks.example/services/T000/B000/SECRETTOKEN";
        let s =
            scrub("error sending request for url (https://hooks.example/services/T000/B000/SECRETTOKEN): refused; path services/T000/B000/SECRETTOKEN", hook);
        assert!(!s.contains("SECRETTOKEN"), "{s}");
        assert!(s.contains("https://hooks.example/…"), "{s}");

        // A `/` in the password: the whole userinfo goes, and the password on its own.
        let u = "postgres://a:Pw/0k@db/x";
        assert_eq!(scrub(&format!("{u} (Pw/0k)"), u), "postgres://REDACTED@db/… (REDACTED)");

        // Not a URL: the whole value is the secret.
        assert_eq!(scrub("conn host=db password=pw1234 failed", "host=db password=pw1234"), "conn REDACTED failed");
        // Too short to tell from text: left alone rather than shredding the message.
        assert_eq!(scrub("connection refused", "postgres://a:b@db"), "connection refused");
    }

    proptest::proptest! {
        // Every password starts with `Pw`, which nothing else in the output can spell
        // (user and host are lowercase, `REDACTED` has no `w`): a match is a leak.
        #[test]
        fn a_password_never_survives(user in "[a-z]{1,8}", password in "Pw[A-Za-z0-9!$&'()*+,;=%@/-]{2,22}", host in "[a-z]{1,10}(\\.[a-z]{2,5})?", path in "(/[A-Za-z0-9]{1,12}){0,3}") {
            let u = format!("postgres://{user}:{password}@{host}{path}");
            let shown = url(&u);
            proptest::prop_assert!(!shown.contains(&password), "{u} -> {shown}");
            let scrubbed = scrub(&format!("failed: {u} ({password})"), &u);
            proptest::prop_assert!(!scrubbed.contains(&password), "{u} -> {scrubbed}");
        }
    }
}
