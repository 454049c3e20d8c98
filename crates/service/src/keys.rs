//! Partition keys and shard key ranges, exactly as HStreamDB computes them: a key hashes to the
//! MD5 of its UTF-8 bytes read as a big-endian 128-bit integer, and a stream's key space
//! `[0, 2^128 - 1]` is split evenly over its shards (the last shard takes the remainder).
//! Range bounds travel as decimal strings.

use md5::{Digest, Md5};

/// The hash of a partition key.
pub(crate) fn key_hash(key: &str) -> u128 {
    let digest: [u8; 16] = Md5::digest(key.as_bytes()).into();
    u128::from_be_bytes(digest)
}

/// Splits the key space over `n` shards (n > 0): shard `i` gets
/// `[i * c, i * c + c - 1]` with `c = (2^128 - 1) / n`, and the last shard ends at `2^128 - 1`.
pub(crate) fn divide_key_space(n: u32) -> Vec<(u128, u128)> {
    let n = u128::from(n.max(1));
    let c = u128::MAX / n;
    (0..n)
        .map(|i| {
            let start = i * c;
            let end = if i == n - 1 { u128::MAX } else { start + c - 1 };
            (start, end)
        })
        .collect()
}

/// True if `hash` falls in the decimal range `[start, end]`.
pub(crate) fn in_range(hash: u128, start: &str, end: &str) -> bool {
    match (start.parse::<u128>(), end.parse::<u128>()) {
        (Ok(s), Ok(e)) => s <= hash && hash <= e,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_key_hash_matches_md5() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(key_hash(""), 0xd41d8cd98f00b204e9800998ecf8427e);
    }

    #[test]
    fn key_space_is_covered_without_gaps() {
        for n in 1..=7 {
            let r = divide_key_space(n);
            assert_eq!(r.len(), n as usize);
            assert_eq!(r[0].0, 0);
            assert_eq!(r[r.len() - 1].1, u128::MAX);
            for w in r.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0);
            }
        }
        let two = divide_key_space(2);
        assert_eq!(
            two[0].1.to_string(),
            "170141183460469231731687303715884105726"
        );
        assert_eq!(
            two[1].0.to_string(),
            "170141183460469231731687303715884105727"
        );
    }

    proptest::proptest! {
        /// Every key falls in exactly one shard's range, as the decimal strings the catalog
        /// keeps them in, for any shard count a stream may have.
        #[test]
        fn every_key_has_exactly_one_shard(n in 1u32..=4096, key in ".{0,40}", hash in proptest::num::u128::ANY) {
            let ranges: Vec<(String, String)> = divide_key_space(n)
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            for h in [key_hash(&key), hash, 0, u128::MAX] {
                let owners = ranges.iter().filter(|(a, b)| in_range(h, a, b)).count();
                proptest::prop_assert_eq!(owners, 1, "hash {} with {} shards", h, n);
            }
        }
    }
}
