//! The kernel's format (multicast group 1), as `lib/kobject_uevent.c`
//! builds it: a header `ACTION@DEVPATH\0`, then `KEY=VALUE\0` for ACTION,
//! DEVPATH, SUBSYSTEM, what the device's class and bus add (MAJOR, MINOR,
//! DEVNAME relative to /dev, DEVMODE, DEVTYPE, DRIVER, …) and SEQNUM last.

use super::{nul_pairs, require_identity, Uevent, UeventError, MAX_MESSAGE};

const FORMAT: &str = "kernel uevent";

/// udev's own bookkeeping, which the kernel never sends.
const UDEV_ONLY: [&str; 3] = ["USEC_INITIALIZED", "CURRENT_TAGS", "TAGS"];

fn too_long(len: usize) -> UeventError {
    UeventError::Malformed {
        format: FORMAT,
        reason: format!("{len} bytes (at most {MAX_MESSAGE})"),
    }
}

/// The message the kernel would broadcast for `ev`.
pub fn encode(ev: &Uevent) -> Result<Vec<u8>, UeventError> {
    let mut out = Vec::with_capacity(512);
    let mut put = |k: &str, v: &str| {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    };
    put("ACTION", &ev.action);
    put("DEVPATH", &ev.devpath);
    put("SUBSYSTEM", &ev.subsystem);
    if let Some((major, minor)) = ev.devnum {
        put("MAJOR", &major.to_string());
        put("MINOR", &minor.to_string());
    }
    if let Some(name) = &ev.devname {
        // The kernel names nodes relative to /dev; udev makes them absolute.
        put("DEVNAME", name.strip_prefix("/dev/").unwrap_or(name));
    }
    if let Some(devtype) = &ev.devtype {
        put("DEVTYPE", devtype);
    }
    for (k, v) in &ev.properties {
        if !UDEV_ONLY.contains(&k.as_str()) {
            put(k, v);
        }
    }
    put("SEQNUM", &ev.seqnum.to_string());
    let mut msg = format!("{}@{}", ev.action, ev.devpath).into_bytes();
    msg.push(0);
    msg.extend_from_slice(&out);
    if msg.len() > MAX_MESSAGE {
        return Err(too_long(msg.len()));
    }
    Ok(msg)
}

/// Parse a kernel message (as received on group 1).
pub fn decode(msg: &[u8]) -> Result<Uevent, UeventError> {
    let bad = |reason: &str| UeventError::Malformed {
        format: FORMAT,
        reason: reason.into(),
    };
    if msg.len() > MAX_MESSAGE {
        return Err(too_long(msg.len()));
    }
    let end = msg
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad("no NUL after the header"))?;
    let header = std::str::from_utf8(&msg[..end]).map_err(|_| bad("header is not UTF-8"))?;
    let (action, devpath) = header
        .split_once("@/")
        .ok_or_else(|| bad("header is not ACTION@DEVPATH"))?;
    let ev = Uevent::from_pairs(nul_pairs(&msg[end + 1..], FORMAT)?, FORMAT)?;
    require_identity(&ev, FORMAT)?;
    if ev.action != action || ev.devpath.get(1..) != Some(devpath) {
        return Err(bad("header and ACTION/DEVPATH disagree"));
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Received on group 1 in a fresh network namespace of this machine
    /// after `echo change > /sys/devices/virtual/mem/zero/uevent`.
    const ZERO_CHANGE: &[u8] = b"change@/devices/virtual/mem/zero\0ACTION=change\0\
DEVPATH=/devices/virtual/mem/zero\0SUBSYSTEM=mem\0SYNTH_UUID=0\0MAJOR=1\0MINOR=5\0\
DEVNAME=zero\0DEVMODE=0666\0SEQNUM=823\0";

    #[test]
    fn a_real_kernel_message_decodes() {
        let ev = decode(ZERO_CHANGE).unwrap();
        assert_eq!(ev.action, "change");
        assert_eq!(ev.devpath, "/devices/virtual/mem/zero");
        assert_eq!(ev.subsystem, "mem");
        assert_eq!(ev.devnum, Some((1, 5)));
        assert_eq!(ev.devname.as_deref(), Some("zero"));
        assert_eq!(ev.seqnum, 823);
        assert_eq!(
            ev.properties,
            [
                ("SYNTH_UUID".to_string(), "0".to_string()),
                ("DEVMODE".into(), "0666".into())
            ]
        );
    }

    #[test]
    fn encode_writes_the_kernel_layout() {
        let ev = Uevent {
            action: "remove".into(),
            devpath: "/devices/virtual/mem/zero".into(),
            subsystem: "mem".into(),
            devname: Some("/dev/zero".into()),
            devnum: Some((1, 5)),
            seqnum: 9,
            properties: vec![
                ("DEVMODE".into(), "0666".into()),
                ("USEC_INITIALIZED".into(), "1".into()),
            ],
            tags: vec!["uaccess".into()],
            ..Default::default()
        };
        assert_eq!(
            encode(&ev).unwrap(),
            b"remove@/devices/virtual/mem/zero\0ACTION=remove\0\
DEVPATH=/devices/virtual/mem/zero\0SUBSYSTEM=mem\0MAJOR=1\0MINOR=5\0DEVNAME=zero\0\
DEVMODE=0666\0SEQNUM=9\0"
        );
    }

    #[test]
    fn round_trip() {
        let ev = decode(ZERO_CHANGE).unwrap();
        assert_eq!(decode(&encode(&ev).unwrap()).unwrap(), ev);
    }

    #[test]
    fn broken_messages_are_refused() {
        for m in [
            &b"no header nul"[..],
            b"change/devices\0ACTION=change\0",
            b"add@/d\0ACTION=add\0DEVPATH=/d\0",
            b"add@/d\0ACTION=add\0DEVPATH=/e\0SUBSYSTEM=x\0",
            b"add@/d\0ACTION=add\0DEVPATH=/d\0SUBSYSTEM=x\0NOEQUALS\0",
        ] {
            assert!(decode(m).is_err(), "{:?}", String::from_utf8_lossy(m));
        }
        assert!(decode(&vec![b'a'; MAX_MESSAGE + 1]).is_err());
    }
}
