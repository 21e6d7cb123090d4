//! Compression codecs for relayed data parts: name, file extension, default level.

use std::fmt;
use std::str::FromStr;

/// How a data part is compressed. `None` means plain DynamoDB JSON lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Zstandard: best speed/ratio trade-off; the default.
    #[default]
    Zstd,
    /// gzip: readable by every tool, including BigQuery and `gsutil cat`.
    Gzip,
    /// bzip2: highest ratio, slowest; split into independent streams to use every core.
    Bzip2,
    /// No compression.
    None,
}

/// A codec name that is not one of `zstd`, `gzip`, `bzip2`, `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec {0:?}: use one of zstd, gzip, bzip2, none")]
pub struct UnknownCodec(pub String);

/// A compression level outside the codec's range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("level {level} is out of range for {codec}: use {min}..={max}")]
pub struct BadLevel {
    pub codec: Codec,
    pub level: i32,
    pub min: i32,
    pub max: i32,
}

impl Codec {
    pub const ALL: [Codec; 4] = [Codec::Zstd, Codec::Gzip, Codec::Bzip2, Codec::None];

    pub fn name(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Gzip => "gzip",
            Codec::Bzip2 => "bzip2",
            Codec::None => "none",
        }
    }

    /// Extension appended after `.json` (empty for `None`).
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Zstd => ".zst",
            Codec::Gzip => ".gz",
            Codec::Bzip2 => ".bz2",
            Codec::None => "",
        }
    }

    /// Inverse of [`Codec::extension`].
    pub fn from_extension(ext: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.extension() == ext)
    }

    /// Level used when none is given: each codec's CLI default.
    pub fn default_level(self) -> i32 {
        match self {
            Codec::Zstd => 3,
            Codec::Gzip => 6,
            Codec::Bzip2 => 9,
            Codec::None => 0,
        }
    }

    pub fn level_range(self) -> (i32, i32) {
        match self {
            Codec::Zstd => (1, 22),
            Codec::Gzip => (1, 9),
            Codec::Bzip2 => (1, 9),
            Codec::None => (0, 0),
        }
    }

    /// Validates `level` (or picks the default) for this codec.
    pub fn level(self, level: Option<i32>) -> Result<i32, BadLevel> {
        let level = level.unwrap_or(self.default_level());
        let (min, max) = self.level_range();
        if (min..=max).contains(&level) {
            Ok(level)
        } else {
            Err(BadLevel { codec: self, level, min, max })
        }
    }

    /// `Content-Encoding`-style MIME type of a part stored with this codec.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Zstd => "application/zstd",
            Codec::Gzip => "application/gzip",
            Codec::Bzip2 => "application/x-bzip2",
            Codec::None => "application/x-ndjson",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Codec {
    type Err = UnknownCodec;
    fn from_str(s: &str) -> Result<Self, UnknownCodec> {
        Codec::ALL.into_iter().find(|c| c.name() == s.to_ascii_lowercase()).ok_or_else(|| UnknownCodec(s.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_extensions_and_levels() {
        for c in Codec::ALL {
            assert_eq!(c.name().parse::<Codec>(), Ok(c));
            assert_eq!(Codec::from_extension(c.extension()), Some(c));
            assert_eq!(c.level(None), Ok(c.default_level()));
        }
        assert_eq!("ZSTD".parse::<Codec>(), Ok(Codec::Zstd));
        assert!("lz4".parse::<Codec>().expect_err("unknown codec").to_string().contains("zstd, gzip, bzip2, none"));
        assert_eq!(Codec::Zstd.level(Some(19)), Ok(19));
        assert_eq!(Codec::Gzip.level(Some(10)).map_err(|e| e.max), Err(9));
        assert_eq!(serde_json::to_string(&Codec::Bzip2).ok().as_deref(), Some("\"bzip2\""));
    }
}
