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

/// Gives back the disk of every all-zero block of `path` (punching holes in place, the
/// length and bytes unchanged): for a file that arrived with its holes written out, from
/// an object store. Returns the bytes freed; does nothing where holes can't be punched.
pub fn punch_holes(path: &Path) -> std::io::Result<u64> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let mut buf = vec![0u8; CHUNK];
        let mut offset = 0u64;
        let mut freed = 0u64;
        loop {
            let n = read_full(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            if n == CHUNK && buf.iter().all(|b| *b == 0) {
                // SAFETY: plain system call on a descriptor this function owns.
                let done = unsafe {
                    libc::fallocate(
                        file.as_raw_fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        offset as libc::off_t,
                        n as libc::off_t,
                    )
                };
                if done != 0 {
                    // Not supported on this filesystem: leave the file as it is.
                    return Ok(freed);
                }
                freed += n as u64;
            }
            offset += n as u64;
        }
        Ok(freed)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Ok(0)
    }
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
    fn holes_written_out_are_punched_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        let mut bytes = vec![0u8; 16 << 20];
        bytes[5] = 1;
        bytes[(8 << 20) + 3] = 2;
        std::fs::write(&path, &bytes).unwrap();
        assert!(allocated(&path).unwrap() >= 16 << 20);
        punch_holes(&path).unwrap();
        assert!(
            allocated(&path).unwrap() < 1 << 20,
            "{}",
            allocated(&path).unwrap()
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
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
