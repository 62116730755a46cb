//! Copying a file without writing its zeros: runs of zero bytes become holes, so a sparse
//! file (a 2 GiB disk image that is mostly empty) stays sparse when a job's inputs are
//! fetched into its run folder, and a file whose holes were filled in on the way (a
//! store that wrote them out) gets them back.
//!
//! The copy has the same bytes and length as the source; only the blocks that hold
//! nothing but zeros are left unwritten (`cp --sparse=always`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The unit checked for zeros: a multiple of every common filesystem block size.
const CHUNK: usize = 64 << 10;

/// Copies `from` to `to` (replacing it), leaving holes where `from` holds only zeros.
/// Returns the bytes copied (the file's length).
pub fn copy(from: &Path, to: &Path) -> std::io::Result<u64> {
    let mut source = File::open(from)?;
    let _ = std::fs::remove_file(to);
    let mut dest = File::create(to)?;
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    let mut pending_hole = false;
    loop {
        let n = read_full(&mut source, &mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            dest.seek(SeekFrom::Current(n as i64))?;
            pending_hole = true;
        } else {
            dest.write_all(&buf[..n])?;
            pending_hole = false;
        }
        len += n as u64;
    }
    if pending_hole {
        // A hole at the end has no byte written after it: give the file its length.
        dest.set_len(len)?;
    }
    Ok(len)
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The bytes of disk a file takes (its allocated blocks), where the platform tells.
pub fn allocated(path: &Path) -> std::io::Result<u64> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok(meta.blocks() * 512)
    }
    #[cfg(not(unix))]
    {
        Ok(meta.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_file_stays_sparse_and_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("image");
        let to = dir.path().join("copy");
        {
            let mut f = File::create(&from).unwrap();
            f.write_all(b"head").unwrap();
            f.seek(SeekFrom::Start(64 << 20)).unwrap();
            f.write_all(b"middle").unwrap();
            f.set_len(128 << 20).unwrap();
        }
        assert_eq!(copy(&from, &to).unwrap(), 128 << 20);
        assert_eq!(std::fs::metadata(&to).unwrap().len(), 128 << 20);
        assert!(
            allocated(&to).unwrap() < 1 << 20,
            "{}",
            allocated(&to).unwrap()
        );
        assert_eq!(
            crate::content::sha256_file(&from).unwrap(),
            crate::content::sha256_file(&to).unwrap()
        );
    }

    #[test]
    fn a_dense_file_is_copied_whole() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a");
        let to = dir.path().join("b");
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(&from, &bytes).unwrap();
        copy(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), bytes);
    }
}
