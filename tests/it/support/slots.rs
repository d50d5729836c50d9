//! Cluster slots as Redis computes them (CRC16 of the key mod 16384), and
//! the slot ranges a primary serves, to tell which calls a fault concerns.

use super::RedisServer;

/// The hash slot of `key` (no `{hash tag}` support: service keys have none).
pub fn key_slot(key: &str) -> u16 {
    // CRC-16/XMODEM, as in the Redis Cluster specification.
    let mut crc: u16 = 0;
    for byte in key.bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// Every slot range as `(first, last, primary port)`, from `CLUSTER SLOTS`
/// asked of `any` (entries are `[start, end, [ip, port, id], replicas...]`).
pub fn slot_ranges(any: &RedisServer) -> Vec<(i64, i64, i64)> {
    let ranges: Vec<redis::Value> = any.query(&["CLUSTER", "SLOTS"]);
    ranges
        .into_iter()
        .filter_map(|range| {
            let redis::Value::Array(fields) = range else {
                return None;
            };
            match fields.as_slice() {
                [
                    redis::Value::Int(start),
                    redis::Value::Int(end),
                    redis::Value::Array(primary),
                    ..,
                ] => match primary.get(1) {
                    Some(redis::Value::Int(port)) => Some((*start, *end, *port)),
                    _ => None,
                },
                _ => None,
            }
        })
        .collect()
}

/// The slot ranges `(first, last)` that the node on `port` serves as a
/// primary, according to `CLUSTER SLOTS` asked of `any`.
pub fn slots_served_by(any: &RedisServer, port: u16) -> Vec<(u16, u16)> {
    slot_ranges(any)
        .into_iter()
        .filter(|(_, _, primary)| *primary == i64::from(port))
        .filter_map(|(start, end, _)| Some((u16::try_from(start).ok()?, u16::try_from(end).ok()?)))
        .collect()
}

/// True if `slot` falls in one of `ranges`.
pub fn in_ranges(slot: u16, ranges: &[(u16, u16)]) -> bool {
    ranges
        .iter()
        .any(|(first, last)| (*first..=*last).contains(&slot))
}

/// A lock that runs cluster tests one at a time: six nodes plus a failover
/// each, in parallel on a small machine, would make timing bounds meaningless.
pub static CLUSTER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::key_slot;

    #[test]
    fn slots_match_the_cluster_specification() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot("123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("bar"), 5061);
    }
}
