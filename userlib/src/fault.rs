//! Fatal-error reporting without allocating.
//!
//! A heap corruption found inside free() must be reported from inside the
//! allocator, where formatting into a String could recurse or deadlock. The
//! message goes through a fixed stack buffer and write(2), then abort(),
//! the way glibc reports "free(): double free detected in tcache 2".

use core::fmt::{self, Write};

/// A fixed-capacity text buffer that silently truncates.
pub struct FixedBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> FixedBuf<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// The text written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Writes the contents to file descriptor `fd`.
    pub fn write_to_fd(&self, fd: i32) {
        let mut off = 0;
        while off < self.len {
            // SAFETY: writes initialised bytes of our buffer.
            let n = unsafe { libc::write(fd, self.buf[off..].as_ptr().cast(), self.len - off) };
            if n <= 0 {
                break;
            }
            off += n as usize;
        }
    }
}

impl<const N: usize> Default for FixedBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Prints `pktslab: <call>(): <what> 0x<ptr>` to stderr and aborts.
#[cold]
#[inline(never)]
pub fn abort_ptr(call: &str, what: &str, p: usize) -> ! {
    let mut b = FixedBuf::<192>::new();
    let _ = writeln!(b, "pktslab: {call}(): {what} {p:#x}");
    b.write_to_fd(2);
    // SAFETY: abort has no preconditions and does not return.
    unsafe { libc::abort() }
}

/// Prints one line to stderr (used for the one-time notices).
pub fn notice(args: fmt::Arguments<'_>) {
    let mut b = FixedBuf::<256>::new();
    let _ = b.write_str("pktslab: ");
    let _ = b.write_fmt(args);
    let _ = b.write_str("\n");
    b.write_to_fd(2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_buf_truncates() {
        let mut b = FixedBuf::<8>::new();
        let _ = write!(b, "0123456789");
        assert_eq!(b.as_bytes(), b"01234567");
        let mut b = FixedBuf::<64>::new();
        let _ = write!(b, "free(): double free of {:#x}", 0x1234usize);
        assert_eq!(b.as_bytes(), b"free(): double free of 0x1234");
    }
}
