//! The text forms every phase writes into its records: RFC 3339 times (`written_at`,
//! `heartbeat_at`, `finished_at`) and the lowercase hex SHA-256 that manifests and
//! markers record for each part.

use sha2::Digest as _;

/// `t` as RFC 3339 (`2026-11-30T07:40:00Z`).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The current UTC time as RFC 3339.
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(rfc3339(time::macros::datetime!(2026-11-30 07:40:00 UTC)), "2026-11-30T07:40:00Z");
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
