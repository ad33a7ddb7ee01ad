//! The partial block an engine that works in whole blocks carries from one
//! segment to the next. Whole blocks are read straight from the caller's
//! range; only a segment's ragged ends are copied, into this private
//! buffer, so each byte of guest memory is read exactly once and many small
//! segments cost about what one large one does.

/// Up to `B` stream bytes not processed yet (a private copy).
#[derive(Clone, Copy, Debug)]
pub struct Carry<const B: usize> {
    buf: [u8; B],
    /// How many bytes of `buf` are used; always below `B` between calls.
    n: usize,
}

impl<const B: usize> Carry<B> {
    pub const fn new() -> Self {
        Self { buf: [0; B], n: 0 }
    }

    /// The carried bytes.
    pub fn tail(&self) -> &[u8] {
        &self.buf[..self.n]
    }

    /// Feeds `p..p+len` to `blocks` as runs of whole blocks (a pointer and
    /// a length that is a multiple of `B`): first the carry, once these
    /// bytes fill it, then the whole blocks straight from `p`. The ragged
    /// end is copied into the carry for the next call.
    ///
    /// # Safety
    /// `p..p+len` is mapped and readable for the whole call, and does not
    /// overlap `self` (guest memory never overlaps the device's own).
    #[inline(always)]
    pub unsafe fn feed(
        &mut self,
        mut p: *const u8,
        mut len: usize,
        mut blocks: impl FnMut(*const u8, usize),
    ) {
        if self.n > 0 {
            let k = (B - self.n).min(len);
            // SAFETY: `k <= len` bytes of the caller's range into the
            // carry's free space (`k <= B - n`).
            unsafe { std::ptr::copy_nonoverlapping(p, self.buf.as_mut_ptr().add(self.n), k) };
            self.n += k;
            // SAFETY: k <= len.
            (p, len) = (unsafe { p.add(k) }, len - k);
            if self.n < B {
                return;
            }
            blocks(self.buf.as_ptr(), B);
            self.n = 0;
        }
        let body = len - len % B;
        if body > 0 {
            blocks(p, body);
        }
        let rest = len - body;
        // SAFETY: the last `rest < B` bytes of the range, into the empty
        // carry.
        unsafe { std::ptr::copy_nonoverlapping(p.add(body), self.buf.as_mut_ptr(), rest) };
        self.n = rest;
    }
}

impl<const B: usize> Default for Carry<B> {
    fn default() -> Self {
        Self::new()
    }
}
