//! Attachments: named blobs a caller stores with an image, such as the
//! session layer's window list and screenshots. The engine does not read
//! them; it keeps them in the same checksummed chunks as the pages, so they
//! are verified, shared between images and pruned like everything else.

use crate::image::{ChunkRef, ImageError, ImageReader, ImageWriter};
use serde::{Deserialize, Serialize};

/// Largest attachment accepted, on writing and on reading an image.
pub const MAX_ATTACHMENT_BYTES: u64 = 64 << 20;
/// Attachments are cut into chunks of this size.
const CHUNK_BYTES: usize = 1 << 20;

/// One attachment's bytes, given to the engine before the freeze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// A file-like name, unique in the image: `desktop.json`, `screen-0.png`.
    pub name: String,
    /// The media type of the bytes: `application/json`, `image/png`.
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// An attachment as the image document records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAttachment {
    pub name: String,
    pub media_type: String,
    pub len: u64,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    // No path: an attachment is named by its name in the image.
    #[error("attachment {name:?}: {len} bytes, more than the {MAX_ATTACHMENT_BYTES} allowed")]
    TooLarge { name: String, len: u64 },
    #[error("attachment {name:?}: its chunks hold {found} bytes, the document says {len}")]
    LengthMismatch { name: String, len: u64, found: u64 },
    #[error("two attachments are named {name:?}")]
    Duplicate { name: String },
    #[error("attachment name {name:?} is not a plain file name")]
    BadName { name: String },
    #[error(transparent)]
    Image(#[from] ImageError),
}

type Result<T> = std::result::Result<T, AttachmentError>;

fn check_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if plain {
        Ok(())
    } else {
        Err(AttachmentError::BadName { name: name.into() })
    }
}

/// Write every attachment's bytes to the image's chunks.
pub fn store(writer: &ImageWriter, attachments: &[Attachment]) -> Result<Vec<StoredAttachment>> {
    let mut out: Vec<StoredAttachment> = Vec::with_capacity(attachments.len());
    for a in attachments {
        check_name(&a.name)?;
        if out.iter().any(|s| s.name == a.name) {
            return Err(AttachmentError::Duplicate {
                name: a.name.clone(),
            });
        }
        let len = a.bytes.len() as u64;
        if len > MAX_ATTACHMENT_BYTES {
            return Err(AttachmentError::TooLarge {
                name: a.name.clone(),
                len,
            });
        }
        let chunks = a
            .bytes
            .chunks(CHUNK_BYTES)
            .map(|c| writer.put_chunk(c))
            .collect::<std::result::Result<_, _>>()?;
        out.push(StoredAttachment {
            name: a.name.clone(),
            media_type: a.media_type.clone(),
            len,
            chunks,
        });
    }
    Ok(out)
}

/// Check the shape of a stored attachment from an untrusted document
/// before anything is read or allocated for it.
pub fn validate(a: &StoredAttachment) -> Result<()> {
    check_name(&a.name)?;
    if a.len > MAX_ATTACHMENT_BYTES {
        return Err(AttachmentError::TooLarge {
            name: a.name.clone(),
            len: a.len,
        });
    }
    let found: u64 = a.chunks.iter().map(|c| c.raw_len as u64).sum();
    if found != a.len {
        return Err(AttachmentError::LengthMismatch {
            name: a.name.clone(),
            len: a.len,
            found,
        });
    }
    Ok(())
}

/// Read an attachment back, verifying every chunk.
pub fn read(reader: &ImageReader, a: &StoredAttachment) -> Result<Vec<u8>> {
    validate(a)?;
    let mut out = Vec::with_capacity(a.len as usize);
    let mut chunk = Vec::new();
    for c in &a.chunks {
        reader.read_chunk(c, &mut chunk)?;
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(name: &str, bytes: Vec<u8>) -> Attachment {
        Attachment {
            name: name.into(),
            media_type: "application/octet-stream".into(),
            bytes,
        }
    }

    #[test]
    fn stored_attachments_read_back_across_chunks() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        let writer = ImageWriter::create(&dir, None).unwrap();
        let big: Vec<u8> = (0..(CHUNK_BYTES * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let stored = store(
            &writer,
            &[attachment("big.bin", big.clone()), attachment("e", vec![])],
        )
        .unwrap();
        assert_eq!(stored[0].chunks.len(), 3);
        writer.commit(&stored).unwrap();
        let (reader, doc): (_, Vec<StoredAttachment>) = ImageReader::open(&dir).unwrap();
        assert_eq!(read(&reader, &doc[0]).unwrap(), big);
        assert!(read(&reader, &doc[1]).unwrap().is_empty());
    }

    #[test]
    fn bad_names_duplicates_and_lying_lengths_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let writer = ImageWriter::create(&t.path().join("img"), None).unwrap();
        for name in ["", "..", "a/b", "screen 0.png"] {
            assert!(matches!(
                store(&writer, &[attachment(name, vec![1])]),
                Err(AttachmentError::BadName { .. })
            ));
        }
        assert!(matches!(
            store(
                &writer,
                &[attachment("a", vec![1]), attachment("a", vec![2])]
            ),
            Err(AttachmentError::Duplicate { .. })
        ));
        let mut stored = store(&writer, &[attachment("a", vec![1, 2, 3])]).unwrap();
        stored[0].len = 2;
        assert!(matches!(
            validate(&stored[0]),
            Err(AttachmentError::LengthMismatch {
                len: 2,
                found: 3,
                ..
            })
        ));
        stored[0].len = u64::MAX;
        assert!(matches!(
            validate(&stored[0]),
            Err(AttachmentError::TooLarge { .. })
        ));
    }
}
