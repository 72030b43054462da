//! The table of file kinds: one line per kind names its variant in the
//! image's [`FileKind`], its record type (an [`FdKind`]) and the field its
//! checkpoint and restore state go in. Everything that dispatches on the
//! kind is generated from it; adding a kind is a module and a line here.

use super::error::{Refusal, Result, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use crate::devices::{Detached, Reattached};
use crate::image::ChunkRef;
use crate::policy::Policy;
use serde::{Deserialize, Serialize};

macro_rules! kinds {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty) => $field:ident, )*) => {
        /// The kind of an open file and its record, as the image holds it
        /// (`"type": "snake_case_variant"` beside the record's fields).
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum FileKind {
            $( $(#[$doc])* $variant($ty), )*
        }

        impl FileKind {
            pub fn describe(&self) -> String {
                match self {
                    $( FileKind::$variant(k) => <$ty as FdKind>::describe(k), )*
                }
            }

            pub fn policy(&self) -> Policy {
                match self {
                    $( FileKind::$variant(k) => <$ty as FdKind>::policy(k), )*
                }
            }

            pub fn chunks(&self) -> Vec<&ChunkRef> {
                match self {
                    $( FileKind::$variant(k) => <$ty as FdKind>::chunks(k), )*
                }
            }

            /// See [`FdKind::validate`].
            pub fn validate(&self) -> std::result::Result<(), String> {
                match self {
                    $( FileKind::$variant(k) => <$ty as FdKind>::validate(k), )*
                }
            }

            /// The kind's `"type"` as the image spells it (the table's
            /// field name, which is the variant's name in snake case).
            pub fn tag(&self) -> &'static str {
                match self {
                    $( FileKind::$variant(_) => stringify!($field), )*
                }
            }
        }

        /// What one checkpoint keeps per kind across fds.
        #[derive(Debug, Default)]
        pub(super) struct Seen {
            $( pub $field: <$ty as FdKind>::Seen, )*
        }

        /// Save `fd` as the first kind in the table that claims it, with
        /// the reason for the report; None when no kind claims it.
        pub(super) fn checkpoint(
            fd: &Probe<'_>,
            seen: &mut Seen,
            cx: &mut Collecting<'_>,
        ) -> Option<std::result::Result<(FileKind, String), Unsaved>> {
            $(
                if <$ty as FdKind>::claims(fd) {
                    return Some(<$ty as FdKind>::checkpoint(fd, &mut seen.$field, cx).map(|k| {
                        let reason = <$ty as FdKind>::reason(&k, fd, &seen.$field);
                        (FileKind::$variant(k), reason)
                    }));
                }
            )*
            None
        }

        /// What one restore keeps per kind across files.
        pub(super) struct Opening {
            $( pub $field: <$ty as FdKind>::Opening, )*
        }

        impl Opening {
            /// Each kind's state, from every file of it in `files`.
            pub(super) fn new<'f>(
                files: impl Iterator<Item = &'f FileKind> + Clone,
                cx: &Restoring<'_>,
            ) -> Result<Self> {
                Ok(Opening {
                    $( $field: {
                        let all: Vec<&$ty> = files
                            .clone()
                            .filter_map(|f| match f {
                                FileKind::$variant(k) => Some(k),
                                #[allow(unreachable_patterns)]
                                _ => None,
                            })
                            .collect();
                        <$ty as FdKind>::opening(&all, cx)?
                    }, )*
                })
            }

            pub(super) fn restore(
                &mut self,
                kind: &FileKind,
                flags: u32,
                cx: &Restoring<'_>,
            ) -> Result<Opened> {
                match kind {
                    $( FileKind::$variant(k) => <$ty as FdKind>::restore(k, flags, &mut self.$field, cx), )*
                }
            }
        }
    };
}

// One line per kind: its variant in the image, its record (the module that
// holds its `impl FdKind`), the field its state goes in, named as the
// image's `"type"` (the variant in snake case: a test checks). The order is the
// order the kinds are asked to claim a fd in; their claims do not overlap,
// so it only matters for speed.
kinds! {
    Regular(super::regular::RegularFile) => regular,
    Memfd(super::memfd::MemfdFile) => memfd,
    Directory(super::directory::Directory) => directory,
    /// One end of a pipe or FIFO of `Snapshot::pipes`.
    Pipe(super::pipe::PipeEnd) => pipe,
    CharDevice(super::chardev::CharDevice) => char_device,
    /// A device detached by simulated hot-unplug: a dead stand-in.
    Detached(Box<Detached>) => detached,
    /// An X server's primary DRM card (experimental): the live card
    /// reopened at restore.
    Reattached(Box<Reattached>) => reattached,
    EventFd(super::eventfd::EventFd) => event_fd,
    TimerFd(super::timerfd::TimerFd) => timer_fd,
    SignalFd(super::signalfd::SignalFd) => signal_fd,
    Epoll(super::epoll::Epoll) => epoll,
    UnixSocket(super::unix::UnixSocket) => unix_socket,
    Pty(super::pty::PtyEnd) => pty,
    /// An open file of `/dev/tty`: its holder's controlling terminal.
    DevTty(super::pty::DevTty) => dev_tty,
    Inotify(super::inotify::Inotify) => inotify,
    Netlink(super::netlink::NetlinkSocket) => netlink,
    Inet(super::inet::InetSocket) => inet,
    Pidfd(super::pidfd::Pidfd) => pidfd,
    /// A file inside the FUSE mount of a session service left out of the
    /// set: a dead stand-in, reopened by path once the service is back.
    ServiceFile(super::service_file::ServiceFile) => service_file,
}

/// Why no kind claims `fd`.
pub(super) fn unclaimed(fd: &Probe<'_>) -> Refusal {
    if fd.file_type() != libc::S_IFSOCK {
        return format!("{}: this kind of file is not supported yet", fd.name).into();
    }
    match fd.family() {
        Ok(domain) => format!(
            "{} sockets are not supported yet",
            match domain {
                libc::AF_INET => "IPv4",
                libc::AF_INET6 => "IPv6",
                libc::AF_NETLINK => "netlink",
                libc::AF_PACKET => "packet",
                _ => "this family of",
            }
        )
        .into(),
        Err(e) => format!("socket of unknown family: {e}").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{directory, eventfd, pipe, signalfd};

    /// A directory was a struct variant before the table: as a newtype of
    /// a struct it keeps its form in the image.
    #[test]
    fn directory_keeps_its_image_form() {
        let kind = FileKind::Directory(directory::Directory {
            path: "/srv/a".into(),
        });
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, r#"{"type":"directory","path":"/srv/a"}"#);
        let back: FileKind = serde_json::from_str(&json).unwrap();
        assert_eq!(back, kind);
    }

    /// Records read back as written; a newtype variant is its record's
    /// fields beside the tag.
    #[test]
    fn every_kind_round_trips() {
        let kinds = [
            FileKind::EventFd(eventfd::EventFd {
                count: 3,
                semaphore: true,
            }),
            FileKind::SignalFd(signalfd::SignalFd { mask: 0x4002 }),
            FileKind::Pipe(pipe::PipeEnd {
                pipe: 1,
                read: true,
                write: false,
            }),
        ];
        for kind in kinds {
            let json = serde_json::to_string(&kind).unwrap();
            let back: FileKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, kind, "{json}");
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(value["type"], kind.tag(), "{json}");
        }
        assert_eq!(
            serde_json::to_string(&FileKind::Pipe(pipe::PipeEnd {
                pipe: 1,
                read: true,
                write: false,
            }))
            .unwrap(),
            r#"{"type":"pipe","pipe":1,"read":true,"write":false}"#
        );
    }
}
