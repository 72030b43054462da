//! udev's format (multicast group 2), exactly as libudev reads it
//! (`device_monitor_receive_device` in systemd's
//! `src/libsystemd/sd-device/device-monitor.c`, v252 here):
//!
//! ```text
//! offset  size  field
//!  0       8    "libudev\0"
//!  8       4    magic 0xfeedcafe, big-endian
//! 12       4    header_size (40), host order
//! 16       4    properties_off (40), host order
//! 20       4    properties_len, host order
//! 24       4    MurmurHash2 of SUBSYSTEM, big-endian
//! 28       4    MurmurHash2 of DEVTYPE (0 if none), big-endian
//! 32       4    tag bloom filter, high word, big-endian
//! 36       4    tag bloom filter, low word, big-endian
//! 40       …    KEY=VALUE\0 … (DEVNAME absolute, SEQNUM non-zero,
//!               USEC_INITIALIZED, TAGS/CURRENT_TAGS as `:a:b:`)
//! ```
//!
//! The hashes feed the BPF filter libudev attaches to a monitor that
//! filters by subsystem or tag (it loads them with network-order loads),
//! so a wrong hash means a dropped message, not a wrong one.

use super::{nul_pairs, require_identity, Uevent, UeventError, MAX_MESSAGE};

const FORMAT: &str = "libudev";
pub const PREFIX: &[u8; 8] = b"libudev\0";
pub const MAGIC: u32 = 0xfeed_cafe;
pub const HEADER_SIZE: usize = 40;

/// Whether `msg` is in udev's format rather than the kernel's.
pub fn is_libudev(msg: &[u8]) -> bool {
    msg.starts_with(PREFIX)
}

/// systemd's `MurmurHash2(str, strlen(str), 0)` (`string_hash32`). The C
/// code reads 4-byte blocks in host order; this is for little-endian
/// hosts, which is what the machines we restore on are.
pub fn string_hash32(s: &str) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let data = s.as_bytes();
    let mut h = data.len() as u32;
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        let mut k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= (b as u32) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// systemd's `string_bloom64`: four bits picked from the tag's hash.
pub fn string_bloom64(s: &str) -> u64 {
    let h = string_hash32(s);
    [0, 6, 12, 18]
        .iter()
        .fold(0u64, |bits, shift| bits | 1u64 << ((h >> shift) & 63))
}

