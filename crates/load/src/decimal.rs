//! Exact handling of DynamoDB number text: normal form, canonical decimal text,
//! equality, and an order-preserving byte encoding for Bigtable row keys.

/// Spanner `NUMERIC` holds 29 digits before the decimal point and 9 after, exactly.
pub const SPANNER_NUMERIC_INTEGER_DIGITS: u64 = 29;
pub const SPANNER_NUMERIC_FRACTION_DIGITS: u64 = 9;

/// A decimal as `±0.d1d2…dn × 10^exp` with no leading or trailing zero digits
/// (zero has no digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    pub negative: bool,
    pub digits: Vec<u8>,
    pub exp: i64,
}

impl Decimal {
    /// Parses DynamoDB number text (`-1.5E3`, `0.001`, `100`). `None` if not a number.
    pub fn parse(s: &str) -> Option<Decimal> {
        let (negative, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, e) = match body.find(['e', 'E']) {
            Some(i) => (&body[..i], body[i + 1..].parse::<i64>().ok()?),
            None => (body, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let all: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let lead = all.iter().take_while(|&&d| d == 0).count();
        let mut digits = all[lead..].to_vec();
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            return Some(Decimal { negative: false, digits, exp: 0 });
        }
        // Checked: the text may come from anywhere (a target read back), not only the codec.
        let exp = (int.len() as i64 - lead as i64).checked_add(e)?;
        Some(Decimal { negative, digits, exp })
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Digits after the decimal point in plain notation.
    pub fn fraction_digits(&self) -> u64 {
        (self.digits.len() as i64 - self.exp).max(0) as u64
    }

    /// Digits before the decimal point in plain notation (0 for |x| < 1).
    pub fn integer_digits(&self) -> u64 {
        self.exp.max(0) as u64
    }

    /// Whether Spanner `NUMERIC` holds the value exactly.
    pub fn fits_spanner_numeric(&self) -> bool {
        self.integer_digits() <= SPANNER_NUMERIC_INTEGER_DIGITS && self.fraction_digits() <= SPANNER_NUMERIC_FRACTION_DIGITS
    }

    /// The canonical decimal text: plain notation without exponent, `-` only for a
    /// value below zero, no leading zero before the point except a lone `0`, no
    /// trailing zero after it, no point for an integer (`1500`, `-0.015`, `0`). Two
    /// texts denote the same number exactly when their canonical texts are equal.
    pub fn to_plain(&self) -> String {
        if self.is_zero() {
            return "0".into();
        }
        let d: String = self.digits.iter().map(|d| char::from(b'0' + d)).collect();
        let n = d.len() as i64;
        let body = if self.exp >= n {
            format!("{d}{}", "0".repeat((self.exp - n) as usize))
        } else if self.exp <= 0 {
            format!("0.{}{d}", "0".repeat((-self.exp) as usize))
        } else {
            format!("{}.{}", &d[..self.exp as usize], &d[self.exp as usize..])
        };
        if self.negative {
            format!("-{body}")
        } else {
            body
        }
    }

    /// The value as an `i64` if it is an integer in range.
    pub fn to_i64(&self) -> Option<i64> {
        if self.fraction_digits() > 0 || self.integer_digits() > 19 {
            return None;
        }
        self.to_plain().parse().ok()
    }

    /// Order-preserving encoding: byte-wise comparison of encodings equals numeric
    /// comparison. Self-delimiting (can be followed by more key bytes).
    pub fn order_key(&self, out: &mut Vec<u8>) {
        if self.is_zero() {
            out.push(0x02);
            return;
        }
        // Exponent offset so it fits u16 (DynamoDB exponents are within ±130).
        let e = (self.exp + 0x8000).clamp(0, 0xFFFF) as u16;
        if self.negative {
            out.push(0x01);
            out.extend_from_slice(&(0xFFFF - e).to_be_bytes());
            out.extend(self.digits.iter().map(|d| 0xFE - (b'0' + d)));
            out.push(0xFF);
        } else {
            out.push(0x03);
            out.extend_from_slice(&e.to_be_bytes());
            out.extend(self.digits.iter().map(|d| b'0' + d));
            out.push(0x00);
        }
    }
}

/// The canonical text ([`Decimal::to_plain`]) of number text; `None` if not a number.
pub fn canonical(n: &str) -> Option<String> {
    Decimal::parse(n).map(|d| d.to_plain())
}

/// Exact numeric equality of two DynamoDB number texts (`"1.50" == "15E-1"`,
/// `"1E2" == "100"`), digit by digit: never through a float, which would call
/// numbers equal that differ past the 17th digit. Text that is not a number equals
/// only the same text.
pub fn numbers_equal(a: &str, b: &str) -> bool {
    match (Decimal::parse(a), Decimal::parse(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).expect("number")
    }

    #[test]
    fn plain_and_equality() {
        assert_eq!(d("1.5E3").to_plain(), "1500");
        assert_eq!(d("-0.015").to_plain(), "-0.015");
        assert_eq!(d("15E-4").to_plain(), "0.0015");
        assert_eq!(d("000.000").to_plain(), "0");
        assert_eq!(d("-0").to_plain(), "0");
        assert_eq!(d("123.4500").to_plain(), "123.45");
        assert!(numbers_equal("1.50", "15E-1"));
        assert!(!numbers_equal("1.5", "1.51"));
        assert_eq!(d("9223372036854775807").to_i64(), Some(i64::MAX));
        assert_eq!(d("9223372036854775808").to_i64(), None);
        assert_eq!(d("1.5").to_i64(), None);
        assert_eq!((d("12.345").integer_digits(), d("12.345").fraction_digits()), (2, 3));
    }

    #[test]
    fn equality_is_exact_at_dynamodb_extremes() {
        assert!(numbers_equal("1E2", "100"));
        assert!(numbers_equal("1.50", "1.5"));
        assert!(numbers_equal("-0", "0.000"));
        assert!(numbers_equal("1E-130", &format!("0.{}1", "0".repeat(129))));
        assert!(numbers_equal("9.9999999999999999999999999999999999999E+125", &format!("{}{}", "9".repeat(38), "0".repeat(88))));
        // Equal as f64, different as decimals.
        assert_eq!("0.7923361357004808".parse::<f64>().ok(), "0.79233613570048080001".parse::<f64>().ok());
        assert!(!numbers_equal("0.7923361357004808", "0.79233613570048080001"));
        assert!(!numbers_equal("0.7923361357004808", "7.923361357004808e-1000"));
        assert!(!numbers_equal("12345678901234567890123456789012345678", "1.2345678901234568E37"));
        assert!(!numbers_equal("1E-130", "0"));
        assert!(!numbers_equal("-1", "1"));
        assert!(!numbers_equal("x", "0") && numbers_equal("x", "x"));
        assert_eq!(Decimal::parse("1E9223372036854775807"), None, "exponent overflow is not a number");
    }

    #[test]
    fn canonical_text_and_spanner_fit() {
        let cases = [
            ("12345678901234567890123456789012345678", "12345678901234567890123456789012345678"),
            ("-0.000000000000000000000000000000000001", "-0.000000000000000000000000000000000001"),
            ("37.774929123456", "37.774929123456"),
            ("+1.50E1", "15"),
            ("-00.0", "0"),
            ("0.7923361357004808", "0.7923361357004808"),
        ];
        for (n, want) in cases {
            assert_eq!(canonical(n).as_deref(), Some(want), "{n}");
            assert!(numbers_equal(n, want));
        }
        assert_eq!(canonical("1E-130").map(|t| t.len()), Some(132));
        assert_eq!(canonical("nope"), None);
        assert!(d("99999999999999999999999999999.999999999").fits_spanner_numeric());
        assert!(d("-1E28").fits_spanner_numeric());
        assert!(!d("1E29").fits_spanner_numeric(), "30 integer digits");
        assert!(!d("0.0000000001").fits_spanner_numeric(), "10 fraction digits");
        assert!(!d("0.7923361357004808").fits_spanner_numeric());
    }

    #[test]
    fn order_key_sorts_like_numbers() {
        let nums = ["-1E+100", "-1000", "-15", "-1.5", "-1", "-0.15", "-0.1", "-1E-100", "0", "1E-100", "0.1", "0.15", "1", "1.5", "15", "1000", "1E+100"];
        let keys: Vec<Vec<u8>> = nums
            .iter()
            .map(|n| {
                let mut k = Vec::new();
                d(n).order_key(&mut k);
                k
            })
            .collect();
        for w in keys.windows(2) {
            assert!(w[0] < w[1], "{:?} !< {:?}", w[0], w[1]);
        }
    }
}
