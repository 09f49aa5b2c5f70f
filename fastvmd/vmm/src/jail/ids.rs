//! The unprivileged uid/gid a jailed monitor runs as: one per VM, taken
//! from a range the daemon is given (`fastvmd serve --jail-ids`), like the
//! jailer's `--uid`/`--gid`.

use std::fmt;
use std::str::FromStr;

/// The first vsock CID a VM can have; the VM with CID `c` runs as the
/// range's id number `c - FIRST_CID`.
const FIRST_CID: u64 = 3;

/// The uid and gid of one jailed monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JailIds {
    pub uid: u32,
    pub gid: u32,
}

/// A range of ids, `START:COUNT`; uid and gid are the same number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// Far from the ids people and `/etc/subuid` ranges use.
pub const DEFAULT_ID_RANGE: IdRange = IdRange {
    start: 900_000_000,
    count: 65_536,
};

impl IdRange {
    /// The ids of the VM whose vsock CID is `cid` (CIDs are unique among
    /// live VMs, so ids are too); `None` when the range is too small.
    pub fn for_cid(&self, cid: u64) -> Option<JailIds> {
        let index = cid.checked_sub(FIRST_CID)?;
        if index >= u64::from(self.count) {
            return None;
        }
        let id = u32::try_from(u64::from(self.start) + index).ok()?;
        Some(JailIds { uid: id, gid: id })
    }
}

impl FromStr for IdRange {
    type Err = String;

    fn from_str(s: &str) -> Result<IdRange, String> {
        let (start, count) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected START:COUNT, e.g. 900000000:65536"))?;
        let start: u32 = start
            .parse()
            .map_err(|e| format!("{s:?}: bad START: {e}"))?;
        let count: u32 = count
            .parse()
            .map_err(|e| format!("{s:?}: bad COUNT: {e}"))?;
        if start == 0 {
            return Err(format!("{s:?}: id 0 is root"));
        }
        if count == 0 {
            return Err(format!("{s:?}: COUNT must be at least 1"));
        }
        // u32::MAX is (uid_t)-1, "no change" to set*id.
        if u64::from(start) + u64::from(count) > u64::from(u32::MAX) {
            return Err(format!("{s:?}: the range ends past the last valid id"));
        }
        Ok(IdRange { start, count })
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.start, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_cid_inside_the_range() {
        let range: IdRange = "1000:2".parse().unwrap();
        assert_eq!(
            range.for_cid(3),
            Some(JailIds {
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(
            range.for_cid(4),
            Some(JailIds {
                uid: 1001,
                gid: 1001
            })
        );
        assert_eq!(range.for_cid(5), None);
        assert_eq!(range.for_cid(2), None);
    }

    #[test]
    fn bad_ranges_are_refused_with_a_reason() {
        for (bad, why) in [
            ("1000", "START:COUNT"),
            ("0:10", "root"),
            ("10:0", "at least 1"),
            ("4294967290:10", "past the last"),
            ("x:1", "bad START"),
        ] {
            let err = bad.parse::<IdRange>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert_eq!(DEFAULT_ID_RANGE.to_string().parse(), Ok(DEFAULT_ID_RANGE));
    }
}
