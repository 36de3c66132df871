//! `IpSet`: IPv4 and IPv6 addresses and networks, looked up in a time that
//! does not grow with the set.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::{canonical_ip, canonical_net, MAPPED};

/// Sets of at most this many ranges are searched directly; larger ones get a
/// bucket index first.
const DIRECT: usize = 64;
/// Bits of the bucket index: 2^16 buckets.
const BUCKET_BITS: u32 = 16;
/// Marks an index slot whose bucket some range intersects; the other bits
/// are the range index. An address in an unmarked bucket is not in the set,
/// found without reading a range.
const USED: u32 = 1 << 31;

/// An immutable set of IPv4 and IPv6 addresses and networks (CIDRs).
/// Cheap to clone; clones share the set.
///
/// The networks are merged into sorted, disjoint address ranges. A lookup
/// reads one slot of a 2^16-bucket index over the ranges (which also tells
/// when no range reaches the bucket), then searches the few ranges of that
/// bucket: its cost depends on how many ranges share a bucket, not on the
/// size of the set (1,000 or 100,000 entries cost about the same; see
/// `BENCHMARKS.md`). A bucket of more than 64 ranges (a list crowded into
/// one network) gets its own finer index, so no lookup searches many ranges.
/// Memory: 256 KiB of index per address family once a family holds more
/// than 64 ranges, plus 8 bytes (IPv4) or 32 bytes (IPv6) per range.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are looked up as their IPv4
/// address, and networks within `::ffff:0:0/96` are stored as IPv4 networks,
/// so a client seen on a dual-stack listener cannot slip past a rule.
///
/// # Examples
/// ```
/// use monconn::IpSet;
///
/// let set = IpSet::new(["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()]);
/// assert!(set.contains("10.1.2.3".parse().unwrap()));
/// assert!(set.contains("::ffff:10.1.2.3".parse().unwrap()));
/// assert!(set.contains("2001:db8::1".parse().unwrap()));
/// assert!(!set.contains("192.168.0.1".parse().unwrap()));
/// ```
#[derive(Clone, Default)]
pub struct IpSet {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
}

impl IpSet {
    /// A set of `nets` (single addresses are `/32` or `/128` networks).
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for net in nets.into_iter().map(canonical_net) {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => {
                    // A v6 network that covers the whole IPv4-mapped range
                    // (`::/0`, say) covers every IPv4 client as well.
                    if n.prefix_len() <= 96 && n.contains(&MAPPED) {
                        v4.push((0, u32::MAX));
                    }
                    v6.push((u128::from(n.network()), u128::from(n.broadcast())));
                }
            }
        }
        IpSet {
            v4: Ranges::new(v4),
            v6: Ranges::new(v6),
        }
    }

    /// Whether `ip` is in the set.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical_ip(ip) {
            IpAddr::V4(ip) => self.v4.contains(u32::from(ip)),
            IpAddr::V6(ip) => self.v6.contains(u128::from(ip)),
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.v4.ranges.is_empty() && self.v6.ranges.is_empty()
    }

    /// How many disjoint address ranges the networks merged into.
    pub fn ranges(&self) -> usize {
        self.v4.ranges.len() + self.v6.ranges.len()
    }
}

impl fmt::Debug for IpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpSet")
            .field("v4_ranges", &self.v4.ranges.len())
            .field("v6_ranges", &self.v6.ranges.len())
            .finish()
    }
}

// === impl Ranges ===

/// An address as an unsigned integer.
trait Key:
    Copy
    + Ord
    + std::ops::BitOr<Output = Self>
    + std::ops::Not<Output = Self>
    + std::ops::BitAnd<Output = Self>
{
    const ZERO: Self;
    const MAX: Self;
    const BITS: u32;
    /// Leading bits `a` and `b` share.
    fn common(a: Self, b: Self) -> u32;
    /// The `bits` bits after the first `shift` bits.
    fn bucket(self, shift: u32, bits: u32) -> usize;
    /// The next address (never called on `MAX`).
    fn succ(self) -> Self;
    /// `n` low bits set (`n` <= `BITS`).
    fn low_mask(n: u32) -> Self;
    /// `b << at`.
    fn from_bucket(b: usize, at: u32) -> Self;
}