/// The message udevd would broadcast for `ev`. `usec_now` (CLOCK_MONOTONIC
/// in µs) stands for USEC_INITIALIZED when the event carries none.
pub fn encode(ev: &Uevent, usec_now: u64) -> Result<Vec<u8>, UeventError> {
    let mut props = Vec::with_capacity(512);
    let mut put = |k: &str, v: &str| {
        props.extend_from_slice(k.as_bytes());
        props.push(b'=');
        props.extend_from_slice(v.as_bytes());
        props.push(0);
    };
    put("ACTION", &ev.action);
    put("DEVPATH", &ev.devpath);
    put("SUBSYSTEM", &ev.subsystem);
    if let Some(devtype) = &ev.devtype {
        put("DEVTYPE", devtype);
    }
    if let Some(name) = &ev.devname {
        // udev's DEVNAME is the absolute node path.
        if name.starts_with('/') {
            put("DEVNAME", name);
        } else {
            put("DEVNAME", &format!("/dev/{name}"));
        }
    }
    let handled = ["USEC_INITIALIZED", "TAGS", "CURRENT_TAGS"];
    for (k, v) in &ev.properties {
        if !handled.contains(&k.as_str()) {
            put(k, v);
        }
    }
    // libudev refuses an event whose SEQNUM is 0.
    put("SEQNUM", &ev.seqnum.max(1).to_string());
    let own = |key: &str| ev.properties.iter().find(|(k, _)| k == key).map(|p| &p.1);
    match own("USEC_INITIALIZED") {
        Some(v) => put("USEC_INITIALIZED", v),
        None => put("USEC_INITIALIZED", &usec_now.to_string()),
    }
    if !ev.tags.is_empty() {
        let tags = format!(":{}:", ev.tags.join(":"));
        put("TAGS", &tags);
        put("CURRENT_TAGS", own("CURRENT_TAGS").unwrap_or(&tags));
    } else if let Some(v) = own("CURRENT_TAGS") {
        put("CURRENT_TAGS", v);
    }
    if let Some((major, minor)) = ev.devnum {
        put("MAJOR", &major.to_string());
        put("MINOR", &minor.to_string());
    }

    let bloom = ev
        .tags
        .iter()
        .fold(0u64, |bits, t| bits | string_bloom64(t));
    let mut msg = Vec::with_capacity(HEADER_SIZE + props.len());
    msg.extend_from_slice(PREFIX);
    msg.extend_from_slice(&MAGIC.to_be_bytes());
    msg.extend_from_slice(&(HEADER_SIZE as u32).to_ne_bytes());
    msg.extend_from_slice(&(HEADER_SIZE as u32).to_ne_bytes());
    msg.extend_from_slice(&(props.len() as u32).to_ne_bytes());
    msg.extend_from_slice(&string_hash32(&ev.subsystem).to_be_bytes());
    let devtype_hash = ev.devtype.as_deref().map_or(0, string_hash32);
    msg.extend_from_slice(&devtype_hash.to_be_bytes());
    msg.extend_from_slice(&((bloom >> 32) as u32).to_be_bytes());
    msg.extend_from_slice(&(bloom as u32).to_be_bytes());
    msg.extend_from_slice(&props);
    if msg.len() > MAX_MESSAGE {
        return Err(UeventError::Malformed {
            format: FORMAT,
            reason: format!("{} bytes (at most {MAX_MESSAGE})", msg.len()),
        });
    }
    Ok(msg)
}

