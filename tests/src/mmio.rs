//! Volatile reads of a PCI BAR through its sysfs `resourceN` file.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Reads `len` bytes (a multiple of 4) at `offset` in the BAR behind `res`,
/// with 32-bit volatile loads as a driver would.
pub fn read_bytes(res: &Path, offset: u64, len: usize) -> Result<Vec<u8>, String> {
    if !len.is_multiple_of(4) || !offset.is_multiple_of(4) {
        return Err(format!("unaligned MMIO read: offset {offset:#x} len {len}"));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(res)
        .map_err(|e| format!("opening {}: {e}", res.display()))?;
    let page = 4096u64;
    let map_off = offset & !(page - 1);
    let map_len = (offset - map_off) as usize + len;
    // SAFETY: mapping a sysfs resource file we opened; the kernel checks the
    // range against the BAR size and fails the call otherwise. The result is
    // checked before use and unmapped below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            map_off as libc::off_t,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(format!(
            "mmap {} at {map_off:#x}: {}",
            res.display(),
            std::io::Error::last_os_error()
        ));
    }
    let mut out = Vec::with_capacity(len);
    for i in (0..len).step_by(4) {
        // SAFETY: `base + (offset - map_off) + i` lies inside the `map_len`
        // bytes just mapped and is 4-byte aligned; MMIO needs volatile loads.
        let word = unsafe {
            std::ptr::read_volatile(
                base.cast::<u8>()
                    .add((offset - map_off) as usize + i)
                    .cast::<u32>(),
            )
        };
        out.extend_from_slice(&word.to_le_bytes());
    }
    // SAFETY: unmapping exactly the mapping created above; no references to
    // it outlive this point.
    unsafe { libc::munmap(base, map_len) };
    Ok(out)
}
