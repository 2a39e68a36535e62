//! S3's `sequencer`: a hex string that orders the events of one key. Of two
//! sequencers of different lengths, the shorter is padded with zeros on the
//! right before the strings are compared. Sequencers of different keys say
//! nothing about each other.

use std::cmp::Ordering;

/// A validated sequencer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sequencer(String);

impl Sequencer {
    /// Accepts a non-empty hex string (either case; compared upper-case).
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() || value.len() > 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "sequencer {value:?} is not a hex string of 1 to 64 digits"
            ));
        }
        Ok(Self(value.to_ascii_uppercase()))
    }

    /// Orders before every sequencer S3 assigns.
    pub fn lowest() -> Self {
        Self("0".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for Sequencer {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let len = a.len().max(b.len());
        let digit = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(b'0');
        (0..len)
            .map(|i| digit(a, i).cmp(&digit(b, i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl PartialOrd for Sequencer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(s: &str) -> Sequencer {
        Sequencer::parse(s).unwrap()
    }

    #[test]
    fn the_shorter_is_padded_with_zeros_on_the_right() {
        // As numbers 0x0062E99A88DC407460 < 0x0062E99A88DC4074600, but padded
        // on the right they are equal; and "1" is "10" padded, so "1" < "11".
        assert_eq!(
            seq("0062E99A88DC407460").cmp(&seq("0062E99A88DC4074600")),
            Ordering::Equal
        );
        assert!(seq("1") < seq("11"));
        assert!(seq("2") > seq("11"));
        // Numeric comparison would say the opposite here.
        assert!(seq("0062E99A88DC407461") > seq("0062E99A88DC40746000"));
    }

    #[test]
    fn case_does_not_matter() {
        assert_eq!(seq("00ab"), seq("00AB"));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "xyz", "00 1", &"0".repeat(65)] {
            assert!(Sequencer::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn the_order_is_total_and_consistent(a in "[0-9A-F]{1,20}", b in "[0-9A-F]{1,20}", c in "[0-9A-F]{1,20}") {
            let (a, b, c) = (seq(&a), seq(&b), seq(&c));
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            if a <= b && b <= c { prop_assert!(a <= c); }
        }

        #[test]
        fn equal_length_sequencers_compare_as_numbers(a in any::<u64>(), b in any::<u64>()) {
            let (sa, sb) = (seq(&format!("{a:016X}")), seq(&format!("{b:016X}")));
            prop_assert_eq!(sa.cmp(&sb), a.cmp(&b));
        }
    }
}