macro_rules! key {
    ($t:ty) => {
        impl Key for $t {
            const ZERO: Self = 0;
            const MAX: Self = <$t>::MAX;
            const BITS: u32 = <$t>::BITS;
            fn common(a: Self, b: Self) -> u32 {
                (a ^ b).leading_zeros()
            }
            #[inline]
            fn bucket(self, shift: u32, bits: u32) -> usize {
                (self.checked_shl(shift).unwrap_or(0) >> (<$t>::BITS - bits)) as usize
            }
            fn succ(self) -> Self {
                self + 1
            }
            fn low_mask(n: u32) -> Self {
                <$t>::MAX.checked_shr(<$t>::BITS - n).unwrap_or(0)
            }
            fn from_bucket(b: usize, at: u32) -> Self {
                (b as $t).checked_shl(at).unwrap_or(0)
            }
        }
    };
}
key!(u32);
key!(u128);

/// Index slots: the range index in the low bits, and two flags.
const SLOT: u32 = !(USED | CROWDED);
/// Marks a bucket with more than `DIRECT` ranges: it has its own finer index
/// (a child), so a lookup never searches many ranges.
const CROWDED: u32 = 1 << 30;
/// Bits of a child's index: 2^8 buckets.
const CHILD_BITS: u32 = 8;

/// Sorted, disjoint, inclusive ranges, with a bucket index when there are
/// more than `DIRECT` of them.
#[derive(Clone)]
struct Ranges<K> {
    ranges: Arc<[(K, K)]>,
    /// The first and last address covered.
    min: K,
    max: K,
    /// Leading bits shared by every covered address; buckets use the next ones.
    shift: u32,
    /// Bits of the bucket number.
    bits: u32,
    /// `index[b]`: the first range whose end falls in bucket `b` or later,
    /// with [`USED`] when a range intersects bucket `b` and [`CROWDED`] when
    /// bucket `b` has a child.
    index: Arc<[u32]>,
    /// The crowded buckets' own indexes, over their ranges clipped to the bucket.
    children: Arc<[Ranges<K>]>,
    /// `child_of[b]`: bucket `b`'s child, when there are children.
    child_of: Arc<[u32]>,
}

impl<K: Key> Default for Ranges<K> {
    fn default() -> Self {
        Ranges::new(Vec::new())
    }
}

impl<K: Key> Ranges<K> {
    fn new(mut list: Vec<(K, K)>) -> Self {
        list.sort_unstable();
        let mut merged: Vec<(K, K)> = Vec::with_capacity(list.len());
        for (start, end) in list {
            match merged.last_mut() {
                // Overlapping, nested or adjacent: extend.
                Some(last) if last.1 == K::MAX || start <= last.1.succ() => {
                    last.1 = last.1.max(end)
                }
                _ => merged.push((start, end)),
            }
        }
        Ranges::build(merged, BUCKET_BITS)
    }

    /// Indexes sorted, disjoint ranges with `bits`-bit buckets.
    fn build(merged: Vec<(K, K)>, bits: u32) -> Self {
        let (min, max) = match (merged.first(), merged.last()) {
            (Some(first), Some(last)) => (first.0, last.1),
            _ => (K::ZERO, K::ZERO),
        };
        let shift = K::common(min, max);
        let mut index = Vec::new();
        let (mut children, mut child_of) = (Vec::new(), Vec::new());
        if merged.len() > DIRECT {
            let buckets = 1usize << bits;
            index.reserve(buckets + 1);
            for (i, &(_, end)) in merged.iter().enumerate() {
                let b = end.bucket(shift, bits);
                while index.len() <= b {
                    index.push(i as u32);
                }
            }
            index.resize(buckets + 1, merged.len() as u32);
            let mut next = 0; // buckets below are marked
            for &(start, end) in &merged {
                let last = end.bucket(shift, bits);
                for slot in &mut index[start.bucket(shift, bits).max(next)..=last] {
                    *slot |= USED;
                }
                next = last + 1;
            }
            // Buckets of many ranges get a child index over their ranges,
            // clipped to the bucket: the child's ranges share at least
            // `shift + bits` leading bits, so each level goes finer.
            if shift + bits < K::BITS {
                let low = K::BITS - shift - bits;
                let high = min & !K::low_mask(K::BITS - shift);
                for b in 0..buckets {
                    let lo = (index[b] & SLOT) as usize;
                    let hi = ((index[b + 1] & SLOT) as usize + 1).min(merged.len());
                    if index[b] & USED == 0 || hi - lo <= DIRECT {
                        continue;
                    }
                    let first = high | K::from_bucket(b, low);
                    let last = first | K::low_mask(low);
                    let clipped = merged[lo..hi]
                        .iter()
                        .map(|&(s, e)| (s.max(first), e.min(last)))
                        .filter(|(s, e)| s <= e)
                        .collect();
                    if child_of.is_empty() {
                        child_of = vec![0; buckets];
                    }
                    child_of[b] = children.len() as u32;
                    children.push(Ranges::build(clipped, CHILD_BITS));
                    index[b] |= CROWDED;
                }
            }
        }
        Ranges {
            ranges: merged.into(),
            min,
            max,
            shift,
            bits,
            index: index.into(),
            children: children.into(),
            child_of: child_of.into(),
        }
    }

