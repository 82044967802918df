//! 32-bit serial number arithmetic (RFC 1982 §3.2) for CmdSN, ExpCmdSN,
//! MaxCmdSN, StatSN and DataSN, which RFC 7143 §4.2.2.1 requires to be
//! compared this way so that the window keeps working across the wrap
//! from 0xffffffff to 0.
//!
//! `a < b` holds when `b` is ahead of `a` by less than 2^31. RFC 1982 leaves
//! the comparison of two numbers exactly 2^31 apart undefined; here neither
//! is less than the other.

/// `a < b` in serial number arithmetic.
pub fn lt(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}

/// `a <= b` in serial number arithmetic.
pub fn le(a: u32, b: u32) -> bool {
    a == b || lt(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_and_wrapped_order() {
        assert!(lt(1, 2));
        assert!(!lt(2, 1));
        assert!(!lt(5, 5));
        assert!(lt(u32::MAX, 0));
        assert!(lt(0xffff_fff0, 5));
        assert!(!lt(5, 0xffff_fff0));
    }

    #[test]
    fn le_includes_equality() {
        assert!(le(7, 7));
        assert!(le(u32::MAX, 0));
        assert!(!le(0, u32::MAX));
    }

    #[test]
    fn half_range_apart_is_unordered() {
        // RFC 1982 §3.2: the result for numbers 2^31 apart is undefined;
        // both directions answer false so neither side wins.
        assert!(!lt(0, 1 << 31));
        assert!(!lt(1 << 31, 0));
    }

    proptest::proptest! {
        #[test]
        fn lt_is_antisymmetric(a: u32, b: u32) {
            proptest::prop_assert!(!(lt(a, b) && lt(b, a)));
        }

        #[test]
        fn adding_less_than_half_range_moves_forward(a: u32, d in 1u32..(1 << 31)) {
            proptest::prop_assert!(lt(a, a.wrapping_add(d)));
        }
    }
}
