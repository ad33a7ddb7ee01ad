//! Checks on the frontend's memory table (SET_MEM_TABLE, ADD_MEM_REG)
//! before any worker touches it.
//!
//! A region is an mmap of a file the frontend passed. If the region is
//! longer than what the file holds from its offset, the first access past
//! the file's end raises SIGBUS and kills the daemon (found by the
//! `vhost_user` fuzz target: SET_VRING_ADDR reads the used index through
//! such a mapping). vm-memory maps without checking, so the device does.
//! A frontend that shrinks its file after handing it over can still cause
//! SIGBUS; QEMU never does either.

use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

/// `Err` naming the first region that extends past the end of its file.
pub fn check_files<M: GuestMemoryBackend>(mem: &M) -> Result<(), String> {
    for region in mem.iter() {
        let Some(fo) = region.file_offset() else {
            continue;
        };
        let file_len = fo
            .file()
            .metadata()
            .map_err(|e| format!("cannot stat the file of a memory region: {e}"))?
            .len();
        let end = fo.start().checked_add(region.len());
        if end.is_none_or(|end| end > file_len) {
            return Err(format!(
                "memory region at guest address {:#x} maps {:#x} bytes at file offset {:#x}, \
                 past the end of its {:#x}-byte file",
                region.start_addr().0,
                region.len(),
                fo.start(),
                file_len
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

    fn file(len: u64) -> File {
        let f = tempfile_in_tmp();
        f.set_len(len).unwrap();
        f
    }

    fn tempfile_in_tmp() -> File {
        let p = std::env::temp_dir().join(format!(
            "pktaccel-memtable-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        std::fs::remove_file(&p).unwrap();
        f
    }

    #[test]
    fn regions_past_their_file_are_refused() {
        let ok = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(0),
            0x2000,
            Some(FileOffset::new(file(0x3000), 0x1000)),
        )])
        .unwrap();
        assert_eq!(check_files(&ok), Ok(()));
        let anon = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert_eq!(check_files(&anon), Ok(()));
        let past = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(0x10000),
            0x2000,
            Some(FileOffset::new(file(0x2000), 0x1000)),
        )])
        .unwrap();
        let e = check_files(&past).unwrap_err();
        assert!(e.contains("0x10000") && e.contains("past the end"), "{e}");
    }
}