    #[inline]
    fn contains(&self, ip: K) -> bool {
        if self.ranges.is_empty() || ip < self.min || ip > self.max {
            return false;
        }
        let candidates = if self.index.is_empty() {
            &self.ranges[..]
        } else {
            let b = ip.bucket(self.shift, self.bits);
            let first = self.index[b];
            if first & USED == 0 {
                return false;
            }
            if first & CROWDED != 0 {
                return self.children[self.child_of[b] as usize].contains(ip);
            }
            let lo = (first & SLOT) as usize;
            let hi = ((self.index[b + 1] & SLOT) as usize + 1).min(self.ranges.len());
            &self.ranges[lo..hi]
        };
        let after = candidates.partition_point(|r| r.0 <= ip);
        after > 0 && candidates[after - 1].1 >= ip
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::{Ipv4Net, Ipv6Net};

    fn set(nets: &[&str]) -> IpSet {
        IpSet::new(nets.iter().map(|n| n.parse().unwrap()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn matches_networks_and_addresses() {
        let s = set(&["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32", "::1/128"]);
        for yes in [
            "10.0.0.0",
            "10.255.255.255",
            "192.168.1.7",
            "2001:db8:ffff::1",
            "::1",
        ] {
            assert!(s.contains(ip(yes)), "{yes}");
        }
        for no in [
            "9.255.255.255",
            "11.0.0.0",
            "192.168.1.6",
            "192.168.1.8",
            "2001:db9::",
            "::2",
        ] {
            assert!(!s.contains(ip(no)), "{no}");
        }
    }

    #[test]
    fn mapped_addresses_and_rules_are_ipv4() {
        let s = set(&["::ffff:127.0.0.0/104"]);
        assert!(s.contains(ip("127.0.0.1")));
        assert!(s.contains(ip("::ffff:127.9.9.9")));
        let s = set(&["127.0.0.0/8"]);
        assert!(s.contains(ip("::ffff:127.0.0.1")));
        assert!(!s.contains(ip("::1")));
        let all6 = set(&["::/0"]);
        assert!(all6.contains(ip("1.2.3.4")));
    }

    #[test]
    fn adjacent_networks_merge() {
        let s = set(&[
            "10.0.0.0/25",
            "10.0.0.128/25",
            "10.0.1.0/24",
            "255.255.255.255/32",
        ]);
        assert_eq!(s.ranges(), 2);
        assert!(s.contains(ip("10.0.1.255")) && !s.contains(ip("10.0.2.0")));
        let all = set(&["0.0.0.0/1", "128.0.0.0/1"]);
        assert_eq!(all.ranges(), 1);
        assert!(all.contains(ip("255.255.255.255")));
    }

    #[test]
    fn host_bits_are_ignored() {
        assert!(set(&["10.1.2.3/8"]).contains(ip("10.200.0.1")));
    }

    #[test]
    fn indexed_lookup_agrees_with_a_scan() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let nets: Vec<IpNet> = (0..5000)
            .map(|_| {
                let len = rng.random_range(8..=32);
                IpNet::V4(
                    Ipv4Net::new(rng.random::<u32>().into(), len)
                        .unwrap()
                        .trunc(),
                )
            })
            .collect();
        let s = IpSet::new(nets.clone());
        assert!(!s.v4.index.is_empty());
        for _ in 0..5_000 {
            let probe = IpAddr::V4(rng.random::<u32>().into());
            let want = nets.iter().any(|n| n.contains(&probe));
            assert_eq!(s.contains(probe), want, "{probe}");
        }
        for n in &nets {
            assert!(s.contains(n.network()) && s.contains(n.broadcast()), "{n}");
        }
    }

    #[test]
    fn indexed_v6_lookup_agrees_with_a_scan() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(9);
        let base = u128::from(ip_v6("2001:db8::"));
        let nets: Vec<IpNet> = (0..2000)
            .map(|_| {
                let addr = base | (rng.random::<u128>() >> 32);
                let len = rng.random_range(40..=128);
                IpNet::V6(Ipv6Net::new(addr.into(), len).unwrap().trunc())
            })
            .collect();
        let s = IpSet::new(nets.clone());
        for n in &nets {
            assert!(s.contains(n.network()) && s.contains(n.broadcast()), "{n}");
        }
        for _ in 0..5_000 {
            let probe = IpAddr::V6((base | (rng.random::<u128>() >> 32)).into());
            let want = nets.iter().any(|n| n.contains(&probe));
            assert_eq!(s.contains(probe), want, "{probe}");
        }
    }

    fn ip_v6(s: &str) -> std::net::Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn crowded_buckets_get_children_that_agree_with_a_scan() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        // Every third address of 10.1.0.0/16 plus spread-out networks, some
        // of them spanning the crowded bucket.
        let mut others: Vec<IpNet> = vec!["10.1.200.0/22".parse().unwrap()];
        for _ in 0..3000 {
            let len = rng.random_range(12..=32);
            others.push(IpNet::V4(
                Ipv4Net::new(rng.random::<u32>().into(), len)
                    .unwrap()
                    .trunc(),
            ));
        }
        let mut nets: Vec<IpNet> = (0..=u16::MAX)
            .step_by(3)
            .map(|n| IpNet::V4(Ipv4Net::new([10, 1, (n >> 8) as u8, n as u8].into(), 32).unwrap()))
            .collect();
        nets.extend(&others);
        let s = IpSet::new(nets.clone());
        assert!(!s.v4.children.is_empty());
        let scan = |probe: IpAddr| {
            let third = match probe {
                IpAddr::V4(v4) => {
                    let [a, b, c, d] = v4.octets();
                    (a, b) == (10, 1) && u16::from_be_bytes([c, d]) % 3 == 0
                }
                IpAddr::V6(_) => false,
            };
            third || others.iter().any(|n| n.contains(&probe))
        };
        for _ in 0..4_000 {
            let probe = IpAddr::V4([10, 1, rng.random(), rng.random()].into());
            assert_eq!(s.contains(probe), scan(probe), "{probe}");
            let probe = IpAddr::V4(rng.random::<u32>().into());
            assert_eq!(s.contains(probe), scan(probe), "{probe}");
        }
        for n in &nets {
            assert!(s.contains(n.network()) && s.contains(n.broadcast()), "{n}");
        }
    }

    #[test]
    fn crowded_v6_bucket() {
        let base = u128::from(ip_v6("2001:db8::"));
        let mut nets: Vec<IpNet> = (0..20_000u128)
            .map(|n| IpNet::V6(Ipv6Net::new((base | (n * 3)).into(), 128).unwrap()))
            .collect();
        nets.push("2c00::/16".parse().unwrap());
        let s = IpSet::new(nets);
        assert!(!s.v6.children.is_empty());
        for n in [0u128, 1, 2, 3, 29_997, 59_997, 59_998, 60_000] {
            let probe = IpAddr::V6((base | n).into());
            assert_eq!(s.contains(probe), n % 3 == 0 && n < 60_000, "{probe}");
        }
        assert!(s.contains(ip("2c00:1::1")));
        assert!(!s.contains(ip("2001:db9::")));
    }

    #[test]
    fn empty_set() {
        let s = IpSet::default();
        assert!(s.is_empty());
        assert!(!s.contains(ip("0.0.0.0")));
        assert!(!s.contains(ip("::")));
    }
}
