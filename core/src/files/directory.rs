//! Directories: reopened by path.

use super::error::{Result as FileResult, Unsaved};
use super::kind::{Collecting, FdKind, Opened, Probe, Restoring};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    pub path: PathBuf,
}

impl FdKind for Directory {
    type Seen = ();
    type Opening = ();

    fn describe(&self) -> String {
        format!("directory {}", self.path.display())
    }

    fn claims(fd: &Probe<'_>) -> bool {
        fd.file_type() == libc::S_IFDIR
    }

    fn checkpoint(fd: &Probe<'_>, _: &mut (), _: &mut Collecting<'_>) -> Result<Self, Unsaved> {
        Ok(Directory {
            path: fd.target.to_path_buf(),
        })
    }

    fn opening(_: &[&Self], _: &Restoring<'_>) -> FileResult<()> {
        Ok(())
    }

    fn restore(&self, flags: u32, _: &mut (), _: &Restoring<'_>) -> FileResult<Opened> {
        super::regular::open_as(
            &self.path,
            (flags as i32) | libc::O_DIRECTORY,
            libc::S_IFDIR,
            |_| Ok(()),
        )
        .map(Opened::from)
    }
}