/// Parse a udev message, checking what libudev checks (prefix, magic,
/// properties inside the message) and the hashes against the properties.
/// DEVNAME comes back relative to /dev, as in [`Uevent::devname`].
pub fn decode(msg: &[u8]) -> Result<Uevent, UeventError> {
    let bad = |reason: String| UeventError::Malformed {
        format: FORMAT,
        reason,
    };
    if msg.len() > MAX_MESSAGE {
        return Err(bad(format!("{} bytes (at most {MAX_MESSAGE})", msg.len())));
    }
    if msg.len() < HEADER_SIZE || !is_libudev(msg) {
        return Err(bad("no libudev header".into()));
    }
    let word = |at: usize| [msg[at], msg[at + 1], msg[at + 2], msg[at + 3]];
    if u32::from_be_bytes(word(8)) != MAGIC {
        return Err(bad(format!("magic {:#x}", u32::from_be_bytes(word(8)))));
    }
    let off = u32::from_ne_bytes(word(16)) as usize;
    let len = u32::from_ne_bytes(word(20)) as usize;
    if off < HEADER_SIZE || off > msg.len() {
        return Err(bad(format!("properties at {off} in {} bytes", msg.len())));
    }
    let end = off.saturating_add(len).min(msg.len());
    let mut ev = Uevent::from_pairs(nul_pairs(&msg[off..end], FORMAT)?, FORMAT)?;
    require_identity(&ev, FORMAT)?;
    if ev.seqnum == 0 {
        return Err(bad("SEQNUM is 0 (libudev drops such events)".into()));
    }
    if u32::from_be_bytes(word(24)) != string_hash32(&ev.subsystem) {
        return Err(bad("subsystem hash does not match SUBSYSTEM".into()));
    }
    if let Some(name) = ev.devname.take() {
        ev.devname = Some(name.strip_prefix("/dev/").unwrap_or(&name).to_string());
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes read back from the BPF filter the real libudev (252.39) of
    /// this machine attaches for `filter_add_match_subsystem_devtype(m,
    /// "mem", NULL)`, `(m, "drm", "drm_minor")` and `filter_add_match_tag(m,
    /// "seat")` (getsockopt SO_GET_FILTER on the monitor's fd).
    #[test]
    fn hashes_match_the_real_libudev() {
        assert_eq!(string_hash32("mem"), 0xc365_cd83);
        assert_eq!(string_hash32("drm"), 0x1666_4179);
        assert_eq!(string_hash32("drm_minor"), 0x1ca6_541e);
        let seat = string_bloom64("seat");
        assert_eq!((seat >> 32) as u32, 0x0208_0000);
        assert_eq!(seat as u32, 0x0040_0001);
    }

    fn zero_remove() -> Uevent {
        Uevent {
            action: "remove".into(),
            devpath: "/devices/virtual/mem/zero".into(),
            subsystem: "mem".into(),
            devname: Some("zero".into()),
            devnum: Some((1, 5)),
            seqnum: 823,
            properties: vec![("DEVMODE".into(), "0666".into())],
            tags: vec!["seat".into()],
            ..Default::default()
        }
    }

    #[test]
    fn encode_writes_the_header_libudev_reads() {
        let msg = encode(&zero_remove(), 12345).unwrap();
        let props = b"ACTION=remove\0DEVPATH=/devices/virtual/mem/zero\0SUBSYSTEM=mem\0\
DEVNAME=/dev/zero\0DEVMODE=0666\0SEQNUM=823\0USEC_INITIALIZED=12345\0TAGS=:seat:\0\
CURRENT_TAGS=:seat:\0MAJOR=1\0MINOR=5\0";
        let mut want = Vec::new();
        want.extend_from_slice(b"libudev\0");
        want.extend_from_slice(&[0xfe, 0xed, 0xca, 0xfe]);
        want.extend_from_slice(&40u32.to_le_bytes());
        want.extend_from_slice(&40u32.to_le_bytes());
        want.extend_from_slice(&(props.len() as u32).to_le_bytes());
        want.extend_from_slice(&[0xc3, 0x65, 0xcd, 0x83]);
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(&[0x02, 0x08, 0, 0]);
        want.extend_from_slice(&[0, 0x40, 0, 0x01]);
        want.extend_from_slice(props);
        assert_eq!(msg, want);
    }

    #[test]
    fn round_trip_keeps_the_event() {
        let ev = zero_remove();
        let back = decode(&encode(&ev, 7).unwrap()).unwrap();
        assert_eq!(back.devname.as_deref(), Some("zero"));
        assert_eq!(back.tags, ev.tags);
        assert_eq!(back.property("USEC_INITIALIZED").as_deref(), Some("7"));
        // Encoding what was decoded gives the same bytes (nothing added twice).
        assert_eq!(encode(&back, 99).unwrap(), encode(&ev, 7).unwrap());
    }

    #[test]
    fn synthetic_seqnum_zero_is_sent_as_one() {
        let mut ev = zero_remove();
        ev.seqnum = 0;
        assert_eq!(decode(&encode(&ev, 1).unwrap()).unwrap().seqnum, 1);
    }

    #[test]
    fn broken_messages_are_refused() {
        let good = encode(&zero_remove(), 1).unwrap();
        let mut bad_magic = good.clone();
        bad_magic[8] = 0;
        let mut bad_off = good.clone();
        bad_off[16..20].copy_from_slice(&5000u32.to_ne_bytes());
        let mut bad_hash = good.clone();
        bad_hash[24] ^= 1;
        for m in [&good[..30], &bad_magic, &bad_off, &bad_hash, b"add@/x\0"] {
            assert!(decode(m).is_err());
        }
        // properties_len past the end is clamped to the message, as
        // libudev reads up to the end of what it received.
        let mut long_len = good.clone();
        long_len[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(decode(&long_len).is_ok());
    }
}
